package xds

import (
	"sort"
	"strconv"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const hcmFilterName = "envoy.filters.network.http_connection_manager"

// listener is the Envoy listener of one port: an HTTP connection manager whose routes come
// over ADS (RDS) and whose filters are ext_proc (when a route uses a picker) then router.
func (b *builder) listener(pl *portListener) *listenerv3.Listener {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: "http_" + strconv.Itoa(int(pl.port)),
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    adsConfigSource(),
			RouteConfigName: routeConfigName(pl.port),
		}},
		StreamIdleTimeout: durationOrNil(b.opts.StreamIdleTimeout),
		NormalizePath:     wrapperspb.Bool(true),
		MergeSlashes:      true,
		LocalReplyConfig:  b.localReplyConfig(),
	}
	if pickers := pickersOf(pl); len(pickers) > 0 {
		hcm.HttpFilters = append(hcm.HttpFilters, b.extProcFilter(pickers[0]))
		if !b.opts.NoResponseObserver {
			hcm.HttpFilters = append(hcm.HttpFilters, b.observerFilter(pickers[0]))
		}
		hcm.EarlyHeaderMutationExtensions = b.stripPickerHeaders(b.bodyRoutingPorts[pl.port])
	}
	hcm.HttpFilters = append(hcm.HttpFilters, &hcmv3.HttpFilter{
		Name:       RouterFilterName,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: b.any(&routerv3.Router{})},
	})
	filter := &listenerv3.Filter{
		Name:       hcmFilterName,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: b.any(hcm)},
	}
	l := &listenerv3.Listener{
		Name:         listenerName(pl.port),
		Address:      socketAddress(b.opts.ListenerAddress, uint32(b.bindPort(pl.port))), //nolint:gosec // G115: a validated port (1-65535)
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{filter}}},
	}
	if pl.https {
		l.FilterChains = b.tlsFilterChains(pl, filter)
		l.ListenerFilters = b.tlsInspector()
	}
	return l
}

// bindPort is the port Envoy binds for a Gateway listener port (Options.ListenerPortMap).
// Ports allocated per Gateway (Options.GatewayPorts) are bound as they are.
func (b *builder) bindPort(port int32) int32 {
	if b.opts.GatewayPorts.Enabled() {
		return port
	}
	if p, ok := b.opts.ListenerPortMap[port]; ok {
		return p
	}
	return port
}

// pickersOf lists the picker clusters the listener's routes use, sorted.
func pickersOf(pl *portListener) []string {
	set := map[string]bool{}
	for _, vh := range pl.vhosts {
		for _, e := range vh.entries {
			if e.picker != "" {
				set[e.picker] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// listenerRouteNames returns the RDS names a listener's connection managers use.
func listenerRouteNames(l *listenerv3.Listener) []string {
	var out []string
	for _, hcm := range listenerHCMs(l) {
		if n := hcm.GetRds().GetRouteConfigName(); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// listenerPickerClusters returns the default picker clusters of a listener's ext_proc filters.
func listenerPickerClusters(l *listenerv3.Listener) []string {
	var out []string
	for _, hcm := range listenerHCMs(l) {
		for _, f := range hcm.GetHttpFilters() {
			if f.GetName() != ExtProcFilterName {
				continue
			}
			var ep extprocv3.ExternalProcessor
			if err := f.GetTypedConfig().UnmarshalTo(&ep); err == nil {
				out = append(out, ep.GetGrpcService().GetEnvoyGrpc().GetClusterName())
			} else {
				out = append(out, "") // unreadable config is reported as a missing cluster
			}
		}
	}
	return out
}

func listenerHCMs(l *listenerv3.Listener) []*hcmv3.HttpConnectionManager {
	var out []*hcmv3.HttpConnectionManager
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			var hcm hcmv3.HttpConnectionManager
			if f.GetName() == hcmFilterName && f.GetTypedConfig().UnmarshalTo(&hcm) == nil {
				out = append(out, &hcm)
			}
		}
	}
	return out
}
