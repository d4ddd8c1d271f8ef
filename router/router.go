// Package router keeps the state of every model-server endpoint of every inference pool
// (scraped metrics, served models, gateway-side in-flight requests, approximate prefix
// cache) and picks the endpoint that should serve a request: filters, then weighted
// scorers, then a picker returning the primary endpoint and its fallbacks.
//
// It knows nothing of Envoy, gRPC or Kubernetes: callers feed it plain EndpointSpecs.
package router

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Router holds the pools and their endpoints and answers Pick.
type Router struct {
	// scratch holds per-pick buffers (*scratch) reused across picks.
	scratch sync.Pool

	cfg     Config
	sched   *scheduler
	log     *slog.Logger
	metrics *routerMetrics
	unknown prometheus.Counter // picks for unknown pools

	// loops counts the running endpoint loops; their scrape schedule groups them by it.
	loops atomic.Int64

	mu     sync.Mutex // serialises SetPool, RemovePool and Close
	closed bool
	pools  atomic.Pointer[map[string]*pool] // copy-on-write; read lock-free by Pick

	onScrape atomic.Pointer[func(pool string)] // flow control's wake-up (flowcontrol.go)
}

// pool is one pool's endpoint set; view is replaced as a whole by SetPool.
type pool struct {
	name     string
	view     atomic.Pointer[poolView]
	counters poolCounters
	ejection *poolEjections
}

// poolView is an immutable endpoint list with an address index (for subset hints).
type poolView struct {
	endpoints []*endpoint
	byAddr    map[string]int
}

// New creates a Router. reg receives the router's metrics (nil = a private registry).
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Router, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	plugins := cfg.Plugins
	if plugins == nil {
		plugins = NewRegistry()
	}
	sched, err := plugins.newScheduler(cfg.Scheduler)
	if err != nil {
		return nil, fmt.Errorf("router config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newRouterMetrics(reg)
	if err != nil {
		return nil, err
	}
	r := &Router{cfg: cfg, sched: sched, log: log, metrics: m}
	if err := reg.Register(newEndpointCollector(r)); err != nil {
		return nil, fmt.Errorf("router metrics: %w", err)
	}
	r.unknown = m.picks.WithLabelValues(unknownPoolLabelVal, resultUnknownPool)
	empty := map[string]*pool{}
	r.pools.Store(&empty)
	return r, nil
}

// SetPool sets the endpoints of a pool ("namespace/name"). Endpoints are matched by
// Address: unchanged ones keep their state (metrics, prefix cache, in-flight count) and
// loop; new ones start a scrape loop; removed ones have their loop stopped (SetPool
// returns after they ended). An endpoint whose name, engine type or metrics settings
// changed is replaced.
func (r *Router) SetPool(name string, specs []EndpointSpec) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		r.log.Warn("router: SetPool after Close ignored", "pool", name)
		return
	}
	pools := *r.pools.Load()
	p := pools[name]
	var old *poolView
	if p == nil {
		p = &pool{name: name, counters: r.metrics.poolCounters(name), ejection: &poolEjections{}}
	} else {
		old = p.view.Load()
	}

	next := &poolView{endpoints: make([]*endpoint, 0, len(specs)), byAddr: make(map[string]int, len(specs))}
	kept := make(map[*endpoint]bool)
	for _, spec := range specs {
		if _, dup := next.byAddr[spec.Address]; dup {
			r.log.Warn("router: duplicate endpoint address ignored", "pool", name, "endpoint", spec.Address, "name", spec.Name)
			continue
		}
		eng, known := parseEngine(spec.Labels[EngineTypeLabel])
		var e *endpoint
		if old != nil {
			if i, ok := old.byAddr[spec.Address]; ok {
				prev := old.endpoints[i]
				if prev.spec.Name == spec.Name && prev.engine == eng && samePoolMetrics(prev.spec.Metrics, spec.Metrics) {
					e = prev
					kept[e] = true
				}
			}
		}
		if e == nil {
			if !known {
				r.log.Warn("router: unknown engine type, using vllm metric names", "pool", name, "endpoint", spec.Address, "engine_type", spec.Labels[EngineTypeLabel])
			}
			e = r.startEndpoint(name, cloneSpec(spec), eng, p.ejection)
		}
		next.byAddr[spec.Address] = len(next.endpoints)
		next.endpoints = append(next.endpoints, e)
	}
	p.ejection.setSize(len(next.endpoints))
	p.view.Store(next)
	if old == nil {
		r.storePools(pools, name, p)
	}
	if old != nil {
		r.stopEndpoints(old.endpoints, kept)
	}
	r.log.Debug("router: pool set", "pool", name, "endpoints", len(next.endpoints))
}

// RemovePool forgets a pool and stops its scrape loops.
func (r *Router) RemovePool(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pools := *r.pools.Load()
	p, ok := pools[name]
	if !ok {
		return
	}
	r.storePools(pools, name, nil)
	r.stopEndpoints(p.view.Load().endpoints, nil)
	r.metrics.deletePool(name)
	r.log.Debug("router: pool removed", "pool", name)
}

// storePools publishes a copy of pools with name set to p (deleted when p is nil).
func (r *Router) storePools(pools map[string]*pool, name string, p *pool) {
	next := make(map[string]*pool, len(pools)+1)
	for k, v := range pools {
		next[k] = v
	}
	if p == nil {
		delete(next, name)
	} else {
		next[name] = p
	}
	r.pools.Store(&next)
}

// Pools returns the pool keys, sorted.
func (r *Router) Pools() []string {
	pools := *r.pools.Load()
	out := make([]string, 0, len(pools))
	for k := range pools {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Close stops every scrape loop and waits for them. The router answers Pick afterwards
// from the last known state, but SetPool is ignored.
func (r *Router) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.closed = true
	for _, p := range *r.pools.Load() {
		r.stopEndpoints(p.view.Load().endpoints, nil)
	}
}

func (r *Router) lookup(name string) *pool { return (*r.pools.Load())[name] }

func cloneSpec(s EndpointSpec) EndpointSpec {
	labels := make(map[string]string, len(s.Labels))
	for k, v := range s.Labels {
		labels[k] = v
	}
	s.Labels = labels
	return s
}

func (r *Router) startEndpoint(poolName string, spec EndpointSpec, eng engine, ej *poolEjections) *endpoint {
	ctx, cancel := context.WithCancel(context.Background())
	e := &endpoint{
		pool:   poolName,
		spec:   spec,
		engine: eng,
		prefix: newPrefixLRU(r.sched.lruCapacity(emptyMetrics)),
		cancel: cancel,
		done:   make(chan struct{}),
		wake:   make(chan struct{}, 1),
	}
	e.prefixSpan.Store(int64(r.sched.span(emptyMetrics)))
	e.out = r.newOutlier(e, ej)
	r.metrics.stale.WithLabelValues(poolName, spec.Address).Set(1)
	go r.runEndpoint(ctx, e)
	return e
}

// stopEndpoints stops the loops of the endpoints not in keep and waits for them.
func (r *Router) stopEndpoints(eps []*endpoint, keep map[*endpoint]bool) {
	var stopped []*endpoint
	for _, e := range eps {
		if !keep[e] {
			e.cancel()
			stopped = append(stopped, e)
		}
	}
	for _, e := range stopped {
		<-e.done
		e.out.remove()
		r.metrics.deleteEndpoint(e.pool, e.spec.Address)
	}
}

// ServesModel reports whether the pool may serve model. It is false only when at least
// one endpoint's model list is known and no endpoint lists the model (as an id). For an
// unknown pool it is true: Pick reports ErrUnknownPool.
func (r *Router) ServesModel(poolName, model string) bool {
	p := r.lookup(poolName)
	if p == nil {
		return true
	}
	anyKnown := false
	for _, e := range p.view.Load().endpoints {
		ms := e.models.Load()
		if ms == nil {
			continue
		}
		anyKnown = true
		if _, ok := (*ms)[model]; ok {
			return true
		}
	}
	return !anyKnown
}

// PoolStats summarises a pool for gauges.
type PoolStats struct {
	Endpoints int // all endpoints of the pool
	Ready     int // fresh endpoints
	Stale     int // endpoints with stale metrics (including failed and never scraped)
	Failed    int // endpoints whose last scrape failed (a subset of Stale)
	// AvgKVCacheUsage and AvgQueueDepth average the fresh endpoints (0 when none).
	AvgKVCacheUsage float64
	AvgQueueDepth   float64
	InFlight        int64 // gateway-side picks not yet Done
}

// PoolStats returns the stats of a pool (zero for an unknown pool).
func (r *Router) PoolStats(poolName string) PoolStats {
	var st PoolStats
	p := r.lookup(poolName)
	if p == nil {
		return st
	}
	now := time.Now()
	for _, e := range p.view.Load().endpoints {
		st.Endpoints++
		st.InFlight += e.inflight.Load()
		if e.lastFailed.Load() {
			st.Failed++
		}
		m := e.metrics.Load()
		if !e.isFresh(m, now, r.cfg.StalenessThreshold) {
			st.Stale++
			continue
		}
		st.Ready++
		st.AvgKVCacheUsage += m.kvUsage
		st.AvgQueueDepth += m.waiting
	}
	if st.Ready > 0 {
		st.AvgKVCacheUsage /= float64(st.Ready)
		st.AvgQueueDepth /= float64(st.Ready)
	}
	return st
}

// String helps logs and errors.
func (p *pool) String() string { return fmt.Sprintf("pool %q", p.name) }
