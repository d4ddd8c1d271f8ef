package chart

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	infv1 "github.com/infergw/infergw/api/v1"
)

// TestMoreModelsExample: examples/kubernetes/more-models.yaml decodes strictly; each of its
// pools selects exactly one of its Deployments, whose sim serves the model the route sends
// there; its route attaches to inferencepool.yaml's Gateway and names only its pools.
func TestMoreModelsExample(t *testing.T) {
	objs := decodeExample(t, "more-models.yaml")
	gw := only[*gwapiv1.Gateway](t, decodeExample(t, "inferencepool.yaml"))
	route := only[*gwapiv1.HTTPRoute](t, objs)
	pools := map[string]*infv1.InferencePool{}
	var deps []*appsv1.Deployment
	for _, o := range objs {
		switch v := o.(type) {
		case *infv1.InferencePool:
			pools[v.Name] = v
		case *appsv1.Deployment:
			deps = append(deps, v)
		}
	}
	if len(pools) != 2 || len(deps) != 2 {
		t.Fatalf("%d pools and %d Deployments, want 2 and 2", len(pools), len(deps))
	}
	if len(route.Spec.ParentRefs) != 1 || string(route.Spec.ParentRefs[0].Name) != gw.Name {
		t.Errorf("route parents %v, want the Gateway %s", route.Spec.ParentRefs, gw.Name)
	}
	for _, rule := range route.Spec.Rules {
		model := ""
		for _, m := range rule.Matches {
			for _, h := range m.Headers {
				if h.Name == "X-Gateway-Model-Name" {
					model = h.Value
				}
			}
		}
		if model == "" || len(rule.BackendRefs) != 1 {
			t.Fatalf("rule %+v: want one X-Gateway-Model-Name match and one backend", rule.Matches)
		}
		pool := pools[string(rule.BackendRefs[0].Name)]
		if pool == nil {
			t.Fatalf("rule for %s names pool %s, not in the file", model, rule.BackendRefs[0].Name)
		}
		sel := map[string]string{}
		for k, v := range pool.Spec.Selector.MatchLabels {
			sel[string(k)] = string(v)
		}
		var selected []*appsv1.Deployment
		for _, d := range deps {
			if selectorMatches(sel, d.Spec.Template.Labels) {
				selected = append(selected, d)
			}
		}
		if len(selected) != 1 {
			t.Fatalf("pool %s selects %d Deployments, want 1", pool.Name, len(selected))
		}
		if got, _ := flagValue(container(t, selected[0], "sim", false).Args, "--model"); got != model {
			t.Errorf("pool %s's sim serves %q, the route sends it %q", pool.Name, got, model)
		}
	}
}
