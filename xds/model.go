package xds

import (
	"fmt"
	"sort"
	"time"

	"github.com/infergw/infergw/model"
)

// The index gives the resolved model's pools, pickers and Service backends their Envoy
// names. Everything else (what exists, what attaches where, what resolves) was decided by
// package model.

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

func toUpstream(u model.Upstream) upstream {
	up := upstream{dnsName: u.DNSName, dnsPort: u.DNSPort}
	for _, a := range u.Addrs {
		up.addrs = append(up.addrs, hostPort{host: a.Host, port: a.Port})
	}
	return up
}

// pickerRef is a resolved endpointPickerRef.
type pickerRef struct {
	cluster string
	up      upstream
	// serverName is the Service's DNS name, the name a TLS picker's certificate carries.
	serverName string
}

// poolModel is a resolved InferencePool with its Envoy names.
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

// index holds the model's objects by Envoy name and collects warnings.
type index struct {
	pools    map[string]*poolModel
	pickers  map[string]*pickerRef // by cluster name
	svcs     map[string]*serviceCluster
	warnings []string
}

func (ix *index) warnf(format string, args ...any) {
	ix.warnings = append(ix.warnings, fmt.Sprintf(format, args...))
}

func newIndex(m *model.Model) *index {
	ix := &index{
		pools:    make(map[string]*poolModel, len(m.Pools)),
		pickers:  map[string]*pickerRef{},
		svcs:     map[string]*serviceCluster{},
		warnings: append([]string(nil), m.Warnings...),
	}
	for _, p := range m.Pools {
		pm := &poolModel{
			key:      p.Key,
			cluster:  poolClusterName(p.Namespace, p.Name),
			h2c:      p.H2C,
			failOpen: p.FailOpen,
		}
		for _, ep := range p.Endpoints {
			pm.up.addrs = append(pm.up.addrs, hostPort{host: ep.Host, port: ep.Port})
		}
		if pk := p.Picker; pk != nil {
			pm.picker = ix.picker(pk)
		}
		pm.firstByteTimeout = ix.poolFirstByteTimeout(p)
		ix.pools[p.Key] = pm
	}
	return ix
}

func (ix *index) picker(pk *model.Picker) *pickerRef {
	name := pickerClusterName(pk.Namespace, pk.Name, pk.Port)
	if pr, ok := ix.pickers[name]; ok {
		return pr
	}
	pr := &pickerRef{cluster: name, up: toUpstream(pk.Upstream), serverName: pk.ServerName}
	ix.pickers[name] = pr
	return pr
}

// serviceCluster names a route's Service backend, creating its cluster once.
func (ix *index) serviceCluster(sb *model.ServiceBackend) *serviceCluster {
	name := serviceClusterName(sb.Namespace, sb.Name, sb.Port)
	if sc, ok := ix.svcs[name]; ok {
		return sc
	}
	sc := &serviceCluster{cluster: name, up: toUpstream(sb.Upstream)}
	ix.svcs[name] = sc
	return sc
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
