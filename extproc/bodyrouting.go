package extproc

import (
	"sync"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/infergw/infergw/internal/modelroute"
)

// Body-based routing, the picker's half (the control plane's is xds/bodyrouting.go): a
// stream that carries a model route table reads the body as every stream does (one pass:
// the same parse gives the model, the prompt for prefix scoring and the edits), finds the
// route the model headers will select, and picks in that route's pools. The headers it
// sets make Envoy's re-match land on that very route.

// ModelCatalog is what the picker needs to know of the model lists the pools' servers
// publish (GET /v1/models): *router.Router implements it. Without it the gateway's
// /v1/models lists only aliases, and adapters map to base models only by configuration.
type ModelCatalog interface {
	// PoolModels is the union of the pool's servers' model lists: id → parent ("" for a
	// base model).
	PoolModels(pool string) map[string]string
	// ModelParent is the base model a server of the pool lists as model's parent.
	ModelParent(pool, model string) (string, bool)
}

// tableCache keeps decoded model route tables by their encoded form. Tables come from the
// control plane's route configuration, so there are few; the bound only stops a
// misbehaving proxy from growing the map (it is emptied when full).
type tableCache struct {
	mu     sync.Mutex
	tables map[string]*modelroute.Compiled
}

const maxCachedTables = 256

func (c *tableCache) get(enc string) (*modelroute.Compiled, error) {
	c.mu.Lock()
	t, ok := c.tables[enc]
	c.mu.Unlock()
	if ok {
		return t, nil
	}
	t, err := modelroute.Decode(enc)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.tables == nil || len(c.tables) >= maxCachedTables {
		c.tables = map[string]*modelroute.Compiled{}
	}
	c.tables[enc] = t
	c.mu.Unlock()
	return t, nil
}

// routeByModel resolves the stream's model route table for x.model: x.poolList becomes the
// matched route's pools and the model headers to set are recorded. passThrough is true
// when the matched route is not this picker's (no pick: Envoy's re-match decides alone).
func (x *exchange) routeByModel(st *routingState) (passThrough bool, aerr *apiError) {
	table, err := x.s.modelTables.get(x.modelRoutes)
	if err != nil {
		return false, errInternal("proxy sent a bad " + modelroute.MetadataTable + ": " + err.Error())
	}
	if x.model == "" {
		// A request without a body (a GET) gets no model header: like Envoy, take the first
		// route without model conditions, if there is one.
		pools, ok := table.CatchAll()
		if !ok {
			return false, errNoRoute()
		}
		if pools == "" {
			return true, nil
		}
		x.poolList = pools
		return false, nil
	}
	base, hasBase := "", false
	if table.UsesBase {
		base, hasBase = x.s.baseModel(st, x.model)
	}
	pools, ok := table.Match(x.model, base, hasBase)
	if !ok {
		return false, errModelNotFound(x.model)
	}
	x.bodyRouted = true
	x.baseModel, x.hasBase = base, hasBase
	if pools == "" {
		return true, nil
	}
	x.poolList = pools
	return false, nil
}

// baseModel is the base model of an adapter: the configured mapping first (the pools'
// infergw.dev/base-models annotations), else the parent a server of any pool lists.
func (s *Server) baseModel(st *routingState, model string) (string, bool) {
	if b, ok := st.baseModels[model]; ok {
		return b, true
	}
	if s.catalog == nil {
		return "", false
	}
	for _, p := range st.pools {
		if b, ok := s.catalog.ModelParent(p, model); ok {
			return b, true
		}
	}
	return "", false
}

// setModelHeaders adds the body-routing headers to a pick's header mutation.
func (x *exchange) setModelHeaders(ph *pickHeaders) {
	if !x.bodyRouted {
		return
	}
	ph.set(modelroute.HeaderModelName, x.model)
	if x.hasBase {
		ph.set(modelroute.HeaderBaseModelName, x.baseModel)
	}
}

// answerPassThrough lets a body-routed request go on without a pick: the model headers
// are set and the route cache cleared, the body goes back unchanged.
func (x *exchange) answerPassThrough(body []byte, bodyEOS bool) {
	ph := &x.pickHdr
	ph.init()
	x.setModelHeaders(ph)
	common := &ph.common
	if x.headersSent {
		x.send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
			RequestBody: &extprocv3.BodyResponse{Response: common},
		}})
		return
	}
	x.headersSent = true
	ph.headers.Response = common
	ph.oneof.RequestHeaders = &ph.headers
	ph.resp.Response = &ph.oneof
	x.send(&ph.resp)
	if body != nil {
		x.sendStreamedBody(body, bodyEOS, true)
	}
}

// readModelMetadata takes the body-routing keys of the stream's gRPC metadata.
func (x *exchange) readModelMetadata(get func(string) string) {
	x.modelRoutes = get(modelroute.MetadataTable)
	x.listModels = get(modelroute.MetadataListModels)
}
