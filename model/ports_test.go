package model

import (
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/infergw/infergw/discovery"
)

func allocated(gw string, port int32, created time.Time) AllocatedPort {
	return AllocatedPort{GatewayPort{gw, port}, metav1.NewTime(created)}
}

// TestAllocatePortsStableAndCollisionFree: the same input in any order gives the same ports
// (what the xDS translation and the status writer compute separately, and what a restarted
// control plane computes again), every port is in the range and none is given twice.
func TestAllocatePortsStableAndCollisionFree(t *testing.T) {
	r := PortRange{First: 20000, Last: 20099}
	t0 := time.Unix(1_700_000_000, 0)
	var in []AllocatedPort
	for i := range 60 {
		in = append(in, allocated(fmt.Sprintf("ns/gw-%d", i), 80, t0.Add(time.Duration(i)*time.Second)), allocated(fmt.Sprintf("ns/gw-%d", i), 443, t0.Add(time.Duration(i)*time.Second)))
	}
	// 120 wanted, 100 ports: the range bounds the result.
	first := AllocatePorts(in, r)
	if len(first) != r.Size() {
		t.Fatalf("allocated %d ports, want the whole range (%d)", len(first), r.Size())
	}
	seen := map[int32]GatewayPort{}
	for gp, p := range first {
		if p < r.First || p > r.Last {
			t.Errorf("%v got %d, outside %s", gp, p, r)
		}
		if other, dup := seen[p]; dup {
			t.Errorf("port %d given to %v and %v", p, other, gp)
		}
		seen[p] = gp
	}
	// The youngest Gateways are the ones left without (the oldest keep theirs).
	for i := range 50 {
		for _, port := range []int32{80, 443} {
			if _, ok := first[GatewayPort{fmt.Sprintf("ns/gw-%d", i), port}]; !ok {
				t.Errorf("old gateway gw-%d port %d got no port while younger ones did", i, port)
			}
		}
	}
	reversed := make([]AllocatedPort, len(in))
	for i, p := range in {
		reversed[len(in)-1-i] = p
	}
	again := AllocatePorts(reversed, r)
	for gp, p := range first {
		if again[gp] != p {
			t.Errorf("%v: %d, then %d with the input reversed", gp, p, again[gp])
		}
	}
}

// TestAllocatePortsNewGatewayMovesNoOldOne: a Gateway created later never takes a port an
// older Gateway holds, even when its hash prefers it.
func TestAllocatePortsNewGatewayMovesNoOldOne(t *testing.T) {
	r := PortRange{First: 30000, Last: 30007} // small: collisions are certain
	t0 := time.Unix(1_700_000_000, 0)
	var in []AllocatedPort
	for i := range 4 {
		in = append(in, allocated(fmt.Sprintf("a/gw-%d", i), 80, t0.Add(time.Duration(i)*time.Minute)))
	}
	before := AllocatePorts(in, r)
	for i := range 4 {
		in = append(in, allocated(fmt.Sprintf("b/new-%d", i), 80, t0.Add(time.Hour)))
		after := AllocatePorts(in, r)
		for gp, p := range before {
			if after[gp] != p {
				t.Errorf("adding b/new-%d moved %v from %d to %d", i, gp, p, after[gp])
			}
		}
	}
	if got := AllocatePorts(nil, PortRange{}); len(got) != 0 {
		t.Errorf("no range allocated %v", got)
	}
}

func TestPortRangeValidate(t *testing.T) {
	for _, r := range []PortRange{{0, 10}, {10, 9}, {1, 65536}, {-1, 5}} {
		if r.Validate() == nil {
			t.Errorf("%+v accepted", r)
		}
	}
	for _, r := range []PortRange{{}, {1, 1}, {20000, 29999}} {
		if err := r.Validate(); err != nil {
			t.Errorf("%+v: %v", r, err)
		}
	}
}

// TestMultipleGatewaysGetTheirOwnPorts is the model half of the upstream test
// HTTPRouteMultipleGateways: two Gateways both on port 80, each with its own "/" route.
// Sharing one address, they share one Envoy port; with GatewayPorts each Gateway's port 80
// is its own Envoy port, carries only its own routes, and gets its own address.
func TestMultipleGatewaysGetTheirOwnPorts(t *testing.T) {
	objs := upstreamObjects(t, "tests/httproute-multiple-gateways.yaml")
	snap := discovery.Build(1, objs, "infergw")
	same, all := infraNS+"/same-namespace", infraNS+"/all-namespaces"

	shared := Resolve(snap, Options{})
	if a, b := listener(t, shared, same, "http").EnvoyPort, listener(t, shared, all, "http").EnvoyPort; a != 80 || b != 80 {
		t.Errorf("shared address: Envoy ports %d and %d, want both 80", a, b)
	}
	sharedWarning := func(m *Model) bool {
		for _, w := range m.Warnings {
			if strings.Contains(w, "shares one Envoy listener with gateway") {
				return true
			}
		}
		return false
	}
	if !sharedWarning(shared) {
		t.Errorf("shared address: no warning that the Gateways' routes are merged: %q", shared.Warnings)
	}

	addr := func(ip string) []gwapiv1.GatewayStatusAddress {
		return []gwapiv1.GatewayStatusAddress{{Type: ptr(gwapiv1.IPAddressType), Value: ip}}
	}
	r := PortRange{First: 20000, Last: 29999}
	m := Resolve(snap, Options{GatewayPorts: r, GatewayAddresses: map[string][]gwapiv1.GatewayStatusAddress{same: addr("10.96.0.10"), all: addr("10.96.0.11")}})
	if sharedWarning(m) {
		t.Errorf("per-Gateway ports: warned about a shared listener: %q", m.Warnings)
	}
	ls, la := listener(t, m, same, "http"), listener(t, m, all, "http")
	if ls.EnvoyPort == la.EnvoyPort || ls.EnvoyPort < r.First || ls.EnvoyPort > r.Last || la.EnvoyPort < r.First || la.EnvoyPort > r.Last {
		t.Fatalf("Envoy ports %d and %d: want two different ports in %s", ls.EnvoyPort, la.EnvoyPort, r)
	}
	routesOf := func(l *Listener) map[string]bool {
		out := map[string]bool{}
		for _, a := range l.Routes {
			out[a.Route.Name] = true
		}
		return out
	}
	if got := routesOf(ls); !got["multiple-gateways-shared-route"] || !got["same-namespace-dedicated-route"] || got["all-namespaces-dedicated-route"] {
		t.Errorf("same-namespace routes = %v", got)
	}
	if got := routesOf(la); !got["multiple-gateways-shared-route"] || !got["all-namespaces-dedicated-route"] || got["same-namespace-dedicated-route"] {
		t.Errorf("all-namespaces routes = %v", got)
	}
	for key, want := range map[string]string{same: "10.96.0.10", all: "10.96.0.11"} {
		g := m.Gateway(key)
		if len(g.Addresses) != 1 || g.Addresses[0].Value != want {
			t.Errorf("%s addresses = %v, want %s", key, g.Addresses, want)
		}
		wantCond(t, key, g.Conditions, "Programmed", metav1.ConditionTrue, "Programmed")
		ports := g.GatewayPorts()
		if len(ports) != 1 || ports[0].Port != 80 || ports[0].EnvoyPort != listener(t, m, key, "http").EnvoyPort {
			t.Errorf("%s GatewayPorts = %+v", key, ports)
		}
	}
	// A Gateway without an address of its own (its Service not made yet) is not Programmed.
	bare := Resolve(snap, Options{GatewayPorts: r, GatewayAddresses: map[string][]gwapiv1.GatewayStatusAddress{same: addr("10.96.0.10")}})
	wantCond(t, all, bare.Gateway(all).Conditions, "Programmed", metav1.ConditionFalse, "AddressNotAssigned")

	// Resolving again (the status writer, a restart) gives the same ports.
	again := Resolve(snap, Options{GatewayPorts: r})
	if listener(t, again, same, "http").EnvoyPort != ls.EnvoyPort || listener(t, again, all, "http").EnvoyPort != la.EnvoyPort {
		t.Error("a second resolve allocated other ports")
	}
}

// TestGatewayPortsExhausted: when the range is full, the listeners left without a port are
// not accepted (PortUnavailable), say so, and are not programmed.
func TestGatewayPortsExhausted(t *testing.T) {
	objs := upstreamObjects(t)
	m := Resolve(discovery.Build(1, objs, "infergw"), Options{GatewayPorts: PortRange{First: 20000, Last: 20000}})
	var withPort, without int
	for _, g := range m.Gateways {
		for _, l := range g.Listeners {
			switch {
			case l.EnvoyPort == 20000:
				withPort++
			case l.EnvoyPort == 0:
				without++
				c := condOf(t, l.Conditions, "Accepted")
				if c.Status != metav1.ConditionFalse || c.Reason != string(gwapiv1.ListenerReasonPortUnavailable) || l.Ready {
					t.Errorf("%s/%s without a port: Accepted %s/%s, ready %v", g.Key, l.Name, c.Status, c.Reason, l.Ready)
				}
			default:
				t.Errorf("%s/%s got port %d outside the range", g.Key, l.Name, l.EnvoyPort)
			}
		}
	}
	if withPort == 0 || without == 0 {
		t.Errorf("%d listeners with the one port, %d without: want both", withPort, without)
	}
}
