package extproc

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	infv1 "github.com/infergw/infergw/api/v1"
	infv1alpha2 "github.com/infergw/infergw/api/v1alpha2"
	"github.com/infergw/infergw/discovery"
	"github.com/infergw/infergw/router"
)

// TestPickerReadsPoolsFromTheModel: the picker takes its endpoints, objectives and rewrites
// from the resolved model, so it applies exactly what the model attached to each pool: an
// objective whose poolRef is not an InferencePool, or names a pool that does not exist, is
// not applied (the old reading keyed it by name alone), an endpoint without a valid IP is
// not scraped, and a pool with two target ports has one endpoint per Pod and port.
func TestPickerReadsPoolsFromTheModel(t *testing.T) {
	r, err := router.New(router.DefaultConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	s, err := NewServer(r, Options{DefaultPool: "default/main"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pool := &discovery.Pool{InferencePool: &infv1.InferencePool{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "main"},
		Spec: infv1.InferencePoolSpec{
			TargetPorts:       []infv1.Port{{Number: 8000}, {Number: 8001}},
			EndpointPickerRef: infv1.EndpointPickerRef{Name: "picker"},
		},
	}, Endpoints: []discovery.Endpoint{
		{Name: "a", Namespace: "default", IP: "127.0.0.2"},
		{Name: "bad", Namespace: "default", IP: "not-an-ip"},
	}}
	prio := func(p int) *int { return &p }
	objective := func(name string, ref infv1alpha2.PoolObjectReference, p int) *infv1alpha2.InferenceObjective {
		return &infv1alpha2.InferenceObjective{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: infv1alpha2.InferenceObjectiveSpec{Priority: prio(p), PoolRef: ref}}
	}
	w := int32(1)
	s.ApplySnapshot(&discovery.Snapshot{
		Version: 7,
		Pools:   []*discovery.Pool{pool},
		Objectives: []*infv1alpha2.InferenceObjective{
			objective("batch", infv1alpha2.PoolObjectReference{Name: "main"}, -1),
			objective("typed", infv1alpha2.PoolObjectReference{Group: "inference.networking.k8s.io", Kind: "InferencePool", Name: "main"}, 5),
			objective("not-a-pool", infv1alpha2.PoolObjectReference{Kind: "Service", Name: "main"}, 9),
		},
		Rewrites: []*infv1alpha2.InferenceModelRewrite{
			{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "canary"}, Spec: infv1alpha2.InferenceModelRewriteSpec{
				PoolRef: infv1alpha2.PoolObjectReference{Name: "main"},
				Rules: []infv1alpha2.InferenceModelRewriteRule{{
					Matches: []infv1alpha2.Match{{Model: infv1alpha2.ModelMatch{Value: "friendly"}}},
					Targets: []infv1alpha2.TargetModel{{ModelRewrite: "lora-a", Weight: &w}},
				}},
			}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "elsewhere"}, Spec: infv1alpha2.InferenceModelRewriteSpec{
				PoolRef: infv1alpha2.PoolObjectReference{Name: "missing"},
				Rules: []infv1alpha2.InferenceModelRewriteRule{{
					Matches: []infv1alpha2.Match{{Model: infv1alpha2.ModelMatch{Value: "friendly"}}},
					Targets: []infv1alpha2.TargetModel{{ModelRewrite: "other", Weight: &w}},
				}},
			}},
		},
	})
	st := s.state.Load()
	if st == nil || st.version != 7 {
		t.Fatalf("state %+v, want version 7", st)
	}
	for name, want := range map[string]int{"batch": -1, "typed": 5, "not-a-pool": 0} {
		if got := st.priority("default/main", name); got != want {
			t.Errorf("priority of %s = %d, want %d", name, got, want)
		}
	}
	if _, ok := st.objectives["default/main"]["not-a-pool"]; ok {
		t.Error("an objective whose poolRef is a Service was applied to the pool")
	}
	if target, ok := st.rewriteModel("default/main", "friendly"); !ok || target != "lora-a" {
		t.Errorf("rewrite of friendly = %q, %v; want lora-a", target, ok)
	}
	if len(st.rewrites) != 1 {
		t.Errorf("rewrites for %d pools, want only default/main (the other names a missing pool)", len(st.rewrites))
	}
	if got := r.PoolStats("default/main").Endpoints; got != 2 {
		t.Errorf("router has %d endpoints, want 2 (pod a at ports 8000 and 8001; the pod without an IP skipped)", got)
	}
}
