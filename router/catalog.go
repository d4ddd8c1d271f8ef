package router

// The model catalog: what a pool's endpoints say they serve in GET /v1/models. The picker
// answers the gateway's own GET /v1/models from it and resolves an adapter's base model
// (vLLM lists each LoRA adapter with its parent) for body-based routing.

// PoolModels returns the union of the model lists of the pool's endpoints, id → parent
// ("" for a base model). It is empty when no endpoint's list is known yet.
func (r *Router) PoolModels(poolName string) map[string]string {
	out := map[string]string{}
	p := r.lookup(poolName)
	if p == nil {
		return out
	}
	for _, e := range p.view.Load().endpoints {
		ms := e.models.Load()
		if ms == nil {
			continue
		}
		for id, parent := range *ms {
			if old, ok := out[id]; !ok || old == "" {
				out[id] = parent
			}
		}
	}
	return out
}

// ModelParent returns the base model an endpoint of the pool lists as model's parent; ok
// is false when no endpoint lists model as an adapter.
func (r *Router) ModelParent(poolName, model string) (parent string, ok bool) {
	p := r.lookup(poolName)
	if p == nil {
		return "", false
	}
	for _, e := range p.view.Load().endpoints {
		ms := e.models.Load()
		if ms == nil {
			continue
		}
		if parent := (*ms)[model]; parent != "" {
			return parent, true
		}
	}
	return "", false
}
