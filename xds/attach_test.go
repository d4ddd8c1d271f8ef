package xds

import (
	"strings"
	"testing"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/infergw/infergw/model"
)

// TestRouteNotAllowedByListenerGetsNoEnvoyRoute is the Envoy half of issue 16's regression
// test (the status half is in package model): a route from another namespace, attached to
// a listener that allows only its own namespace, gets no Envoy route, and the model that
// xds renders says why (Accepted=False, NotAllowedByListeners), the reason status writes.
func TestRouteNotAllowedByListenerGetsNoEnvoyRoute(t *testing.T) {
	snap := onePool()
	foreign := httpRoute("foreign", "infergw", gwapiv1.HTTPRouteRule{Matches: prefix("/foreign"), BackendRefs: []gwapiv1.HTTPBackendRef{poolRef("llama", 1)}})
	foreign.Namespace = "elsewhere"
	foreign.Spec.ParentRefs[0].Namespace = ptr(gwapiv1.Namespace(ns))
	snap.HTTPRoutes = append(snap.HTTPRoutes, foreign)

	m := model.Resolve(snap, model.Options{})
	if p := m.Route("elsewhere/foreign").Parents[0]; p.Accepted.Reason != string(gwapiv1.RouteReasonNotAllowedByListeners) {
		t.Fatalf("foreign route: Accepted %+v, want NotAllowedByListeners", p.Accepted)
	}
	res, err := TranslateModel(m, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// routeNames lists the routes made from HTTPRoutes (named namespace/route/...), not the
	// gateway's own (list-models/...).
	routeNames := func(res *Resources) []string {
		var names []string
		for _, vh := range res.Routes[0].GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				if n := r.GetName(); strings.HasPrefix(n, "default/") || strings.HasPrefix(n, "elsewhere/") {
					names = append(names, n)
				}
			}
		}
		return names
	}
	if names := routeNames(res); len(names) != 1 || names[0] != "default/llm/rule/0/match/0" {
		t.Errorf("Envoy routes = %v, want only default/llm's", names)
	}

	// Allowing every namespace attaches it: the same decision feeds both sides.
	snap.Gateways[0].Spec.Listeners[0].AllowedRoutes = &gwapiv1.AllowedRoutes{Namespaces: &gwapiv1.RouteNamespaces{From: ptr(gwapiv1.NamespacesFromAll)}}
	res, err = Translate(snap, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if names := routeNames(res); len(names) != 2 {
		t.Errorf("with allowedRoutes All: Envoy routes %v, want both routes", names)
	}
}

// TestListenerPortMap: a mapped Gateway port is bound on the mapped port; names keep the
// Gateway's port; an invalid map is refused.
func TestListenerPortMap(t *testing.T) {
	res, err := Translate(onePool(), Options{ListenerPortMap: map[int32]int32{8080: 18080}})
	if err != nil {
		t.Fatal(err)
	}
	l := res.Listeners[0]
	if got := l.GetAddress().GetSocketAddress().GetPortValue(); got != 18080 || l.GetName() != "listener/8080" {
		t.Errorf("listener %s binds %d, want listener/8080 on 18080", l.GetName(), got)
	}
	if _, err := Translate(onePool(), Options{ListenerPortMap: map[int32]int32{80: 0}}); err == nil {
		t.Error("port map 80=0 accepted")
	}
}
