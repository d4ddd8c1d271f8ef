package discovery

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	infv1 "github.com/infergw/infergw/api/v1"
	infv1alpha2 "github.com/infergw/infergw/api/v1alpha2"
	dt "github.com/infergw/infergw/discovery/discoverytest"
)

func endpointNames(p *Pool) []string {
	var out []string
	for _, e := range p.Endpoints {
		out = append(out, e.Namespace+"/"+e.Name+"@"+e.IP)
	}
	return out
}

func poolByKey(t *testing.T, s *Snapshot, ns, name string) *Pool {
	t.Helper()
	for _, p := range s.Pools {
		if p.Namespace == ns && p.Name == name {
			return p
		}
	}
	t.Fatalf("pool %s/%s not in snapshot", ns, name)
	return nil
}

func TestBuildSelectsReadyPodsBySelectorAndNamespace(t *testing.T) {
	llama := map[string]string{"app": "llama"}
	terminating := dt.Pod("default", "llama-term", "10.0.0.9", true, llama)
	terminating.DeletionTimestamp = &metav1.Time{Time: time.Unix(1, 0)}
	noCondition := dt.Pod("default", "llama-nocond", "10.0.0.8", true, llama)
	noCondition.Status.Conditions = nil

	objs := Objects{
		Pools: []*infv1.InferencePool{
			dt.Pool("default", "llama", llama, 8000),
			dt.Pool("default", "two-labels", map[string]string{"app": "llama", "tier": "gold"}, 8000, 8001),
			dt.Pool("other", "llama", llama, 8000),
			dt.Pool("default", "nobody", map[string]string{"app": "absent"}, 8000),
		},
		Pods: []*corev1.Pod{
			dt.Pod("default", "llama-b", "10.0.0.2", true, map[string]string{"app": "llama", "tier": "gold"}),
			dt.Pod("default", "llama-a", "10.0.0.1", true, map[string]string{"app": "llama", "extra": "x"}),
			dt.Pod("default", "llama-notready", "10.0.0.3", false, llama),
			dt.Pod("default", "llama-noip", "", true, llama),
			terminating,
			noCondition,
			dt.Pod("other", "llama-x", "10.1.0.1", true, llama),
			dt.Pod("default", "mistral", "10.0.0.5", true, map[string]string{"app": "mistral"}),
		},
	}
	snap := Build(7, objs, "infergw")
	if snap.Version != 7 {
		t.Fatalf("version = %d, want 7", snap.Version)
	}
	cases := []struct {
		ns, name string
		want     []string
	}{
		{"default", "llama", []string{"default/llama-a@10.0.0.1", "default/llama-b@10.0.0.2"}},
		{"default", "two-labels", []string{"default/llama-b@10.0.0.2"}},
		{"other", "llama", []string{"other/llama-x@10.1.0.1"}},
		{"default", "nobody", nil},
	}
	for _, tc := range cases {
		got := endpointNames(poolByKey(t, snap, tc.ns, tc.name))
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("pool %s/%s endpoints (-want +got):\n%s", tc.ns, tc.name, diff)
		}
	}
	// Multiple target ports stay on the pool; endpoints carry the pod's labels.
	tl := poolByKey(t, snap, "default", "two-labels")
	if len(tl.Spec.TargetPorts) != 2 || tl.Endpoints[0].Labels["tier"] != "gold" {
		t.Errorf("two-labels pool: ports %v, labels %v", tl.Spec.TargetPorts, tl.Endpoints[0].Labels)
	}
	// Pools are sorted by namespace/name.
	var order []string
	for _, p := range snap.Pools {
		order = append(order, Key(p.Namespace, p.Name))
	}
	want := []string{"default/llama", "default/nobody", "default/two-labels", "other/llama"}
	if diff := cmp.Diff(want, order); diff != "" {
		t.Errorf("pool order (-want +got):\n%s", diff)
	}
}

func TestBuildSelectsGatewaysRoutesAndReferencedServices(t *testing.T) {
	objs := Objects{
		Gateways: []*gwapiv1.Gateway{
			dt.Gateway("gw", "main", "infergw"),
			dt.Gateway("default", "foreign", "istio"),
		},
		HTTPRoutes: []*gwapiv1.HTTPRoute{
			dt.Route("default", "to-main", "gw", "main", "llama", "svc:web"),
			dt.Route("default", "to-foreign", "default", "foreign", "llama", "svc:foreign-web"),
			dt.Route("default", "to-missing", "default", "missing", "llama"),
		},
		Pools: []*infv1.InferencePool{dt.Pool("default", "llama", map[string]string{"app": "llama"}, 8000)},
		Services: []*corev1.Service{
			dt.Service("default", "llama-epp"),
			dt.Service("default", "web"),
			dt.Service("default", "foreign-web"),
			dt.Service("default", "unrelated"),
			dt.Service("gw", "llama-epp"), // same name, wrong namespace
		},
		Objectives: []*infv1alpha2.InferenceObjective{
			{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "z"}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "a"}},
		},
		Rewrites: []*infv1alpha2.InferenceModelRewrite{{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "rw"}}},
	}
	snap := Build(1, objs, "infergw")

	keys := func(n int, f func(i int) string) []string {
		out := make([]string, 0, n)
		for i := 0; i < n; i++ {
			out = append(out, f(i))
		}
		return out
	}
	got := map[string][]string{
		"gateways":   keys(len(snap.Gateways), func(i int) string { return Key(snap.Gateways[i].Namespace, snap.Gateways[i].Name) }),
		"routes":     keys(len(snap.HTTPRoutes), func(i int) string { return Key(snap.HTTPRoutes[i].Namespace, snap.HTTPRoutes[i].Name) }),
		"services":   keys(len(snap.Services), func(i int) string { return Key(snap.Services[i].Namespace, snap.Services[i].Name) }),
		"objectives": keys(len(snap.Objectives), func(i int) string { return snap.Objectives[i].Name }),
		"rewrites":   keys(len(snap.Rewrites), func(i int) string { return snap.Rewrites[i].Name }),
	}
	want := map[string][]string{
		"gateways":   {"gw/main"},
		"routes":     {"default/to-main"},
		"services":   {"default/llama-epp", "default/web"},
		"objectives": {"a", "z"},
		"rewrites":   {"rw"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("snapshot contents (-want +got):\n%s", diff)
	}
}

func TestBuildIsDeterministicAndDoesNotModifyInput(t *testing.T) {
	objs := benchObjects(20, 5, 20)
	before := fmt.Sprint(len(objs.Pods), objs.Pods[0].Name, objs.Pools[0].Name)
	a := Build(1, objs, "infergw")
	// Reverse the input order: the snapshot must not change.
	rev := Objects{Gateways: objs.Gateways}
	for i := len(objs.Pools) - 1; i >= 0; i-- {
		rev.Pools = append(rev.Pools, objs.Pools[i])
	}
	for i := len(objs.Pods) - 1; i >= 0; i-- {
		rev.Pods = append(rev.Pods, objs.Pods[i])
	}
	for i := len(objs.HTTPRoutes) - 1; i >= 0; i-- {
		rev.HTTPRoutes = append(rev.HTTPRoutes, objs.HTTPRoutes[i])
	}
	rev.Services = objs.Services
	b := Build(1, rev, "infergw")
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("snapshots differ by input order (-a +b):\n%s", diff)
	}
	if after := fmt.Sprint(len(objs.Pods), objs.Pods[0].Name, objs.Pools[0].Name); after != before {
		t.Errorf("input changed: %s -> %s", before, after)
	}
	if len(a.Pools) != 20 || len(a.Pools[0].Endpoints) != 5 || len(a.HTTPRoutes) != 20 {
		t.Errorf("got %d pools, %d endpoints in the first, %d routes", len(a.Pools), len(a.Pools[0].Endpoints), len(a.HTTPRoutes))
	}
}

func TestBuildHandlesEmptyAndNilInput(t *testing.T) {
	snap := Build(3, Objects{Pools: []*infv1.InferencePool{nil}, Pods: []*corev1.Pod{nil}, Gateways: []*gwapiv1.Gateway{nil}}, "infergw")
	if snap == nil || snap.Version != 3 || len(snap.Pools) != 0 || len(snap.Gateways) != 0 {
		t.Fatalf("unexpected snapshot %+v", snap)
	}
}

// benchObjects builds pools pools of endpointsPerPool ready pods each, one route per pool
// attached to one Gateway, plus each pool's picker Service.
func benchObjects(pools, endpointsPerPool, routes int) Objects {
	objs := Objects{Gateways: []*gwapiv1.Gateway{dt.Gateway("default", "gw", "infergw")}}
	for i := 0; i < pools; i++ {
		name := fmt.Sprintf("pool-%04d", i)
		labels := map[string]string{"app": name, "inference.networking.k8s.io/engine-type": "vllm"}
		objs.Pools = append(objs.Pools, dt.Pool("default", name, map[string]string{"app": name}, 8000))
		objs.Services = append(objs.Services, dt.Service("default", name+"-epp"))
		for j := 0; j < endpointsPerPool; j++ {
			ip := fmt.Sprintf("10.%d.%d.%d", i/250, i%250, j+1)
			objs.Pods = append(objs.Pods, dt.Pod("default", fmt.Sprintf("%s-%02d", name, j), ip, true, labels))
		}
	}
	for i := 0; i < routes; i++ {
		objs.HTTPRoutes = append(objs.HTTPRoutes, dt.Route("default", fmt.Sprintf("route-%04d", i), "default", "gw", fmt.Sprintf("pool-%04d", i%pools)))
	}
	return objs
}

// BenchmarkBuild1000Pools10Endpoints1000Routes measures one snapshot build at the scale the
// issue asks for: 1,000 pools × 10 endpoints and 1,000 routes.
func BenchmarkBuild1000Pools10Endpoints1000Routes(b *testing.B) {
	objs := benchObjects(1000, 10, 1000)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		snap := Build(uint64(i+1), objs, "infergw")
		if len(snap.Pools) != 1000 || len(snap.Pools[999].Endpoints) != 10 || len(snap.HTTPRoutes) != 1000 {
			b.Fatalf("unexpected snapshot: %d pools, %d routes", len(snap.Pools), len(snap.HTTPRoutes))
		}
	}
}
