package xds

import (
	"sort"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/infergw/infergw/model"
)

// portListener is one Envoy listener: every ready HTTP Gateway listener on the same Envoy
// port (model.Listener.EnvoyPort) shares it (their hostnames become virtual hosts of one route configuration).
type portListener struct {
	port   int32
	vhosts map[string]*vhost // by hostname; "*" is the catch-all
	// https ports terminate TLS with the certificates in tls.
	https bool
	tls   []tlsChain
}

type vhost struct {
	hostname string
	entries  []routeEntry
	seen     map[string]bool // HTTPRoute keys already added
}

// portListeners groups the model's ready listeners by port and puts the routes the model
// attached to each into virtual hosts. Which route attaches where was decided by the model;
// this only lays it out for Envoy.
func (b *builder) portListeners(m *model.Model) map[int32]*portListener {
	ports := map[int32]*portListener{}
	built := map[*model.Route][]routeEntry{}
	for _, g := range m.Gateways {
		for _, l := range g.Listeners {
			if !l.Ready {
				continue
			}
			https := l.Protocol == gwapiv1.HTTPSProtocolType
			// One Envoy listener per Envoy port: every Gateway's listeners on a port share
			// it, unless the model gave each Gateway ports of its own.
			pl := ports[l.EnvoyPort]
			if pl == nil {
				pl = &portListener{port: l.EnvoyPort, vhosts: map[string]*vhost{}, https: https}
				ports[l.EnvoyPort] = pl
			}
			if pl.https != https {
				// Gateways of the class share one Envoy listener per port.
				b.ix.warnf("gateway %s listener %s: port %d is already served with another protocol; skipped", g.Key, l.Name, l.Port)
				continue
			}
			if https {
				pl.addTLSChain(l.Hostname, l.TLS)
			}
			for _, a := range l.Routes {
				entries, ok := built[a.Route]
				if !ok {
					entries = b.routeEntries(a.Route)
					built[a.Route] = entries
				}
				for _, h := range a.Hostnames {
					vh := pl.vhosts[h]
					if vh == nil {
						vh = &vhost{hostname: h, seen: map[string]bool{}}
						pl.vhosts[h] = vh
					}
					if !vh.seen[a.Route.Key] {
						vh.seen[a.Route.Key] = true
						vh.entries = append(vh.entries, entries...)
					}
				}
			}
		}
	}
	return ports
}

func sortedPorts(m map[int32]*portListener) []int32 {
	out := make([]int32, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
