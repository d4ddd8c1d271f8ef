package xds

import (
	"testing"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// FuzzTranslateRouteMatch feeds arbitrary match values into a route: translation must never
// fail or panic because of one route, and whatever it returns passes Validate (Translate
// runs it).
func FuzzTranslateRouteMatch(f *testing.F) {
	f.Add(uint8(0), "/v1", "x-tenant", "gold", "POST", "debug", "1", "api.example.com")
	f.Add(uint8(2), "/v1/(a|b", "X Bad", "", "", "q", "(", "*.example.com")
	f.Add(uint8(1), "", "", "\x00", "GET\n", "", "", "")
	f.Fuzz(func(t *testing.T, kind uint8, path, hname, hvalue, method, qname, qvalue, host string) {
		types := []gwapiv1.PathMatchType{gwapiv1.PathMatchPathPrefix, gwapiv1.PathMatchExact, gwapiv1.PathMatchRegularExpression, "Other"}
		m := gwapiv1.HTTPRouteMatch{
			Path:        &gwapiv1.HTTPPathMatch{Type: ptr(types[int(kind)%len(types)]), Value: ptr(path)},
			Headers:     []gwapiv1.HTTPHeaderMatch{{Type: ptr(gwapiv1.HeaderMatchType(map[bool]string{true: "RegularExpression", false: "Exact"}[kind%2 == 0])), Name: gwapiv1.HTTPHeaderName(hname), Value: hvalue}},
			QueryParams: []gwapiv1.HTTPQueryParamMatch{{Name: gwapiv1.HTTPHeaderName(qname), Value: qvalue}},
		}
		if method != "" {
			m.Method = ptr(gwapiv1.HTTPMethod(method))
		}
		snap := onePool()
		rt := snap.HTTPRoutes[0]
		rt.Spec.Rules[0].Matches = []gwapiv1.HTTPRouteMatch{m}
		if host != "" {
			rt.Spec.Hostnames = []gwapiv1.Hostname{gwapiv1.Hostname(host)}
		}
		if _, err := Translate(snap, Options{}); err != nil {
			t.Fatalf("Translate failed on one bad route: %v", err)
		}
	})
}
