package xds

import (
	"regexp"
	"sort"
	"strings"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/infergw/infergw/discovery"
)

// portListener is one Envoy listener: every HTTP Gateway listener on the same port shares it
// (their hostnames become virtual hosts of one route configuration).
type portListener struct {
	port   int32
	vhosts map[string]*vhost // by hostname; "*" is the catch-all
}

type vhost struct {
	hostname string
	entries  []routeEntry
	seen     map[string]bool // HTTPRoute keys already added
}

// gatewayListener is one HTTP listener of one Gateway.
type gatewayListener struct {
	gw       *gwapiv1.Gateway
	l        *gwapiv1.Listener
	hostname string // "" when the listener has none
}

// attachRoutes builds the Envoy listeners' virtual hosts: each HTTPRoute is attached to the
// Gateway listeners its parentRefs name (and that allow it), under the intersection of its
// hostnames with the listener's.
func (b *builder) attachRoutes(snap *discovery.Snapshot) map[int32]*portListener {
	ports := map[int32]*portListener{}
	byGateway := map[string][]gatewayListener{}
	for _, gw := range snap.Gateways {
		if gw == nil {
			continue
		}
		gwKey := discovery.Key(gw.Namespace, gw.Name)
		for i := range gw.Spec.Listeners {
			l := &gw.Spec.Listeners[i]
			if l.Protocol != gwapiv1.HTTPProtocolType {
				b.ix.warnf("gateway %s listener %s: protocol %s is not supported (only HTTP); skipped", gwKey, l.Name, l.Protocol)
				continue
			}
			if l.Port < 1 || l.Port > 65535 {
				b.ix.warnf("gateway %s listener %s: port %d out of range; skipped", gwKey, l.Name, l.Port)
				continue
			}
			gl := gatewayListener{gw: gw, l: l}
			if l.Hostname != nil {
				gl.hostname = string(*l.Hostname)
				if !validHostname(gl.hostname) {
					b.ix.warnf("gateway %s listener %s: invalid hostname %q; skipped", gwKey, l.Name, gl.hostname)
					continue
				}
			}
			byGateway[gwKey] = append(byGateway[gwKey], gl)
			if ports[l.Port] == nil {
				ports[l.Port] = &portListener{port: l.Port, vhosts: map[string]*vhost{}}
			}
		}
	}
	for _, hr := range snap.HTTPRoutes {
		if hr == nil {
			continue
		}
		b.attachRoute(hr, byGateway, ports)
	}
	return ports
}

func (b *builder) attachRoute(hr *gwapiv1.HTTPRoute, byGateway map[string][]gatewayListener, ports map[int32]*portListener) {
	routeKey := discovery.Key(hr.Namespace, hr.Name)
	hostnames := make([]gwapiv1.Hostname, 0, len(hr.Spec.Hostnames))
	for _, h := range hr.Spec.Hostnames {
		if validHostname(string(h)) {
			hostnames = append(hostnames, h)
		} else {
			b.ix.warnf("httproute %s: invalid hostname %q ignored", routeKey, h)
		}
	}
	if len(hr.Spec.Hostnames) > 0 && len(hostnames) == 0 {
		b.ix.warnf("httproute %s: no valid hostname; not attached", routeKey)
		return
	}
	var entries []routeEntry
	built := false
	attached := false
	for _, ref := range hr.Spec.ParentRefs {
		if (ref.Group != nil && *ref.Group != gwapiv1.GroupName) || (ref.Kind != nil && *ref.Kind != "Gateway") {
			continue
		}
		ns := hr.Namespace
		if ref.Namespace != nil {
			ns = string(*ref.Namespace)
		}
		for _, gl := range byGateway[discovery.Key(ns, string(ref.Name))] {
			if ref.SectionName != nil && *ref.SectionName != gl.l.Name {
				continue
			}
			if ref.Port != nil && *ref.Port != gl.l.Port {
				continue
			}
			if !b.allowsRoute(gl, hr) {
				continue
			}
			hosts := intersectHostnames(gl.hostname, hostnames)
			if len(hosts) == 0 {
				continue
			}
			if !built {
				entries = b.routeEntries(hr)
				built = true
			}
			attached = true
			pl := ports[gl.l.Port]
			for _, h := range hosts {
				vh := pl.vhosts[h]
				if vh == nil {
					vh = &vhost{hostname: h, seen: map[string]bool{}}
					pl.vhosts[h] = vh
				}
				if !vh.seen[routeKey] {
					vh.seen[routeKey] = true
					vh.entries = append(vh.entries, entries...)
				}
			}
		}
	}
	if !attached {
		b.ix.warnf("httproute %s: attaches to no listener of a known Gateway", routeKey)
	}
}

// allowsRoute applies the listener's allowedRoutes namespaces (default Same).
func (b *builder) allowsRoute(gl gatewayListener, hr *gwapiv1.HTTPRoute) bool {
	from := gwapiv1.NamespacesFromSame
	if ar := gl.l.AllowedRoutes; ar != nil && ar.Namespaces != nil && ar.Namespaces.From != nil {
		from = *ar.Namespaces.From
	}
	switch from {
	case gwapiv1.NamespacesFromAll:
		return true
	case gwapiv1.NamespacesFromSame:
		return hr.Namespace == gl.gw.Namespace
	default:
		b.ix.warnf("gateway %s listener %s: allowedRoutes from %s is not supported; route %s/%s not attached",
			discovery.Key(gl.gw.Namespace, gl.gw.Name), gl.l.Name, from, hr.Namespace, hr.Name)
		return false
	}
}

// intersectHostnames returns the virtual-host names a route gets on a listener: the route's
// hostnames that the listener's hostname admits (the more specific of each pair), "*" when
// neither names any.
func intersectHostnames(listener string, route []gwapiv1.Hostname) []string {
	if len(route) == 0 {
		if listener == "" {
			return []string{"*"}
		}
		return []string{listener}
	}
	var out []string
	for _, rh := range route {
		r := string(rh)
		switch {
		case listener == "" || r == listener:
			out = append(out, r)
		case strings.HasPrefix(listener, "*.") && strings.HasSuffix(r, listener[1:]):
			out = append(out, r)
		case strings.HasPrefix(r, "*.") && strings.HasSuffix(listener, r[1:]):
			out = append(out, listener)
		}
	}
	sort.Strings(out)
	return compactStrings(out)
}

// hostnameRE is Gateway API's Hostname pattern (an optional leading "*." wildcard label).
var hostnameRE = regexp.MustCompile(`^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

func validHostname(h string) bool { return len(h) <= 253 && hostnameRE.MatchString(h) }

func compactStrings(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

func sortedPorts(m map[int32]*portListener) []int32 {
	out := make([]int32, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
