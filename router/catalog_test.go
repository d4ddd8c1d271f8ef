package router

import (
	"fmt"
	"testing"
)

// TestCatalogUnionAndParents: a pool's model list is the union of its endpoints' lists (an
// adapter keeps the parent any endpoint names), endpoints whose list is unknown add
// nothing, and an adapter's parent is found whichever endpoint lists it.
func TestCatalogUnionAndParents(t *testing.T) {
	r, _ := newTestRouter(t, nil)
	a := withModels(staticEndpoint("a:1", metricsState{}), map[string]string{"base": "", "sql-lora": "base"})
	b := withModels(staticEndpoint("b:1", metricsState{}), map[string]string{"base": "", "chat-lora": "base", "sql-lora": ""})
	unknown := staticEndpoint("c:1", metricsState{}) // /v1/models not answered yet
	installPool(r, "ns/p", []*endpoint{a, b, unknown})

	got := r.PoolModels("ns/p")
	want := map[string]string{"base": "", "sql-lora": "base", "chat-lora": "base"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("PoolModels = %v, want %v", got, want)
	}
	for model, wantParent := range map[string]string{"sql-lora": "base", "chat-lora": "base"} {
		if p, ok := r.ModelParent("ns/p", model); !ok || p != wantParent {
			t.Errorf("ModelParent(%s) = %q, %v; want %q", model, p, ok, wantParent)
		}
	}
	for _, model := range []string{"base", "nope"} {
		if p, ok := r.ModelParent("ns/p", model); ok {
			t.Errorf("ModelParent(%s) = %q, want none", model, p)
		}
	}
	if n := len(r.PoolModels("ns/none")); n != 0 {
		t.Errorf("unknown pool lists %d models", n)
	}
	if _, ok := r.ModelParent("ns/none", "sql-lora"); ok {
		t.Error("unknown pool names a parent")
	}
}
