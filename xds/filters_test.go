package xds

import (
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// TestRequestRedirect: a RequestRedirect rule answers with Envoy's redirect (302 unless 301
// is asked for, the new hostname), even without backendRefs.
func TestRequestRedirect(t *testing.T) {
	snap := serviceBackend()
	snap.HTTPRoutes = snap.HTTPRoutes[:1]
	redirect := func(code *int) gwapiv1.HTTPRouteFilter {
		return gwapiv1.HTTPRouteFilter{Type: gwapiv1.HTTPRouteFilterRequestRedirect, RequestRedirect: &gwapiv1.HTTPRequestRedirectFilter{
			Hostname: ptr(gwapiv1.PreciseHostname("example.org")), StatusCode: code}}
	}
	snap.HTTPRoutes[0].Spec.Rules = []gwapiv1.HTTPRouteRule{
		{Matches: prefix("/found"), Filters: []gwapiv1.HTTPRouteFilter{redirect(nil)}},
		{Matches: prefix("/moved"), Filters: []gwapiv1.HTTPRouteFilter{redirect(ptr(301))}},
	}
	res, err := Translate(snap, Options{})
	if err != nil {
		t.Fatal(err)
	}
	key := snap.HTTPRoutes[0].Namespace + "/" + snap.HTTPRoutes[0].Name
	for name, code := range map[string]routev3.RedirectAction_RedirectResponseCode{
		key + "/rule/0/match/0": routev3.RedirectAction_FOUND,
		key + "/rule/1/match/0": routev3.RedirectAction_MOVED_PERMANENTLY,
	} {
		r := findRoute(t, res, name).GetRedirect()
		if r.GetHostRedirect() != "example.org" || r.GetResponseCode() != code {
			t.Errorf("%s: redirect %v, want example.org with %v", name, r, code)
		}
	}
}
