package xds

import (
	"fmt"
	"sort"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/infergw/infergw/model"
)

// routeEntry is one Envoy route with the Gateway API precedence of the match it came from.
type routeEntry struct {
	route  *routev3.Route
	prec   precedence
	picker string // the picker cluster the route's ext_proc config names, if any
	// pools and failOpen describe a pool route's target (body routing reads them).
	pools    []weightedPool
	failOpen bool
}

// routeConfiguration builds the listener's route configuration: one virtual host per
// hostname, the catch-all "*" last; routes without hostnames also apply to named hosts.
func (b *builder) routeConfiguration(pl *portListener) *routev3.RouteConfiguration {
	// Hosts are matched without their port (clients send "localhost:8080"), and the Host
	// header reaches the backend as the client sent it (Gateway API requires it; Envoy's
	// strip_any_host_port would rewrite it).
	rc := &routev3.RouteConfiguration{Name: routeConfigName(pl.port), IgnorePortInHostMatching: true}
	var catchAll []routeEntry
	if vh := pl.vhosts["*"]; vh != nil {
		catchAll = vh.entries
	}
	for _, h := range sortedKeys(pl.vhosts) {
		if h == "*" {
			continue
		}
		entries := append(append([]routeEntry(nil), pl.vhosts[h].entries...), catchAll...)
		rc.VirtualHosts = append(rc.VirtualHosts, virtualHost(h, b.withBodyRoutingOn(pl, h, entries)))
	}
	if len(catchAll) > 0 || len(pl.vhosts) == 0 {
		rc.VirtualHosts = append(rc.VirtualHosts, virtualHost("*", b.withBodyRoutingOn(pl, "*", catchAll)))
	}
	return rc
}

func virtualHost(hostname string, entries []routeEntry) *routev3.VirtualHost {
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].prec.before(entries[j].prec) })
	vh := &routev3.VirtualHost{Name: hostname, Domains: []string{hostname}}
	for _, e := range entries {
		vh.Routes = append(vh.Routes, e.route)
	}
	return vh
}

// ruleTarget is what a rule's backendRefs resolve to.
type ruleTarget struct {
	clusters []*routev3.WeightedCluster_ClusterWeight
	pools    []weightedPool // set when every backend is a pool
	picker   string         // the pools' picker cluster; "" when unresolved
	failOpen bool           // every pool is FailOpen
	direct   *routev3.DirectResponseAction
	// directType is the content type of the direct response.
	directType string
}

// routePicker is the picker cluster routes of this target enable ext_proc with.
func (t ruleTarget) routePicker() string {
	if t.direct != nil || len(t.pools) == 0 {
		return ""
	}
	return t.picker
}

// routeEntries turns every rule × match of an HTTPRoute into Envoy routes.
func (b *builder) routeEntries(r *model.Route) []routeEntry {
	key, hr := r.Key, r.HTTPRoute
	var out []routeEntry
	for _, mr := range r.Rules {
		ri, rule := mr.Index, mr.Spec
		target := b.ruleTarget(key, mr)
		mods := b.headerModifiers(key, ri, rule.Filters)
		timeout := b.ruleTimeout(key, ri, rule)
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gwapiv1.HTTPRouteMatch{{}}
		}
		for mi := range matches {
			m, prec, err := routeMatch(&matches[mi])
			if err != nil {
				b.ix.warnf("httproute %s rule %d match %d: %v; match skipped", key, ri, mi, err)
				continue
			}
			prec.created = hr.CreationTimestamp.Time
			prec.route, prec.rule, prec.match = key, ri, mi
			name := fmt.Sprintf("%s/rule/%d/match/%d", key, ri, mi)
			rt := b.route(name, m, target, target.clusters, mods, timeout)
			if err := rt.ValidateAll(); err != nil {
				// One invalid route (say a header name with a space) must not block the
				// whole update: drop it, say why.
				b.ix.warnf("httproute %s rule %d match %d: invalid for Envoy: %v; match skipped", key, ri, mi, err)
				continue
			}
			if len(target.pools) > 1 && target.direct == nil {
				out = append(out, b.poolHeaderRoutes(name, m, prec, target, mods, timeout)...)
			}
			out = append(out, routeEntry{route: rt, prec: prec, picker: target.routePicker(), pools: target.pools, failOpen: target.failOpen})
		}
	}
	return out
}

// poolHeaderRoutes are the routes the picker's x-infergw-pool header selects after
// clear_route_cache: same match plus the header, to that one pool.
func (b *builder) poolHeaderRoutes(name string, m *routev3.RouteMatch, prec precedence, t ruleTarget, mods headerMods, timeout *durationpb.Duration) []routeEntry {
	out := make([]routeEntry, 0, len(t.pools))
	for i, p := range t.pools {
		pm := cloneMatch(m)
		pm.Headers = append(pm.Headers, exactHeader(HeaderPool, p.Key))
		pp := prec
		pp.headers++
		pp.poolHeader = true
		rt := b.route(name+"/pool/"+p.Key, pm, t, t.clusters[i:i+1], mods, timeout)
		out = append(out, routeEntry{route: rt, prec: pp, picker: t.routePicker()})
	}
	return out
}

func (b *builder) route(name string, m *routev3.RouteMatch, t ruleTarget, clusters []*routev3.WeightedCluster_ClusterWeight, mods headerMods, timeout *durationpb.Duration) *routev3.Route {
	rt := &routev3.Route{
		Name:                    name,
		Match:                   m,
		RequestHeadersToAdd:     mods.reqAdd,
		RequestHeadersToRemove:  mods.reqRemove,
		ResponseHeadersToAdd:    mods.respAdd,
		ResponseHeadersToRemove: mods.respRemove,
	}
	if mods.redirect != nil {
		rt.Action = &routev3.Route_Redirect{Redirect: mods.redirect}
		return rt
	}
	if t.direct != nil {
		rt.Action = &routev3.Route_DirectResponse{DirectResponse: t.direct}
		rt.ResponseHeadersToAdd = append(rt.ResponseHeadersToAdd, setHeader("content-type", t.directType))
		return rt
	}
	action := &routev3.RouteAction{
		Timeout:     timeout,
		IdleTimeout: durationpb.New(b.opts.StreamIdleTimeout),
	}
	if len(clusters) == 1 {
		action.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: clusters[0].Name}
	} else {
		action.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: clusters}}
	}
	action.RetryPolicy = b.retryPolicy(t.pools)
	rt.Action = &routev3.Route_Route{Route: action}
	if len(t.pools) > 0 {
		rt.RequestBodyBufferLimit = wrapperspb.UInt64(b.opts.MaxRequestBodyBytes)
		rt.ResponseHeadersToAdd = append(rt.ResponseHeadersToAdd, setHeader(HeaderUpstream, "%UPSTREAM_HOST%"))
		if t.picker != "" && !b.opts.DisablePicker {
			rt.TypedPerFilterConfig = b.extProcPerRoute(t.picker, t.failOpen, t.pools)
		}
	}
	return rt
}

// ruleTarget turns a rule's resolved backends into clusters. A rule the model found no
// usable backend for answers 500, as Gateway API asks.
func (b *builder) ruleTarget(key string, rule *model.Rule) ruleTarget {
	var t ruleTarget
	if rule.Invalid != "" {
		t.direct, t.directType = directResponse(500, rule.Invalid+"\n"), "text/plain"
		return t
	}
	var pools []*poolModel
	for _, be := range rule.Backends {
		switch {
		case be.Pool != nil:
			p := b.ix.pools[be.Pool.Key]
			pools = append(pools, p)
			t.pools = append(t.pools, weightedPool{Key: p.key, Weight: uint32(be.Weight)}) //nolint:gosec // G115: weights are validated in [0, 1,000,000]
			t.clusters = append(t.clusters, clusterWeight(p.cluster, be.Weight))
		case be.Service != nil:
			sc := b.ix.serviceCluster(be.Service)
			t.clusters = append(t.clusters, clusterWeight(sc.cluster, be.Weight))
		}
	}
	if len(pools) > 0 {
		b.resolveRulePicker(key, rule.Index, pools, &t)
	}
	return t
}

// resolveRulePicker chooses the rule's picker (the first pool's) and failure mode (open only
// when every pool is FailOpen). Without a reachable picker config a FailClose rule answers 503
// and a FailOpen rule goes straight to the pools' fallback load balancing.
func (b *builder) resolveRulePicker(key string, ri int, pools []*poolModel, t *ruleTarget) {
	t.failOpen = true
	for _, p := range pools {
		t.failOpen = t.failOpen && p.failOpen
	}
	first := pools[0]
	for _, p := range pools[1:] {
		if p.picker == nil || first.picker == nil || p.picker.cluster != first.picker.cluster {
			b.ix.warnf("httproute %s rule %d: pools %s and %s have different pickers; %s's picker chooses for both", key, ri, first.key, p.key, first.key)
		}
	}
	if first.picker != nil {
		t.picker = first.picker.cluster
		return
	}
	if !t.failOpen {
		t.direct, t.directType = directResponse(503, pickerUnavailableBody), "application/json"
		t.pools = nil
		return
	}
	b.ix.warnf("httproute %s rule %d: pool %s has no endpoint picker; FailOpen sends requests to any endpoint", key, ri, first.key)
}

func clusterWeight(name string, weight int32) *routev3.WeightedCluster_ClusterWeight {
	return &routev3.WeightedCluster_ClusterWeight{Name: name, Weight: wrapperspb.UInt32(uint32(weight))} //nolint:gosec // G115: weights are validated in [0, 1,000,000]
}

// pickerUnavailableBody is the OpenAI-style error a FailClose pool answers without a picker.
const pickerUnavailableBody = `{"error":{"message":"endpoint picker unavailable","type":"service_unavailable","param":null,"code":"endpoint_picker_unavailable"}}`

func directResponse(status uint32, body string) *routev3.DirectResponseAction {
	return &routev3.DirectResponseAction{
		Status: status,
		Body:   &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: body}},
	}
}

// ruleTimeout is the rule's request timeout, else Options.RouteTimeout (0 disables).
func (b *builder) ruleTimeout(key string, ri int, rule *gwapiv1.HTTPRouteRule) *durationpb.Duration {
	d := b.opts.RouteTimeout
	if rule.Timeouts != nil && rule.Timeouts.Request != nil {
		parsed, err := time.ParseDuration(string(*rule.Timeouts.Request))
		if err != nil || parsed < 0 {
			b.ix.warnf("httproute %s rule %d: request timeout %q is invalid; default used", key, ri, *rule.Timeouts.Request)
		} else {
			d = parsed
		}
	}
	return durationpb.New(d)
}
