package model

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	infv1 "github.com/infergw/infergw/api/v1"
	"github.com/infergw/infergw/discovery"
	dt "github.com/infergw/infergw/discovery/discoverytest"
)

func resolveObjs(objs discovery.Objects) *Model {
	return Resolve(discovery.Build(1, objs, "infergw"), Options{})
}

func condOf(t *testing.T, conds []metav1.Condition, typ string) metav1.Condition {
	t.Helper()
	c := findCond(conds, typ)
	if c == nil {
		t.Fatalf("no %s condition in %v", typ, conds)
	}
	return *c
}

func wantCond(t *testing.T, what string, conds []metav1.Condition, typ string, status metav1.ConditionStatus, reason string) {
	t.Helper()
	c := condOf(t, conds, typ)
	if c.Status != status || c.Reason != reason {
		t.Errorf("%s: %s = %s/%s (%s), want %s/%s", what, typ, c.Status, c.Reason, c.Message, status, reason)
	}
}

// TestCrossNamespaceRouteNotAllowedBySameNamespaceListener is the regression test of issue
// 16: a route in another namespace attached to a listener that allows only routes of its
// own namespace used to get Accepted=True in status while xds gave Envoy no route. The
// model now decides once: not accepted (NotAllowedByListeners), not attached, and the same
// route from the Gateway's namespace is accepted and attached.
func TestCrossNamespaceRouteNotAllowedBySameNamespaceListener(t *testing.T) {
	sel := map[string]string{"app": "m"}
	objs := discovery.Objects{
		Gateways:   []*gwapiv1.Gateway{dt.Gateway("gw", "main", "infergw")}, // allowedRoutes defaults to Same
		HTTPRoutes: []*gwapiv1.HTTPRoute{dt.Route("other", "foreign", "gw", "main", "pool"), dt.Route("gw", "local", "gw", "main", "pool")},
		Pools:      []*infv1.InferencePool{dt.Pool("other", "pool", sel, 8000), dt.Pool("gw", "pool", sel, 8000)},
		Services:   []*corev1.Service{dt.Service("other", "pool-epp"), dt.Service("gw", "pool-epp")},
	}
	m := resolveObjs(objs)
	foreign := m.Route("other/foreign")
	if foreign == nil || len(foreign.Parents) != 1 {
		t.Fatalf("foreign route not in the model with one parent: %+v", foreign)
	}
	if p := foreign.Parents[0]; p.Accepted.Status != metav1.ConditionFalse || p.Accepted.Reason != string(gwapiv1.RouteReasonNotAllowedByListeners) || len(p.Listeners) != 0 {
		t.Errorf("foreign route: Accepted %+v, listeners %d; want False/NotAllowedByListeners, none", p.Accepted, len(p.Listeners))
	}
	local := m.Route("gw/local")
	if p := local.Parents[0]; p.Accepted.Status != metav1.ConditionTrue || len(p.Listeners) != 1 {
		t.Errorf("local route: Accepted %+v, listeners %d; want True, 1", p.Accepted, len(p.Listeners))
	}
	l := m.Gateway("gw/main").Listeners[0]
	if len(l.Routes) != 1 || l.Routes[0].Route != local || l.AttachedRoutes() != 1 {
		t.Errorf("listener routes = %d, want only gw/local", len(l.Routes))
	}

	// The status written says the same.
	st, _ := m.DesiredRouteStatus(objs.HTTPRoutes[0], metav1.Now())
	if len(st.Parents) != 1 {
		t.Fatalf("status parents = %d, want 1", len(st.Parents))
	}
	wantCond(t, "foreign route status", st.Parents[0].Conditions, "Accepted", metav1.ConditionFalse, "NotAllowedByListeners")
	// The foreign route's pool has no parent Gateway: no accepted route leads to it.
	if p := m.Pool("other/pool"); len(p.Parents) != 0 {
		t.Errorf("pool other/pool parents = %v, want none", p.Parents)
	}
	if p := m.Pool("gw/pool"); len(p.Parents) != 1 || p.Parents[0] != "gw/main" {
		t.Errorf("pool gw/pool parents = %v, want [gw/main]", p.Parents)
	}
}

func withListeners(gw *gwapiv1.Gateway, ls ...gwapiv1.Listener) *gwapiv1.Gateway {
	gw.Spec.Listeners = ls
	return gw
}

func TestAttachmentReasons(t *testing.T) {
	host := func(h string) *gwapiv1.Hostname { v := gwapiv1.Hostname(h); return &v }
	all := &gwapiv1.AllowedRoutes{Namespaces: &gwapiv1.RouteNamespaces{From: new(gwapiv1.NamespacesFromAll)}}
	selector := &gwapiv1.AllowedRoutes{Namespaces: &gwapiv1.RouteNamespaces{
		From: new(gwapiv1.NamespacesFromSelector), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}}}
	gw := withListeners(dt.Gateway("gw", "main", "infergw"),
		gwapiv1.Listener{Name: "web", Port: 80, Protocol: gwapiv1.HTTPProtocolType, Hostname: host("*.example.com"), AllowedRoutes: all},
		gwapiv1.Listener{Name: "team", Port: 81, Protocol: gwapiv1.HTTPProtocolType, AllowedRoutes: selector},
	)
	route := func(ns, name string, mod func(*gwapiv1.HTTPRoute)) *gwapiv1.HTTPRoute {
		r := dt.Route(ns, name, "gw", "main", "svc:web")
		mod(r)
		return r
	}
	section := func(s string) func(*gwapiv1.HTTPRoute) {
		return func(r *gwapiv1.HTTPRoute) { r.Spec.ParentRefs[0].SectionName = new(gwapiv1.SectionName(s)) }
	}
	objs := discovery.Objects{
		Gateways: []*gwapiv1.Gateway{gw},
		HTTPRoutes: []*gwapiv1.HTTPRoute{
			route("x", "no-section", section("nope")),
			route("x", "wrong-host", func(r *gwapiv1.HTTPRoute) {
				section("web")(r)
				r.Spec.Hostnames = []gwapiv1.Hostname{"other.org"}
			}),
			route("x", "host-ok", func(r *gwapiv1.HTTPRoute) {
				section("web")(r)
				r.Spec.Hostnames = []gwapiv1.Hostname{"api.example.com", "other.org"}
			}),
			route("teamb", "by-selector-no", section("team")),
			route("teama", "by-selector-yes", section("team")),
		},
		Namespaces: []*corev1.Namespace{
			{ObjectMeta: metav1.ObjectMeta{Name: "teama", Labels: map[string]string{"team": "a"}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "teamb", Labels: map[string]string{"team": "b"}}},
		},
		Services: []*corev1.Service{dt.Service("x", "web"), dt.Service("teama", "web"), dt.Service("teamb", "web")},
	}
	m := resolveObjs(objs)
	for key, want := range map[string]string{
		"x/no-section":          "NoMatchingParent",
		"x/wrong-host":          "NoMatchingListenerHostname",
		"x/host-ok":             "Accepted",
		"teamb/by-selector-no":  "NotAllowedByListeners",
		"teama/by-selector-yes": "Accepted",
	} {
		r := m.Route(key)
		if r == nil {
			t.Fatalf("%s not in the model", key)
		}
		if got := r.Parents[0].Accepted.Reason; got != want {
			t.Errorf("%s: Accepted reason %s (%s), want %s", key, got, r.Parents[0].Accepted.Message, want)
		}
	}
	web := m.Gateway("gw/main").Listeners[0]
	if len(web.Routes) != 1 || strings.Join(web.Routes[0].Hostnames, ",") != "api.example.com" {
		t.Errorf("listener web: %d routes; want host-ok with only api.example.com", len(web.Routes))
	}
}

func TestListenerConditions(t *testing.T) {
	gw := withListeners(dt.WithGeneration(dt.Gateway("gw", "main", "infergw"), 4),
		gwapiv1.Listener{Name: "http", Port: 80, Protocol: gwapiv1.HTTPProtocolType},
		gwapiv1.Listener{Name: "tcp", Port: 90, Protocol: gwapiv1.TCPProtocolType},
		gwapiv1.Listener{Name: "kinds", Port: 91, Protocol: gwapiv1.HTTPProtocolType, AllowedRoutes: &gwapiv1.AllowedRoutes{
			Kinds: []gwapiv1.RouteGroupKind{{Kind: "HTTPRoute"}, {Kind: "TCPRoute"}}}},
		gwapiv1.Listener{Name: "dup", Port: 80, Protocol: gwapiv1.HTTPProtocolType},
	)
	m := Resolve(discovery.Build(1, discovery.Objects{Gateways: []*gwapiv1.Gateway{gw}}, "infergw"),
		Options{Addresses: []gwapiv1.GatewayStatusAddress{{Type: new(gwapiv1.IPAddressType), Value: "10.96.0.80"}}})
	g := m.Gateway("gw/main")
	wantCond(t, "http", g.Listeners[0].Conditions, "Programmed", metav1.ConditionTrue, "Programmed")
	wantCond(t, "tcp", g.Listeners[1].Conditions, "Accepted", metav1.ConditionFalse, "UnsupportedProtocol")
	if len(g.Listeners[1].SupportedKinds) != 0 {
		t.Errorf("tcp supportedKinds = %v, want none", g.Listeners[1].SupportedKinds)
	}
	wantCond(t, "kinds", g.Listeners[2].Conditions, "ResolvedRefs", metav1.ConditionFalse, "InvalidRouteKinds")
	if k := g.Listeners[2].SupportedKinds; len(k) != 1 || k[0].Kind != "HTTPRoute" {
		t.Errorf("kinds supportedKinds = %v, want HTTPRoute only", k)
	}
	wantCond(t, "dup", g.Listeners[3].Conditions, "Conflicted", metav1.ConditionTrue, "HostnameConflict")
	wantCond(t, "gateway", g.Conditions, "Accepted", metav1.ConditionTrue, "ListenersNotValid")
	wantCond(t, "gateway", g.Conditions, "Programmed", metav1.ConditionTrue, "Programmed")
	for _, c := range g.Conditions {
		if c.ObservedGeneration != 4 {
			t.Errorf("condition %s observedGeneration %d, want 4", c.Type, c.ObservedGeneration)
		}
	}
	st, changed, ok := m.DesiredGatewayStatus(gw, metav1.Now())
	if !ok || !changed || len(st.Listeners) != 4 || len(st.Addresses) != 1 || st.Listeners[0].AttachedRoutes != 0 {
		t.Errorf("gateway status: ok %v changed %v listeners %d addresses %v", ok, changed, len(st.Listeners), st.Addresses)
	}
	// Written and read back (new pointers, as the API server's copy has), the status is a
	// fixed point: no second write.
	applied := gw.DeepCopy()
	applied.Status = *st.DeepCopy()
	if _, again, _ := m.DesiredGatewayStatus(applied, metav1.Now()); again {
		t.Error("gateway status is not a fixed point")
	}

	// Without an address a Gateway is accepted but not programmed.
	m = resolveObjs(discovery.Objects{Gateways: []*gwapiv1.Gateway{gw}})
	wantCond(t, "gateway without address", m.Gateway("gw/main").Conditions, "Programmed", metav1.ConditionFalse, "AddressNotAssigned")
	// A Gateway with no valid listener is not accepted.
	bad := withListeners(dt.Gateway("gw", "bad", "infergw"), gwapiv1.Listener{Name: "udp", Port: 53, Protocol: gwapiv1.UDPProtocolType})
	m = resolveObjs(discovery.Objects{Gateways: []*gwapiv1.Gateway{bad}})
	wantCond(t, "gateway without valid listener", m.Gateway("gw/bad").Conditions, "Accepted", metav1.ConditionFalse, "ListenersNotValid")
}

func TestGatewayClassAcceptedOnlyWhenOurs(t *testing.T) {
	ours := &gwapiv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "infergw", Generation: 2}, Spec: gwapiv1.GatewayClassSpec{ControllerName: DefaultControllerName}}
	m := resolveObjs(discovery.Objects{GatewayClasses: []*gwapiv1.GatewayClass{ours}})
	st, changed, ok := m.DesiredClassStatus(ours, metav1.Now())
	if !ok || !changed {
		t.Fatalf("ok %v changed %v", ok, changed)
	}
	wantCond(t, "class", st.Conditions, "Accepted", metav1.ConditionTrue, "Accepted")
	theirs := ours.DeepCopy()
	theirs.Spec.ControllerName = "example.com/other"
	m = resolveObjs(discovery.Objects{GatewayClasses: []*gwapiv1.GatewayClass{theirs}})
	if _, _, ok := m.DesiredClassStatus(theirs, metav1.Now()); ok {
		t.Error("a class of another controller would get infergw's status")
	}
}

// selfSigned returns a PEM certificate and key for host.
func selfSigned(t *testing.T, host string) ([]byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func TestHTTPSListenerCertificatesAndReferenceGrant(t *testing.T) {
	cert, key := selfSigned(t, "example.com")
	secret := func(ns, name string, typ corev1.SecretType, c, k []byte) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Type: typ,
			Data: map[string][]byte{corev1.TLSCertKey: c, corev1.TLSPrivateKeyKey: k}}
	}
	https := func(name string, port int32, refNS, refName string) gwapiv1.Listener {
		ref := gwapiv1.SecretObjectReference{Name: gwapiv1.ObjectName(refName)}
		if refNS != "" {
			ref.Namespace = new(gwapiv1.Namespace(refNS))
		}
		return gwapiv1.Listener{Name: gwapiv1.SectionName(name), Port: port, Protocol: gwapiv1.HTTPSProtocolType,
			TLS: &gwapiv1.ListenerTLSConfig{CertificateRefs: []gwapiv1.SecretObjectReference{ref}}}
	}
	gw := withListeners(dt.Gateway("gw", "main", "infergw"),
		https("ok", 443, "", "cert"),
		https("missing", 444, "", "nope"),
		https("garbage", 445, "", "garbage"),
		https("foreign", 446, "certs", "cert"),
		https("granted", 447, "granted", "cert"),
	)
	grant := &gwapiv1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "granted", Name: "g"}, Spec: gwapiv1.ReferenceGrantSpec{
		From: []gwapiv1.ReferenceGrantFrom{{Group: gwapiv1.GroupName, Kind: "Gateway", Namespace: "gw"}},
		To:   []gwapiv1.ReferenceGrantTo{{Group: "", Kind: "Secret"}},
	}}
	m := resolveObjs(discovery.Objects{
		Gateways: []*gwapiv1.Gateway{gw},
		Secrets: []*corev1.Secret{
			secret("gw", "cert", corev1.SecretTypeTLS, cert, key),
			secret("gw", "garbage", corev1.SecretTypeTLS, []byte("x"), []byte("y")),
			secret("certs", "cert", corev1.SecretTypeTLS, cert, key),
			secret("granted", "cert", corev1.SecretTypeTLS, cert, key),
			secret("gw", "unreferenced", corev1.SecretTypeTLS, cert, key),
		},
		ReferenceGrants: []*gwapiv1.ReferenceGrant{grant},
	})
	ls := m.Gateway("gw/main").Listeners
	wantCond(t, "ok", ls[0].Conditions, "ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs")
	if ls[0].TLS == nil || string(ls[0].TLS.CertPEM) != string(cert) {
		t.Error("listener ok has no certificate")
	}
	wantCond(t, "missing", ls[1].Conditions, "ResolvedRefs", metav1.ConditionFalse, "InvalidCertificateRef")
	wantCond(t, "garbage", ls[2].Conditions, "ResolvedRefs", metav1.ConditionFalse, "InvalidCertificateRef")
	wantCond(t, "foreign", ls[3].Conditions, "ResolvedRefs", metav1.ConditionFalse, "RefNotPermitted")
	wantCond(t, "granted", ls[4].Conditions, "ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs")
	for i, l := range ls {
		if l.Ready != (i == 0 || i == 4) {
			t.Errorf("listener %s ready = %v", l.Name, l.Ready)
		}
	}
}

func TestBackendReferenceGrant(t *testing.T) {
	gw := dt.Gateway("gw", "main", "infergw")
	route := func(name, backendNS string) *gwapiv1.HTTPRoute {
		r := dt.Route("gw", name, "gw", "main", "svc:web")
		r.Spec.Rules[0].BackendRefs[0].Namespace = new(gwapiv1.Namespace(backendNS))
		return r
	}
	grant := &gwapiv1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "granted", Name: "g"}, Spec: gwapiv1.ReferenceGrantSpec{
		From: []gwapiv1.ReferenceGrantFrom{{Group: gwapiv1.GroupName, Kind: "HTTPRoute", Namespace: "gw"}},
		To:   []gwapiv1.ReferenceGrantTo{{Group: "", Kind: "Service", Name: new(gwapiv1.ObjectName("web"))}},
	}}
	m := resolveObjs(discovery.Objects{
		Gateways:        []*gwapiv1.Gateway{gw},
		HTTPRoutes:      []*gwapiv1.HTTPRoute{route("denied", "other"), route("allowed", "granted")},
		Services:        []*corev1.Service{dt.Service("other", "web"), dt.Service("granted", "web")},
		ReferenceGrants: []*gwapiv1.ReferenceGrant{grant},
	})
	denied, allowed := m.Route("gw/denied"), m.Route("gw/allowed")
	if denied.ResolvedRefs.Reason != string(gwapiv1.RouteReasonRefNotPermitted) || denied.Rules[0].Invalid == "" {
		t.Errorf("denied: ResolvedRefs %+v, rule invalid %q", denied.ResolvedRefs, denied.Rules[0].Invalid)
	}
	if allowed.ResolvedRefs.Status != metav1.ConditionTrue || len(allowed.Rules[0].Backends) != 1 {
		t.Errorf("allowed: ResolvedRefs %+v, backends %d", allowed.ResolvedRefs, len(allowed.Rules[0].Backends))
	}
	// Both stay accepted: a reference problem is ResolvedRefs, not Accepted.
	if denied.Parents[0].Accepted.Status != metav1.ConditionTrue {
		t.Errorf("denied route not accepted: %+v", denied.Parents[0].Accepted)
	}
}

// TestModelImportsNoClientGo keeps the model (and what it imports) pure.
func TestModelImportsNoClientGo(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".", "../xds").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "k8s.io/client-go") || strings.HasPrefix(dep, "sigs.k8s.io/controller-runtime") {
			t.Errorf("model or xds depends on %s", dep)
		}
	}
}

// TestRoutesAttachToListenersWithUnresolvedRefs: a listener whose certificate does not
// resolve is not programmed, but routes still attach to it and count in attachedRoutes (the
// Gateway API's GatewayWithAttachedRoutes asks for this).
func TestRoutesAttachToListenersWithUnresolvedRefs(t *testing.T) {
	gw := withListeners(dt.Gateway("gw", "main", "infergw"), gwapiv1.Listener{Name: "tls", Port: 443, Protocol: gwapiv1.HTTPSProtocolType,
		TLS: &gwapiv1.ListenerTLSConfig{CertificateRefs: []gwapiv1.SecretObjectReference{{Name: "does-not-exist"}}}})
	m := resolveObjs(discovery.Objects{Gateways: []*gwapiv1.Gateway{gw}, HTTPRoutes: []*gwapiv1.HTTPRoute{dt.Route("gw", "r", "gw", "main", "svc:nope")}})
	l := m.Gateway("gw/main").Listeners[0]
	wantCond(t, "tls", l.Conditions, "Programmed", metav1.ConditionFalse, "Invalid")
	wantCond(t, "tls", l.Conditions, "ResolvedRefs", metav1.ConditionFalse, "InvalidCertificateRef")
	if l.Ready || l.AttachedRoutes() != 1 {
		t.Errorf("ready %v attachedRoutes %d; want not ready, 1", l.Ready, l.AttachedRoutes())
	}
	r := m.Route("gw/r")
	if r.Parents[0].Accepted.Status != metav1.ConditionTrue || r.ResolvedRefs.Reason != "BackendNotFound" {
		t.Errorf("route: accepted %+v resolved %+v", r.Parents[0].Accepted, r.ResolvedRefs)
	}
}

// TestServiceBackendFromEndpointSlices: a Service with EndpointSlices is sent to its ready
// endpoints on the slice port named like the Service port (headless and hand-written
// slices work without DNS); without slices the clusterIP rule applies.
func TestServiceBackendFromEndpointSlices(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "gw", Name: "web"}, Spec: corev1.ServiceSpec{
		ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
	ready, notReady := true, false
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "gw", Name: "web-abc", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: new("http"), Port: new(int32(3000))}, {Name: new("metrics"), Port: new(int32(9090))}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.88.0.9"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}},
			{Addresses: []string{"10.88.0.7"}},
			{Addresses: []string{"10.88.0.8"}, Conditions: discoveryv1.EndpointConditions{Ready: &notReady}},
		},
	}
	objs := discovery.Objects{
		Gateways:       []*gwapiv1.Gateway{dt.Gateway("gw", "main", "infergw")},
		HTTPRoutes:     []*gwapiv1.HTTPRoute{dt.Route("gw", "r", "gw", "main", "svc:web")},
		Services:       []*corev1.Service{svc},
		EndpointSlices: []*discoveryv1.EndpointSlice{slice},
	}
	up := resolveObjs(objs).Route("gw/r").Rules[0].Backends[0].Service.Upstream
	if len(up.Addrs) != 2 || up.Addrs[0] != (HostPort{"10.88.0.7", 3000}) || up.Addrs[1] != (HostPort{"10.88.0.9", 3000}) || up.DNSName != "" {
		t.Errorf("upstream from slices = %+v, want the two ready endpoints on 3000", up)
	}
	objs.EndpointSlices = nil
	if up := resolveObjs(objs).Route("gw/r").Rules[0].Backends[0].Service.Upstream; up.DNSName != "web.gw.svc.cluster.local" {
		t.Errorf("headless Service without slices: %+v, want its DNS name", up)
	}
}

// TestPortSharedAcrossGateways: Gateways share one proxy listener per port, so a second
// protocol on a port, or a second certificate for one hostname on an HTTPS port, is not
// programmed and its status says why.
func TestPortSharedAcrossGateways(t *testing.T) {
	cert, key := selfSigned(t, "example.com")
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "gw", Name: "cert"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: cert, corev1.TLSPrivateKeyKey: key}}
	https := gwapiv1.Listener{Name: "tls", Port: 443, Protocol: gwapiv1.HTTPSProtocolType,
		TLS: &gwapiv1.ListenerTLSConfig{CertificateRefs: []gwapiv1.SecretObjectReference{{Name: "cert"}}}}
	a := withListeners(dt.Gateway("gw", "a", "infergw"), https)
	b := withListeners(dt.Gateway("gw", "b", "infergw"), https)
	c := withListeners(dt.Gateway("gw", "c", "infergw"), gwapiv1.Listener{Name: "http", Port: 443, Protocol: gwapiv1.HTTPProtocolType})
	m := resolveObjs(discovery.Objects{Gateways: []*gwapiv1.Gateway{a, b, c}, Secrets: []*corev1.Secret{sec}})
	if !m.Gateway("gw/a").Listeners[0].Ready {
		t.Error("the first HTTPS listener is not ready")
	}
	lb := m.Gateway("gw/b").Listeners[0]
	wantCond(t, "second certificate for the same hostname", lb.Conditions, "Conflicted", metav1.ConditionTrue, "HostnameConflict")
	lc := m.Gateway("gw/c").Listeners[0]
	wantCond(t, "HTTP on an HTTPS port", lc.Conditions, "Accepted", metav1.ConditionFalse, "PortUnavailable")
	if lb.Ready || lc.Ready {
		t.Errorf("conflicting listeners ready: b %v c %v", lb.Ready, lc.Ready)
	}
}

// TestPickerFromEndpointSlices: a picker Service with EndpointSlices resolves to its ready
// replicas (Envoy balances ext_proc streams over them and health-checks each); without
// slices, its clusterIP.
func TestPickerFromEndpointSlices(t *testing.T) {
	svc := dt.Service("ns", "llama-epp")
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: "llama-epp-1", Labels: map[string]string{discoveryv1.LabelServiceName: "llama-epp"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: new(""), Port: new(int32(9102))}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"127.0.0.1"}}, {Addresses: []string{"127.0.0.9"}}},
	}
	objs := discovery.Objects{
		Pools:          []*infv1.InferencePool{dt.Pool("ns", "llama", map[string]string{"app": "llama"}, 8000)},
		Services:       []*corev1.Service{svc},
		EndpointSlices: []*discoveryv1.EndpointSlice{slice},
	}
	pk := resolveObjs(objs).Pool("ns/llama").Picker
	if pk == nil || len(pk.Upstream.Addrs) != 2 || pk.Upstream.Addrs[0] != (HostPort{"127.0.0.1", 9102}) || pk.Upstream.Addrs[1] != (HostPort{"127.0.0.9", 9102}) {
		t.Fatalf("picker from slices = %+v, want both replicas on 9102", pk)
	}
	objs.EndpointSlices = nil
	if pk := resolveObjs(objs).Pool("ns/llama").Picker; pk == nil || len(pk.Upstream.Addrs) != 1 || pk.Upstream.Addrs[0] != (HostPort{"127.0.0.1", 9002}) {
		t.Errorf("picker without slices = %+v, want the clusterIP", pk)
	}
}
