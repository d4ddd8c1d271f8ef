package xds

import (
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	earlyhmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/early_header_mutation/header_mutation/v3"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/infergw/infergw/discovery"
	"github.com/infergw/infergw/internal/modelroute"
)

// routesByName returns the catch-all virtual host's routes by name, and their order.
func routesByName(t *testing.T, res *Resources) (map[string]*routev3.Route, []string) {
	t.Helper()
	byName := map[string]*routev3.Route{}
	var order []string
	for _, vh := range res.Routes[0].GetVirtualHosts() {
		if vh.GetName() != "*" {
			continue
		}
		for _, r := range vh.GetRoutes() {
			byName[r.GetName()] = r
			order = append(order, r.GetName())
		}
	}
	return byName, order
}

// tableOf decodes a body-routing route's model route table from its ext_proc metadata.
func tableOf(t *testing.T, r *routev3.Route) modelroute.Table {
	t.Helper()
	var fc routev3.FilterConfig
	if err := r.GetTypedPerFilterConfig()[ExtProcFilterName].UnmarshalTo(&fc); err != nil {
		t.Fatal(err)
	}
	var per extprocv3.ExtProcPerRoute
	if err := fc.GetConfig().UnmarshalTo(&per); err != nil {
		t.Fatal(err)
	}
	for _, h := range per.GetOverrides().GetGrpcInitialMetadata() {
		if h.GetKey() == modelroute.MetadataTable {
			if _, err := modelroute.Decode(h.GetValue()); err != nil {
				t.Fatalf("the picker cannot read the table: %v", err)
			}
			return decodeTable(t, h.GetValue())
		}
	}
	t.Fatalf("route %s carries no model route table", r.GetName())
	return modelroute.Table{}
}

func routeIndex(order []string, name string) int {
	for i, n := range order {
		if n == name {
			return i
		}
	}
	return -1
}

// TestBodyRoutingRoutes: each distinct non-model match gets one body-routing route that
// matches only without the model header, ranks right before the routes of its specificity
// (so a plain route with the same match, the fallback, comes after it) and whose table
// lists, in route order, every route it can lead to: the model routes of broader or equal
// matches, the fallback as a catch-all, nothing after the catch-all.
func TestBodyRoutingRoutes(t *testing.T) {
	snap := manyModels(8000, 9002)
	rt := snap.HTTPRoutes[0]
	// A fallback to the llama pool for any other model on /v1/chat.
	rt.Spec.Rules = append(rt.Spec.Rules, gwapiv1.HTTPRouteRule{Matches: prefix("/v1/chat"), BackendRefs: []gwapiv1.HTTPBackendRef{poolRef("llama", 1)}})
	res, err := Translate(snap, Options{})
	if err != nil {
		t.Fatal(err)
	}
	byName, order := routesByName(t, res)
	pre := byName["body-routing/default/models/rule/0/match/0"]
	embedPre := byName["body-routing/default/models/rule/2/match/0"]
	if pre == nil || embedPre == nil {
		t.Fatalf("body-routing routes missing; routes %v", order)
	}
	if byName["body-routing/default/models/rule/0/match/1"] != nil || byName["body-routing/default/models/rule/1/match/0"] != nil {
		t.Error("one body-routing route per distinct match, not per model route")
	}
	hs := pre.GetMatch().GetHeaders()
	if len(hs) != 1 || hs[0].GetName() != modelroute.HeaderModelName || hs[0].GetPresentMatch() {
		t.Errorf("body-routing route must match only while %s is absent: %v", modelroute.HeaderModelName, hs)
	}
	// /v1/embeddings's table: its own rule, then the "/" model routes; no fallback covers it.
	embed := tableOf(t, embedPre)
	if len(embed.Routes) != 4 || embed.Routes[0].Pools != "default/embed" || embed.Routes[3].Pools != "default/qwen=3,default/qwen-canary=1" {
		t.Errorf("embeddings table %+v", embed.Routes)
	}
	// "/"'s table: the "/" model routes only (the /v1/chat fallback does not cover "/").
	root := tableOf(t, pre)
	if len(root.Routes) != 3 || root.Routes[1].Base[0].Exact != "meta-llama/Llama-3.1-8B-Instruct" {
		t.Errorf("root table %+v", root.Routes)
	}
	// /v1/chat has no model route of its own, so no body-routing route: requests there go to
	// the fallback, which ranks before the "/" body-routing route (longer prefix).
	if i, j := routeIndex(order, "default/models/rule/3/match/0"), routeIndex(order, pre.GetName()); i < 0 || i > j {
		t.Errorf("the /v1/chat fallback (at %d) must rank before the / body-routing route (at %d): %v", i, j, order)
	}
	// Model routes rank before their body-routing route, which ranks before the list route
	// of the same host only by path.
	if i, j := routeIndex(order, "default/models/rule/0/match/0"), routeIndex(order, pre.GetName()); i > j {
		t.Errorf("a model route ranks after its body-routing route: %v", order)
	}
}

// TestBodyRoutingFallbackAndForeignPicker: a plain route with the same match is the
// table's catch-all (the picker picks in its pools for any other model); a model route of
// another picker is in the table without pools (reached without a pick) and warned about.
func TestBodyRoutingFallbackAndForeignPicker(t *testing.T) {
	snap := manyModels(8000, 9002)
	snap.Pools = append(snap.Pools, pool("other", "other-epp", 9003, "", 8000, 7, 1))
	snap.Services = append(snap.Services, service("other-epp", "127.0.0.1", 9003))
	rt := snap.HTTPRoutes[0]
	rt.Spec.Rules = append(rt.Spec.Rules,
		gwapiv1.HTTPRouteRule{Matches: []gwapiv1.HTTPRouteMatch{modelMatch("/", "other-model", false)}, BackendRefs: []gwapiv1.HTTPBackendRef{poolRef("other", 1)}},
		gwapiv1.HTTPRouteRule{Matches: prefix("/"), BackendRefs: []gwapiv1.HTTPBackendRef{poolRef("llama", 1)}},
	)
	res, err := Translate(snap, Options{})
	if err != nil {
		t.Fatal(err)
	}
	byName, order := routesByName(t, res)
	pre := byName["body-routing/default/models/rule/0/match/0"]
	if pre == nil {
		t.Fatalf("no body-routing route: %v", order)
	}
	tbl := tableOf(t, pre)
	last := tbl.Routes[len(tbl.Routes)-1]
	if len(last.Model) != 0 || len(last.Base) != 0 || last.Pools != "default/llama" {
		t.Errorf("the fallback is not the table's last, catch-all route: %+v", tbl.Routes)
	}
	foreign := false
	for _, r := range tbl.Routes {
		if len(r.Model) == 1 && r.Model[0].Exact == "other-model" {
			foreign = r.Pools == ""
		}
	}
	if !foreign {
		t.Errorf("the other picker's model route should be in the table without pools: %+v", tbl.Routes)
	}
	if !strings.Contains(strings.Join(res.Warnings, "\n"), "picker/default/other-epp/9003") {
		t.Errorf("no warning about the other picker: %v", res.Warnings)
	}
	if i, j := routeIndex(order, pre.GetName()), routeIndex(order, "default/models/rule/4/match/0"); i < 0 || i > j {
		t.Errorf("the body-routing route (at %d) must rank before the same-match fallback (at %d)", i, j)
	}
}

// TestBodyRoutingStripsClientModelHeaders: on a listener with model routes the client's
// model headers are removed before routing; elsewhere they are left alone.
func TestBodyRoutingStripsClientModelHeaders(t *testing.T) {
	for _, tc := range []struct {
		name  string
		snap  *discovery.Snapshot
		strip bool
	}{{"model routes", manyModels(8000, 9002), true}, {"plain routes", onePool(), false}} {
		res, err := Translate(tc.snap, Options{})
		if err != nil {
			t.Fatal(err)
		}
		var removed []string
		for _, hcm := range listenerHCMs(res.Listeners[0]) {
			removed = append(removed, earlyRemovals(t, hcm)...)
		}
		got := strings.Contains(strings.Join(removed, ","), modelroute.HeaderModelName) &&
			strings.Contains(strings.Join(removed, ","), modelroute.HeaderBaseModelName)
		if got != tc.strip {
			t.Errorf("%s: early removals %v; model headers stripped %v, want %v", tc.name, removed, got, tc.strip)
		}
	}
}

// TestBodyRoutingPassesThroughWithoutPicker: with the picker off the endpoint choice
// (round-robin), the picker still reads the model from the body, since nothing else can,
// but every route of its tables passes through (no pools: no pick), and no pool route
// runs the picker, so Envoy's own load balancer chooses.
func TestBodyRoutingPassesThroughWithoutPicker(t *testing.T) {
	res, err := Translate(manyModels(8000, 9002), Options{DisablePicker: true})
	if err != nil {
		t.Fatal(err)
	}
	byName, order := routesByName(t, res)
	bodyRoutes := 0
	for _, n := range order {
		r := byName[n]
		switch {
		case strings.HasPrefix(n, "body-routing/"):
			bodyRoutes++
			table := tableOf(t, r)
			if len(table.Routes) == 0 {
				t.Errorf("%s: an empty model route table", n)
			}
			for _, mr := range table.Routes {
				if mr.Pools != "" {
					t.Errorf("%s: model %q routes to pools %q: a pick with the picker disabled", n, mr.Model, mr.Pools)
				}
			}
		case strings.HasPrefix(n, "list-models/"):
			t.Errorf("route %s with the picker disabled", n)
		case r.GetTypedPerFilterConfig()[ExtProcFilterName] != nil:
			t.Errorf("route %s runs the picker with the picker disabled", n)
		}
	}
	if bodyRoutes == 0 {
		t.Fatalf("no body-routing route with the picker disabled: clients without the model header get 404 (routes %v)", order)
	}
}

func earlyRemovals(t *testing.T, hcm *hcmv3.HttpConnectionManager) []string {
	t.Helper()
	var out []string
	for _, ext := range hcm.GetEarlyHeaderMutationExtensions() {
		var hm earlyhmv3.HeaderMutation
		if err := ext.GetTypedConfig().UnmarshalTo(&hm); err != nil {
			t.Fatal(err)
		}
		for _, m := range hm.GetMutations() {
			if r := m.GetRemove(); r != "" {
				out = append(out, r)
			}
		}
	}
	return out
}

// TestMatchCovers: which routes a body-routing route's re-match can reach.
func TestMatchCovers(t *testing.T) {
	prefixM := func(p string) *routev3.RouteMatch {
		if p == "/" {
			return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
		}
		return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: p}}
	}
	exact := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/v1/chat/completions"}}
	withHdr := prefixM("/v1")
	withHdr.Headers = []*routev3.HeaderMatcher{exactHeader("x-tenant", "a")}
	for _, tc := range []struct {
		name         string
		outer, inner *routev3.RouteMatch
		want         bool
	}{
		{"root covers all", prefixM("/"), exact, true},
		{"prefix covers longer", prefixM("/v1"), prefixM("/v1/chat"), true},
		{"prefix covers exact under it", prefixM("/v1"), exact, true},
		{"segments, not bytes", prefixM("/v1"), prefixM("/v10"), false},
		{"longer does not cover shorter", prefixM("/v1/chat"), prefixM("/v1"), false},
		{"exact covers only itself", exact, prefixM("/v1"), false},
		{"prefix does not cover root", prefixM("/v1"), prefixM("/"), false},
		{"extra header narrows", withHdr, prefixM("/v1"), false},
		{"header among inner's", prefixM("/v1"), withHdr, true},
	} {
		if got := matchCovers(tc.outer, tc.inner); got != tc.want {
			t.Errorf("%s: matchCovers = %v, want %v", tc.name, got, tc.want)
		}
	}
}
