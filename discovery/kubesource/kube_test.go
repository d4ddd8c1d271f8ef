package kubesource

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	infv1 "github.com/infergw/infergw/api/v1"
	"github.com/infergw/infergw/discovery"
	dt "github.com/infergw/infergw/discovery/discoverytest"
)

func TestSlimPodKeepsOnlyWhatSnapshotsUse(t *testing.T) {
	now := metav1.Now()
	pod := dt.Pod("ns", "p", "10.0.0.1", true, map[string]string{"app": "m"})
	pod.UID, pod.ResourceVersion, pod.DeletionTimestamp = "uid-1", "42", &now
	pod.Annotations = map[string]string{"big": strings.Repeat("x", 1000)}
	pod.OwnerReferences = []metav1.OwnerReference{{Name: "rs"}}
	pod.Spec.Containers = []corev1.Container{{Name: "vllm", Image: "vllm", Args: []string{"--model", "m"}}}
	pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, Message: "ok"})

	out, err := slimPod(pod)
	if err != nil {
		t.Fatal(err)
	}
	slim := out.(*corev1.Pod)
	if slim.Name != "p" || slim.Namespace != "ns" || slim.UID != "uid-1" || slim.ResourceVersion != "42" ||
		slim.Labels["app"] != "m" || slim.DeletionTimestamp == nil || slim.Status.PodIP != "10.0.0.1" {
		t.Errorf("identity, labels, deletion or IP lost: %+v", slim)
	}
	if len(slim.Annotations) != 0 || len(slim.OwnerReferences) != 0 || len(slim.Spec.Containers) != 0 {
		t.Errorf("slim pod kept annotations/owners/spec: %+v", slim)
	}
	if len(slim.Status.Conditions) != 1 || slim.Status.Conditions[0].Type != corev1.PodReady || slim.Status.Conditions[0].Status != corev1.ConditionTrue {
		t.Errorf("conditions = %+v, want only Ready=True", slim.Status.Conditions)
	}
	// A tombstone or anything else passes through untouched.
	tomb := toolscache.DeletedFinalStateUnknown{Key: "ns/p"}
	if got, err := slimPod(tomb); err != nil || got != any(tomb) {
		t.Errorf("slimPod(tombstone) = %v, %v", got, err)
	}
}

func TestStripMetadata(t *testing.T) {
	pool := dt.Pool("ns", "p", map[string]string{"a": "b"}, 8000)
	pool.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	pool.Annotations = map[string]string{lastAppliedAnnotation: "{...}", "keep": "me"}
	if _, err := stripMetadata(pool); err != nil {
		t.Fatal(err)
	}
	if pool.ManagedFields != nil || len(pool.Annotations) != 1 || pool.Annotations["keep"] != "me" {
		t.Errorf("after strip: managedFields=%v annotations=%v", pool.ManagedFields, pool.Annotations)
	}
}

func TestPodChanged(t *testing.T) {
	base := dt.Pod("ns", "p", "10.0.0.1", true, map[string]string{"app": "m"})
	base.ResourceVersion = "1"
	mod := func(f func(*corev1.Pod)) *corev1.Pod {
		p := base.DeepCopy()
		p.ResourceVersion = "2"
		f(p)
		return p
	}
	now := metav1.Now()
	tests := []struct {
		name string
		new  *corev1.Pod
		want bool
	}{
		{"resourceVersion only", mod(func(*corev1.Pod) {}), false},
		{"annotation only", mod(func(p *corev1.Pod) { p.Annotations = map[string]string{"x": "y"} }), false},
		{"IP", mod(func(p *corev1.Pod) { p.Status.PodIP = "10.0.0.2" }), true},
		{"readiness", mod(func(p *corev1.Pod) { p.Status.Conditions[0].Status = corev1.ConditionFalse }), true},
		{"labels", mod(func(p *corev1.Pod) { p.Labels = map[string]string{"app": "n"} }), true},
		{"deletion", mod(func(p *corev1.Pod) { p.DeletionTimestamp = &now }), true},
	}
	for _, tc := range tests {
		if got := podChanged(base, tc.new); got != tc.want {
			t.Errorf("%s: podChanged = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestSpecChanged(t *testing.T) {
	base := dt.WithGeneration(dt.Pool("ns", "p", map[string]string{"a": "b"}, 8000), 1)
	statusOnly := base.DeepCopy()
	statusOnly.ResourceVersion = "9"
	statusOnly.Status.Parents = []infv1.ParentStatus{{ParentRef: infv1.ParentReference{Kind: "Gateway", Name: "main", Namespace: "gw"}}}
	newGen := dt.WithGeneration(base.DeepCopy(), 2)
	relabel := base.DeepCopy()
	relabel.Labels = map[string]string{"x": "y"}
	noGen := dt.Service("ns", "s")
	for _, tc := range []struct {
		name     string
		old, new any
		want     bool
	}{
		{"status only", base, statusOnly, false},
		{"new generation", base, newGen, true},
		{"labels", base, relabel, true},
		{"object without generation", noGen, noGen.DeepCopy(), true},
	} {
		if got := specChanged(tc.old, tc.new); got != tc.want {
			t.Errorf("%s: specChanged = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestSameSnapshotContent(t *testing.T) {
	sel := map[string]string{"app": "m"}
	objs := func(ip string, gen int64) discovery.Objects {
		pool := dt.WithGeneration(dt.Pool("ns", "pool", sel, 8000), gen)
		pool.UID = "pool-uid"
		return discovery.Objects{
			Gateways:   []*gwapiv1.Gateway{dt.Gateway("gw", "main", "infergw")},
			HTTPRoutes: nil,
			Pools:      []*infv1.InferencePool{pool},
			Services:   []*corev1.Service{dt.Service("ns", "pool-epp")},
			Pods:       []*corev1.Pod{dt.Pod("ns", "p0", ip, true, sel)},
		}
	}
	a := discovery.Build(1, objs("10.0.0.1", 1), "infergw")
	if !sameSnapshotContent(a, discovery.Build(2, objs("10.0.0.1", 1), "infergw")) {
		t.Error("equal objects built twice differ")
	}
	if sameSnapshotContent(a, discovery.Build(2, objs("10.0.0.2", 1), "infergw")) {
		t.Error("a new endpoint IP was not noticed")
	}
	if sameSnapshotContent(a, discovery.Build(2, objs("10.0.0.1", 2), "infergw")) {
		t.Error("a new pool generation was not noticed")
	}
	statusWritten := objs("10.0.0.1", 1)
	statusWritten.Pools[0].ResourceVersion = "77"
	statusWritten.Pools[0].Status.Parents = []infv1.ParentStatus{{ParentRef: infv1.ParentReference{Kind: "Gateway", Name: "main", Namespace: "gw"}}}
	if !sameSnapshotContent(a, discovery.Build(2, statusWritten, "infergw")) {
		t.Error("a status-only change of a pool counted as new content")
	}
	svcChanged := objs("10.0.0.1", 1)
	svcChanged.Services[0].ResourceVersion = "5"
	if sameSnapshotContent(a, discovery.Build(2, svcChanged, "infergw")) {
		t.Error("a Service change (no generation, new resourceVersion) was not noticed")
	}
	noPods := objs("10.0.0.1", 1)
	noPods.Pods = nil
	if sameSnapshotContent(a, discovery.Build(2, noPods, "infergw")) {
		t.Error("losing every endpoint was not noticed")
	}
	// The Gateway API objects the model reads count too (a rotated certificate, a new
	// ReferenceGrant, a moved endpoint of a Service backend).
	withGrant := objs("10.0.0.1", 1)
	withGrant.ReferenceGrants = []*gwapiv1.ReferenceGrant{{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "g", Generation: 1}}}
	if sameSnapshotContent(a, discovery.Build(2, withGrant, "infergw")) {
		t.Error("a new ReferenceGrant was not noticed")
	}
	withSlice := objs("10.0.0.1", 1)
	withSlice.EndpointSlices = []*discoveryv1.EndpointSlice{{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pool-epp-x",
		Labels: map[string]string{discoveryv1.LabelServiceName: "pool-epp"}, ResourceVersion: "1"}}}
	b := discovery.Build(2, withSlice, "infergw")
	if sameSnapshotContent(a, b) {
		t.Error("a new EndpointSlice of a kept Service was not noticed")
	}
	moved := objs("10.0.0.1", 1)
	moved.EndpointSlices = []*discoveryv1.EndpointSlice{withSlice.EndpointSlices[0].DeepCopy()}
	moved.EndpointSlices[0].ResourceVersion = "2"
	if sameSnapshotContent(b, discovery.Build(3, moved, "infergw")) {
		t.Error("an updated EndpointSlice was not noticed")
	}
}

// TestDropInvalidLogsOncePerVersion checks that an invalid pool is left out, logged once
// per resourceVersion, and logged again after it is fixed and broken anew.
func TestDropInvalidLogsOncePerVersion(t *testing.T) {
	var logs bytes.Buffer
	s := &KubeSource{log: slog.New(slog.NewTextHandler(&logs, nil)), invalid: newInvalidLog()}
	var err error
	if s.metrics, err = newKubeMetrics(nil); err != nil {
		t.Fatal(err)
	}
	good := dt.Pool("ns", "good", map[string]string{"a": "b"}, 8000)
	bad := dt.Pool("ns", "bad", map[string]string{"a": "b"}, 8000)
	bad.Spec.TargetPorts = nil
	bad.ResourceVersion = "1"
	run := func(pools ...*infv1.InferencePool) []string {
		objs := s.dropInvalid(discovery.Objects{Pools: pools})
		var names []string
		for _, p := range objs.Pools {
			names = append(names, p.Name)
		}
		return names
	}
	if got := run(good, bad); len(got) != 1 || got[0] != "good" {
		t.Fatalf("kept %v, want [good]", got)
	}
	run(good, bad)
	if n := strings.Count(logs.String(), "invalid object"); n != 1 {
		t.Fatalf("logged %d times for one bad version, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "name=bad") || !strings.Contains(logs.String(), "spec.targetPorts") {
		t.Errorf("log line lacks the object or the field: %s", logs.String())
	}
	run(good) // fixed (or deleted)
	run(good, bad)
	if n := strings.Count(logs.String(), "invalid object"); n != 2 {
		t.Errorf("logged %d times after break-fix-break, want 2", n)
	}
}

func TestKubeStoreHandlesTombstones(t *testing.T) {
	st := newKubeStore()
	p := dt.Pod("ns", "p", "10.0.0.1", true, map[string]string{"app": "m"})
	if !st.put(st.pods, p) || len(st.objects().Pods) != 1 {
		t.Fatal("put did not store the pod")
	}
	if st.put(st.pods, "not an object") {
		t.Error("put accepted a non-object")
	}
	if !st.remove(st.pods, toolscache.DeletedFinalStateUnknown{Key: "ns/p", Obj: p}) || len(st.objects().Pods) != 0 {
		t.Error("remove(tombstone) did not delete the pod")
	}
}

func TestNewKubeSourceRejectsBadOptions(t *testing.T) {
	if _, err := NewKubeSource(KubeOptions{}, nil); err == nil || !strings.Contains(err.Error(), "RESTConfig is required") {
		t.Errorf("nil RESTConfig: %v", err)
	}
	cfg := &rest.Config{Host: "http://127.0.0.1:1"}
	if _, err := NewKubeSource(KubeOptions{RESTConfig: cfg, Namespaces: []string{"a", ""}}, nil); err == nil || !strings.Contains(err.Error(), "empty namespace") {
		t.Errorf("empty namespace: %v", err)
	}
	reg := prometheus.NewRegistry()
	if _, err := NewKubeSource(KubeOptions{RESTConfig: cfg, Registerer: reg}, nil); err != nil {
		t.Fatalf("first source: %v", err)
	}
	if _, err := NewKubeSource(KubeOptions{RESTConfig: cfg, Registerer: reg}, nil); err == nil || !strings.Contains(err.Error(), "already registered") {
		t.Errorf("second source on the same registry: %v", err)
	}
}

// TestKubeSourceRunFailsWithoutCRDs runs the source against a real HTTP server that serves
// an API with none of the needed resources (a cluster without the CRDs): Run must return a
// clear error instead of waiting forever, and leave no goroutines behind.
func TestKubeSourceRunFailsWithoutCRDs(t *testing.T) {
	before := runtime.NumGoroutine()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api":
			_, _ = w.Write([]byte(`{"kind":"APIVersions","versions":["v1"]}`))
		case "/apis":
			_, _ = w.Write([]byte(`{"kind":"APIGroupList","apiVersion":"v1","groups":[]}`))
		case "/api/v1":
			// Core resources exist; the Gateway API and infergw groups do not.
			_, _ = w.Write([]byte(`{"kind":"APIResourceList","groupVersion":"v1","resources":[` +
				`{"name":"pods","singularName":"pod","namespaced":true,"kind":"Pod","verbs":["get","list","watch"]},` +
				`{"name":"services","singularName":"service","namespaced":true,"kind":"Service","verbs":["get","list","watch"]}]}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	src, err := NewKubeSource(KubeOptions{RESTConfig: &rest.Config{Host: srv.URL}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = src.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "is its CRD installed?") {
		t.Fatalf("Run = %v, want an error naming the missing resource", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Run only returned at the deadline")
	}
	if err := src.Run(ctx); err == nil || !strings.Contains(err.Error(), "Run called twice") {
		t.Errorf("second Run = %v", err)
	}
	srv.CloseClientConnections()
	kubeWaitGoroutines(t, before)
}

// kubeWaitGoroutines waits for the goroutine count to return to (about) a baseline.
func kubeWaitGoroutines(t *testing.T, baseline int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline+2 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines: %d, baseline %d\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BenchmarkSameSnapshotContent1000 measures the check every rebuild makes before publishing:
// 1,000 pools × 10 endpoints and 1,000 routes, equal content (the worst case: nothing
// differs, so everything is compared).
func BenchmarkSameSnapshotContent1000(b *testing.B) {
	build := func(version uint64) *discovery.Snapshot {
		objs := discovery.Objects{Gateways: []*gwapiv1.Gateway{dt.Gateway("gw", "main", "infergw")}}
		for i := range 1000 {
			name := fmt.Sprintf("pool-%04d", i)
			sel := map[string]string{"app": name}
			objs.Pools = append(objs.Pools, dt.WithGeneration(dt.Pool("ns", name, sel, 8000), 1))
			objs.Services = append(objs.Services, dt.Service("ns", name+"-epp"))
			objs.HTTPRoutes = append(objs.HTTPRoutes, dt.WithGeneration(dt.Route("ns", "r-"+name, "gw", "main", name), 1))
			for j := range 10 {
				objs.Pods = append(objs.Pods, dt.Pod("ns", fmt.Sprintf("%s-%d", name, j), fmt.Sprintf("10.%d.%d.%d", i/250, i%250, j), true, sel))
			}
		}
		return discovery.Build(version, objs, "infergw")
	}
	a, c := build(1), build(2)
	b.ReportAllocs()
	for b.Loop() {
		if !sameSnapshotContent(a, c) {
			b.Fatal("equal snapshots compared unequal")
		}
	}
}

func TestServiceAddresses(t *testing.T) {
	svc := &corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.80", ClusterIPs: []string{"10.96.0.80", "fd00::80"}}}
	got := ServiceAddresses(svc)
	if len(got) != 2 || got[0].Value != "10.96.0.80" || *got[0].Type != gwapiv1.IPAddressType || got[1].Value != "fd00::80" {
		t.Errorf("clusterIPs: %+v", got)
	}
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.7"}, {Hostname: "lb.example.com"}}
	got = ServiceAddresses(svc)
	if len(got) != 2 || got[0].Value != "203.0.113.7" || *got[1].Type != gwapiv1.HostnameAddressType || got[1].Value != "lb.example.com" {
		t.Errorf("load balancer: %+v", got)
	}
	if got := ServiceAddresses(&corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone}}); len(got) != 0 {
		t.Errorf("headless Service: %+v", got)
	}
}
