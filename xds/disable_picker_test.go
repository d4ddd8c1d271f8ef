package xds

import (
	"testing"

	overridehostv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/override_host/v3"
)

// poolFallbackPolicy decodes the override-host fallback of the pool clusters of a translation.
func poolFallbackPolicies(t *testing.T, res *Resources) []string {
	t.Helper()
	var names []string
	for _, c := range res.Clusters {
		for _, p := range c.GetLoadBalancingPolicy().GetPolicies() {
			tc := p.GetTypedExtensionConfig()
			if tc.GetName() != "envoy.load_balancing_policies.override_host" {
				continue
			}
			var oh overridehostv3.OverrideHost
			if err := tc.GetTypedConfig().UnmarshalTo(&oh); err != nil {
				t.Fatalf("cluster %s: override host config: %v", c.GetName(), err)
			}
			for _, fp := range oh.GetFallbackPolicy().GetPolicies() {
				names = append(names, fp.GetTypedExtensionConfig().GetName())
			}
		}
	}
	return names
}

func TestDisablePickerRoutesWithEnvoyRoundRobin(t *testing.T) {
	on, err := Translate(onePool(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	off, err := Translate(onePool(), Options{DisablePicker: true})
	if err != nil {
		t.Fatal(err)
	}
	countExtProc := func(res *Resources) int {
		n := 0
		for _, rc := range res.Routes {
			for _, vh := range rc.GetVirtualHosts() {
				for _, r := range vh.GetRoutes() {
					if r.GetTypedPerFilterConfig()[ExtProcFilterName] != nil {
						n++
					}
				}
			}
		}
		return n
	}
	if countExtProc(on) == 0 {
		t.Fatal("default options: no pool route enables ext_proc (fixture changed?)")
	}
	if n := countExtProc(off); n != 0 {
		t.Errorf("DisablePicker: %d routes still enable ext_proc", n)
	}
	// onePool's pool is FailClose: without the picker's choice it selects no endpoint.
	if got := poolFallbackPolicies(t, on); len(got) == 0 || got[0] != "envoy.load_balancing_policies.subset" {
		t.Errorf("default fallback policies = %v, want the no-endpoint subset policy", got)
	}
	got := poolFallbackPolicies(t, off)
	if len(got) == 0 {
		t.Fatal("DisablePicker: no pool cluster with an override-host policy")
	}
	for _, name := range got {
		if name != "envoy.load_balancing_policies.round_robin" {
			t.Errorf("DisablePicker fallback policy = %s, want round_robin", name)
		}
	}
}
