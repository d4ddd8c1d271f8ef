package xds

import (
	"sort"
	"strings"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/infergw/infergw/internal/modelroute"
)

// Body-based routing (GIE's BBR, built in). HTTPRoutes written for GIE match the headers
// X-Gateway-Model-Name / X-Gateway-Base-Model-Name, which BBR sets from the body's "model"
// before the route is chosen. Here no extra filter reads the body: for every distinct
// non-model part of those matches the virtual host gets a "body-routing" route, ranked just
// above the routes it stands for, that
//   - matches only while the model header is absent (the client's copy is stripped before
//     routing, see stripPickerHeaders), so that after the picker sets it Envoy's re-match
//     can never land on it again;
//   - enables ext_proc with the listener's model route table (package modelroute) in the
//     stream's metadata: the picker reads the body once, finds the route the headers will
//     select, picks an endpoint of that route's pools, sets the headers and clears the route
//     cache. Envoy re-matches and sends the request on with the pick.
// One stream, one pass over the body: after a re-match Envoy keeps the filter chain and
// per-route configs of the first route (envoyproxy/envoy#44739), which is why the first
// route must carry the whole table.

// isModelHeader reports whether a route header matcher is one of BBR's model headers.
func isModelHeader(h *routev3.HeaderMatcher) bool {
	n := h.GetName()
	return n == modelroute.HeaderModelName || n == modelroute.HeaderBaseModelName
}

// modelConds splits a route match into its BBR conditions and the rest (a copy).
func modelConds(m *routev3.RouteMatch) (residual *routev3.RouteMatch, model, base []modelroute.Cond, n int) {
	residual = cloneMatch(m)
	residual.Headers = residual.Headers[:0]
	for _, h := range m.GetHeaders() {
		if !isModelHeader(h) {
			residual.Headers = append(residual.Headers, h)
			continue
		}
		n++
		c := modelroute.Cond{Exact: h.GetStringMatch().GetExact()}
		if re := h.GetStringMatch().GetSafeRegex(); re != nil {
			c = modelroute.Cond{Regex: re.GetRegex()}
		}
		if h.GetName() == modelroute.HeaderModelName {
			model = append(model, c)
		} else {
			base = append(base, c)
		}
	}
	return residual, model, base, n
}

// withBodyRouting adds the virtual host's body-routing routes and its GET /v1/models route
// to entries. It reports whether any body-routing route was added.
func (b *builder) withBodyRouting(hostname string, entries []routeEntry) ([]routeEntry, bool) {
	sorted := append([]routeEntry(nil), entries...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].prec.before(sorted[j].prec) })
	var pre []routeEntry
	var residuals []*routev3.RouteMatch
	for _, e := range sorted {
		if e.prec.poolHeader || e.route.GetMatch() == nil {
			continue
		}
		residual, _, _, n := modelConds(e.route.GetMatch())
		if n == 0 || containsMatch(residuals, residual) {
			continue
		}
		residuals = append(residuals, residual)
		if r, ok := b.bodyRoutingRoute(hostname, e, residual, n, sorted); ok {
			pre = append(pre, r)
		}
	}
	// A copy: entries may share its array with the catch-all host's routes.
	out := append(append(make([]routeEntry, 0, len(entries)+len(pre)+1), entries...), pre...)
	if r, ok := b.listModelsRoute(hostname, sorted); ok {
		out = append(out, r)
	}
	return out, len(pre) > 0
}

func containsMatch(list []*routev3.RouteMatch, m *routev3.RouteMatch) bool {
	for _, x := range list {
		if proto.Equal(x, m) {
			return true
		}
	}
	return false
}

// bodyRoutingRoute builds the body-routing route of one residual match (a model route's
// match without its model conditions): first is the highest-ranked model route with that
// residual, sorted the virtual host's routes in Envoy's order.
func (b *builder) bodyRoutingRoute(hostname string, first routeEntry, residual *routev3.RouteMatch, nModel int, sorted []routeEntry) (routeEntry, bool) {
	// With the picker off the endpoint (DisablePicker: Envoy's round robin), the picker
	// still reads the model from the body, since nothing else can, but every route of
	// the table passes through: it sets the model headers and Envoy's re-match and load
	// balancer do the rest.
	passThrough := b.opts.DisablePicker
	// The picker is the first one a route reachable from here names; routes of another
	// picker's pools are reached without a pick (and warned about).
	picker := ""
	var covered []routeEntry
	for _, e := range sorted {
		if e.prec.poolHeader || e.prec.bodyRouting || e.prec.gatewayOwned || !matchCovers(e.route.GetMatch(), residual) {
			continue
		}
		covered = append(covered, e)
		if picker == "" {
			picker = e.picker
		}
	}
	if picker == "" {
		b.ix.warnf("route %s matches on %s but no route it can lead to has an endpoint picker; body-based routing is off for it", first.route.GetName(), modelroute.HeaderModelName)
		return routeEntry{}, false
	}
	var table modelroute.Table
	failOpen := true
	for _, e := range covered {
		_, model, base, _ := modelConds(e.route.GetMatch())
		r := modelroute.Route{Model: model, Base: base}
		switch {
		case passThrough:
		case e.picker == picker && len(e.pools) > 0:
			r.Pools = poolsMetadata(e.pools)
			failOpen = failOpen && e.failOpen
		case e.picker != "":
			b.ix.warnf("route %s uses picker %s, not %s; body-routed requests reach it without a pick", e.route.GetName(), e.picker, picker)
		}
		table.Routes = append(table.Routes, r)
		if len(model) == 0 && len(base) == 0 {
			break // a catch-all: Envoy never looks further
		}
	}
	enc, err := modelroute.Encode(table)
	if err != nil {
		b.ix.warnf("virtual host %s: %v; body-based routing is off for route %s", hostname, err, first.route.GetName())
		return routeEntry{}, false
	}
	name := "body-routing/" + first.route.GetName()
	m := cloneMatch(residual)
	m.Headers = append(m.Headers, &routev3.HeaderMatcher{
		Name:                 modelroute.HeaderModelName,
		HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: false},
	})
	prec := first.prec
	prec.headers -= nModel
	prec.bodyRouting = true
	per := &extprocv3.ExtProcPerRoute{Override: &extprocv3.ExtProcPerRoute_Overrides{Overrides: &extprocv3.ExtProcOverrides{
		GrpcService:         grpcService(picker),
		GrpcInitialMetadata: []*corev3.HeaderValue{{Key: modelroute.MetadataTable, Value: enc}},
		// Skipped picker: the route's own answer below (503 picker unavailable) stands.
		FailureModeAllow: wrapperspb.Bool(true),
		ProcessingMode:   b.routeProcessingMode(failOpen),
	}}}
	rt := &routev3.Route{
		Name:                   name,
		Match:                  m,
		Action:                 &routev3.Route_DirectResponse{DirectResponse: directResponse(503, pickerUnavailableBody)},
		ResponseHeadersToAdd:   []*corev3.HeaderValueOption{setHeader("content-type", "application/json")},
		RequestBodyBufferLimit: wrapperspb.UInt64(b.opts.MaxRequestBodyBytes),
		TypedPerFilterConfig: b.withObserver(map[string]*anyMsg{ExtProcFilterName: b.any(&routev3.FilterConfig{Config: b.any(per)})},
			per, picker, failOpen),
	}
	return routeEntry{route: rt, prec: prec, picker: picker}, true
}

func (b *builder) routeProcessingMode(failOpen bool) *extprocv3.ProcessingMode {
	if failOpen {
		return failOpenProcessingMode()
	}
	return b.processingMode()
}

// matchCovers reports whether every request matching inner also matches outer's
// non-model conditions: outer's path covers inner's and outer's other headers and query
// parameters are among inner's. Only such routes can follow a body-routing route's re-match.
func matchCovers(outer, inner *routev3.RouteMatch) bool {
	if !pathCovers(outer, inner) {
		return false
	}
	for _, h := range outer.GetHeaders() {
		if isModelHeader(h) {
			continue
		}
		if !containsProto(inner.GetHeaders(), h) {
			return false
		}
	}
	for _, q := range outer.GetQueryParameters() {
		if !containsProto(inner.GetQueryParameters(), q) {
			return false
		}
	}
	return true
}

func containsProto[T proto.Message](list []T, m T) bool {
	for _, x := range list {
		if proto.Equal(x, m) {
			return true
		}
	}
	return false
}

// pathCovers reports whether every path inner's path specifier matches also matches outer's.
func pathCovers(outer, inner *routev3.RouteMatch) bool {
	innerPath := ""
	switch {
	case inner.GetPath() != "":
		innerPath = inner.GetPath()
	case inner.GetPathSeparatedPrefix() != "":
		innerPath = inner.GetPathSeparatedPrefix()
	case inner.GetPrefix() != "":
		innerPath = inner.GetPrefix()
	}
	switch {
	case outer.GetPrefix() == "/":
		return true
	case outer.GetPathSeparatedPrefix() != "":
		p := outer.GetPathSeparatedPrefix()
		if inner.GetPrefix() != "" && inner.GetPrefix() != p {
			return false
		}
		return innerPath != "" && (innerPath == p || strings.HasPrefix(innerPath, p+"/"))
	case outer.GetPath() != "":
		return inner.GetPath() == outer.GetPath()
	case outer.GetSafeRegex() != nil:
		return proto.Equal(outer.GetSafeRegex(), inner.GetSafeRegex())
	}
	return false
}

// listModelsRoute answers GET /v1/models at the gateway: the picker lists the union of the
// models every pool of the virtual host serves (and the aliases InferenceModelRewrites
// add), instead of whichever pod a request would land on. It ranks after any user route
// with the same match, so a route a user wrote for /v1/models wins.
func (b *builder) listModelsRoute(hostname string, sorted []routeEntry) (routeEntry, bool) {
	picker := ""
	var pools []weightedPool
	seen := map[string]bool{}
	failOpen := true
	for _, e := range sorted {
		if e.prec.poolHeader || e.picker == "" || len(e.pools) == 0 {
			continue
		}
		if picker == "" {
			picker = e.picker
		}
		if e.picker != picker {
			continue
		}
		for _, p := range e.pools {
			if !seen[p.Key] {
				seen[p.Key] = true
				pools = append(pools, weightedPool{Key: p.Key, Weight: 1})
				failOpen = failOpen && e.failOpen
			}
		}
	}
	if picker == "" || b.opts.DisablePicker {
		return routeEntry{}, false
	}
	m := &routev3.RouteMatch{
		PathSpecifier: &routev3.RouteMatch_Path{Path: listModelsPath},
		Headers:       []*routev3.HeaderMatcher{exactHeader(":method", "GET")},
	}
	per := &extprocv3.ExtProcPerRoute{Override: &extprocv3.ExtProcPerRoute_Overrides{Overrides: &extprocv3.ExtProcOverrides{
		GrpcService:         grpcService(picker),
		GrpcInitialMetadata: []*corev3.HeaderValue{{Key: modelroute.MetadataListModels, Value: poolsList(pools)}},
		FailureModeAllow:    wrapperspb.Bool(true),
		ProcessingMode:      b.routeProcessingMode(failOpen),
	}}}
	rt := &routev3.Route{
		Name:  "list-models/" + hostname,
		Match: m,
		// Reached only when the picker was skipped: the list is the gateway's, not a pod's.
		Action:               &routev3.Route_DirectResponse{DirectResponse: directResponse(503, pickerUnavailableBody)},
		ResponseHeadersToAdd: []*corev3.HeaderValueOption{setHeader("content-type", "application/json")},
		TypedPerFilterConfig: map[string]*anyMsg{ExtProcFilterName: b.any(&routev3.FilterConfig{Config: b.any(per)})},
	}
	prec := precedence{pathKind: 3, pathLen: len(listModelsPath), method: true, gatewayOwned: true, route: rt.Name}
	return routeEntry{route: rt, prec: prec, picker: picker}, true
}

const listModelsPath = "/v1/models"

// poolsList renders pools as "ns/a,ns/b" (no weights: listing is not a draw).
func poolsList(pools []weightedPool) string {
	keys := make([]string, len(pools))
	for i, p := range pools {
		keys[i] = p.Key
	}
	return strings.Join(keys, ",")
}

// withBodyRoutingOn adds the virtual host's body-routing routes and remembers listeners
// that have any (their model headers are stripped from clients).
func (b *builder) withBodyRoutingOn(pl *portListener, hostname string, entries []routeEntry) []routeEntry {
	out, on := b.withBodyRouting(hostname, entries)
	if on {
		if b.bodyRoutingPorts == nil {
			b.bodyRoutingPorts = map[int32]bool{}
		}
		b.bodyRoutingPorts[pl.port] = true
	}
	return out
}

// modelHeaderRemovals strip the client's model headers: on a body-routing listener only the
// picker sets them, from the body, as GIE's BBR overwrites them.
func modelHeaderRemovals() []*mutationrulesv3.HeaderMutation {
	return []*mutationrulesv3.HeaderMutation{
		{Action: &mutationrulesv3.HeaderMutation_Remove{Remove: modelroute.HeaderModelName}},
		{Action: &mutationrulesv3.HeaderMutation_Remove{Remove: modelroute.HeaderBaseModelName}},
	}
}
