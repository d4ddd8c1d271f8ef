package xds

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/infergw/infergw/discovery"
	"github.com/infergw/infergw/model"
)

// twoGatewaysOnOnePort: Gateways "a" and "b" both listen on port 80, each with a "/" route
// to a Service of its own (the shape of the upstream HTTPRouteMultipleGateways test).
func twoGatewaysOnOnePort() *discovery.Snapshot {
	return &discovery.Snapshot{
		Version:  1,
		Gateways: []*gwapiv1.Gateway{gateway("a", 80, ""), gateway("b", 80, "")},
		HTTPRoutes: []*gwapiv1.HTTPRoute{
			httpRoute("to-a", "a", gwapiv1.HTTPRouteRule{Matches: prefix("/"), BackendRefs: []gwapiv1.HTTPBackendRef{serviceRef("svc-a", 8080)}}),
			httpRoute("to-b", "b", gwapiv1.HTTPRouteRule{Matches: prefix("/"), BackendRefs: []gwapiv1.HTTPBackendRef{serviceRef("svc-b", 8080)}}),
		},
		Services: []*corev1.Service{service("svc-a", "10.0.0.1", 8080), service("svc-b", "10.0.0.2", 8080)},
	}
}

// TestGatewayPortsGiveEachGatewayItsListener: sharing one address, the two Gateways' "/"
// routes land in one route configuration (the collision that failed the upstream test);
// with GatewayPorts each Gateway gets an Envoy listener of its own on its allocated port,
// whose routes are only its own, and ListenerPortMap no longer applies.
func TestGatewayPortsGiveEachGatewayItsListener(t *testing.T) {
	shared, err := Translate(twoGatewaysOnOnePort(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(shared.Listeners) != 1 || len(shared.Routes) != 1 {
		t.Fatalf("shared address: %d listeners, %d route configurations; want 1 and 1", len(shared.Listeners), len(shared.Routes))
	}

	r := model.PortRange{First: 20000, Last: 20999}
	opts := Options{GatewayPorts: r, ListenerPortMap: map[int32]int32{80: 10080}, ReadyPort: 19001}
	res, err := Translate(twoGatewaysOnOnePort(), opts)
	if err != nil {
		t.Fatal(err)
	}
	m := model.Resolve(twoGatewaysOnOnePort(), opts.ModelOptions())
	wantPort := map[string]uint32{} // route key -> the Envoy port of its Gateway
	for _, g := range m.Gateways {
		ports := g.GatewayPorts()
		if len(ports) != 1 {
			t.Fatalf("%s ports %+v", g.Key, ports)
		}
		wantPort["default/to-"+g.Name] = uint32(ports[0].EnvoyPort)
	}
	if wantPort["default/to-a"] == wantPort["default/to-b"] {
		t.Fatalf("both Gateways on Envoy port %d", wantPort["default/to-a"])
	}
	if len(res.Listeners) != 3 || len(res.Routes) != 2 {
		t.Fatalf("%d listeners, %d route configurations; want 3 (two Gateways, ready) and 2", len(res.Listeners), len(res.Routes))
	}
	if res.Listeners[0].GetName() != readyListenerName || res.Listeners[0].GetAddress().GetSocketAddress().GetPortValue() != 19001 {
		t.Errorf("first listener %s on %v, want the ready listener on 19001", res.Listeners[0].GetName(), res.Listeners[0].GetAddress())
	}
	byRDS := map[string]uint32{}
	for _, l := range res.Listeners[1:] {
		p := l.GetAddress().GetSocketAddress().GetPortValue()
		if p < 20000 || p > 20999 {
			t.Errorf("listener %s binds %d, outside the range (the port map must not apply)", l.GetName(), p)
		}
		for _, n := range listenerRouteNames(l) {
			byRDS[n] = p
		}
	}
	for _, rc := range res.Routes {
		port := byRDS[rc.GetName()]
		for _, vh := range rc.GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				key := strings.Join(strings.SplitN(rt.GetName(), "/", 3)[:2], "/")
				if wantPort[key] != port {
					t.Errorf("route %s is on the listener of port %d, want %d", rt.GetName(), port, wantPort[key])
				}
			}
		}
	}
}

func TestReadyPortValidation(t *testing.T) {
	r := model.PortRange{First: 20000, Last: 20999}
	for _, o := range []Options{{ReadyPort: 20500, GatewayPorts: r}, {ReadyPort: 70000}, {GatewayPorts: model.PortRange{First: 5, Last: 4}}} {
		if err := o.Validate(); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	if err := (Options{ReadyPort: 19001, GatewayPorts: r}).Validate(); err != nil {
		t.Error(err)
	}
}
