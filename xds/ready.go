package xds

import (
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// readyListenerName is the name of the Options.ReadyPort listener.
const readyListenerName = "infergw/ready"

// readyListener is the listener of Options.ReadyPort (nil when unset): every request gets
// 200 "ok". A kubelet probe cannot reach Envoy's admin interface (it binds 127.0.0.1), and
// with ports allocated per Gateway no Gateway port is known in advance; this port is opened
// only once Envoy has its first configuration from the control plane, so it means
// "configured", as a Gateway port did.
func (b *builder) readyListener() *listenerv3.Listener {
	if b.opts.ReadyPort == 0 {
		return nil
	}
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: "ready",
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: readyListenerName,
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    "ready",
				Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_DirectResponse{DirectResponse: directResponse(200, "ok\n")},
				}},
			}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{
			Name:       RouterFilterName,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: b.any(&routerv3.Router{})},
		}},
	}
	return &listenerv3.Listener{
		Name:    readyListenerName,
		Address: socketAddress(b.opts.ListenerAddress, uint32(b.opts.ReadyPort)), //nolint:gosec // G115: a validated port (1-65535)
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name:       hcmFilterName,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: b.any(hcm)},
		}}}},
	}
}
