package xds

import (
	"bytes"
	"flag"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"os"
	"path/filepath"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/infergw/infergw/discovery"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

var goldenCases = []struct {
	name string
	snap func() *discovery.Snapshot
	opts Options
}{
	{"one-pool", onePool, Options{}},
	{"two-pools-weighted", twoPoolsWeighted, Options{}},
	{"service-backend", serviceBackend, Options{}},
	{"fail-open-vs-fail-close", func() *discovery.Snapshot { return failModes(8000, 9002) }, Options{}},
	{"matches", matches, Options{}},
	{"h2c-pool", h2cPool, Options{}},
	{"many-models", func() *discovery.Snapshot { return manyModels(8000, 9002) }, Options{}},
	{"buffered", onePool, Options{RequestBodyMode: BodyBuffered, ResponseBodyMode: BodyStreamed, RouteTimeout: 600e9}},
	{"picker-tls", onePool, Options{PickerTLS: PickerTLS{
		CAFile: "/etc/infergw/tls/ca.crt", CertFile: "/etc/infergw/tls/tls.crt", KeyFile: "/etc/infergw/tls/tls.key",
	}}},
}

func TestTranslateGolden(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Translate(tc.snap(), tc.opts)
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			got, err := res.YAML()
			if err != nil {
				t.Fatalf("YAML: %v", err)
			}
			path := filepath.Join("testdata", tc.name+".golden.yaml")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden (run with -update to create): %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the translation; rerun with -update and review the diff.\ngot:\n%s", path, got)
			}
		})
	}
}

func TestTranslateIsDeterministic(t *testing.T) {
	for _, tc := range goldenCases {
		a, err := Translate(tc.snap(), tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		b, err := Translate(tc.snap(), tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		ya, _ := a.YAML()
		yb, _ := b.YAML()
		if !bytes.Equal(ya, yb) {
			t.Errorf("%s: two translations differ", tc.name)
		}
	}
}

func findRoute(t *testing.T, res *Resources, name string) *routev3.Route {
	t.Helper()
	for _, rc := range res.Routes {
		for _, vh := range rc.GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				if r.GetName() == name {
					return r
				}
			}
		}
	}
	t.Fatalf("route %s not found", name)
	return nil
}

func TestTwoPoolsHeaderRoutesPrecedeWeightedRoute(t *testing.T) {
	res, err := Translate(twoPoolsWeighted(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	routes := withoutGatewayRoutes(res.Routes[0].GetVirtualHosts()[0].GetRoutes())
	if len(routes) != 3 {
		t.Fatalf("want 2 header routes + 1 weighted route, got %d", len(routes))
	}
	for i, pool := range []string{"default/llama", "default/llama-canary"} {
		r := routes[i]
		if got := r.GetRoute().GetCluster(); got != "pool/"+pool {
			t.Errorf("route %d goes to %q, want pool/%s", i, got, pool)
		}
		hs := r.GetMatch().GetHeaders()
		if last := hs[len(hs)-1]; last.GetName() != HeaderPool || last.GetStringMatch().GetExact() != pool {
			t.Errorf("route %d does not match %s: %s", i, HeaderPool, pool)
		}
	}
	wc := routes[2].GetRoute().GetWeightedClusters().GetClusters()
	if len(wc) != 2 || wc[0].GetWeight().GetValue() != 80 || wc[1].GetWeight().GetValue() != 20 {
		t.Errorf("weighted route clusters = %v", wc)
	}
	if got := pickerMetadata(t, routes[2]); got != "default/llama=80,default/llama-canary=20" {
		t.Errorf("x-infergw-pools = %q", got)
	}
}

func pickerMetadata(t *testing.T, r *routev3.Route) string {
	t.Helper()
	cfg := r.GetTypedPerFilterConfig()[ExtProcFilterName]
	if cfg == nil {
		t.Fatalf("route %s has no ext_proc config", r.GetName())
	}
	var fc routev3.FilterConfig
	if err := cfg.UnmarshalTo(&fc); err != nil {
		t.Fatal(err)
	}
	var per extProcPerRouteMsg
	if err := fc.GetConfig().UnmarshalTo(&per); err != nil {
		t.Fatal(err)
	}
	for _, h := range per.GetOverrides().GetGrpcInitialMetadata() {
		if h.GetKey() == MetadataPools {
			return h.GetValue()
		}
	}
	return ""
}

func TestFailModes(t *testing.T) {
	res, err := Translate(failModes(8000, 9002), Options{})
	if err != nil {
		t.Fatal(err)
	}
	open := findRoute(t, res, "default/llm/rule/0/match/0")
	close := findRoute(t, res, "default/llm/rule/1/match/0")
	missing := findRoute(t, res, "default/llm/rule/2/match/0")
	if !failureModeAllow(t, open) {
		t.Error("FailOpen route: failure_mode_allow is not true")
	}
	// FailClose fails closed in the pool cluster, not in ext_proc (so that a picker lost
	// mid-response does not cut the response): its route allows ext_proc failures too,
	// its cluster has no endpoint to fall back to.
	if !failureModeAllow(t, close) {
		t.Error("FailClose route: failure_mode_allow is not true")
	}
	fallback := map[string]string{}
	for _, c := range res.Clusters {
		if names := poolFallbackPolicies(t, &Resources{Clusters: []*clusterv3.Cluster{c}}); len(names) > 0 {
			fallback[c.GetName()] = names[0]
		}
	}
	if fallback["pool/default/open"] != "envoy.load_balancing_policies.least_request" || fallback["pool/default/close"] != "envoy.load_balancing_policies.subset" {
		t.Errorf("fallback policies by pool = %v", fallback)
	}
	dr := missing.GetDirectResponse()
	if dr.GetStatus() != 503 || !strings.Contains(dr.GetBody().GetInlineString(), "endpoint picker unavailable") {
		t.Errorf("FailClose pool without picker: want direct 503 JSON, got %v", missing.GetAction())
	}
	if !containsWarning(res.Warnings, "missing-epp not found") {
		t.Errorf("no warning about the missing picker: %q", res.Warnings)
	}
}

func failureModeAllow(t *testing.T, r *routev3.Route) bool {
	t.Helper()
	var fc routev3.FilterConfig
	if err := r.GetTypedPerFilterConfig()[ExtProcFilterName].UnmarshalTo(&fc); err != nil {
		t.Fatal(err)
	}
	var per extProcPerRouteMsg
	if err := fc.GetConfig().UnmarshalTo(&per); err != nil {
		t.Fatal(err)
	}
	return per.GetOverrides().GetFailureModeAllow().GetValue()
}

func containsWarning(ws []string, sub string) bool {
	for _, w := range ws {
		if strings.Contains(w, sub) {
			return true
		}
	}
	return false
}

func TestServiceRoutesHaveNoExtProc(t *testing.T) {
	res, err := Translate(serviceBackend(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res.Routes[0].GetVirtualHosts()[0].GetRoutes() {
		if r.GetTypedPerFilterConfig()[ExtProcFilterName] != nil {
			t.Errorf("service route %s enables ext_proc", r.GetName())
		}
	}
	// No pool route: the listener has no ext_proc filter at all.
	for _, hcm := range listenerHCMs(res.Listeners[0]) {
		for _, f := range hcm.GetHttpFilters() {
			if f.GetName() == ExtProcFilterName {
				t.Error("listener without pool routes has an ext_proc filter")
			}
		}
	}
	if r := findRoute(t, res, "default/web/rule/2/match/0"); r.GetDirectResponse().GetStatus() != 500 {
		t.Errorf("route to a missing Service: want direct 500, got %v", r.GetAction())
	}
	if !containsWarning(res.Warnings, "default/nope not found") {
		t.Errorf("no warning about the missing Service: %q", res.Warnings)
	}
}

func TestMatchesSkipsBadRegexAndReportsFilters(t *testing.T) {
	res, err := Translate(matches(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !containsWarning(res.Warnings, "/v1/(unclosed") {
		t.Errorf("bad regex not reported: %q", res.Warnings)
	}
	if !containsWarning(res.Warnings, "RequestMirror is not supported") {
		t.Errorf("unsupported filter not reported: %q", res.Warnings)
	}
	// other.org does not fit the listener's *.example.com: only api.example.com and the
	// catch-all route's hostname (the listener's) remain.
	var domains []string
	for _, vh := range res.Routes[0].GetVirtualHosts() {
		domains = append(domains, vh.GetDomains()...)
	}
	if strings.Join(domains, ",") != "*.example.com,api.example.com" {
		t.Errorf("domains = %v", domains)
	}
	// The exact-path route is first in api.example.com.
	first := res.Routes[0].GetVirtualHosts()[1].GetRoutes()[0]
	if first.GetMatch().GetPath() != "/v1/chat/completions" {
		t.Errorf("first route of api.example.com = %s", first.GetName())
	}
}

func TestTranslateErrors(t *testing.T) {
	if _, err := Translate(nil, Options{}); err == nil {
		t.Error("nil snapshot: no error")
	}
	if _, err := Translate(onePool(), Options{RequestBodyMode: "STREAMING"}); err == nil || !strings.Contains(err.Error(), "STREAMING") {
		t.Errorf("bad body mode: err = %v", err)
	}
	if _, err := Translate(&discovery.Snapshot{}, Options{}); err != nil {
		t.Errorf("empty snapshot: %v", err)
	}
}

func TestValidateCatchesMissingCluster(t *testing.T) {
	res, err := Translate(onePool(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range res.Clusters {
		if c.GetName() == "pool/default/llama" {
			res.Clusters = append(res.Clusters[:i], res.Clusters[i+1:]...)
			break
		}
	}
	if err := res.Validate(); err == nil || !strings.Contains(err.Error(), "missing cluster pool/default/llama") {
		t.Errorf("Validate with a missing cluster: %v", err)
	}
}

func TestValidateCatchesMissingAssignment(t *testing.T) {
	res, err := Translate(onePool(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	res.Endpoints = nil
	if err := res.Validate(); err == nil || !strings.Contains(err.Error(), "no ClusterLoadAssignment") {
		t.Errorf("Validate without endpoints: %v", err)
	}
}

func BenchmarkTranslate1000Pools(b *testing.B) {
	snap := bigSnapshot(1000, 10)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Translate(snap, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

type extProcPerRouteMsg = extprocv3.ExtProcPerRoute

func BenchmarkValidate1000Pools(b *testing.B) {
	res, err := Translate(bigSnapshot(1000, 10), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := res.Validate(); err != nil {
			b.Fatal(err)
		}
	}
}
