package router

import (
	"fmt"

	"github.com/infergw/infergw/flowcontrol"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Request is what the scheduler knows of one inference request.
type Request struct {
	Pool   string
	Model  string // model to be served (after any rewrite): a base model or a LoRA adapter name
	Prompt []byte // text used for prefix hashing; may be nil. Never logged.
	// Body is the raw request body (nil when none), read only by a PrefixSource to
	// tokenize the prompt as the model server will. Never logged.
	Body     []byte
	Priority int      // from the InferenceObjective; < 0 means sheddable
	Subset   []string // candidate "ip:port" list from the proxy's subset hint; nil = no hint; non-nil empty = ErrEmptySubset
	// Stream: the response is streamed, so its first byte is its first token (first-byte
	// timeouts apply to streamed requests only: a non-streamed answer comes at the end).
	Stream bool
	// HasRoom, when set (flow control dispatched the request), keeps the pick on the
	// endpoints with room for one more request, if any (flowcontrol.go).
	HasRoom func(flowcontrol.EndpointSignal) bool
}

// Decision is the answer of Pick.
type Decision struct {
	// Endpoints are ordered "ip:port": primary first, then up to Config.Fallbacks fallbacks.
	Endpoints []string
	// Pool is the pool picked from.
	Pool string
	// Scores are the primary's per-scorer scores (before weighting) and Total its
	// weighted sum; empty for the random picker.
	Scores []ScorerScore
	Total  float64
	// Candidates is the number of endpoints left after the filters.
	Candidates int
	// Stale is true when no candidate had fresh metrics and the pick used stale ones.
	Stale bool
	// PrefixBlocks is the number of prompt blocks hashed and PrefixHitBlocks the primary's
	// matched prefix length in blocks.
	PrefixBlocks, PrefixHitBlocks int

	primary *endpoint
	done    atomic.Bool
	// Response outcome bookkeeping (outcome.go).
	router       *Router
	pickedAt     time.Time
	pendingBytes int64         // uncached prompt bytes counted in the primary's pending prefill
	stream       bool          // Request.Stream
	answered     *endpoint     // the endpoint whose response headers came back
	phase        atomic.Uint32 // outcome flags
	recordMu     sync.Mutex    // serialises ResponseHeaders/FirstByte/Done
	// prefill is told how the request ended at the primary (the precise-prefix source's
	// speculation; nil: none).
	prefill PrefillWatcher
	// Backing arrays for Scores and Endpoints: one allocation per pick instead of three.
	scoresBuf    [8]ScorerScore
	endpointsBuf [4]string
}

// ScorerScore is one scorer's score of the primary.
type ScorerScore struct {
	Name   string
	Weight float64
	Score  float64
}

// Done releases the gateway-side in-flight count of the primary. It is idempotent and
// safe to call from any goroutine.
func (d *Decision) Done() {
	if d == nil || d.primary == nil {
		return
	}
	if d.done.CompareAndSwap(false, true) {
		d.primary.inflight.Add(-1)
		d.finishOutcome()
	}
}

// scratch holds the per-pick buffers, reused through a sync.Pool.
type scratch struct {
	eps       []*endpoint
	ms        []*metricsState
	mark      []bool
	hashes    spanHashes
	prefixHit []int
	total     []float64
	cols      []float64 // per scorer, per candidate: cols[s*n+i]
	order     []int32
	flags     []bool
	precise   preciseScratch
	// pc is the pick's context: scorers are called through function values, so a local
	// PickContext would escape to the heap on every pick.
	pc PickContext
}

// getScratch takes per-pick buffers from the router's pool (owned by the Router rather than
// the package, so two routers never share state).
func (r *Router) getScratch() *scratch {
	if sc, ok := r.scratch.Get().(*scratch); ok {
		return sc
	}
	return new(scratch)
}

// tieEpsilon: totals closer than this are equal and the tie is broken randomly.
const tieEpsilon = 1e-9

// Pick chooses the endpoints for a request: the subset hint, model-serving, staleness and
// (configured) LoRA-affinity filters, then the saturation check for sheddable requests,
// the weighted scorers and the picker. The primary's in-flight count is raised until
// Decision.Done and its prefix cache records the prompt.
func (r *Router) Pick(req *Request) (*Decision, error) {
	if req == nil {
		return nil, fmt.Errorf("%w: nil request", ErrUnknownPool)
	}
	start := time.Now()
	p := r.lookup(req.Pool)
	if p == nil {
		r.unknown.Inc()
		return nil, fmt.Errorf("%w %q", ErrUnknownPool, req.Pool)
	}
	if req.Subset != nil && len(req.Subset) == 0 {
		p.counters[resultEmptySubset].Inc()
		return nil, fmt.Errorf("%w (pool %q)", ErrEmptySubset, req.Pool)
	}
	view := p.view.Load()
	sc := r.getScratch()
	defer func() {
		clear(sc.eps) // drop endpoint references held by the pooled scratch
		clear(sc.ms)
		sc.hashes.reset("", nil) // drop the prompt reference
		clear(sc.precise.hosts)
		sc.precise.handle = nil
		sc.precise.watch = nil
		sc.pc = PickContext{}
		r.scratch.Put(sc)
	}()

	pc := &sc.pc
	*pc = PickContext{req: req, now: start, sched: r.sched}
	r.candidates(sc, view, req.Subset, pc)
	if len(pc.eps) == 0 {
		p.counters[resultNoReady].Inc()
		if req.Subset != nil {
			return nil, fmt.Errorf("%w: no endpoint of pool %q in the subset hint", ErrNoReadyEndpoint, req.Pool)
		}
		return nil, fmt.Errorf("%w: pool %q has no endpoints", ErrNoReadyEndpoint, req.Pool)
	}
	filterServesModel(pc)
	if len(pc.eps) == 0 {
		p.counters[resultNoReady].Inc()
		return nil, fmt.Errorf("%w: no endpoint of pool %q serves model %q", ErrNoReadyEndpoint, req.Pool, req.Model)
	}
	allStale := filterFresh(pc, r.cfg.StalenessThreshold)
	pc.flags = sc.flags
	r.filterEjected(pc)
	sc.flags = pc.flags
	if req.HasRoom != nil {
		filterRoom(pc, req.HasRoom)
	}
	if req.Priority < 0 {
		// Sheddable: rejected when every candidate is saturated, else kept off the
		// saturated ones.
		if r.allSaturated(pc, allStale) {
			p.counters[resultSaturated].Inc()
			return nil, fmt.Errorf("%w (pool %q, %d candidates)", ErrSaturated, req.Pool, len(pc.eps))
		}
		pc.keep(func(i int) bool { return !r.sched.saturated(pc.ms[i]) })
	}
	pc.isAdapter = isAdapterRequest(pc)
	for _, f := range r.sched.filters {
		f.Filter(pc)
	}
	n := len(pc.eps)
	if n == 0 { // only a plugin's filter can get here: the built-in ones keep a candidate
		p.counters[resultNoReady].Inc()
		return nil, fmt.Errorf("%w: the scheduler's filters left no endpoint of pool %q", ErrNoReadyEndpoint, req.Pool)
	}
	if r.sched.usePrefix {
		sc.hashes.reset(req.Model, req.Prompt)
		sc.hashes.maxBlocks = r.sched.prefixMaxBlocks
		pc.prefix = &sc.hashes
		pc.prefixHit = grow(sc.prefixHit, n)
		sc.prefixHit = pc.prefixHit
		pc.precise = &sc.precise
	}
	d := &Decision{Pool: req.Pool, Candidates: n, Stale: allStale, router: r, pickedAt: start}
	k := min(n, 1+r.cfg.Fallbacks)
	sc.order = growInt32(sc.order, n)
	for i := range sc.order {
		sc.order[i] = int32(i)
	}
	if !r.sched.scores {
		r.sched.picker.Pick(pc, nil, sc.order, k)
	} else {
		r.score(sc, pc)
		r.sched.picker.Pick(pc, sc.total, sc.order, k)
		best := int(sc.order[0])
		d.Total = sc.total[best]
		d.Scores = sliceOf(d.scoresBuf[:], len(r.sched.scorers))
		for s, ws := range r.sched.scorers {
			d.Scores[s] = ScorerScore{Name: ws.name, Weight: ws.weight, Score: sc.cols[s*n+best]}
		}
	}
	d.Endpoints = sliceOf(d.endpointsBuf[:], k)
	for j := 0; j < k; j++ {
		d.Endpoints[j] = pc.eps[sc.order[j]].spec.Address
	}
	primaryIdx := int(sc.order[0])
	d.primary = pc.eps[primaryIdx]
	if d.primary.inflight.Add(1) == 1 {
		d.primary.wakeScrape()
	}
	d.primary.lastPick.Store(start.UnixNano())
	if r.sched.scores {
		for _, ws := range r.sched.scorers {
			if o, ok := ws.scorer.(pickObserver); ok {
				o.picked(pc, primaryIdx)
			}
		}
		if pc.precise != nil {
			d.prefill, pc.precise.watch = pc.precise.watch, nil
		}
	}
	if pc.prefix != nil {
		hashes := pc.prefix.get(int(d.primary.prefixSpan.Load()))
		d.PrefixBlocks = len(hashes)
		if len(hashes) > 0 {
			d.PrefixHitBlocks = pc.prefixHit[primaryIdx]
			d.primary.prefix.add(hashes)
		}
	}
	// The prompt bytes the primary must prefill before this request's first token (its
	// cached prefix excepted): fresh load the scraped metrics cannot show yet.
	d.pendingBytes = int64(max(len(req.Prompt)-d.PrefixHitBlocks*int(d.primary.prefixSpan.Load()), 0))
	d.stream = req.Stream
	d.primary.out.picked(start, d.pendingBytes, req.Stream)
	if allStale {
		p.counters[resultPickedStale].Inc()
	} else {
		p.counters[resultOK].Inc()
	}
	r.metrics.pickDuration.Observe(time.Since(start).Seconds())
	return d, nil
}

// sliceOf returns buf[:n] when it is long enough, else a new slice.
func sliceOf[T any](buf []T, n int) []T {
	if n <= len(buf) {
		return buf[:n:n]
	}
	return make([]T, n)
}

// candidates fills pc with the pool's endpoints, restricted to the subset hint if any.
func (r *Router) candidates(sc *scratch, view *poolView, subset []string, pc *PickContext) {
	sc.eps, sc.ms = sc.eps[:0], sc.ms[:0]
	if subset == nil {
		for _, e := range view.endpoints {
			sc.eps = append(sc.eps, e)
			sc.ms = append(sc.ms, e.loadMetrics())
		}
	} else {
		sc.mark = growBool(sc.mark, len(view.endpoints))
		clear(sc.mark)
		for _, addr := range subset {
			if i, ok := view.byAddr[addr]; ok {
				sc.mark[i] = true
			}
		}
		for i, e := range view.endpoints {
			if sc.mark[i] {
				sc.eps = append(sc.eps, e)
				sc.ms = append(sc.ms, e.loadMetrics())
			}
		}
	}
	pc.eps, pc.ms = sc.eps, sc.ms
}

// allSaturated reports whether every candidate is saturated (stale metrics count as
// saturated, as in GIE's saturation detector).
func (r *Router) allSaturated(pc *PickContext, allStale bool) bool {
	if allStale {
		return true
	}
	for _, m := range pc.ms {
		if !r.sched.saturated(m) {
			return false
		}
	}
	return true
}

// score runs the weighted scorers into sc.cols and sums them into sc.total.
func (r *Router) score(sc *scratch, pc *PickContext) {
	n := len(pc.eps)
	sc.total = grow(sc.total, n)
	clear(sc.total)
	sc.cols = grow(sc.cols, n*len(r.sched.scorers))
	for s, ws := range r.sched.scorers {
		col := sc.cols[s*n : (s+1)*n]
		ws.scorer.Score(pc, col)
		for i, v := range col {
			sc.total[i] += ws.weight * v
		}
	}
}

// pickMaxScore moves the k best indices (by total, ties broken uniformly at random) to the
// front of order, best first.
func pickMaxScore(order []int32, total []float64, k int) {
	for j := 0; j < k; j++ {
		best, ties := j, 1
		bestScore := total[order[j]]
		for i := j + 1; i < len(order); i++ {
			v := total[order[i]]
			switch {
			case v > bestScore+tieEpsilon:
				best, bestScore, ties = i, v, 1
			case v >= bestScore-tieEpsilon:
				// Reservoir sampling: each of the tied candidates wins with probability 1/ties.
				ties++
				if rand.IntN(ties) == 0 {
					best = i
				}
			}
		}
		order[j], order[best] = order[best], order[j]
	}
}

// pickRandom moves k uniformly random indices to the front of order (partial Fisher-Yates).
func pickRandom(order []int32, k int) {
	for j := 0; j < k; j++ {
		i := j + rand.IntN(len(order)-j)
		order[j], order[i] = order[i], order[j]
	}
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

func growBool(s []bool, n int) []bool    { return grow(s, n) }
func growInt32(s []int32, n int) []int32 { return grow(s, n) }
