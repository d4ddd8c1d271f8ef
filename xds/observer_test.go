package xds

import (
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matchingv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/matching/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/infergw/infergw/contract"
)

// observerLayout reports, for a translation, whether the listeners carry the observer
// filter (in observability mode), how many routes enable it, and how many picker
// configurations tell the picker their route has it.
func observerLayout(t *testing.T, res *Resources) (filter bool, routes, observed int) {
	t.Helper()
	for _, l := range res.Listeners {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				var hcm hcmv3.HttpConnectionManager
				if f.GetTypedConfig().UnmarshalTo(&hcm) != nil {
					continue
				}
				for _, hf := range hcm.GetHttpFilters() {
					if hf.GetName() != ObserverFilterName {
						continue
					}
					var wm matchingv3.ExtensionWithMatcher
					var ep extprocv3.ExternalProcessor
					if err := hf.GetTypedConfig().UnmarshalTo(&wm); err != nil {
						t.Fatal(err)
					}
					if err := wm.GetExtensionConfig().GetTypedConfig().UnmarshalTo(&ep); err != nil {
						t.Fatal(err)
					}
					if wm.GetXdsMatcher() == nil {
						t.Fatal("observer filter without its skip-untagged matcher")
					}
					if !ep.GetObservabilityMode() || !hf.GetDisabled() || ep.GetProcessingMode().GetResponseBodyMode() != extprocv3.ProcessingMode_STREAMED {
						t.Fatalf("observer filter: observability %v, disabled %v, mode %v", ep.GetObservabilityMode(), hf.GetDisabled(), ep.GetProcessingMode())
					}
					filter = true
				}
			}
		}
	}
	for _, rc := range res.Routes {
		for _, vh := range rc.GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				if r.GetTypedPerFilterConfig()[ObserverFilterName] != nil {
					routes++
				}
				cfg := r.GetTypedPerFilterConfig()[ExtProcFilterName]
				if cfg == nil {
					continue
				}
				var fc routev3.FilterConfig
				var per extprocv3.ExtProcPerRoute
				if cfg.UnmarshalTo(&fc) != nil || fc.GetConfig().UnmarshalTo(&per) != nil {
					t.Fatalf("route %s: ext_proc config does not decode", r.GetName())
				}
				for _, md := range per.GetOverrides().GetGrpcInitialMetadata() {
					if md.GetKey() == contract.MetadataObserved {
						observed++
					}
				}
			}
		}
	}
	return filter, routes, observed
}

// TestResponseObserverOnlyWithStreamedResponses: pool routes with STREAMED responses get
// the observer and tell the picker so; it can be turned off, and FULL_DUPLEX_STREAMED
// responses (which Envoy does not let the picker override) never get it.
func TestResponseObserverOnlyWithStreamedResponses(t *testing.T) {
	for _, c := range []struct {
		name string
		opts Options
		want bool
	}{
		{"streamed", Options{ResponseBodyMode: BodyStreamed}, true},
		{"turned off", Options{ResponseBodyMode: BodyStreamed, NoResponseObserver: true}, false},
		{"full duplex", Options{ResponseBodyMode: "FULL_DUPLEX_STREAMED"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, err := Translate(onePool(), c.opts)
			if err != nil {
				t.Fatal(err)
			}
			filter, routes, observed := observerLayout(t, res)
			if c.want && (!filter || routes == 0 || observed != routes) {
				t.Fatalf("want the observer: filter %v, %d routes enable it, %d picker configs say so", filter, routes, observed)
			}
			if !c.want && (routes != 0 || observed != 0) {
				t.Fatalf("want no observer: %d routes enable it, %d picker configs say so", routes, observed)
			}
		})
	}
}
