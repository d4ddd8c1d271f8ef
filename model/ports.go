package model

import (
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// PortRange is a range of ports Envoy may bind, First through Last inclusive. The zero
// value is no range.
type PortRange struct {
	First, Last int32
}

// Enabled reports whether the range holds any port.
func (r PortRange) Enabled() bool { return r.First > 0 && r.Last >= r.First }

// Size is the number of ports in the range.
func (r PortRange) Size() int {
	if !r.Enabled() {
		return 0
	}
	return int(r.Last-r.First) + 1
}

// Validate reports whether the range is empty (off) or a valid range of ports.
func (r PortRange) Validate() error {
	if r == (PortRange{}) {
		return nil
	}
	if r.First < 1 || r.Last > 65535 || r.First > r.Last {
		return fmt.Errorf("port range %d-%d: want 1 <= first <= last <= 65535", r.First, r.Last)
	}
	return nil
}

// String is "first-last" ("" when off).
func (r PortRange) String() string {
	if r == (PortRange{}) {
		return ""
	}
	return strconv.Itoa(int(r.First)) + "-" + strconv.Itoa(int(r.Last))
}

// GatewayPort is one port of one Gateway: the unit that gets its own Envoy port when
// Options.GatewayPorts is set (every listener of the Gateway on that port shares it).
type GatewayPort struct {
	Gateway string // namespace/name
	Port    int32
}

// AllocatedPort is a GatewayPort with the creation time of its Gateway, the input of
// AllocatePorts.
type AllocatedPort struct {
	GatewayPort
	Created metav1.Time
}

// AllocatePorts gives every GatewayPort its own port of r, or none when r is full.
//
// Why this shape: the allocation must be the same in every process that computes it (the
// xDS translation and the status writer, across restarts) without storing anything, and a
// Gateway's port should not move when other Gateways come and go. Each GatewayPort
// therefore prefers the port its FNV-1a hash names and probes upward (wrapping) to the next
// free one, and GatewayPorts choose in the order of their Gateway's creation (then key,
// then port): a new Gateway never takes a port an older one holds. A port moves only when
// an older Gateway that had taken its preferred port goes away (rare in a range of
// thousands). The result is bounded by r: with more GatewayPorts than ports, the youngest
// get none.
func AllocatePorts(ports []AllocatedPort, r PortRange) map[GatewayPort]int32 {
	out := make(map[GatewayPort]int32, len(ports))
	size := r.Size()
	if size == 0 {
		return out
	}
	sorted := append([]AllocatedPort(nil), ports...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i], sorted[j]
		if !a.Created.Equal(&b.Created) {
			return a.Created.Before(&b.Created)
		}
		if a.Gateway != b.Gateway {
			return a.Gateway < b.Gateway
		}
		return a.Port < b.Port
	})
	taken := make(map[int32]bool, len(sorted))
	for _, p := range sorted {
		if _, done := out[p.GatewayPort]; done {
			continue
		}
		if len(taken) == size {
			break
		}
		start := preferredSlot(p.GatewayPort, size)
		for i := range size {
			candidate := r.First + int32((start+i)%size) //nolint:gosec // G115: below size, at most 65535
			if !taken[candidate] {
				taken[candidate] = true
				out[p.GatewayPort] = candidate
				break
			}
		}
	}
	return out
}

// preferredSlot is the index in a range of size ports that p's FNV-1a hash names.
func preferredSlot(p GatewayPort, size int) int {
	h := fnv.New64a()
	h.Write([]byte(p.Gateway + "|" + strconv.Itoa(int(p.Port))))
	return int(h.Sum64() % uint64(size)) //nolint:gosec // G115: size is positive and the result below it
}

// allocateEnvoyPorts sets every listener's EnvoyPort: its own Gateway port when the
// Gateways share one Envoy address (Options.GatewayPorts off), else the port AllocatePorts
// gives its (Gateway, port). A listener that gets none is not accepted (PortUnavailable).
func (m *Model) allocateEnvoyPorts() {
	r := m.Options.GatewayPorts
	if !r.Enabled() {
		for _, g := range m.Gateways {
			for _, l := range g.Listeners {
				l.EnvoyPort = l.Port
			}
		}
		return
	}
	var want []AllocatedPort
	for _, g := range m.Gateways {
		for _, l := range g.Listeners {
			if l.Port >= 1 && l.Port <= 65535 {
				want = append(want, AllocatedPort{GatewayPort{g.Key, l.Port}, g.CreationTimestamp})
			}
		}
	}
	got := AllocatePorts(want, r)
	for _, g := range m.Gateways {
		for _, l := range g.Listeners {
			if p, ok := got[GatewayPort{g.Key, l.Port}]; ok {
				l.EnvoyPort = p
				continue
			}
			if !l.Attachable {
				continue
			}
			l.Ready, l.Attachable = false, false
			setCond(&l.Conditions, string(gwapiv1.ListenerConditionAccepted), g.Generation, Condition{metav1.ConditionFalse,
				string(gwapiv1.ListenerReasonPortUnavailable), fmt.Sprintf("no free proxy port left in %s", r)})
			setCond(&l.Conditions, string(gwapiv1.ListenerConditionProgrammed), g.Generation, Condition{metav1.ConditionFalse,
				string(gwapiv1.ListenerReasonInvalid), "no proxy port"})
			m.warnf("gateway %s listener %s: no free proxy port left in %s; not programmed", g.Key, l.Name, r)
		}
	}
}

// GatewayPorts returns the Gateway's distinct listener ports with the Envoy port each is
// served on, sorted by listener port (the ports of a per-Gateway Service).
func (g *Gateway) GatewayPorts() []ListenerPort {
	seen := map[int32]bool{}
	var out []ListenerPort
	for _, l := range g.Listeners {
		if l.EnvoyPort == 0 || seen[l.Port] || !l.Attachable {
			continue
		}
		seen[l.Port] = true
		out = append(out, ListenerPort{Port: l.Port, EnvoyPort: l.EnvoyPort})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Port < out[j].Port })
	return out
}

// ListenerPort is a Gateway listener port and the Envoy port that serves it.
type ListenerPort struct {
	Port, EnvoyPort int32
}
