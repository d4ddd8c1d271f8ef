package xds

import (
	"fmt"
	"net/netip"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"

	infv1 "github.com/infergw/infergw/api/v1"
	"github.com/infergw/infergw/discovery"
)

// The model is the resolved, Envoy-independent view of a snapshot: every reference looked
// up once, every problem turned into a warning. The constructor files turn it into protos.

// upstream is where a cluster sends traffic: a fixed list of IP endpoints (served by EDS)
// or one DNS name (a STRICT_DNS cluster).
type upstream struct {
	addrs   []hostPort // IP endpoints; empty with dns set
	dnsName string
	dnsPort uint32
}

type hostPort struct {
	host string
	port uint32
}

// pickerRef is a resolved endpointPickerRef.
type pickerRef struct {
	cluster string
	up      upstream
	// serverName is the Service's DNS name, the name a TLS picker's certificate carries.
	serverName string
	failOpen   bool
}

// poolModel is a resolved InferencePool.
type poolModel struct {
	key     string // ns/name
	cluster string
	up      upstream
	h2c     bool
	picker  *pickerRef // nil when the picker Service cannot be resolved
	// failOpen is the pool's failure mode (also valid when picker is nil).
	failOpen bool
	// firstByteTimeout is the pool's AnnotationFirstByteTimeout; nil when unset.
	firstByteTimeout *time.Duration
}

// serviceCluster is a Service backend cluster (one per Service and port).
type serviceCluster struct {
	cluster string
	up      upstream
}

// index holds the snapshot's objects by key and collects warnings.
type index struct {
	services map[string]*corev1.Service
	pools    map[string]*poolModel
	pickers  map[string]*pickerRef // by cluster name
	svcs     map[string]*serviceCluster
	warnings []string
}

func (ix *index) warnf(format string, args ...any) {
	ix.warnings = append(ix.warnings, fmt.Sprintf(format, args...))
}

func newIndex(snap *discovery.Snapshot) *index {
	ix := &index{
		services: make(map[string]*corev1.Service, len(snap.Services)),
		pools:    make(map[string]*poolModel, len(snap.Pools)),
		pickers:  map[string]*pickerRef{},
		svcs:     map[string]*serviceCluster{},
	}
	for _, s := range snap.Services {
		if s != nil {
			ix.services[discovery.Key(s.Namespace, s.Name)] = s
		}
	}
	for _, p := range snap.Pools {
		if p != nil && p.InferencePool != nil {
			ix.addPool(p)
		}
	}
	return ix
}

func (ix *index) addPool(p *discovery.Pool) {
	key := discovery.Key(p.Namespace, p.Name)
	pm := &poolModel{
		key:      key,
		cluster:  poolClusterName(p.Namespace, p.Name),
		h2c:      p.Spec.AppProtocol == infv1.AppProtocolH2C,
		failOpen: p.Spec.EndpointPickerRef.FailureMode == infv1.EndpointPickerFailOpen,
	}
	for _, ep := range p.Endpoints {
		addr, err := netip.ParseAddr(ep.IP)
		if err != nil {
			ix.warnf("pool %s: endpoint %s has no valid IP %q; skipped", key, ep.Name, ep.IP)
			continue
		}
		for _, tp := range p.Spec.TargetPorts {
			if tp.Number < 1 || tp.Number > 65535 {
				ix.warnf("pool %s: target port %d out of range; skipped", key, tp.Number)
				continue
			}
			pm.up.addrs = append(pm.up.addrs, hostPort{host: addr.String(), port: uint32(tp.Number)})
		}
	}
	pm.picker = ix.resolvePicker(p.InferencePool, pm.failOpen)
	pm.firstByteTimeout = ix.poolFirstByteTimeout(key, p.Annotations)
	ix.pools[key] = pm
}

func (ix *index) resolvePicker(p *infv1.InferencePool, failOpen bool) *pickerRef {
	ref := p.Spec.EndpointPickerRef
	key := discovery.Key(p.Namespace, p.Name)
	if (ref.Group != nil && *ref.Group != "") || (ref.Kind != "" && ref.Kind != "Service") {
		ix.warnf("pool %s: endpointPickerRef kind %q is not supported (only core Service)", key, ref.Kind)
		return nil
	}
	if ref.Port == nil {
		ix.warnf("pool %s: endpointPickerRef %s has no port", key, ref.Name)
		return nil
	}
	svc, ok := ix.services[discovery.Key(p.Namespace, string(ref.Name))]
	if !ok {
		ix.warnf("pool %s: endpoint picker Service %s/%s not found", key, p.Namespace, ref.Name)
		return nil
	}
	port := int32(ref.Port.Number)
	up, err := serviceUpstream(svc, port)
	if err != nil {
		ix.warnf("pool %s: endpoint picker: %v", key, err)
		return nil
	}
	name := pickerClusterName(svc.Namespace, svc.Name, port)
	if pr, ok := ix.pickers[name]; ok {
		return &pickerRef{cluster: pr.cluster, up: pr.up, serverName: pr.serverName, failOpen: failOpen}
	}
	serverName := svc.Name + "." + svc.Namespace + ".svc"
	if svc.Spec.Type == corev1.ServiceTypeExternalName && svc.Spec.ExternalName != "" {
		serverName = svc.Spec.ExternalName
	}
	ix.pickers[name] = &pickerRef{cluster: name, up: up, serverName: serverName}
	return &pickerRef{cluster: name, up: up, serverName: serverName, failOpen: failOpen}
}

// serviceBackend resolves a route's Service backendRef to a cluster, creating it once.
func (ix *index) serviceBackend(ns, name string, port *int32) (*serviceCluster, error) {
	if port == nil {
		return nil, fmt.Errorf("backendRef Service %s/%s has no port", ns, name)
	}
	svc, ok := ix.services[discovery.Key(ns, name)]
	if !ok {
		return nil, fmt.Errorf("backend Service %s/%s not found", ns, name)
	}
	cname := serviceClusterName(ns, name, *port)
	if sc, ok := ix.svcs[cname]; ok {
		return sc, nil
	}
	up, err := serviceUpstream(svc, *port)
	if err != nil {
		return nil, err
	}
	sc := &serviceCluster{cluster: cname, up: up}
	ix.svcs[cname] = sc
	return sc, nil
}

// serviceUpstream applies the contracts' address rule: the clusterIP when it is an IP, else
// the cluster DNS name (or the externalName of an ExternalName Service).
func serviceUpstream(svc *corev1.Service, port int32) (upstream, error) {
	if port < 1 || port > 65535 {
		return upstream{}, fmt.Errorf("service %s/%s: port %d out of range", svc.Namespace, svc.Name, port)
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName && svc.Spec.ExternalName != "" {
		return upstream{dnsName: svc.Spec.ExternalName, dnsPort: uint32(port)}, nil
	}
	if addr, err := netip.ParseAddr(svc.Spec.ClusterIP); err == nil {
		return upstream{addrs: []hostPort{{host: addr.String(), port: uint32(port)}}}, nil
	}
	return upstream{dnsName: svc.Name + "." + svc.Namespace + ".svc.cluster.local", dnsPort: uint32(port)}, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
