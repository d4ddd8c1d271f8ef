package extproc

import (
	"fmt"
	"net"
	"strconv"

	"github.com/infergw/infergw/model"
	"github.com/infergw/infergw/router"
)

// applyModel makes the resolved model's pools, objectives and rewrites current: pools become
// router pools (one endpoint per pool member: a ready Pod at one target port), pools that
// disappeared are removed, and the objective/rewrite view is swapped atomically. Which
// endpoints, objectives and rewrites belong to a pool was decided by package model, the same
// decisions the control plane renders into Envoy. The first call makes the server ready.
func (s *Server) applyModel(m *model.Model, baseModels map[string]string) {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()

	st := &routingState{
		version:    m.Version,
		objectives: map[string]map[string]int{},
		rewrites:   map[string][]rewriteRule{},
	}
	seen := make(map[string]bool, len(m.Pools))
	objectives, rewrites := 0, 0
	for _, p := range m.Pools {
		seen[p.Key] = true
		st.pools = append(st.pools, p.Key)
		pm, err := poolMetrics(p.Annotations)
		if err != nil {
			// The pool is still served; its scrapes use the picker's own settings.
			s.log.Error("pool metrics annotations ignored", "pool", p.Key, "error", err)
			pm = nil
		}
		s.router.SetPool(p.Key, modelPoolEndpoints(p, pm))
		for _, o := range p.Objectives {
			if st.objectives[p.Key] == nil {
				st.objectives[p.Key] = map[string]int{}
			}
			prio := 0
			if o.Spec.Priority != nil {
				prio = *o.Spec.Priority
			}
			st.objectives[p.Key][o.Name] = prio
			objectives++
		}
		for _, mr := range p.Rewrites {
			st.rewrites[p.Key] = append(st.rewrites[p.Key], compileRules(mr)...)
			rewrites++
		}
	}
	if old := s.state.Load(); old != nil {
		for _, key := range old.pools {
			if !seen[key] {
				s.router.RemovePool(key)
				s.flows.remove(key)
			}
		}
	}
	st.baseModels = baseModels
	s.state.Store(st)
	s.log.Info("snapshot applied", "version", m.Version, "pools", len(st.pools), "objectives", objectives, "rewrites", rewrites)
	s.markReady()
}

// modelPoolEndpoints lists a pool's members as router endpoints, each with the pool's
// metrics settings (nil: the picker's). A member is named after its Pod, with ":port" when
// the pool has several target ports.
func modelPoolEndpoints(p *model.Pool, metrics *router.PoolMetrics) []router.EndpointSpec {
	multiPort := len(p.Spec.TargetPorts) > 1
	out := make([]router.EndpointSpec, 0, len(p.Members))
	for _, mb := range p.Members {
		name := mb.Pod
		if multiPort {
			name = fmt.Sprintf("%s:%d", mb.Pod, mb.Port)
		}
		out = append(out, router.EndpointSpec{
			Name:    name,
			Address: net.JoinHostPort(mb.Host, strconv.Itoa(int(mb.Port))),
			Labels:  mb.Labels,
			Metrics: metrics,
		})
	}
	return out
}
