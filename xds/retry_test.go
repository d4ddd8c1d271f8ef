package xds

import (
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/infergw/infergw/discovery"
)

// poolRoutes returns every route of res that sends to a cluster (not a direct response).
func poolRoutes(res *Resources) []*routev3.Route {
	var out []*routev3.Route
	for _, rc := range res.Routes {
		for _, vh := range rc.GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				if r.GetRoute() != nil {
					out = append(out, r)
				}
			}
		}
	}
	return out
}

// TestFirstByteTimeoutAndRetryBudget: the per-try timeout comes from the option, a pool's
// annotation overrides it (the shortest wins on a route to several pools), a bad
// annotation is a warning; pool clusters carry a retry budget, picker clusters a gRPC
// readiness health check without panic mode.
func TestFirstByteTimeoutAndRetryBudget(t *testing.T) {
	perTry := func(t *testing.T, snap func() *discovery.Snapshot, opts Options) (time.Duration, *Resources) {
		t.Helper()
		res, err := Translate(snap(), opts)
		if err != nil {
			t.Fatal(err)
		}
		rts := poolRoutes(res)
		if len(rts) == 0 {
			t.Fatal("no pool route")
		}
		d := rts[0].GetRoute().GetRetryPolicy().GetPerTryTimeout().AsDuration()
		for _, r := range rts[1:] {
			if got := r.GetRoute().GetRetryPolicy().GetPerTryTimeout().AsDuration(); got != d {
				t.Fatalf("routes disagree: %v and %v", d, got)
			}
		}
		return d, res
	}
	one := func(ann map[string]string) func() *discovery.Snapshot {
		return func() *discovery.Snapshot {
			s := onePool()
			s.Pools[0].Annotations = ann
			return s
		}
	}
	two := func(a, b string) func() *discovery.Snapshot {
		return func() *discovery.Snapshot {
			s := twoPoolsWeighted()
			s.Pools[0].Annotations = map[string]string{AnnotationFirstByteTimeout: a}
			s.Pools[1].Annotations = map[string]string{AnnotationFirstByteTimeout: b}
			return s
		}
	}
	for _, tc := range []struct {
		name string
		in   func() *discovery.Snapshot
		opts Options
		want time.Duration
		warn bool
	}{
		{"default off", one(nil), Options{}, 0, false},
		{"global", one(nil), Options{FirstByteTimeout: 7 * time.Second}, 7 * time.Second, false},
		{"annotation overrides", one(map[string]string{AnnotationFirstByteTimeout: "3s"}), Options{FirstByteTimeout: 7 * time.Second}, 3 * time.Second, false},
		{"annotation turns off", one(map[string]string{AnnotationFirstByteTimeout: "0"}), Options{FirstByteTimeout: 7 * time.Second}, 0, false},
		{"bad annotation", one(map[string]string{AnnotationFirstByteTimeout: "soon"}), Options{FirstByteTimeout: 7 * time.Second}, 7 * time.Second, true},
		{"shortest of two pools", two("9s", "4s"), Options{}, 4 * time.Second, false},
		{"retries off", one(nil), Options{FirstByteTimeout: 7 * time.Second, NumRetries: -1}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, res := perTry(t, tc.in, tc.opts)
			if got != tc.want {
				t.Fatalf("per_try_timeout = %v, want %v", got, tc.want)
			}
			warned := strings.Contains(strings.Join(res.Warnings, "\n"), AnnotationFirstByteTimeout)
			if warned != tc.warn {
				t.Fatalf("warning about the annotation: %v, want %v (%q)", warned, tc.warn, res.Warnings)
			}
		})
	}

	res, err := Translate(onePool(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	var pools, pickers int
	for _, c := range res.Clusters {
		switch {
		case strings.HasPrefix(c.GetName(), "pool/"):
			pools++
			rb := c.GetCircuitBreakers().GetThresholds()[0].GetRetryBudget()
			if rb.GetBudgetPercent().GetValue() != 20 || rb.GetMinRetryConcurrency().GetValue() != 3 {
				t.Errorf("%s retry budget = %v", c.GetName(), rb)
			}
			if len(c.GetHealthChecks()) != 0 {
				t.Errorf("%s: pool clusters get no active health check here", c.GetName())
			}
		case strings.HasPrefix(c.GetName(), "picker/"):
			pickers++
			hc := c.GetHealthChecks()
			if len(hc) != 1 || hc[0].GetGrpcHealthCheck().GetServiceName() != pickerReadinessService ||
				hc[0].GetNoTrafficInterval().AsDuration() != time.Second || c.GetCommonLbConfig().GetHealthyPanicThreshold().GetValue() != 0 ||
				c.GetCommonLbConfig().GetHealthyPanicThreshold() == nil {
				t.Errorf("%s health check = %v, lb %v", c.GetName(), hc, c.GetCommonLbConfig())
			}
		}
	}
	if pools != 1 || pickers != 1 {
		t.Fatalf("clusters: %d pools, %d pickers", pools, pickers)
	}
	res, err = Translate(onePool(), Options{PickerHealthInterval: -1, RetryBudgetPercent: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range res.Clusters {
		if len(c.GetHealthChecks()) != 0 || c.GetCircuitBreakers().GetThresholds()[0].GetRetryBudget() != nil {
			t.Errorf("%s: disabled checks or budget still present", c.GetName())
		}
	}
	if err := (Options{FirstByteTimeout: -time.Second}).Validate(); err == nil {
		t.Error("a negative first-byte timeout was accepted")
	}
}
