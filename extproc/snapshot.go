package extproc

import (
	"fmt"
	"net"
	"strconv"

	"github.com/infergw/infergw/discovery"
	"github.com/infergw/infergw/router"
)

// ApplySnapshot makes the snapshot's pools, objectives and rewrites current: pools become
// router pools (one endpoint per pod and target port), pools that disappeared are removed,
// and the objective/rewrite view is swapped atomically. The first call makes the server ready.
func (s *Server) ApplySnapshot(snap *discovery.Snapshot) {
	if snap == nil {
		return
	}
	s.applyMu.Lock()
	defer s.applyMu.Unlock()

	st := &routingState{
		version:    snap.Version,
		objectives: map[string]map[string]int{},
		rewrites:   map[string][]rewriteRule{},
	}
	seen := make(map[string]bool, len(snap.Pools))
	for _, p := range snap.Pools {
		key := discovery.Key(p.Namespace, p.Name)
		seen[key] = true
		st.pools = append(st.pools, key)
		pm, err := poolMetrics(p.Annotations)
		if err != nil {
			// The pool is still served; its scrapes use the picker's own settings.
			s.log.Error("pool metrics annotations ignored", "pool", key, "error", err)
			pm = nil
		}
		s.router.SetPool(key, poolEndpoints(p, pm))
	}
	if old := s.state.Load(); old != nil {
		for _, key := range old.pools {
			if !seen[key] {
				s.router.RemovePool(key)
				s.flows.remove(key)
			}
		}
	}
	for _, o := range snap.Objectives {
		key := discovery.Key(o.Namespace, string(o.Spec.PoolRef.Name))
		if st.objectives[key] == nil {
			st.objectives[key] = map[string]int{}
		}
		prio := 0
		if o.Spec.Priority != nil {
			prio = *o.Spec.Priority
		}
		st.objectives[key][o.Name] = prio
	}
	for _, mr := range snap.Rewrites {
		key := discovery.Key(mr.Namespace, string(mr.Spec.PoolRef.Name))
		st.rewrites[key] = append(st.rewrites[key], compileRules(mr)...)
	}
	st.baseModels = s.baseModelsOf(snap)
	s.state.Store(st)
	s.log.Info("snapshot applied", "version", snap.Version, "pools", len(st.pools),
		"objectives", len(snap.Objectives), "rewrites", len(snap.Rewrites))
	s.markReady()
}

// poolEndpoints lists a pool's endpoints: podIP:targetPort, one per target port, each
// with the pool's metrics settings (nil: the picker's).
func poolEndpoints(p *discovery.Pool, metrics *router.PoolMetrics) []router.EndpointSpec {
	ports := p.Spec.TargetPorts
	out := make([]router.EndpointSpec, 0, len(p.Endpoints)*len(ports))
	for _, ep := range p.Endpoints {
		for _, port := range ports {
			name := ep.Name
			if len(ports) > 1 {
				name = fmt.Sprintf("%s:%d", ep.Name, port.Number)
			}
			out = append(out, router.EndpointSpec{
				Name:    name,
				Address: net.JoinHostPort(ep.IP, strconv.Itoa(int(port.Number))),
				Labels:  ep.Labels,
				Metrics: metrics,
			})
		}
	}
	return out
}
