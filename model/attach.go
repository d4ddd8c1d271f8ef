package model

import (
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/infergw/infergw/discovery"
)

// resolveRoute decides, for every parentRef of an HTTPRoute naming one of infergw's
// Gateways, whether and where the route attaches. This is the one place attachment is
// decided; xds and the status writer only read the result. It returns nil for a route that
// names none of infergw's Gateways.
func (m *Model) resolveRoute(hr *gwapiv1.HTTPRoute) *Route {
	r := &Route{HTTPRoute: hr, Key: discovery.Key(hr.Namespace, hr.Name)}
	for _, ref := range hr.Spec.ParentRefs {
		if !discovery.IsGatewayParentRef(ref) {
			continue
		}
		ns := hr.Namespace
		if ref.Namespace != nil && *ref.Namespace != "" {
			ns = string(*ref.Namespace)
		}
		g := m.gateways[discovery.Key(ns, string(ref.Name))]
		if g == nil || r.hasParent(ref) {
			continue
		}
		r.Parents = append(r.Parents, &RouteParent{Ref: ref, Gateway: g})
	}
	if len(r.Parents) == 0 {
		return nil
	}
	for _, h := range hr.Spec.Hostnames {
		if ValidHostname(string(h)) {
			r.Hostnames = append(r.Hostnames, string(h))
		} else {
			m.warnf("httproute %s: invalid hostname %q ignored", r.Key, h)
		}
	}
	m.resolveRules(r)
	attached := false
	for _, p := range r.Parents {
		m.attach(r, p)
		attached = attached || len(p.Listeners) > 0
	}
	if !attached {
		m.warnf("httproute %s: attaches to no listener of a known Gateway", r.Key)
	}
	return r
}

func (r *Route) hasParent(ref gwapiv1.ParentReference) bool {
	for _, p := range r.Parents {
		if SameParentRef(p.Ref, ref, r.Namespace) {
			return true
		}
	}
	return false
}

// attach decides one parentRef: the listeners its sectionName and port select, those of
// them that are ready and allow the route (namespace and kind), those of them whose
// hostnames intersect the route's. The first empty step gives the spec's reason.
func (m *Model) attach(r *Route, p *RouteParent) {
	var selected, allowed []*Listener
	for _, l := range p.Gateway.Listeners {
		if p.Ref.SectionName != nil && *p.Ref.SectionName != l.Name {
			continue
		}
		if p.Ref.Port != nil && *p.Ref.Port != l.Port {
			continue
		}
		selected = append(selected, l)
		if l.Attachable && m.allows(l, r) {
			allowed = append(allowed, l)
		}
	}
	gwKey := p.Gateway.Key
	if len(selected) == 0 {
		p.Accepted = Condition{metav1.ConditionFalse, string(gwapiv1.RouteReasonNoMatchingParent),
			fmt.Sprintf("Gateway %s has no listener matching the parentRef's sectionName/port", gwKey)}
		return
	}
	if len(allowed) == 0 {
		p.Accepted = Condition{metav1.ConditionFalse, string(gwapiv1.RouteReasonNotAllowedByListeners),
			fmt.Sprintf("no listener of Gateway %s allows this route", gwKey)}
		return
	}
	invalidHosts := len(r.Spec.Hostnames) > 0 && len(r.Hostnames) == 0
	for _, l := range allowed {
		if invalidHosts {
			break
		}
		hosts := intersectHostnames(l.Hostname, r.Hostnames)
		if len(hosts) == 0 {
			continue
		}
		p.Listeners = append(p.Listeners, l)
		if !l.hasRoute(r) {
			l.Routes = append(l.Routes, &Attachment{Route: r, Hostnames: hosts})
		}
	}
	if len(p.Listeners) == 0 {
		p.Accepted = Condition{metav1.ConditionFalse, string(gwapiv1.RouteReasonNoMatchingListenerHostname),
			fmt.Sprintf("no hostname of the route matches a listener of Gateway %s", gwKey)}
		return
	}
	p.Accepted = Condition{metav1.ConditionTrue, string(gwapiv1.RouteReasonAccepted), "Route is accepted"}
	for _, rule := range r.Rules {
		for _, b := range rule.Backends {
			if b.Pool != nil && !containsString(b.Pool.Parents, gwKey) {
				b.Pool.Parents = append(b.Pool.Parents, gwKey)
			}
		}
	}
}

func (l *Listener) hasRoute(r *Route) bool {
	for _, a := range l.Routes {
		if a.Route == r {
			return true
		}
	}
	return false
}

// allows applies the listener's allowedRoutes: the route's kind must be supported, and its
// namespace allowed (Same by default, All, or Selector on the namespace's labels).
func (m *Model) allows(l *Listener, r *Route) bool {
	if len(l.SupportedKinds) == 0 {
		return false
	}
	from := gwapiv1.NamespacesFromSame
	var sel *metav1.LabelSelector
	if ar := l.spec.AllowedRoutes; ar != nil && ar.Namespaces != nil {
		if ar.Namespaces.From != nil {
			from = *ar.Namespaces.From
		}
		sel = ar.Namespaces.Selector
	}
	switch from {
	case gwapiv1.NamespacesFromAll:
		return true
	case gwapiv1.NamespacesFromSame:
		return r.Namespace == l.Gateway.Namespace
	case gwapiv1.NamespacesFromSelector:
		if sel == nil {
			return false
		}
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			m.warnf("gateway %s listener %s: bad namespace selector: %v", l.Gateway.Key, l.Name, err)
			return false
		}
		nsLabels, ok := m.nsLabels[r.Namespace]
		return ok && s.Matches(labels.Set(nsLabels))
	default:
		m.warnf("gateway %s listener %s: allowedRoutes from %s is not supported; route %s not attached", l.Gateway.Key, l.Name, from, r.Key)
		return false
	}
}

// intersectHostnames returns the virtual-host names a route gets on a listener: the route's
// hostnames that the listener's hostname admits (the more specific of each pair), "*" when
// neither names any.
func intersectHostnames(listener string, route []string) []string {
	if len(route) == 0 {
		if listener == "" {
			return []string{"*"}
		}
		return []string{listener}
	}
	var out []string
	for _, r := range route {
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

func compactStrings(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

func containsString(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// SameParentRef compares parentRefs with the API defaults applied (group, kind Gateway, the
// route's namespace).
func SameParentRef(a, b gwapiv1.ParentReference, routeNS string) bool {
	type normRef struct {
		group, kind, namespace, name, section string
		port                                  int32
	}
	norm := func(r gwapiv1.ParentReference) normRef {
		n := normRef{group: gwapiv1.GroupName, kind: "Gateway", namespace: routeNS, name: string(r.Name), port: -1}
		if r.Group != nil {
			n.group = string(*r.Group)
		}
		if r.Kind != nil {
			n.kind = string(*r.Kind)
		}
		if r.Namespace != nil && *r.Namespace != "" {
			n.namespace = string(*r.Namespace)
		}
		if r.SectionName != nil {
			n.section = string(*r.SectionName)
		}
		if r.Port != nil {
			n.port = *r.Port
		}
		return n
	}
	return norm(a) == norm(b)
}
