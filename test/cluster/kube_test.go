package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
)

// Names of the installation, as in the chart README's quick start.
const (
	testNamespace = "llm"
	releaseName   = "infergw"
	poolName      = "vllm-llama3-8b-instruct"
	simDeployment = "vllm-sim"
	baseModel     = "meta-llama/Llama-3.1-8B-Instruct"
	fieldManager  = "infergw-cluster-test"
)

type testEnv struct {
	n        *node
	root     string
	cfg      *rest.Config
	kube     kubernetes.Interface
	dyn      dynamic.Interface
	mapper   *restmapper.DeferredDiscoveryRESTMapper
	helm     *action.Configuration
	chart    *chart.Chart
	values   map[string]any
	envoyURL string
	logf     func(string, ...any)
}

func newTestEnv(ctx context.Context, n *node, root string) (*testEnv, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", n.admin)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 100, 200
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	e := &testEnv{n: n, root: root, cfg: cfg, kube: kube, dyn: dyn, logf: n.logf,
		mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(kube.Discovery()))}
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig = &n.admin
	ns := testNamespace
	flags.Namespace = &ns
	e.helm = new(action.Configuration)
	if err := e.helm.Init(flags, testNamespace, "secret", func(format string, v ...any) {}); err != nil {
		return nil, fmt.Errorf("helm: %w", err)
	}
	if e.chart, err = loader.Load(filepath.Join(root, "charts", "infergw")); err != nil {
		return nil, fmt.Errorf("load chart: %w", err)
	}
	if e.values, err = chartutil.ReadValuesFile(filepath.Join(root, "test", "cluster", "values.yaml")); err != nil {
		return nil, err
	}
	return e, nil
}

// install does what the chart README's quick start does, with the simulator as the model
// server: Gateway API CRDs, the chart (with its CRDs), the sims, the pool and its route.
func (e *testEnv) install(ctx context.Context) error {
	n := e.n
	if err := n.waitFor("node Ready", 2*time.Minute, func() error {
		node, err := e.kube.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return errors.New("node not Ready")
	}); err != nil {
		return err
	}
	gwDir, err := goModDir(e.root, "sigs.k8s.io/gateway-api")
	if err != nil {
		return err
	}
	crds, _ := filepath.Glob(filepath.Join(gwDir, "config", "crd", "standard", "*.yaml"))
	if len(crds) == 0 {
		return fmt.Errorf("no Gateway API CRDs in %s/config/crd/standard", gwDir)
	}
	t0 := time.Now()
	for _, f := range crds {
		if err := e.applyFile(ctx, f, ""); err != nil {
			return err
		}
	}
	if err := e.waitCRDsEstablished(ctx); err != nil {
		return err
	}
	e.logf("Gateway API CRDs (standard channel, %d files) established in %.1fs", len(crds), time.Since(t0).Seconds())

	if _, err := e.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNamespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	if err := n.waitFor("default ServiceAccount of "+testNamespace, time.Minute, func() error {
		_, err := e.kube.CoreV1().ServiceAccounts(testNamespace).Get(ctx, "default", metav1.GetOptions{})
		return err
	}); err != nil {
		return err
	}
	t0 = time.Now()
	inst := action.NewInstall(e.helm)
	inst.ReleaseName = releaseName
	inst.Namespace = testNamespace
	inst.Timeout = 3 * time.Minute
	if _, err := inst.RunWithContext(ctx, e.chart, e.values); err != nil {
		return fmt.Errorf("helm install: %w", err)
	}
	e.mapper.Reset() // the chart's CRDs are new kinds
	e.logf("helm install %s charts/infergw (with its CRDs) in %.1fs", releaseName, time.Since(t0).Seconds())
	for _, f := range []string{"sim-deployment.yaml", "inferencepool.yaml"} {
		if err := e.applyFile(ctx, filepath.Join(e.root, "examples", "kubernetes", f), testNamespace); err != nil {
			return err
		}
		e.logf("applied examples/kubernetes/%s", f)
	}
	for _, d := range []string{releaseName + "-controlplane", releaseName + "-picker", simDeployment, releaseName + "-envoy"} {
		if err := e.waitDeploymentReady(ctx, d, 3*time.Minute); err != nil {
			return err
		}
	}
	svc, err := e.kube.CoreV1().Services(testNamespace).Get(ctx, releaseName+"-envoy", metav1.GetOptions{})
	if err != nil {
		return err
	}
	e.envoyURL = fmt.Sprintf("http://%s:%d", svc.Spec.ClusterIP, svc.Spec.Ports[0].Port)
	err = n.waitFor("first chat completion through "+e.envoyURL, 2*time.Minute, func() error {
		r, err := e.chat(ctx, baseModel, "hello", false, nil)
		if err != nil {
			return err
		}
		if r.status != 200 {
			return fmt.Errorf("status %d (headers %v): %s", r.status, r.header, r.body)
		}
		return nil
	})
	if err != nil {
		// Seen once in seven runs (a 404 with an empty body for the whole two minutes):
		// keep what the gateway's own processes said, to find out why.
		e.dumpPodLogs(ctx, "app.kubernetes.io/instance="+releaseName, 60)
	}
	return err
}

// dumpPodLogs writes the last lines of every container of the selected Pods to the test log.
func (e *testEnv) dumpPodLogs(ctx context.Context, selector string, lines int64) {
	pods, err := e.kube.CoreV1().Pods(testNamespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		e.logf("pod logs: list: %v", err)
		return
	}
	for _, p := range pods.Items {
		for _, c := range p.Spec.Containers {
			b, err := e.kube.CoreV1().Pods(testNamespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: c.Name, TailLines: &lines}).DoRaw(ctx)
			if err != nil {
				e.logf("pod logs %s/%s: %v", p.Name, c.Name, err)
				continue
			}
			e.logf("last %d lines of %s/%s:\n%s", lines, p.Name, c.Name, b)
		}
	}
}

// goModDir is the module cache directory of a module the repository requires.
func goModDir(root, module string) (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", module)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go list -m %s: %w", module, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// applyFile server-side-applies every document of a YAML file; ns is used for namespaced
// objects that name none.
func (e *testEnv) applyFile(ctx context.Context, path, ns string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return e.applyYAML(ctx, b, ns)
}

func (e *testEnv) applyYAML(ctx context.Context, b []byte, ns string) error {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if len(obj) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: obj}
		if err := e.apply(ctx, u, ns); err != nil {
			return fmt.Errorf("apply %s %s: %w", u.GetKind(), u.GetName(), err)
		}
	}
}

func (e *testEnv) resource(gvk schema.GroupVersionKind, ns string) (dynamic.ResourceInterface, error) {
	m, err := e.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		e.mapper.Reset()
		if m, err = e.mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			return nil, err
		}
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return e.dyn.Resource(m.Resource).Namespace(ns), nil
	}
	return e.dyn.Resource(m.Resource), nil
}

func (e *testEnv) apply(ctx context.Context, u *unstructured.Unstructured, ns string) error {
	if u.GetNamespace() != "" {
		ns = u.GetNamespace()
	}
	ri, err := e.resource(u.GroupVersionKind(), ns)
	if err != nil {
		return err
	}
	_, err = ri.Apply(ctx, u.GetName(), u, metav1.ApplyOptions{FieldManager: fieldManager, Force: true})
	return err
}

// get reads one object of any kind.
func (e *testEnv) get(ctx context.Context, gvk schema.GroupVersionKind, ns, name string) (*unstructured.Unstructured, error) {
	ri, err := e.resource(gvk, ns)
	if err != nil {
		return nil, err
	}
	return ri.Get(ctx, name, metav1.GetOptions{})
}

func (e *testEnv) waitCRDsEstablished(ctx context.Context) error {
	gvk := schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"}
	ri, err := e.resource(gvk, "")
	if err != nil {
		return err
	}
	return e.n.waitFor("CRDs established", time.Minute, func() error {
		list, err := ri.List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, crd := range list.Items {
			conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
			ok := false
			for _, c := range conds {
				cm, _ := c.(map[string]any)
				if cm["type"] == "Established" && cm["status"] == "True" {
					ok = true
				}
			}
			if !ok {
				return fmt.Errorf("CRD %s not established", crd.GetName())
			}
		}
		return nil
	})
}

// waitDeploymentReady waits until every replica of the Deployment's current revision is
// updated and available, and no old replica is left.
func (e *testEnv) waitDeploymentReady(ctx context.Context, name string, timeout time.Duration) error {
	return e.n.waitFor("deployment "+name+" ready", timeout, func() error {
		d, err := e.kube.AppsV1().Deployments(testNamespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		return deploymentDone(d)
	})
}

func deploymentDone(d *appsv1.Deployment) error {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	if s.ObservedGeneration < d.Generation || s.UpdatedReplicas != want || s.AvailableReplicas != want || s.Replicas != want {
		return fmt.Errorf("deployment %s: want %d, updated %d, available %d, total %d", d.Name, want, s.UpdatedReplicas, s.AvailableReplicas, s.Replicas)
	}
	return nil
}

// readyPods lists the Ready, not terminating Pods with the label selector.
func (e *testEnv) readyPods(ctx context.Context, selector string) ([]corev1.Pod, error) {
	list, err := e.kube.CoreV1().Pods(testNamespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, err
	}
	var ready []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				ready = append(ready, p)
			}
		}
	}
	return ready, nil
}

func (e *testEnv) scale(ctx context.Context, name string, replicas int32) error {
	patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, replicas)
	_, err := e.kube.AppsV1().Deployments(testNamespace).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	return err
}

// helmUpgrade upgrades the release with the test values merged with overrides.
func (e *testEnv) helmUpgrade(ctx context.Context, overrides map[string]any) error {
	vals := chartutil.CoalesceTables(overrides, deepCopyMap(e.values))
	up := action.NewUpgrade(e.helm)
	up.Namespace = testNamespace
	up.Timeout = 3 * time.Minute
	_, err := up.RunWithContext(ctx, releaseName, e.chart, vals)
	return err
}

func deepCopyMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		if sub, ok := v.(map[string]any); ok {
			out[k] = deepCopyMap(sub)
		} else {
			out[k] = v
		}
	}
	return out
}

// removeWorkloads deletes the test namespace and waits for its Pods to go, so that the
// kubelet tears down their networks and volumes while it still runs.
func (e *testEnv) removeWorkloads(logf func(string, ...any)) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t0 := time.Now()
	if err := e.kube.CoreV1().Namespaces().Delete(ctx, testNamespace, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		logf("delete namespace %s: %v", testNamespace, err)
		return
	}
	for ctx.Err() == nil {
		pods, err := e.kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err != nil {
			logf("list pods: %v", err)
			return
		}
		if len(pods.Items) == 0 {
			logf("all Pods gone %.1fs after deleting namespace %s", time.Since(t0).Seconds(), testNamespace)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	logf("Pods still present after %s; the teardown removes their containers", time.Since(t0))
}
