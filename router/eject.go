package router

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// poolEjections counts a pool's ejected endpoints against the MaxEjectedPercent cap. It is
// shared by the endpoints of one pool and survives SetPool (size is updated there).
type poolEjections struct {
	mu      sync.Mutex
	size    int
	ejected int
}

// tryEject takes one ejection slot if the cap allows.
func (p *poolEjections) tryEject(cfg *OutlierConfig) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ejected >= cfg.maxEjected(p.size) {
		return false
	}
	p.ejected++
	return true
}

func (p *poolEjections) release() {
	p.mu.Lock()
	p.ejected--
	p.mu.Unlock()
}

func (p *poolEjections) setSize(n int) {
	p.mu.Lock()
	p.size = n
	p.mu.Unlock()
}

// outlier is an endpoint's ejection state: the machine under a lock, the ejection deadline
// read lock-free by Pick, and the time of its last response progress (first-byte stalls).
type outlier struct {
	r    *Router
	e    *endpoint
	pool *poolEjections

	// ejected is 1 while the endpoint is out of picks (read by every Pick).
	ejected atomic.Bool
	// awaiting counts picks of this endpoint waiting for their first response byte and
	// progress is the unix-nano time of its last first byte (or of the pick that made
	// awaiting leave 0): an endpoint with awaiting > 0 and no progress for
	// FirstByteTimeout has stalled.
	awaiting atomic.Int64
	progress atomic.Int64
	// pendingBytes sums the uncached prompt bytes of those picks: the prefill work the
	// endpoint has been given and not yet answered (read by the pending-prefill scorer).
	pendingBytes atomic.Int64

	mu      sync.Mutex
	m       outlierMachine
	timer   *time.Timer
	removed bool

	failures   prometheus.Counter
	ejections  prometheus.Counter
	ejectedGge prometheus.Gauge
}

func (r *Router) newOutlier(e *endpoint, pool *poolEjections) *outlier {
	return &outlier{r: r, e: e, pool: pool, m: outlierMachine{cfg: &r.cfg.Outlier},
		failures:   r.metrics.failures.WithLabelValues(e.pool, e.spec.Address),
		ejections:  r.metrics.ejections.WithLabelValues(e.pool, e.spec.Address),
		ejectedGge: r.metrics.ejected.WithLabelValues(e.pool, e.spec.Address)}
}

// record applies one response outcome.
func (o *outlier) record(failed bool, reason string) {
	if failed {
		o.failures.Inc()
	}
	if o.r.cfg.Outlier.Disabled {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	wasProbation := o.m.phase == phaseProbation
	if o.m.record(failed) {
		o.ejectLocked(reason)
		return
	}
	if wasProbation && o.m.phase == phaseHealthy {
		o.r.log.Info("router: endpoint passed probation", "pool", o.e.pool, "endpoint", o.e.spec.Address)
	}
}

// stall ejects an endpoint whose requests have waited for a first byte too long.
func (o *outlier) stall() {
	if o.r.cfg.Outlier.Disabled {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m.phase != phaseEjected {
		o.ejectLocked(outlierReasonFirstByteStall)
	}
}

// ejectLocked ejects the endpoint if the pool's cap allows. Caller holds o.mu.
func (o *outlier) ejectLocked(reason string) {
	if o.removed {
		return
	}
	if !o.pool.tryEject(&o.r.cfg.Outlier) {
		o.r.log.Debug("router: endpoint not ejected, pool at its ejection cap", "pool", o.e.pool, "endpoint", o.e.spec.Address, "reason", reason)
		return
	}
	backoff := o.m.eject()
	o.ejected.Store(true)
	o.ejections.Inc()
	o.ejectedGge.Set(1)
	o.r.log.Warn("router: endpoint ejected", "pool", o.e.pool, "endpoint", o.e.spec.Address,
		"reason", reason, "backoff", backoff, "ejections_in_a_row", o.m.level)
	o.timer = time.AfterFunc(backoff, o.readmit)
}

// readmit ends an ejection (timer callback).
func (o *outlier) readmit() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.removed || o.m.phase != phaseEjected {
		return
	}
	o.m.readmit()
	// Requests still waiting from before the ejection get a fresh first-byte allowance, or
	// the endpoint would be re-ejected by the stall check before anyone could be served.
	o.progress.Store(time.Now().UnixNano())
	o.ejected.Store(false)
	o.pool.release()
	o.ejectedGge.Set(0)
	o.r.log.Info("router: endpoint readmitted on probation", "pool", o.e.pool, "endpoint", o.e.spec.Address)
}

// remove stops the state machine of a removed endpoint, freeing its ejection slot.
func (o *outlier) remove() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.removed = true
	if o.timer != nil {
		o.timer.Stop()
	}
	if o.m.phase == phaseEjected {
		o.pool.release()
	}
}

// picked notes a request sent to the endpoint: its pending prefill, and for a streamed
// request (whose first byte is its first token) the first-byte stall watch.
func (o *outlier) picked(now time.Time, pendingBytes int64, stream bool) {
	o.pendingBytes.Add(pendingBytes)
	if !stream {
		return
	}
	// The clock starts before the count rises, so that no concurrent pick sees a waiting
	// request with an old progress time.
	if o.awaiting.Load() == 0 {
		o.progress.Store(now.UnixNano())
	}
	o.awaiting.Add(1)
}

// responded undoes picked when the request stops waiting for its first byte; progress
// says the endpoint answered (a first byte, or a 5xx: alive, if failing).
func (o *outlier) responded(progress bool, pendingBytes int64, stream bool) {
	o.pendingBytes.Add(-pendingBytes)
	if !stream {
		return
	}
	if progress {
		o.progress.Store(time.Now().UnixNano())
	}
	o.awaiting.Add(-1)
}

// stalled reports whether the endpoint has requests waiting for a first byte and has
// produced none for the first-byte timeout.
func (o *outlier) stalled(now time.Time, timeout time.Duration) bool {
	return timeout > 0 && o.awaiting.Load() > 0 && now.UnixNano()-o.progress.Load() > int64(timeout)
}

// filterEjected drops ejected endpoints (and ejects stalled ones first) while at least one
// candidate is left; when every candidate is ejected they are all kept (fail open: an
// ejected endpoint is a better answer than none).
func (r *Router) filterEjected(pc *PickContext) {
	cfg := &r.cfg.Outlier
	if cfg.Disabled {
		return
	}
	// One snapshot of the flags: another goroutine may eject a candidate meanwhile, and
	// the keep below must not then drop every candidate.
	pc.flags = grow(pc.flags, len(pc.eps))
	out := 0
	for i, e := range pc.eps {
		if e.out.stalled(pc.now, cfg.FirstByteTimeout) && !e.out.ejected.Load() {
			e.out.stall()
		}
		pc.flags[i] = e.out.ejected.Load()
		if pc.flags[i] {
			out++
		}
	}
	if out == 0 || out == len(pc.eps) {
		return
	}
	pc.keep(func(i int) bool { return !pc.flags[i] })
}
