package model

import (
	"bytes"
	"io/fs"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/conformance"
	"sigs.k8s.io/yaml"

	"github.com/infergw/infergw/discovery"
)

// The upstream conformance suite's own manifests (embedded in the module), resolved by the
// model without a cluster: the conditions below are the ones the named upstream tests wait
// for. This is not the suite (make test-conformance runs that on a real cluster); it pins
// the model's decisions on the exact objects the suite applies, so a regression shows here
// in a second.

const infraNS = "gateway-conformance-infra"

// upstreamObjects decodes the Gateway API objects, Services and Namespaces of base plus the
// given test manifests, as the suite applies them (gateway class substituted; the API
// server's kubernetes.io/metadata.name namespace label added).
func upstreamObjects(t *testing.T, files ...string) discovery.Objects {
	t.Helper()
	var objs discovery.Objects
	for _, f := range append([]string{"base/manifests.yaml"}, files...) {
		raw, err := fs.ReadFile(&conformance.Manifests, f)
		if err != nil {
			t.Fatal(err)
		}
		raw = bytes.ReplaceAll(raw, []byte("{GATEWAY_CLASS_NAME}"), []byte("infergw"))
		for _, doc := range bytes.Split(raw, []byte("\n---")) {
			var meta struct {
				Kind string `json:"kind"`
			}
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			decode := func(into any) {
				if err := yaml.Unmarshal(doc, into); err != nil {
					t.Fatalf("%s %s: %v", f, meta.Kind, err)
				}
			}
			switch meta.Kind {
			case "Gateway":
				o := &gwapiv1.Gateway{}
				decode(o)
				objs.Gateways = append(objs.Gateways, o)
			case "HTTPRoute":
				o := &gwapiv1.HTTPRoute{}
				decode(o)
				objs.HTTPRoutes = append(objs.HTTPRoutes, o)
			case "ReferenceGrant":
				o := &gwapiv1.ReferenceGrant{}
				decode(o)
				objs.ReferenceGrants = append(objs.ReferenceGrants, o)
			case "Service":
				o := &corev1.Service{}
				decode(o)
				objs.Services = append(objs.Services, o)
			case "Namespace":
				o := &corev1.Namespace{}
				decode(o)
				if o.Labels == nil {
					o.Labels = map[string]string{}
				}
				o.Labels["kubernetes.io/metadata.name"] = o.Name
				objs.Namespaces = append(objs.Namespaces, o)
			}
		}
	}
	for _, list := range [][]*gwapiv1.HTTPRoute{objs.HTTPRoutes} {
		for _, r := range list {
			if r.Namespace == "" {
				r.Namespace = "default"
			}
		}
	}
	return objs
}

func upstreamModel(t *testing.T, files ...string) *Model {
	t.Helper()
	addr := gwapiv1.GatewayStatusAddress{Type: ptr(gwapiv1.IPAddressType), Value: "10.96.0.80"}
	return Resolve(discovery.Build(1, upstreamObjects(t, files...), "infergw"), Options{Addresses: []gwapiv1.GatewayStatusAddress{addr}})
}

func routeParent(t *testing.T, m *Model, routeKey, gwKey string) *RouteParent {
	t.Helper()
	r := m.Route(routeKey)
	if r == nil {
		t.Fatalf("route %s not in the model", routeKey)
	}
	for _, p := range r.Parents {
		if p.Gateway.Key == gwKey {
			return p
		}
	}
	t.Fatalf("route %s has no parent %s", routeKey, gwKey)
	return nil
}

func listener(t *testing.T, m *Model, gwKey, name string) *Listener {
	t.Helper()
	g := m.Gateway(gwKey)
	if g == nil {
		t.Fatalf("gateway %s not in the model", gwKey)
	}
	for _, l := range g.Listeners {
		if string(l.Name) == name {
			return l
		}
	}
	t.Fatalf("gateway %s has no listener %s", gwKey, name)
	return nil
}

func TestUpstreamBaseGatewaysProgrammed(t *testing.T) {
	m := upstreamModel(t)
	for _, name := range []string{"same-namespace", "all-namespaces", "backend-namespaces"} {
		g := m.Gateway(infraNS + "/" + name)
		wantCond(t, name, g.Conditions, "Accepted", metav1.ConditionTrue, "Accepted")
		wantCond(t, name, g.Conditions, "Programmed", metav1.ConditionTrue, "Programmed")
	}
	// Its HTTPS listener waits for the Secret the suite creates at run time.
	l := listener(t, m, infraNS+"/same-namespace-with-https-listener", "https")
	wantCond(t, "https without its Secret", l.Conditions, "ResolvedRefs", metav1.ConditionFalse, "InvalidCertificateRef")
}

func TestUpstreamHTTPRouteInvalidCrossNamespaceParentRef(t *testing.T) {
	m := upstreamModel(t, "tests/httproute-invalid-cross-namespace-parent-ref.yaml")
	p := routeParent(t, m, "gateway-conformance-web-backend/invalid-cross-namespace-parent-ref", infraNS+"/same-namespace")
	if p.Accepted.Reason != "NotAllowedByListeners" || len(p.Listeners) != 0 {
		t.Errorf("accepted %+v, listeners %d", p.Accepted, len(p.Listeners))
	}
	if n := listener(t, m, infraNS+"/same-namespace", "http").AttachedRoutes(); n != 0 {
		t.Errorf("same-namespace attachedRoutes = %d, want 0", n)
	}
}

func TestUpstreamGatewayInvalidRouteKindAndUnsupportedProtocol(t *testing.T) {
	m := upstreamModel(t, "tests/gateway-invalid-route-kind.yaml", "tests/gateway-invalid-listeners-unsupported-protocol.yaml")
	only := listener(t, m, infraNS+"/gateway-only-invalid-route-kind", "http")
	wantCond(t, "only invalid kinds", only.Conditions, "ResolvedRefs", metav1.ConditionFalse, "InvalidRouteKinds")
	if len(only.SupportedKinds) != 0 {
		t.Errorf("supportedKinds = %v, want none", only.SupportedKinds)
	}
	mixed := listener(t, m, infraNS+"/gateway-supported-and-invalid-route-kind", "http")
	wantCond(t, "valid and invalid kinds", mixed.Conditions, "ResolvedRefs", metav1.ConditionFalse, "InvalidRouteKinds")
	if len(mixed.SupportedKinds) != 1 || mixed.SupportedKinds[0].Kind != "HTTPRoute" {
		t.Errorf("supportedKinds = %v, want HTTPRoute", mixed.SupportedKinds)
	}
	wantCond(t, "only unsupported protocols", m.Gateway(infraNS+"/gateway-only-unsupported-protocols").Conditions, "Accepted", metav1.ConditionFalse, "ListenersNotValid")
	wantCond(t, "some unsupported protocols", m.Gateway(infraNS+"/gateway-supported-and-unsupported-protocols").Conditions, "Accepted", metav1.ConditionTrue, "ListenersNotValid")
}

func TestUpstreamGatewayWithAttachedRoutes(t *testing.T) {
	m := upstreamModel(t, "tests/gateway-with-attached-routes.yaml")
	for gw, want := range map[string]int32{
		"gateway-with-one-attached-route":                       1,
		"gateway-with-two-attached-routes":                      2,
		"unresolved-gateway-with-one-attached-unresolved-route": 1,
	} {
		g := m.Gateway(infraNS + "/" + gw)
		if n := g.Listeners[0].AttachedRoutes(); n != want {
			t.Errorf("%s attachedRoutes = %d, want %d", gw, n, want)
		}
	}
	p := routeParent(t, m, infraNS+"/http-route-not-accepted", infraNS+"/gateway-with-two-attached-routes")
	if p.Accepted.Reason != "NoMatchingListenerHostname" {
		t.Errorf("http-route-not-accepted: %+v", p.Accepted)
	}
	unresolved := listener(t, m, infraNS+"/unresolved-gateway-with-one-attached-unresolved-route", "tls")
	wantCond(t, "unresolved", unresolved.Conditions, "Programmed", metav1.ConditionFalse, "Invalid")
	if r := m.Route(infraNS + "/http-route-4"); r.ResolvedRefs.Status != metav1.ConditionFalse {
		t.Errorf("http-route-4 ResolvedRefs = %+v, want False", r.ResolvedRefs)
	}
}

func TestUpstreamBackendRefReasons(t *testing.T) {
	for _, tc := range []struct {
		file, route, reason string
	}{
		{"tests/httproute-invalid-backendref-unknown-kind.yaml", "invalid-backend-ref-unknown-kind", "InvalidKind"},
		{"tests/httproute-invalid-nonexistent-backendref.yaml", "invalid-nonexistent-backend-ref", "BackendNotFound"},
		{"tests/httproute-invalid-cross-namespace-backend-ref.yaml", "invalid-cross-namespace-backend-ref", "RefNotPermitted"},
		{"tests/httproute-partially-invalid-via-invalid-reference-grant.yaml", "invalid-reference-grant", "RefNotPermitted"},
		{"tests/httproute-reference-grant.yaml", "reference-grant", "ResolvedRefs"},
	} {
		t.Run(tc.route, func(t *testing.T) {
			m := upstreamModel(t, tc.file)
			r := m.Route(infraNS + "/" + tc.route)
			if r == nil {
				t.Fatalf("route not in the model")
			}
			if r.ResolvedRefs.Reason != tc.reason {
				t.Errorf("ResolvedRefs = %+v, want reason %s", r.ResolvedRefs, tc.reason)
			}
			if p := r.Parents[0]; p.Accepted.Status != metav1.ConditionTrue {
				t.Errorf("not accepted: %+v", p.Accepted)
			}
		})
	}
}

func TestUpstreamListenerHostnames(t *testing.T) {
	m := upstreamModel(t, "tests/httproute-listener-hostname-matching.yaml", "tests/httproute-hostname-intersection.yaml")
	checked := 0
	for _, r := range m.Routes {
		for _, p := range r.Parents {
			checked++
			want := "Accepted"
			if strings.Contains(r.Name, "no-intersecting") {
				want = "NoMatchingListenerHostname" // what HTTPRouteHostnameIntersection waits for
			}
			if p.Accepted.Reason != want {
				t.Errorf("%s on %s: %+v, want %s", r.Key, p.Gateway.Key, p.Accepted, want)
			}
		}
	}
	if checked < 8 {
		t.Errorf("only %d route parents resolved from the two manifests", checked)
	}
}
