package model

import (
	infv1alpha2 "github.com/infergw/infergw/api/v1alpha2"
	"github.com/infergw/infergw/discovery"
)

// PoolMember is one endpoint of a pool as the endpoint picker scrapes and picks it: a ready
// Pod's IP at one of the pool's target ports, with the Pod's name and labels (the engine
// type label selects the metric names).
type PoolMember struct {
	Pod    string
	Labels map[string]string
	HostPort
}

// attachInference resolves InferenceObjectives and InferenceModelRewrites to the pools
// their poolRef names: group inference.networking.k8s.io (the default), kind InferencePool
// (the default), a pool of the same namespace. Anything else is warned about and ignored,
// so that the picker never applies a priority or a rewrite to a pool the object does not
// name.
func (m *Model) attachInference(objectives []*infv1alpha2.InferenceObjective, rewrites []*infv1alpha2.InferenceModelRewrite) {
	for _, o := range objectives {
		if o == nil {
			continue
		}
		if p := m.inferencePoolRef("inferenceobjective", o.Namespace, o.Name, o.Spec.PoolRef); p != nil {
			p.Objectives = append(p.Objectives, o)
		}
	}
	for _, r := range rewrites {
		if r == nil {
			continue
		}
		if p := m.inferencePoolRef("inferencemodelrewrite", r.Namespace, r.Name, r.Spec.PoolRef); p != nil {
			p.Rewrites = append(p.Rewrites, r)
		}
	}
}

func (m *Model) inferencePoolRef(kind, ns, name string, ref infv1alpha2.PoolObjectReference) *Pool {
	if (ref.Group != "" && ref.Group != "inference.networking.k8s.io") || (ref.Kind != "" && ref.Kind != "InferencePool") {
		m.warnf("%s %s: poolRef %s/%s is not an InferencePool; ignored", kind, discovery.Key(ns, name), ref.Group, ref.Kind)
		return nil
	}
	p := m.pools[discovery.Key(ns, string(ref.Name))]
	if p == nil {
		m.warnf("%s %s: InferencePool %s not found; ignored", kind, discovery.Key(ns, name), discovery.Key(ns, string(ref.Name)))
	}
	return p
}

// Priority is the priority of the pool's objective with that name, and whether it exists
// (an objective without spec.priority has priority 0).
func (p *Pool) Priority(objective string) (int, bool) {
	for _, o := range p.Objectives {
		if o.Name == objective {
			if o.Spec.Priority == nil {
				return 0, true
			}
			return *o.Spec.Priority, true
		}
	}
	return 0, false
}
