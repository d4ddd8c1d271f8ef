package model

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	infv1 "github.com/infergw/infergw/api/v1"
	"github.com/infergw/infergw/discovery"
)

// addPool resolves a pool: its endpoints and its endpoint picker.
func (m *Model) addPool(p *discovery.Pool) {
	key := discovery.Key(p.Namespace, p.Name)
	pm := &Pool{
		InferencePool: p.InferencePool,
		Key:           key,
		H2C:           p.Spec.AppProtocol == infv1.AppProtocolH2C,
		FailOpen:      p.Spec.EndpointPickerRef.FailureMode == infv1.EndpointPickerFailOpen,
	}
	for _, ep := range p.Endpoints {
		addr, err := netip.ParseAddr(ep.IP)
		if err != nil {
			m.warnf("pool %s: endpoint %s has no valid IP %q; skipped", key, ep.Name, ep.IP)
			continue
		}
		for _, tp := range p.Spec.TargetPorts {
			if tp.Number < 1 || tp.Number > 65535 {
				m.warnf("pool %s: target port %d out of range; skipped", key, tp.Number)
				continue
			}
			hp := HostPort{Host: addr.String(), Port: uint32(tp.Number)}
			pm.Endpoints = append(pm.Endpoints, hp)
			pm.Members = append(pm.Members, PoolMember{Pod: ep.Name, Labels: ep.Labels, HostPort: hp})
		}
	}
	pm.Picker, pm.ResolvedRefs = m.resolvePicker(p.InferencePool)
	m.Pools = append(m.Pools, pm)
	m.pools[key] = pm
}

// resolvePicker resolves an endpointPickerRef: a core Service of the pool's namespace that
// exposes the referenced port.
func (m *Model) resolvePicker(p *infv1.InferencePool) (*Picker, Condition) {
	ref := p.Spec.EndpointPickerRef
	key := discovery.Key(p.Namespace, p.Name)
	invalid := func(format string, args ...any) (*Picker, Condition) {
		msg := fmt.Sprintf(format, args...)
		m.warnf("pool %s: %s", key, msg)
		return nil, Condition{metav1.ConditionFalse, infv1.PoolReasonInvalidExtRef, msg}
	}
	if !discovery.IsServicePickerRef(ref) {
		group := ""
		if ref.Group != nil {
			group = string(*ref.Group)
		}
		return invalid("endpointPickerRef must name a core Service, not group %q kind %q", group, ref.Kind)
	}
	if ref.Name == "" {
		return invalid("endpointPickerRef.name is empty")
	}
	if ref.Port == nil {
		return invalid("endpointPickerRef %s has no port", ref.Name)
	}
	svc, ok := m.services[discovery.Key(p.Namespace, string(ref.Name))]
	if !ok {
		return invalid("endpoint picker Service %s/%s not found", p.Namespace, ref.Name)
	}
	port := int32(ref.Port.Number)
	if !servicePortExists(svc, port) {
		return invalid("endpointPickerRef Service %s/%s has no port %d", p.Namespace, ref.Name, port)
	}
	up, err := serviceUpstream(svc, port)
	if err != nil {
		return invalid("endpoint picker: %v", err)
	}
	// The picker Service's ready endpoints, when it has slices: Envoy then balances each
	// ext_proc stream over the picker replicas and health-checks each one, where a
	// clusterIP would pin each Envoy worker's one HTTP/2 connection to one replica.
	if eps, ok := sliceEndpoints(svc, port, m.slices[discovery.Key(svc.Namespace, svc.Name)]); ok {
		up = Upstream{Addrs: eps}
	}
	pkey := fmt.Sprintf("%s/%s/%d", svc.Namespace, svc.Name, port)
	pk, ok := m.pickers[pkey]
	if !ok {
		serverName := svc.Name + "." + svc.Namespace + ".svc"
		if svc.Spec.Type == corev1.ServiceTypeExternalName && svc.Spec.ExternalName != "" {
			serverName = svc.Spec.ExternalName
		}
		pk = &Picker{Namespace: svc.Namespace, Name: svc.Name, Port: port, Upstream: up, ServerName: serverName}
		m.pickers[pkey] = pk
	}
	return pk, Condition{metav1.ConditionTrue, infv1.PoolReasonResolvedRefs, "endpointPickerRef resolved"}
}

// servicePortExists reports whether a Service exposes port. A Service that lists no ports
// (an ExternalName Service, or one written by hand for local mode) accepts any port.
func servicePortExists(svc *corev1.Service, port int32) bool {
	if len(svc.Spec.Ports) == 0 {
		return true
	}
	for _, p := range svc.Spec.Ports {
		if p.Port == port {
			return true
		}
	}
	return false
}

// refProblem is why a backendRef does not resolve, with the route ResolvedRefs reason.
type refProblem struct {
	reason, msg string
}

// resolveRules resolves every rule's backendRefs and sets the route's ResolvedRefs
// condition. A rule left without a backend answers 500, as the Gateway API asks.
func (m *Model) resolveRules(r *Route) {
	var problems []refProblem
	for ri := range r.Spec.Rules {
		spec := &r.Spec.Rules[ri]
		rule := &Rule{Index: ri, Spec: spec}
		pools, services := 0, 0
		for bi, br := range spec.BackendRefs {
			if len(br.Filters) > 0 {
				m.warnf("httproute %s rule %d backendRef %d: backendRef filters are not supported; ignored", r.Key, ri, bi)
			}
			b, prob := m.resolveBackend(r, br.BackendObjectReference)
			if prob != nil {
				problems = append(problems, *prob)
				m.warnf("httproute %s rule %d: %s", r.Key, ri, prob.msg)
				continue
			}
			b.Weight = 1
			if br.Weight != nil {
				b.Weight = *br.Weight
			}
			if b.Weight <= 0 {
				continue
			}
			if b.Pool != nil {
				pools++
			} else {
				services++
			}
			rule.Backends = append(rule.Backends, b)
		}
		switch {
		case len(rule.Backends) == 0:
			rule.Invalid = "no valid backend for this route"
		case pools > 0 && services > 0:
			rule.Mixed = true
			rule.Invalid = "route mixes InferencePool and Service backends"
			m.warnf("httproute %s rule %d: mixes InferencePools and Services; not supported", r.Key, ri)
		}
		r.Rules = append(r.Rules, rule)
	}
	r.ResolvedRefs = Condition{metav1.ConditionTrue, string(gwapiv1.RouteReasonResolvedRefs), "all backendRefs resolved"}
	// One reason is reported; the order follows how the conformance suite expects a route
	// with several problems to be described: a kind we cannot use, then a forbidden
	// reference, then a missing backend.
	for _, reason := range []gwapiv1.RouteConditionReason{gwapiv1.RouteReasonInvalidKind, gwapiv1.RouteReasonRefNotPermitted, gwapiv1.RouteReasonBackendNotFound} {
		var msgs []string
		for _, p := range problems {
			if p.reason == string(reason) {
				msgs = append(msgs, p.msg)
			}
		}
		if len(msgs) > 0 {
			r.ResolvedRefs = Condition{metav1.ConditionFalse, string(reason), strings.Join(dedupe(msgs), "; ")}
			return
		}
	}
}

// resolveBackend resolves one backendRef to a pool or a Service backend.
func (m *Model) resolveBackend(r *Route, ref gwapiv1.BackendObjectReference) (Backend, *refProblem) {
	ns := r.Namespace
	if ref.Namespace != nil && *ref.Namespace != "" {
		ns = string(*ref.Namespace)
	}
	group, kind := "", "Service"
	if ref.Group != nil {
		group = string(*ref.Group)
	}
	if ref.Kind != nil {
		kind = string(*ref.Kind)
	}
	key := discovery.Key(ns, string(ref.Name))
	isPool, isService := discovery.IsPoolBackendRef(ref), discovery.IsServiceBackendRef(ref)
	if !isPool && !isService {
		return Backend{}, &refProblem{string(gwapiv1.RouteReasonInvalidKind), fmt.Sprintf("backendRef kind %s/%s is not supported", group, kind)}
	}
	if ns != r.Namespace && !m.granted(gwapiv1.GroupName, "HTTPRoute", r.Namespace, group, kind, ns, string(ref.Name)) {
		return Backend{}, &refProblem{string(gwapiv1.RouteReasonRefNotPermitted),
			fmt.Sprintf("backendRef %s %s is in another namespace and no ReferenceGrant allows it", kind, key)}
	}
	if isPool {
		p := m.pools[key]
		if p == nil {
			return Backend{}, &refProblem{string(gwapiv1.RouteReasonBackendNotFound), fmt.Sprintf("InferencePool %s not found", key)}
		}
		return Backend{Pool: p}, nil
	}
	sb, err := m.serviceBackend(ns, string(ref.Name), ref.Port)
	if err != nil {
		return Backend{}, &refProblem{string(gwapiv1.RouteReasonBackendNotFound), err.Error()}
	}
	return Backend{Service: sb}, nil
}

// serviceBackend resolves a Service backendRef, creating its ServiceBackend once.
func (m *Model) serviceBackend(ns, name string, port *gwapiv1.PortNumber) (*ServiceBackend, error) {
	if port == nil {
		return nil, fmt.Errorf("backendRef Service %s/%s has no port", ns, name)
	}
	svc, ok := m.services[discovery.Key(ns, name)]
	if !ok {
		return nil, fmt.Errorf("backend Service %s/%s not found", ns, name)
	}
	key := fmt.Sprintf("%s/%s/%d", ns, name, *port)
	if sb, ok := m.svcs[key]; ok {
		return sb, nil
	}
	up, err := serviceUpstream(svc, *port)
	if err != nil {
		return nil, err
	}
	if eps, ok := sliceEndpoints(svc, *port, m.slices[discovery.Key(ns, name)]); ok {
		up = Upstream{Addrs: eps}
	}
	sb := &ServiceBackend{Namespace: ns, Name: name, Port: *port, Upstream: up}
	m.svcs[key] = sb
	return sb, nil
}

// sliceEndpoints returns the ready endpoints of a Service port from its EndpointSlices
// (what kube-proxy would send to), so that Envoy balances over Pods itself and headless
// Services or Services with hand-written slices work without DNS. ok is false when the
// Service has no slice at all (the clusterIP or DNS rule applies then).
func sliceEndpoints(svc *corev1.Service, port int32, slices []*discoveryv1.EndpointSlice) ([]HostPort, bool) {
	if len(slices) == 0 {
		return nil, false
	}
	portName := ""
	for _, sp := range svc.Spec.Ports {
		if sp.Port == port {
			portName = sp.Name
		}
	}
	out := []HostPort{}
	for _, es := range slices {
		if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		target := int32(0)
		for _, p := range es.Ports {
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			if name == portName && p.Port != nil {
				target = *p.Port
			}
		}
		if target < 1 || target > 65535 {
			continue
		}
		for _, ep := range es.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, a := range ep.Addresses {
				if addr, err := netip.ParseAddr(a); err == nil {
					out = append(out, HostPort{Host: addr.String(), Port: uint32(target)})
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Host != out[j].Host {
			return out[i].Host < out[j].Host
		}
		return out[i].Port < out[j].Port
	})
	return out, true
}

// serviceUpstream applies the address rule: the clusterIP when it is an IP, else the
// cluster DNS name (or the externalName of an ExternalName Service).
func serviceUpstream(svc *corev1.Service, port int32) (Upstream, error) {
	if port < 1 || port > 65535 {
		return Upstream{}, fmt.Errorf("service %s/%s: port %d out of range", svc.Namespace, svc.Name, port)
	}

	if svc.Spec.Type == corev1.ServiceTypeExternalName && svc.Spec.ExternalName != "" {
		return Upstream{DNSName: svc.Spec.ExternalName, DNSPort: uint32(port)}, nil
	}
	if addr, err := netip.ParseAddr(svc.Spec.ClusterIP); err == nil {
		return Upstream{Addrs: []HostPort{{Host: addr.String(), Port: uint32(port)}}}, nil
	}
	return Upstream{DNSName: svc.Name + "." + svc.Namespace + ".svc.cluster.local", DNSPort: uint32(port)}, nil
}

// granted reports whether a ReferenceGrant in the target's namespace allows objects of
// fromGroup/fromKind in fromNS to refer to toGroup/toKind toName ("" group is core).
func (m *Model) granted(fromGroup, fromKind, fromNS, toGroup, toKind, toNS, toName string) bool {
	if toGroup == "core" {
		toGroup = ""
	}
	for _, g := range m.grants {
		if g.Namespace != toNS {
			continue
		}
		fromOK := false
		for _, f := range g.Spec.From {
			if string(f.Group) == fromGroup && string(f.Kind) == fromKind && string(f.Namespace) == fromNS {
				fromOK = true
				break
			}
		}
		if !fromOK {
			continue
		}
		for _, t := range g.Spec.To {
			tg := string(t.Group)
			if tg == "core" {
				tg = ""
			}
			if tg == toGroup && string(t.Kind) == toKind && (t.Name == nil || *t.Name == "" || string(*t.Name) == toName) {
				return true
			}
		}
	}
	return false
}

func dedupe(s []string) []string {
	seen := map[string]bool{}
	out := s[:0]
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}
