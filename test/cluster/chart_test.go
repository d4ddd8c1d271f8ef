package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const simSelector = "app=vllm-llama3-8b"

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// podIPs maps Ready sim Pod names to their IPs.
func (e *testEnv) simIPs(ctx context.Context, t *testing.T) map[string]string {
	t.Helper()
	pods, err := e.readyPods(ctx, simSelector)
	if err != nil {
		t.Fatal(err)
	}
	ips := map[string]string{}
	for _, p := range pods {
		ips[p.Name] = p.Status.PodIP
	}
	return ips
}

// eventually retries f every 200 ms until it returns nil or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	start := time.Now()
	for {
		err := f()
		if err == nil {
			t.Logf("%s after %.1fs", what, time.Since(start).Seconds())
			return
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: not after %s: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestStreamedChat streams a chat completion from a sim Pod through Envoy's Service.
func TestStreamedChat(t *testing.T) {
	e := requireCluster(t)
	ctx := testCtx(t, time.Minute)
	r, err := e.chat(ctx, baseModel, "Say hello in five words.", true, map[string]string{"x-gateway-inference-objective": "interactive"})
	if err != nil {
		t.Fatal(err)
	}
	if r.status != 200 || !r.done || r.chunks < 2 {
		t.Fatalf("status %d, %d chunks, [DONE] %v: %s", r.status, r.chunks, r.done, r.body)
	}
	if _, ok := e.simIPs(ctx, t)[r.instance]; !ok {
		t.Fatalf("x-sim-instance %q is not a Ready sim Pod", r.instance)
	}
	t.Logf("%d chunks from %s via %s", r.chunks, r.instance, r.upstream)
}

// TestModelRewrite asks for the virtual model of examples/kubernetes/inferencepool.yaml's
// InferenceModelRewrite: the sim serves the adapter food-review-1, the client sees its own name.
func TestModelRewrite(t *testing.T) {
	e := requireCluster(t)
	ctx := testCtx(t, time.Minute)
	r, err := e.chat(ctx, "food-review", "Review: the pasta was cold.", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if got := r.header.Get("x-sim-model"); got != "food-review-1" {
		t.Fatalf("sim served model %q, want the rewrite target food-review-1", got)
	}
	var body struct {
		Model string `json:"model"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil || body.Model != "food-review" {
		t.Fatalf("client sees model %q (%v), want food-review", body.Model, err)
	}
}

// TestErrors: an unknown model gets 404 and a malformed body 400, both OpenAI-style JSON.
func TestErrors(t *testing.T) {
	e := requireCluster(t)
	ctx := testCtx(t, time.Minute)
	r, err := e.chat(ctx, "no-such-model", "hi", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.status != http.StatusNotFound || !isJSONError(r.body) {
		t.Fatalf("unknown model: status %d, body %s; want 404 with a JSON error", r.status, r.body)
	}
	r, err = e.post(ctx, "/v1/chat/completions", []byte(`{"model": "x", "messages": [`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.status != http.StatusBadRequest || !isJSONError(r.body) {
		t.Fatalf("malformed body: status %d, body %s; want 400 with a JSON error", r.status, r.body)
	}
}

// TestDestinationHonoured: Envoy sends each request to the endpoint the picker named in
// x-gateway-destination-endpoint; the sim that answers (x-sim-instance, its Pod name) is the
// Pod at the upstream address Envoy reports.
func TestDestinationHonoured(t *testing.T) {
	e := requireCluster(t)
	ctx := testCtx(t, 2*time.Minute)
	ips := e.simIPs(ctx, t)
	seen := map[string]int{}
	for i := 0; i < 20; i++ {
		r, err := e.chat(ctx, baseModel, fmt.Sprintf("question %d about invoices", i), false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.status != 200 {
			t.Fatalf("request %d: status %d: %s", i, r.status, r.body)
		}
		host, _, err := net.SplitHostPort(r.upstream)
		if err != nil {
			t.Fatalf("request %d: x-infergw-upstream %q: %v", i, r.upstream, err)
		}
		if ips[r.instance] != host {
			t.Fatalf("request %d: Envoy's upstream %s is not the Pod that answered (%s at %s)", i, r.upstream, r.instance, ips[r.instance])
		}
		seen[r.instance]++
	}
	t.Logf("answers per Pod: %v", seen)
}

// TestPickerMetrics scrapes the picker Pod's /metrics and finds the requests of the tests
// above and the pool's Ready Pods.
func TestPickerMetrics(t *testing.T) {
	e := requireCluster(t)
	ctx := testCtx(t, time.Minute)
	pickers, err := e.readyPods(ctx, "app.kubernetes.io/component=picker")
	if err != nil || len(pickers) == 0 {
		t.Fatalf("picker Pods: %v, %v", pickers, err)
	}
	resp, err := httpClient.Get(fmt.Sprintf("http://%s:9090/metrics", pickers[0].Status.PodIP))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	requests := sumMetric(string(b), "inference_objective_request_total")
	ready := sumMetric(string(b), "inference_pool_ready_pods")
	if requests < 1 || ready != 2 {
		t.Fatalf("inference_objective_request_total %v, inference_pool_ready_pods %v; want >= 1 and 2", requests, ready)
	}
	t.Logf("picker %s: inference_objective_request_total %v, inference_pool_ready_pods %v", pickers[0].Name, requests, ready)
}

// sumMetric adds the samples of one metric family in Prometheus text.
func sumMetric(text, name string) float64 {
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

func conditions(u *unstructured.Unstructured, path ...string) map[string]string {
	out := map[string]string{}
	conds, _, _ := unstructured.NestedSlice(u.Object, path...)
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok {
			out[fmt.Sprint(m["type"])] = fmt.Sprintf("%v/%v", m["status"], m["reason"])
		}
	}
	return out
}

// TestStatusConditions reads the InferencePool's and HTTPRoute's status as the API server
// stores it: the control plane accepted both and resolved their references.
func TestStatusConditions(t *testing.T) {
	e := requireCluster(t)
	ctx := testCtx(t, time.Minute)
	poolGVK := schema.GroupVersionKind{Group: "inference.networking.k8s.io", Version: "v1", Kind: "InferencePool"}
	routeGVK := schema.GroupVersionKind{Group: "gateway.networking.k8s.io", Version: "v1", Kind: "HTTPRoute"}
	eventually(t, 30*time.Second, "pool and route status written", func() error {
		pool, err := e.get(ctx, poolGVK, testNamespace, poolName)
		if err != nil {
			return err
		}
		parents, _, _ := unstructured.NestedSlice(pool.Object, "status", "parents")
		if len(parents) == 0 {
			return fmt.Errorf("InferencePool has no status.parents")
		}
		pc := conditions(&unstructured.Unstructured{Object: parents[0].(map[string]any)}, "conditions")
		if pc["Accepted"] != "True/Accepted" || pc["ResolvedRefs"] != "True/ResolvedRefs" {
			return fmt.Errorf("InferencePool conditions %v", pc)
		}
		route, err := e.get(ctx, routeGVK, testNamespace, "llm-route")
		if err != nil {
			return err
		}
		rparents, _, _ := unstructured.NestedSlice(route.Object, "status", "parents")
		if len(rparents) == 0 {
			return fmt.Errorf("HTTPRoute has no status.parents")
		}
		rp := rparents[0].(map[string]any)
		rc := conditions(&unstructured.Unstructured{Object: rp}, "conditions")
		if rc["Accepted"] != "True/Accepted" || rc["ResolvedRefs"] != "True/ResolvedRefs" {
			return fmt.Errorf("HTTPRoute conditions %v", rc)
		}
		if rp["controllerName"] != "infergw.dev/gateway-controller" {
			return fmt.Errorf("HTTPRoute status written by %v", rp["controllerName"])
		}
		t.Logf("InferencePool %v; HTTPRoute %v", pc, rc)
		return nil
	})
}

// TestProbesReadyOnlyWhenServing: every Ready Pod of the installation answers on each port
// it declares, and a model server that does not serve its port is never Ready and gets no
// traffic.
func TestProbesReadyOnlyWhenServing(t *testing.T) {
	e := requireCluster(t)
	ctx := testCtx(t, 2*time.Minute)
	pods, err := e.readyPods(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods {
		for _, c := range p.Spec.Containers {
			for _, port := range c.Ports {
				addr := net.JoinHostPort(p.Status.PodIP, strconv.Itoa(int(port.ContainerPort)))
				conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
				if err != nil {
					t.Errorf("Pod %s is Ready but port %s (%s) does not answer: %v", p.Name, port.Name, addr, err)
					continue
				}
				conn.Close()
			}
		}
	}
	// A sim labelled for the pool that listens on the wrong port: its readiness probe (GET
	// /health on 8000) must keep it out of the pool.
	bad := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "sim-wrong-port", Namespace: testNamespace,
			Labels: map[string]string{"app": "vllm-llama3-8b", "inference.networking.k8s.io/engine-type": "vllm"}},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken:  new(bool),
			TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{
				Name: "sim", Image: "localhost/infergw/sim:" + e.n.imageTag, ImagePullPolicy: corev1.PullNever,
				Args:  []string{"--addr", "0.0.0.0:8001", "--model", baseModel, "--name", "sim-wrong-port"},
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8000}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/health", Port: intstr.FromString("http")}},
					PeriodSeconds: 1, FailureThreshold: 1},
			}},
		},
	}
	if _, err := e.kube.CoreV1().Pods(testNamespace).Create(ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.kube.CoreV1().Pods(testNamespace).Delete(context.Background(), bad.Name, metav1.DeleteOptions{})
	})
	eventually(t, time.Minute, "sim-wrong-port running", func() error {
		p, err := e.kube.CoreV1().Pods(testNamespace).Get(ctx, bad.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cs := range p.Status.ContainerStatuses {
			if cs.State.Running != nil {
				return nil
			}
		}
		return fmt.Errorf("phase %s", p.Status.Phase)
	})
	// Several probe periods, with traffic: never Ready, never chosen.
	for i := 0; i < 20; i++ {
		p, err := e.kube.CoreV1().Pods(testNamespace).Get(ctx, bad.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				t.Fatalf("sim-wrong-port is Ready although nothing listens on its probed port")
			}
		}
		r, err := e.chat(ctx, baseModel, fmt.Sprintf("probe test %d", i), false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.status != 200 || r.instance == bad.Name {
			t.Fatalf("request %d: status %d from %q: %s", i, r.status, r.instance, r.body)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestModelPodDeleted deletes a model server Pod: no request goes to it after it is gone, and
// the Pod the Deployment starts in its place gets traffic.
func TestModelPodDeleted(t *testing.T) {
	e := requireCluster(t)
	ctx := testCtx(t, 3*time.Minute)
	before := e.simIPs(ctx, t)
	if len(before) != 2 {
		t.Fatalf("want 2 Ready sims, have %v", before)
	}
	var victim string
	for name := range before {
		victim = name
		break
	}
	if err := e.kube.CoreV1().Pods(testNamespace).Delete(ctx, victim, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "deleted Pod "+victim+" gone", func() error {
		_, err := e.kube.CoreV1().Pods(testNamespace).Get(ctx, victim, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (%v)", err)
	})
	var replacement string
	eventually(t, time.Minute, "replacement sim Ready", func() error {
		now := e.simIPs(ctx, t)
		for name := range now {
			if _, old := before[name]; !old {
				replacement = name
			}
		}
		if len(now) != 2 || replacement == "" {
			return fmt.Errorf("ready sims %v", now)
		}
		return nil
	})
	i := 0
	eventually(t, time.Minute, "replacement "+replacement+" gets traffic", func() error {
		i++
		r, err := e.chat(ctx, baseModel, fmt.Sprintf("after the delete %d", i), false, nil)
		if err != nil {
			return err
		}
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		if r.instance == victim {
			t.Fatalf("request %d went to the deleted Pod %s", i, victim)
		}
		if r.instance != replacement {
			return fmt.Errorf("answered by %s", r.instance)
		}
		return nil
	})
}

// TestScaleUnderLoad scales the model Deployment 2 -> 4 -> 2 while a bounded load runs:
// the new Pods get traffic, the removed ones stop getting it, and no request fails.
func TestScaleUnderLoad(t *testing.T) {
	e := requireCluster(t)
	ctx := testCtx(t, 4*time.Minute)
	stats, stop := e.runLoad(ctx, 2)
	defer stop()
	time.Sleep(2 * time.Second)
	if err := e.scale(ctx, simDeployment, 4); err != nil {
		t.Fatal(err)
	}
	if err := e.waitDeploymentReady(ctx, simDeployment, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	four := e.simIPs(ctx, t)
	eventually(t, time.Minute, "all 4 sims answering", func() error {
		seen := stats.seen()
		for name := range four {
			if seen[name] == 0 {
				return fmt.Errorf("%s has had no request (%v)", name, seen)
			}
		}
		return nil
	})
	if err := e.scale(ctx, simDeployment, 2); err != nil {
		t.Fatal(err)
	}
	if err := e.waitDeploymentReady(ctx, simDeployment, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	two := e.simIPs(ctx, t)
	base := stats.seen()
	time.Sleep(5 * time.Second)
	stop()
	after := stats.seen()
	for name, c := range after {
		if _, kept := two[name]; !kept && c != base[name] {
			t.Errorf("removed Pod %s answered %d requests after the scale-down finished", name, c-base[name])
		}
	}
	t.Logf("load: %s", stats)
	if f := stats.failed(); f > 0 {
		t.Errorf("%d requests failed while scaling 2 -> 4 -> 2: %s", f, stats)
	}
}

// TestPickerUpgradeUnderLoad runs two pickers behind a PodDisruptionBudget and rolls the
// pickers and the control plane with `helm upgrade` while a bounded load runs, once with the
// example's FailClose pool (a request may only fail as a clean JSON 503; the count is logged)
// and once with the pool switched to FailOpen (no request may fail).
func TestPickerUpgradeUnderLoad(t *testing.T) {
	e := requireCluster(t)
	ctx := testCtx(t, 8*time.Minute)
	two := map[string]any{"picker": map[string]any{"replicas": 2}}
	if err := e.helmUpgrade(ctx, two); err != nil {
		t.Fatalf("helm upgrade picker.replicas=2: %v", err)
	}
	if err := e.waitDeploymentReady(ctx, releaseName+"-picker", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	pdb, err := e.kube.PolicyV1().PodDisruptionBudgets(testNamespace).Get(ctx, releaseName+"-picker", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("picker PodDisruptionBudget: %v", err)
	}
	t.Logf("picker PDB maxUnavailable %v", pdb.Spec.MaxUnavailable)
	for i, mode := range []string{"FailClose", "FailOpen"} {
		if mode != "FailClose" {
			patch := fmt.Sprintf(`{"spec":{"endpointPickerRef":{"failureMode":%q}}}`, mode)
			gvk := schema.GroupVersionKind{Group: "inference.networking.k8s.io", Version: "v1", Kind: "InferencePool"}
			ri, err := e.resource(gvk, testNamespace)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ri.Patch(ctx, poolName, types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: fieldManager}); err != nil {
				t.Fatalf("set failureMode %s: %v", mode, err)
			}
			time.Sleep(2 * time.Second) // the control plane pushes the new picker cluster to Envoy
		}
		stats := e.rollUnderLoad(ctx, t, i+1)
		t.Logf("%s pool, load during the upgrade: %s", mode, stats)
		stats.mu.Lock()
		if len(stats.bad) > 0 {
			t.Errorf("%s: answers that are not clean JSON errors: %v", mode, stats.bad)
		}
		for k, c := range stats.failures {
			if mode == "FailOpen" || k != "503" {
				t.Errorf("%s: %d requests failed with %s", mode, c, k)
			}
		}
		if stats.ok == 0 {
			t.Errorf("%s: no request succeeded during the upgrade", mode)
		}
		stats.mu.Unlock()
	}
}

// rollUnderLoad changes a pod annotation of the pickers and the control plane with `helm
// upgrade` while a bounded load runs, and waits until the old Pods are gone.
func (e *testEnv) rollUnderLoad(ctx context.Context, t *testing.T, round int) *loadStats {
	t.Helper()
	oldPickers, _ := e.readyPods(ctx, "app.kubernetes.io/component=picker")
	oldCP, _ := e.readyPods(ctx, "app.kubernetes.io/component=controlplane")
	stats, stop := e.runLoad(ctx, 2)
	defer stop()
	time.Sleep(3 * time.Second)
	ann := map[string]any{"infergw.dev/rolled": strconv.Itoa(round)}
	roll := map[string]any{
		"picker":       map[string]any{"replicas": 2, "podAnnotations": ann},
		"controlPlane": map[string]any{"podAnnotations": ann},
	}
	t0 := time.Now()
	if err := e.helmUpgrade(ctx, roll); err != nil {
		t.Fatalf("helm upgrade (roll %d): %v", round, err)
	}
	for _, d := range []string{releaseName + "-picker", releaseName + "-controlplane"} {
		if err := e.waitDeploymentReady(ctx, d, 3*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	// The old Pods drain for their preStop and grace, with load.
	eventually(t, 2*time.Minute, "old picker and control plane Pods gone", func() error {
		for _, p := range append(oldPickers, oldCP...) {
			if _, err := e.kube.CoreV1().Pods(testNamespace).Get(ctx, p.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("%s still there", p.Name)
			}
		}
		return nil
	})
	t.Logf("roll %d of %d pickers and %d control plane Pods took %.1fs", round, len(oldPickers), len(oldCP), time.Since(t0).Seconds())
	time.Sleep(3 * time.Second)
	stop()
	return stats
}

// TestRBACSufficient runs last: no request of the chart's ServiceAccounts was refused by the
// API server during the whole run (the audit log records each with its status code), and no
// container log of the installation mentions "forbidden".
func TestRBACSufficient(t *testing.T) {
	e := requireCluster(t)
	f, err := os.Open(e.n.auditLog())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	users := map[string]int{}
	used := map[string]bool{} // "apiGroup resource[/subresource] verb" the ServiceAccounts called
	var forbidden []string
	for sc.Scan() {
		var ev struct {
			User struct {
				Username string `json:"username"`
			} `json:"user"`
			Verb       string `json:"verb"`
			RequestURI string `json:"requestURI"`
			ObjectRef  struct {
				Resource    string `json:"resource"`
				Subresource string `json:"subresource"`
				APIGroup    string `json:"apiGroup"`
			} `json:"objectRef"`
			ResponseStatus struct {
				Code int `json:"code"`
			} `json:"responseStatus"`
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("audit log line: %v", err)
		}
		users[ev.User.Username]++
		res := ev.ObjectRef.Resource
		if ev.ObjectRef.Subresource != "" {
			res += "/" + ev.ObjectRef.Subresource
		}
		used[ev.ObjectRef.APIGroup+" "+res+" "+ev.Verb] = true
		if ev.ResponseStatus.Code == http.StatusForbidden {
			forbidden = append(forbidden, fmt.Sprintf("%s %s %s", ev.User.Username, ev.Verb, ev.RequestURI))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, sa := range []string{"controlplane", "picker"} {
		if users["system:serviceaccount:"+testNamespace+":"+releaseName+"-"+sa] == 0 {
			t.Errorf("the audit log has no request of the %s ServiceAccount: the check would see nothing", sa)
		}
	}
	if len(forbidden) > 0 {
		t.Errorf("%d requests of the chart's ServiceAccounts were forbidden:\n%s", len(forbidden), strings.Join(forbidden, "\n"))
	}
	t.Logf("audited requests per user: %v", users)
	// "No more": the grants of the chart's roles that no request of this run used. Reported,
	// not failed: some are for paths a short run does not take (e.g. Events on errors).
	roles, err := e.kube.RbacV1().ClusterRoles().List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + releaseName})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range roles.Items {
		var unused []string
		for _, rule := range r.Rules {
			for _, g := range rule.APIGroups {
				for _, res := range rule.Resources {
					for _, v := range rule.Verbs {
						if !used[g+" "+res+" "+v] {
							unused = append(unused, fmt.Sprintf("%s %s/%s", v, g, res))
						}
					}
				}
			}
		}
		t.Logf("ClusterRole %s: grants not used in this run: %v", r.Name, unused)
	}
	logs, _ := filepath.Glob(filepath.Join(e.n.path("pod-logs"), testNamespace+"_*", "*", "*.log"))
	if len(logs) == 0 {
		t.Errorf("no container logs under %s", e.n.path("pod-logs"))
	}
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(strings.ToLower(line), "forbidden") {
				t.Errorf("%s: %s", l, line)
			}
		}
	}
}
