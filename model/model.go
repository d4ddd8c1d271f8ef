// Package model resolves a discovery snapshot once into the gateway infergw serves, in the
// manner of Contour's DAG: GatewayClasses, Gateways and their listeners (port, protocol,
// hostname, TLS certificates), the HTTPRoutes attached to each listener with the reason
// when they are not, the backends of every rule (InferencePools with their pickers, and
// Services), each with the conditions the Gateway API and the Inference Extension define.
//
// Every decision is taken here and only here: xds renders the model into Envoy resources,
// the status writer writes the model's conditions. A route that the model does not attach
// to a listener therefore has no Envoy route, and its status says why.
//
// The package is pure (no client-go): it reads objects and returns values.
package model

import (
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	infv1 "github.com/infergw/infergw/api/v1"
	infv1alpha2 "github.com/infergw/infergw/api/v1alpha2"
	"github.com/infergw/infergw/discovery"
)

// DefaultControllerName is the Gateway API controller name infergw writes into statuses and
// recognises in GatewayClass spec.controllerName.
const DefaultControllerName = "infergw.dev/gateway-controller"

// Options say who infergw is and where its Gateways are reached.
type Options struct {
	// ControllerName is infergw's controller name (default DefaultControllerName).
	ControllerName string
	// Addresses are written into every Gateway's status.addresses: where traffic reaches
	// the proxy (for example the Envoy Service's ClusterIP). Without any, Gateways are
	// Programmed=False with reason AddressNotAssigned.
	Addresses []gwapiv1.GatewayStatusAddress
	// GatewayAddresses, by Gateway key (namespace/name), replace Addresses for that
	// Gateway: its own address (a per-Gateway Service) when each Gateway has one.
	GatewayAddresses map[string][]gwapiv1.GatewayStatusAddress
	// GatewayPorts, when set, gives each Gateway its own address: every (Gateway, listener
	// port) gets its own Envoy port from this range (AllocatePorts), so two Gateways may
	// both listen on port 80 with different routes. Each Gateway is then reached through
	// its own address (a Service whose port 80 targets the Envoy port). Off (zero), the
	// Gateways of the class share one Envoy listener per port.
	GatewayPorts PortRange
}

// Model is one resolved snapshot. It is immutable once built.
type Model struct {
	Version uint64
	Options Options
	// GatewayClasses are the snapshot's classes (the one infergw serves, if it exists).
	GatewayClasses []*GatewayClass
	// Gateways of infergw's class, sorted by namespace/name.
	Gateways []*Gateway
	// Routes are the HTTPRoutes that name at least one of those Gateways, sorted.
	Routes []*Route
	// Pools are every InferencePool, sorted; Pickers the endpoint pickers they resolve to.
	Pools []*Pool
	// Warnings describe input that was skipped or only partly supported.
	Warnings []string

	gateways map[string]*Gateway
	routes   map[string]*Route
	pools    map[string]*Pool
	services map[string]*corev1.Service
	secrets  map[string]*corev1.Secret
	nsLabels map[string]map[string]string
	grants   []*gwapiv1.ReferenceGrant
	svcs     map[string]*ServiceBackend
	slices   map[string][]*discoveryv1.EndpointSlice // by Service key
	pickers  map[string]*Picker
}

// GatewayClass is a GatewayClass with its conditions.
type GatewayClass struct {
	*gwapiv1.GatewayClass
	// Ours is true when spec.controllerName is infergw's: only then is its status written.
	Ours       bool
	Conditions []metav1.Condition
}

// Gateway is a Gateway of infergw's class with its listeners and conditions.
type Gateway struct {
	*gwapiv1.Gateway
	Key        string
	Listeners  []*Listener
	Addresses  []gwapiv1.GatewayStatusAddress
	Conditions []metav1.Condition
}

// Listener is one listener of a Gateway, resolved.
type Listener struct {
	Gateway *Gateway
	Name    gwapiv1.SectionName
	Port    int32
	// EnvoyPort is the port of the Envoy listener that serves this listener: Port when
	// Gateways share one address, else the port allocated to (Gateway, Port) (0: none).
	EnvoyPort int32
	Protocol  gwapiv1.ProtocolType
	// Hostname is the listener's hostname, "" when it has none (every host).
	Hostname string
	// TLS is the certificate of an HTTPS listener (nil for HTTP or when unresolved).
	TLS *Certificate
	// Ready is true when the listener is Accepted, its references resolve and it has no
	// conflict: it is programmed into Envoy.
	Ready bool
	// Attachable is true when the listener is Accepted and has no conflict: routes attach
	// to it (and count in attachedRoutes) even while its references do not resolve, as the
	// Gateway API asks.
	Attachable bool
	// SupportedKinds are the route kinds the listener accepts (HTTPRoute or nothing).
	SupportedKinds []gwapiv1.RouteGroupKind
	// Routes attached to the listener, in the order of Model.Routes.
	Routes     []*Attachment
	Conditions []metav1.Condition

	spec *gwapiv1.Listener
}

// Certificate is a TLS certificate and key read from a kubernetes.io/tls Secret.
type Certificate struct {
	SecretKey string // namespace/name
	CertPEM   []byte
	KeyPEM    []byte
}

// Attachment is a route attached to a listener, with the virtual-host names it gets there:
// the intersection of the route's and the listener's hostnames ("*" for any host).
type Attachment struct {
	Route     *Route
	Hostnames []string
}

// Route is an HTTPRoute with its resolved rules and, per parentRef naming one of infergw's
// Gateways, the attachment decision.
type Route struct {
	*gwapiv1.HTTPRoute
	Key string
	// Hostnames are the route's valid hostnames (invalid ones are warned about and dropped).
	Hostnames []string
	Rules     []*Rule
	Parents   []*RouteParent
	// ResolvedRefs is the route's ResolvedRefs condition (the same for every parent).
	ResolvedRefs Condition
}

// RouteParent is one parentRef of a route naming a Gateway of infergw's class.
type RouteParent struct {
	Ref     gwapiv1.ParentReference
	Gateway *Gateway
	// Listeners the route is attached to through this parentRef (empty when not accepted).
	Listeners []*Listener
	Accepted  Condition
}

// Condition is a condition's status, reason and message, before it gets a type, a
// generation and a time.
type Condition struct {
	Status  metav1.ConditionStatus
	Reason  string
	Message string
}

// Rule is one rule of a route with its backends resolved.
type Rule struct {
	Index int
	Spec  *gwapiv1.HTTPRouteRule
	// Backends with a weight above zero that resolved.
	Backends []Backend
	// Invalid, when set, says why the rule has no usable backend: Envoy answers 500.
	Invalid string
	// Pools and Services are both among the backends (not supported: Envoy answers 500).
	Mixed bool
}

// Backend is a resolved backendRef: exactly one of Pool and Service is set.
type Backend struct {
	Weight  int32
	Pool    *Pool
	Service *ServiceBackend
}

// ServiceBackend is a Service and port a route sends to.
type ServiceBackend struct {
	Namespace, Name string
	Port            int32
	Upstream        Upstream
}

// Upstream is where a Service sends traffic: a list of IP endpoints, or one DNS name.
type Upstream struct {
	Addrs   []HostPort // IP endpoints; empty with DNSName set
	DNSName string
	DNSPort uint32
}

// HostPort is one IP endpoint.
type HostPort struct {
	Host string
	Port uint32
}

// Pool is an InferencePool with its ready endpoints and its resolved picker.
type Pool struct {
	*infv1.InferencePool
	Key string
	// Endpoints are podIP × targetPort of the pool's ready pods; Members the same with
	// each Pod's name and labels (what the endpoint picker scrapes and picks).
	Endpoints []HostPort
	Members   []PoolMember
	// Objectives and Rewrites are the InferenceObjectives and InferenceModelRewrites whose
	// poolRef names this pool (sorted by name): the picker's priorities and model rewrites.
	Objectives []*infv1alpha2.InferenceObjective
	Rewrites   []*infv1alpha2.InferenceModelRewrite
	H2C        bool
	FailOpen   bool
	// Picker is nil when the endpointPickerRef does not resolve (see ResolvedRefs).
	Picker       *Picker
	ResolvedRefs Condition
	// Parents are the keys of infergw Gateways with an accepted route sending to the pool.
	Parents []string
}

// Picker is a resolved endpointPickerRef: a Service and port.
type Picker struct {
	Namespace, Name string
	Port            int32
	Upstream        Upstream
	// ServerName is the Service's DNS name, the name a TLS picker's certificate carries.
	ServerName string
}

func (m *Model) warnf(format string, args ...any) {
	m.Warnings = append(m.Warnings, fmt.Sprintf(format, args...))
}

// Gateway returns the Gateway of infergw's class with that key, or nil.
func (m *Model) Gateway(key string) *Gateway { return m.gateways[key] }

// Route returns the resolved route with that key, or nil when it names no infergw Gateway.
func (m *Model) Route(key string) *Route { return m.routes[key] }

// Pool returns the resolved pool with that key, or nil.
func (m *Model) Pool(key string) *Pool { return m.pools[key] }

// Resolve builds the model of a snapshot. It never fails: problems become conditions and
// warnings.
func Resolve(snap *discovery.Snapshot, opts Options) *Model {
	if opts.ControllerName == "" {
		opts.ControllerName = DefaultControllerName
	}
	m := &Model{
		Version:  snap.Version,
		Options:  opts,
		gateways: map[string]*Gateway{},
		routes:   map[string]*Route{},
		pools:    map[string]*Pool{},
		services: make(map[string]*corev1.Service, len(snap.Services)),
		secrets:  make(map[string]*corev1.Secret, len(snap.Secrets)),
		nsLabels: make(map[string]map[string]string, len(snap.Namespaces)),
		grants:   snap.ReferenceGrants,
		svcs:     map[string]*ServiceBackend{},
		pickers:  map[string]*Picker{},
		slices:   map[string][]*discoveryv1.EndpointSlice{},
	}
	for _, es := range snap.EndpointSlices {
		if es != nil {
			k := discovery.Key(es.Namespace, es.Labels[discoveryv1.LabelServiceName])
			m.slices[k] = append(m.slices[k], es)
		}
	}
	for _, s := range snap.Services {
		if s != nil {
			m.services[discovery.Key(s.Namespace, s.Name)] = s
		}
	}
	for _, s := range snap.Secrets {
		if s != nil {
			m.secrets[discovery.Key(s.Namespace, s.Name)] = s
		}
	}
	for _, ns := range snap.Namespaces {
		if ns != nil {
			m.nsLabels[ns.Name] = ns.Labels
		}
	}
	for _, gc := range snap.GatewayClasses {
		if gc != nil {
			m.GatewayClasses = append(m.GatewayClasses, m.resolveClass(gc))
		}
	}
	for _, p := range snap.Pools {
		if p != nil && p.InferencePool != nil {
			m.addPool(p)
		}
	}
	m.attachInference(snap.Objectives, snap.Rewrites)
	for _, gw := range snap.Gateways {
		if gw != nil {
			g := m.resolveGateway(gw)
			m.Gateways = append(m.Gateways, g)
			m.gateways[g.Key] = g
		}
	}
	m.allocateEnvoyPorts()
	m.markPortConflicts()
	for _, hr := range snap.HTTPRoutes {
		if hr != nil {
			if r := m.resolveRoute(hr); r != nil {
				m.Routes = append(m.Routes, r)
				m.routes[r.Key] = r
			}
		}
	}
	for _, g := range m.Gateways {
		m.finishGateway(g)
	}
	for _, p := range m.Pools {
		sort.Strings(p.Parents)
	}
	return m
}

// Pickers returns every resolved picker, sorted by namespace/name/port.
func (m *Model) Pickers() []*Picker {
	return sortedByRef(m.pickers, func(p *Picker) (string, string, int32) { return p.Namespace, p.Name, p.Port })
}

// ServiceBackends returns every Service backend an attached route uses, sorted.
func (m *Model) ServiceBackends() []*ServiceBackend {
	return sortedByRef(m.svcs, func(s *ServiceBackend) (string, string, int32) { return s.Namespace, s.Name, s.Port })
}

// sortedByRef returns the values of m sorted by the namespace, name and port ref gives.
func sortedByRef[T any](m map[string]*T, ref func(*T) (string, string, int32)) []*T {
	out := make([]*T, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool {
		an, aname, ap := ref(out[i])
		bn, bname, bp := ref(out[j])
		if an != bn {
			return an < bn
		}
		if aname != bname {
			return aname < bname
		}
		return ap < bp
	})
	return out
}

// DurationAnnotation reads a duration annotation of a pool; ok is false when it is absent,
// and err says why a present value is not a non-negative duration.
func (p *Pool) DurationAnnotation(name string) (d time.Duration, ok bool, err error) {
	v, ok := p.Annotations[name]
	if !ok {
		return 0, false, nil
	}
	d, err = time.ParseDuration(v)
	if err == nil && d < 0 {
		err = fmt.Errorf("negative duration %q", v)
	}
	return d, true, err
}
