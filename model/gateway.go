package model

import (
	"crypto/tls"
	"fmt"
	"regexp"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/infergw/infergw/discovery"
)

// httpRouteKind is the one route kind infergw's listeners take.
var httpRouteKind = gwapiv1.RouteGroupKind{Group: ptr(gwapiv1.Group(gwapiv1.GroupName)), Kind: "HTTPRoute"}

func ptr[T any](v T) *T { return &v }

func (m *Model) resolveClass(gc *gwapiv1.GatewayClass) *GatewayClass {
	c := &GatewayClass{GatewayClass: gc, Ours: string(gc.Spec.ControllerName) == m.Options.ControllerName}
	if c.Ours {
		setCond(&c.Conditions, string(gwapiv1.GatewayClassConditionStatusAccepted), gc.Generation,
			Condition{metav1.ConditionTrue, string(gwapiv1.GatewayClassReasonAccepted), "GatewayClass is accepted by " + m.Options.ControllerName})
	}
	return c
}

// resolveGateway resolves the listeners of a Gateway; route counts and the Gateway's own
// conditions come once routes are attached (finishGateway).
func (m *Model) resolveGateway(gw *gwapiv1.Gateway) *Gateway {
	g := &Gateway{Gateway: gw, Key: discovery.Key(gw.Namespace, gw.Name), Addresses: m.Options.Addresses}
	if addrs, ok := m.Options.GatewayAddresses[g.Key]; ok {
		g.Addresses = addrs
	}
	for i := range gw.Spec.Listeners {
		g.Listeners = append(g.Listeners, m.resolveListener(g, &gw.Spec.Listeners[i]))
	}
	markConflicts(g)
	return g
}

func (m *Model) resolveListener(g *Gateway, spec *gwapiv1.Listener) *Listener {
	l := &Listener{Gateway: g, Name: spec.Name, Port: spec.Port, Protocol: spec.Protocol, spec: spec}
	if spec.Hostname != nil {
		l.Hostname = string(*spec.Hostname)
	}
	gen := g.Generation
	accepted := Condition{metav1.ConditionTrue, string(gwapiv1.ListenerReasonAccepted), "Listener is accepted"}
	resolved := Condition{metav1.ConditionTrue, string(gwapiv1.ListenerReasonResolvedRefs), "All references resolved"}
	switch {
	case spec.Protocol != gwapiv1.HTTPProtocolType && spec.Protocol != gwapiv1.HTTPSProtocolType:
		accepted = Condition{metav1.ConditionFalse, string(gwapiv1.ListenerReasonUnsupportedProtocol),
			fmt.Sprintf("protocol %s is not supported (HTTP and HTTPS are)", spec.Protocol)}
		m.warnf("gateway %s listener %s: protocol %s is not supported (only HTTP and HTTPS); skipped", g.Key, spec.Name, spec.Protocol)
	case spec.Port < 1 || spec.Port > 65535:
		accepted = Condition{metav1.ConditionFalse, string(gwapiv1.ListenerReasonPortUnavailable), fmt.Sprintf("port %d out of range", spec.Port)}
		m.warnf("gateway %s listener %s: port %d out of range; skipped", g.Key, spec.Name, spec.Port)
	case l.Hostname != "" && !ValidHostname(l.Hostname):
		accepted = Condition{metav1.ConditionFalse, string(gwapiv1.ListenerReasonUnsupportedValue), fmt.Sprintf("invalid hostname %q", l.Hostname)}
		m.warnf("gateway %s listener %s: invalid hostname %q; skipped", g.Key, spec.Name, l.Hostname)
	}
	if accepted.Status == metav1.ConditionTrue {
		var kindsOK bool
		l.SupportedKinds, kindsOK = supportedKinds(spec)
		if !kindsOK {
			resolved = Condition{metav1.ConditionFalse, string(gwapiv1.ListenerReasonInvalidRouteKinds), "only HTTPRoute (gateway.networking.k8s.io) is supported"}
		}
		if spec.Protocol == gwapiv1.HTTPSProtocolType {
			var c Condition
			l.TLS, c = m.listenerCertificate(g, spec)
			if c.Status == metav1.ConditionFalse && resolved.Status == metav1.ConditionTrue {
				resolved = c
			}
			if c.Reason == string(gwapiv1.ListenerReasonUnsupportedValue) {
				accepted = c
				resolved = Condition{metav1.ConditionTrue, string(gwapiv1.ListenerReasonResolvedRefs), "All references resolved"}
			}
		}
	} else {
		l.SupportedKinds = []gwapiv1.RouteGroupKind{}
	}
	l.Attachable = accepted.Status == metav1.ConditionTrue
	l.Ready = l.Attachable && resolved.Status == metav1.ConditionTrue
	programmed := Condition{metav1.ConditionTrue, string(gwapiv1.ListenerReasonProgrammed), "Listener is programmed"}
	if !l.Ready {
		programmed = Condition{metav1.ConditionFalse, string(gwapiv1.ListenerReasonInvalid), "Listener is not valid: " + firstFalse(accepted, resolved).Message}
	}
	setCond(&l.Conditions, string(gwapiv1.ListenerConditionAccepted), gen, accepted)
	setCond(&l.Conditions, string(gwapiv1.ListenerConditionResolvedRefs), gen, resolved)
	setCond(&l.Conditions, string(gwapiv1.ListenerConditionProgrammed), gen, programmed)
	setCond(&l.Conditions, string(gwapiv1.ListenerConditionConflicted), gen,
		Condition{metav1.ConditionFalse, string(gwapiv1.ListenerReasonNoConflicts), "No conflicts"})
	return l
}

func firstFalse(cs ...Condition) Condition {
	for _, c := range cs {
		if c.Status != metav1.ConditionTrue {
			return c
		}
	}
	return cs[0]
}

// supportedKinds returns the listener's route kinds: HTTPRoute when allowedRoutes.kinds is
// empty or names it; ok is false when kinds names anything else.
func supportedKinds(spec *gwapiv1.Listener) ([]gwapiv1.RouteGroupKind, bool) {
	if spec.AllowedRoutes == nil || len(spec.AllowedRoutes.Kinds) == 0 {
		return []gwapiv1.RouteGroupKind{httpRouteKind}, true
	}
	out := []gwapiv1.RouteGroupKind{}
	ok := true
	for _, k := range spec.AllowedRoutes.Kinds {
		group := gwapiv1.GroupName
		if k.Group != nil {
			group = string(*k.Group)
		}
		if group == gwapiv1.GroupName && k.Kind == "HTTPRoute" {
			if len(out) == 0 {
				out = append(out, httpRouteKind)
			}
			continue
		}
		ok = false
	}
	return out, ok
}

// listenerCertificate resolves an HTTPS listener's TLS: mode Terminate (the default) with
// one certificateRef to a kubernetes.io/tls Secret, in another namespace only when a
// ReferenceGrant allows it.
func (m *Model) listenerCertificate(g *Gateway, spec *gwapiv1.Listener) (*Certificate, Condition) {
	invalid := func(format string, args ...any) (*Certificate, Condition) {
		return nil, Condition{metav1.ConditionFalse, string(gwapiv1.ListenerReasonInvalidCertificateRef), fmt.Sprintf(format, args...)}
	}
	if spec.TLS == nil || len(spec.TLS.CertificateRefs) == 0 {
		return invalid("HTTPS listener without tls.certificateRefs")
	}
	if spec.TLS.Mode != nil && *spec.TLS.Mode != gwapiv1.TLSModeTerminate {
		return nil, Condition{metav1.ConditionFalse, string(gwapiv1.ListenerReasonUnsupportedValue), fmt.Sprintf("TLS mode %s is not supported on HTTPS listeners", *spec.TLS.Mode)}
	}
	ref := spec.TLS.CertificateRefs[0]
	if (ref.Group != nil && *ref.Group != "" && *ref.Group != "core") || (ref.Kind != nil && *ref.Kind != "Secret") {
		return invalid("certificateRef must be a core Secret")
	}
	ns := g.Namespace
	if ref.Namespace != nil && *ref.Namespace != "" {
		ns = string(*ref.Namespace)
	}
	key := discovery.Key(ns, string(ref.Name))
	if ns != g.Namespace && !m.granted(gwapiv1.GroupName, "Gateway", g.Namespace, "", "Secret", ns, string(ref.Name)) {
		return nil, Condition{metav1.ConditionFalse, string(gwapiv1.ListenerReasonRefNotPermitted),
			fmt.Sprintf("Secret %s is in another namespace and no ReferenceGrant allows it", key)}
	}
	sec, ok := m.secrets[key]
	if !ok {
		return invalid("Secret %s not found", key)
	}
	if sec.Type != corev1.SecretTypeTLS {
		return invalid("Secret %s is not of type %s", key, corev1.SecretTypeTLS)
	}
	certPEM, keyPEM := sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey]
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return invalid("Secret %s does not hold a valid certificate and key: %v", key, err)
	}
	return &Certificate{SecretKey: key, CertPEM: certPEM, KeyPEM: keyPEM},
		Condition{metav1.ConditionTrue, string(gwapiv1.ListenerReasonResolvedRefs), "All references resolved"}
}

// markConflicts marks listeners of one Gateway that share a port with a different protocol
// (ProtocolConflict) or share port, protocol and hostname (HostnameConflict): the later one
// in the list is not programmed.
func markConflicts(g *Gateway) {
	for i, l := range g.Listeners {
		for _, prev := range g.Listeners[:i] {
			if prev.Port != l.Port || !prev.Attachable {
				continue
			}
			reason := ""
			switch {
			case prev.Protocol != l.Protocol:
				reason = string(gwapiv1.ListenerReasonProtocolConflict)
			case prev.Hostname == l.Hostname:
				reason = string(gwapiv1.ListenerReasonHostnameConflict)
			}
			if reason == "" || !l.Attachable {
				continue
			}
			l.Ready, l.Attachable = false, false
			setCond(&l.Conditions, string(gwapiv1.ListenerConditionConflicted), g.Generation,
				Condition{metav1.ConditionTrue, reason, fmt.Sprintf("conflicts with listener %s", prev.Name)})
			setCond(&l.Conditions, string(gwapiv1.ListenerConditionProgrammed), g.Generation,
				Condition{metav1.ConditionFalse, string(gwapiv1.ListenerReasonInvalid), "Listener conflicts with " + string(prev.Name)})
		}
	}
}

// markPortConflicts applies what sharing one Envoy listener means: listeners with the same
// Envoy port (every Gateway's listeners on one port, unless Options.GatewayPorts gives each
// Gateway its own) serve one protocol, and an HTTPS port one certificate per hostname.
// Listeners of later Gateways (in namespace/name order) that would break this are not
// programmed, and say why.
func (m *Model) markPortConflicts() {
	type portUse struct {
		protocol gwapiv1.ProtocolType
		owner    string
		gateway  string
		tlsHosts map[string]string // hostname -> owner
	}
	ports := map[int32]*portUse{}
	sharing := map[string]bool{} // "gateway|port" already warned about
	for _, g := range m.Gateways {
		for _, l := range g.Listeners {
			if !l.Attachable {
				continue
			}
			owner := g.Key + "/" + string(l.Name)
			u := ports[l.EnvoyPort]
			if u == nil {
				u = &portUse{protocol: l.Protocol, owner: owner, gateway: g.Key, tlsHosts: map[string]string{}}
				ports[l.EnvoyPort] = u
			}
			if u.gateway != g.Key && u.protocol == l.Protocol && !sharing[g.Key+"|"+fmt.Sprint(l.Port)] {
				// Not an error (one address for every Gateway is this mode's design), but a
				// route of one Gateway may now answer for the other: say so once.
				sharing[g.Key+"|"+fmt.Sprint(l.Port)] = true
				m.warnf("gateway %s: port %d shares one Envoy listener with gateway %s, and their routes are merged (one address per Gateway needs per-Gateway ports: --gateway-port-range)", g.Key, l.Port, u.gateway)
			}
			switch {
			case u.protocol != l.Protocol:
				l.Ready, l.Attachable = false, false
				setCond(&l.Conditions, string(gwapiv1.ListenerConditionAccepted), g.Generation, Condition{metav1.ConditionFalse,
					string(gwapiv1.ListenerReasonPortUnavailable), fmt.Sprintf("port %d already serves %s for listener %s", l.Port, u.protocol, u.owner)})
				setCond(&l.Conditions, string(gwapiv1.ListenerConditionProgrammed), g.Generation, Condition{metav1.ConditionFalse,
					string(gwapiv1.ListenerReasonInvalid), "port in use with another protocol"})
				m.warnf("gateway %s listener %s: port %d already serves %s (%s); not programmed", g.Key, l.Name, l.Port, u.protocol, u.owner)
			case l.Protocol == gwapiv1.HTTPSProtocolType && l.Ready:
				if other, taken := u.tlsHosts[l.Hostname]; taken && other != owner {
					l.Ready = false
					setCond(&l.Conditions, string(gwapiv1.ListenerConditionConflicted), g.Generation, Condition{metav1.ConditionTrue,
						string(gwapiv1.ListenerReasonHostnameConflict), fmt.Sprintf("listener %s serves a certificate for this hostname on port %d", other, l.Port)})
					setCond(&l.Conditions, string(gwapiv1.ListenerConditionProgrammed), g.Generation, Condition{metav1.ConditionFalse,
						string(gwapiv1.ListenerReasonInvalid), "another listener serves a certificate for this hostname"})
					continue
				}
				u.tlsHosts[l.Hostname] = owner
			}
		}
	}
}

// finishGateway sets the Gateway's conditions once routes are attached.
func (m *Model) finishGateway(g *Gateway) {
	ready, accepted := 0, 0
	for _, l := range g.Listeners {
		if l.Ready {
			ready++
		}
		if c := findCond(l.Conditions, string(gwapiv1.ListenerConditionAccepted)); c != nil && c.Status == metav1.ConditionTrue {
			accepted++
		}
	}
	acc := Condition{metav1.ConditionTrue, string(gwapiv1.GatewayReasonAccepted), "Gateway is accepted"}
	switch {
	case accepted == 0:
		acc = Condition{metav1.ConditionFalse, string(gwapiv1.GatewayReasonListenersNotValid), "no listener is valid"}
	case accepted < len(g.Listeners):
		acc = Condition{metav1.ConditionTrue, string(gwapiv1.GatewayReasonListenersNotValid), "some listeners are not valid"}
	}
	prog := Condition{metav1.ConditionTrue, string(gwapiv1.GatewayReasonProgrammed), "Gateway is programmed"}
	switch {
	case acc.Status == metav1.ConditionFalse || ready == 0:
		prog = Condition{metav1.ConditionFalse, string(gwapiv1.GatewayReasonInvalid), "no listener is programmed"}
	case len(g.Addresses) == 0:
		prog = Condition{metav1.ConditionFalse, string(gwapiv1.GatewayReasonAddressNotAssigned), "infergw has no address configured for its Gateways"}
	}
	setCond(&g.Conditions, string(gwapiv1.GatewayConditionAccepted), g.Generation, acc)
	setCond(&g.Conditions, string(gwapiv1.GatewayConditionProgrammed), g.Generation, prog)
}

// AttachedRoutes is the listener's status.listeners[].attachedRoutes.
func (l *Listener) AttachedRoutes() int32 { return int32(len(l.Routes)) } //nolint:gosec // G115: bounded by the number of routes

// hostnameRE is Gateway API's Hostname pattern (an optional leading "*." wildcard label).
var hostnameRE = regexp.MustCompile(`^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// ValidHostname reports whether h is a Gateway API hostname.
func ValidHostname(h string) bool { return len(h) <= 253 && hostnameRE.MatchString(h) }

func setCond(conds *[]metav1.Condition, typ string, gen int64, c Condition) {
	for i := range *conds {
		if (*conds)[i].Type == typ {
			(*conds)[i] = metav1.Condition{Type: typ, Status: c.Status, Reason: c.Reason, Message: c.Message, ObservedGeneration: gen}
			return
		}
	}
	*conds = append(*conds, metav1.Condition{Type: typ, Status: c.Status, Reason: c.Reason, Message: c.Message, ObservedGeneration: gen})
}

func findCond(conds []metav1.Condition, typ string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == typ {
			return &conds[i]
		}
	}
	return nil
}
