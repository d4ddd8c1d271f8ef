// Package flowcontrol queues inference requests at the gateway while their pool is
// saturated and dispatches them, when it has room, by strict priority between bands,
// fairness between the flows (tenants) of a band and an ordering within each flow. The
// endpoint is chosen by the caller after dispatch (late binding): this package decides
// when and in which order, never where.
//
// Every request that enters (Enqueue) ends in exactly one outcome: Dispatched,
// RejectedCapacity, EvictedTTL, EvictedContextCancelled or RejectedOther (shutdown), so
// enqueued = dispatched + rejected + cancelled + queued at every instant.
//
// It knows nothing of Envoy, gRPC or the router.
package flowcontrol

import (
	"container/heap"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// Outcome is the fate of one request.
type Outcome uint8

// Outcomes, named as GIE's flow-control metrics name them.
const (
	Queued Outcome = iota
	Dispatched
	RejectedCapacity
	EvictedTTL
	EvictedContextCancelled
	RejectedOther // the controller closed
	numOutcomes
)

func (o Outcome) String() string {
	switch o {
	case Queued:
		return "Queued"
	case Dispatched:
		return "Dispatched"
	case RejectedCapacity:
		return "RejectedCapacity"
	case EvictedTTL:
		return "EvictedTTL"
	case EvictedContextCancelled:
		return "EvictedContextCancelled"
	case RejectedOther:
		return "RejectedOther"
	}
	return "Unknown"
}

// ErrClosed: Enqueue on a closed controller.
var ErrClosed = errors.New("flowcontrol: controller closed")

// Request is what the controller knows of one request.
type Request struct {
	// FairnessID names the flow within its band ("" = the default flow).
	FairnessID string
	// Priority is the band: higher is served first; < 0 is sheddable.
	Priority int
	// Bytes is the request's size, counted against the byte bounds.
	Bytes int64
	// PromptTokens is charged to the flow at dispatch by the token-weighted policy; 0 =
	// Bytes / DefaultBytesPerToken.
	PromptTokens int64
	// LatencyTarget (> 0) sets the deadline EDF orders by: arrival + target.
	LatencyTarget time.Duration
}

// Gate says how many more requests the pool can take now: the saturation detector.
type Gate interface {
	// Capacity is the number of requests the pool has room for (<= 0: saturated), not
	// counting those dispatched and not yet bound to an endpoint.
	Capacity() int
}

// Counts are a controller's totals since it started.
type Counts struct {
	Enqueued    int64
	Outcomes    [numOutcomes]int64 // by Outcome; Outcomes[Queued] is unused
	Queued      int                // now
	InFlight    int                // dispatched, not released
	QueuedBytes int64              // bytes queued now
}

// Rejected is the total of the rejection and eviction outcomes other than cancellation.
func (c Counts) Rejected() int64 {
	return c.Outcomes[RejectedCapacity] + c.Outcomes[EvictedTTL] + c.Outcomes[RejectedOther]
}

// Balanced reports whether enqueued = dispatched + rejected + cancelled + queued.
func (c Counts) Balanced() bool {
	return c.Enqueued == c.Outcomes[Dispatched]+c.Rejected()+c.Outcomes[EvictedContextCancelled]+int64(c.Queued)
}

// Controller is the flow control of one pool: its queues and dispatch loop.
type Controller struct {
	cfg  Config
	gate Gate
	log  *slog.Logger
	m    *poolMetrics

	mu       sync.Mutex
	bands    []*band // by priority, highest first
	flows    map[flowKey]*flow
	expiry   expiryHeap
	queued   int
	bytes    int64
	inflight int // dispatched, not released
	pending  int // dispatched, not bound to an endpoint
	seq      uint64
	counts   Counts
	closed   bool
	fired    []*Ticket // outcomes decided under mu, announced after it

	kick chan struct{} // cap 1: something changed, run a dispatch cycle
	stop chan struct{}
	done chan struct{}
}

// Ticket is one request's place in the controller. Its methods are safe from any goroutine.
type Ticket struct {
	c        *Controller
	key      flowKey
	bytes    int64
	prompt   int64
	seq      uint64
	arrival  time.Time
	orderKey int64 // unix ns: arrival (FCFS) or deadline (EDF)
	expireAt int64 // unix ns
	qi, ei   int   // heap indices while queued; -1 otherwise
	vs       *vtcState
	bm       *bandMetrics

	// Guarded by c.mu.
	outcome  Outcome
	bound    bool
	released bool

	done   chan struct{} // closed once the outcome is decided
	notify func(*Ticket)
}

func (t *Ticket) less(o *Ticket) bool {
	if t.orderKey != o.orderKey {
		return t.orderKey < o.orderKey
	}
	return t.seq < o.seq
}

// New starts a controller over gate. Close stops it.
func New(pool string, cfg Config, gate Gate, metrics *Metrics, log *slog.Logger) (*Controller, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if gate == nil {
		return nil, errors.New("flowcontrol: nil gate")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if metrics == nil {
		metrics = NewMetrics(nil)
	}
	c := &Controller{
		cfg:   cfg,
		gate:  gate,
		log:   log,
		m:     metrics.pool(pool),
		flows: make(map[flowKey]*flow),
		kick:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go c.run()
	return c, nil
}

// Config is the controller's config with defaults filled in.
func (c *Controller) Config() Config { return c.cfg }

// RetryAfterSeconds is the retry-after value for this pool's rejections.
func (c *Controller) RetryAfterSeconds() int { return c.cfg.retryAfterSeconds() }

// Enqueue places a request. notify, if not nil, is called once from the controller's
// goroutine when the request is dispatched or evicted (not when the caller cancels it);
// Done is closed at the same moment. A request that finds the pool with room and nothing
// queued is dispatched before Enqueue returns (then notify is not called: the caller sees
// Outcome() == Dispatched). A request over a capacity bound returns with
// RejectedCapacity. Either way the ticket is returned; the error is only ErrClosed.
func (c *Controller) Enqueue(req Request, notify func(*Ticket)) (*Ticket, error) {
	now := time.Now()
	t := &Ticket{c: c, bytes: max(req.Bytes, 0), arrival: now, qi: -1, ei: -1, notify: notify, done: make(chan struct{})}
	t.key = flowKey{priority: req.Priority, id: req.FairnessID}
	t.prompt = req.PromptTokens
	if t.prompt <= 0 {
		t.prompt = t.bytes / DefaultBytesPerToken
	}
	ttl := c.cfg.RequestTTL
	t.expireAt = now.Add(ttl).UnixNano()
	t.orderKey = now.UnixNano()
	if c.cfg.Ordering == OrderingEDF {
		t.orderKey = t.expireAt
		if req.LatencyTarget > 0 {
			t.orderKey = now.Add(req.LatencyTarget).UnixNano()
		}
	}

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	c.seq++
	t.seq = c.seq
	c.counts.Enqueued++
	b := c.bandFor(req.Priority)
	t.bm = b.m
	b.m.enqueued.Inc()
	f := c.flows[t.key]
	switch {
	case c.queued+1 > c.cfg.MaxRequests, c.bytes+t.bytes > c.cfg.MaxBytes,
		f == nil && len(c.flows) >= c.cfg.MaxFlows,
		f != nil && (len(f.items)+1 > c.cfg.MaxFlowRequests || f.bytes+t.bytes > c.cfg.MaxFlowBytes),
		f == nil && t.bytes > c.cfg.MaxFlowBytes:
		c.decideLocked(t, RejectedCapacity, now)
		c.mu.Unlock()
		close(t.done)
		return t, nil
	}
	if c.queued == 0 && c.gate.Capacity()-c.pending > c.headroomFor(req.Priority) {
		// Nothing waits ahead and the pool has room: no queue, no goroutine hop.
		t.vs = c.vtcFor(b, t.key.id)
		c.dispatchLocked(t, now)
		c.mu.Unlock()
		close(t.done)
		return t, nil
	}
	if f == nil {
		f = c.newFlowLocked(b, t.key)
	}
	t.vs = f.vs
	heap.Push(&f.items, t)
	heap.Push(&c.expiry, t)
	f.bytes += t.bytes
	f.m.size.Inc()
	b.queued++
	b.bytes += t.bytes
	b.m.size.Inc()
	b.m.bytes.Add(float64(t.bytes))
	c.queued++
	c.bytes += t.bytes
	c.mu.Unlock()
	c.wake()
	return t, nil
}

// bandFor returns the band of a priority, creating it in order. Bands are few (one per
// InferenceObjective priority) and kept.
func (c *Controller) bandFor(priority int) *band {
	for _, b := range c.bands {
		if b.priority == priority {
			return b
		}
	}
	b := &band{priority: priority, vtc: make(map[string]*vtcState), m: c.m.band(priority)}
	i := 0
	for i < len(c.bands) && c.bands[i].priority > priority {
		i++
	}
	c.bands = append(c.bands, nil)
	copy(c.bands[i+1:], c.bands[i:])
	c.bands[i] = b
	return b
}

// vtcFor returns the token-weighted state of a fairness ID in a band, creating it lifted
// to the least counter of the band's backlogged flows: a flow that was idle does not
// bank credit it could spend in a burst (VTC's counter lift).
func (c *Controller) vtcFor(b *band, id string) *vtcState {
	vs := b.vtc[id]
	if vs == nil {
		vs = &vtcState{counter: b.minCounter()}
		b.vtc[id] = vs
	} else if !vs.queued {
		vs.counter = max(vs.counter, b.minCounter())
	}
	return vs
}

// dropVTCLocked deletes a fairness ID's counter once it has nothing queued or in flight.
func dropVTCLocked(b *band, id string, vs *vtcState) {
	if vs != nil && !vs.queued && vs.inflight == 0 && b.vtc[id] == vs {
		delete(b.vtc, id)
	}
}

func (c *Controller) newFlowLocked(b *band, key flowKey) *flow {
	f := &flow{key: key, band: b, ringIdx: -1, m: c.m.flow(key)}
	f.vs = c.vtcFor(b, key.id)
	f.vs.queued = true
	c.flows[key] = f
	b.addActive(f)
	return f
}

// removeLocked takes a queued ticket out of its flow and the expiry heap; an emptied flow
// is deleted.
func (c *Controller) removeLocked(t *Ticket) {
	f := c.flows[t.key]
	heap.Remove(&f.items, t.qi)
	heap.Remove(&c.expiry, t.ei)
	f.bytes -= t.bytes
	f.m.size.Dec()
	b := f.band
	b.queued--
	b.bytes -= t.bytes
	b.m.size.Dec()
	b.m.bytes.Sub(float64(t.bytes))
	c.queued--
	c.bytes -= t.bytes
	if len(f.items) == 0 {
		b.removeActive(f)
		delete(c.flows, f.key)
		f.vs.queued = false
		dropVTCLocked(b, f.key.id, f.vs)
		c.m.deleteFlow(f.key)
	}
}

// dispatchLocked records t as dispatched and charges its prompt to its flow.
func (c *Controller) dispatchLocked(t *Ticket, now time.Time) {
	c.decideLocked(t, Dispatched, now)
	c.inflight++
	c.pending++
	t.vs.inflight++
	t.vs.counter += float64(t.prompt)
}

// decideLocked sets the final outcome of t and counts it.
func (c *Controller) decideLocked(t *Ticket, o Outcome, now time.Time) {
	t.outcome = o
	c.counts.Outcomes[o]++
	t.bm.outcome(o, now.Sub(t.arrival))
}

// Cancel takes a request whose client went away out of the queue at once
// (EvictedContextCancelled) and reports true. It reports false when the request already
// has another outcome: a dispatched one must then be Released.
func (t *Ticket) Cancel() bool {
	c := t.c
	c.mu.Lock()
	if t.outcome != Queued {
		c.mu.Unlock()
		return false
	}
	c.removeLocked(t)
	c.decideLocked(t, EvictedContextCancelled, time.Now())
	c.mu.Unlock()
	close(t.done)
	c.wake() // the bounds have room again; nothing else changes
	return true
}

// Bound records that the dispatched request has been given an endpoint (from then on the
// gate's own in-flight count shows it).
func (t *Ticket) Bound() {
	c := t.c
	c.mu.Lock()
	if t.outcome == Dispatched && !t.bound && !t.released {
		t.bound = true
		c.pending--
	}
	c.mu.Unlock()
}

// Release ends a dispatched request (its response finished, failed, or it never reached an
// endpoint) and charges its output tokens to its flow. It wakes the dispatcher: capacity
// has freed. Idempotent; a no-op for a request that was not dispatched.
func (t *Ticket) Release(outputTokens int64) {
	c := t.c
	c.mu.Lock()
	if t.outcome != Dispatched || t.released {
		c.mu.Unlock()
		return
	}
	t.released = true
	c.inflight--
	if !t.bound {
		c.pending--
	}
	if outputTokens > 0 {
		t.vs.counter += c.cfg.OutputTokenWeight * float64(outputTokens)
	}
	t.vs.inflight--
	if b := c.bandIfAny(t.key.priority); b != nil {
		dropVTCLocked(b, t.key.id, t.vs)
	}
	c.mu.Unlock()
	c.wake()
}

func (c *Controller) bandIfAny(priority int) *band {
	for _, b := range c.bands {
		if b.priority == priority {
			return b
		}
	}
	return nil
}

// Outcome is the request's outcome so far (Queued until decided).
func (t *Ticket) Outcome() Outcome {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	return t.outcome
}

// Done is closed when the outcome is decided.
func (t *Ticket) Done() <-chan struct{} { return t.done }

// Waited is how long the request has been (or was) in the controller.
func (t *Ticket) Waited() time.Duration { return time.Since(t.arrival) }

// Priority and FairnessID identify the request's flow.
func (t *Ticket) Priority() int      { return t.key.priority }
func (t *Ticket) FairnessID() string { return t.key.id }

// Counts returns the totals.
func (c *Controller) Counts() Counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.counts
	out.Queued = c.queued
	out.QueuedBytes = c.bytes
	out.InFlight = c.inflight
	return out
}

// Wake asks for a dispatch cycle now: call it when the pool may have gained room (a
// scrape came in, endpoints changed).
func (c *Controller) Wake() { c.wake() }

func (c *Controller) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Close stops the dispatcher and rejects what is still queued (RejectedOther). Requests in
// flight keep their tickets; their Release is a no-op beyond the bookkeeping.
func (c *Controller) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		<-c.done
		return
	}
	c.closed = true
	now := time.Now()
	for len(c.expiry) > 0 {
		t := c.expiry[0]
		c.removeLocked(t)
		c.decideLocked(t, RejectedOther, now)
		c.fired = append(c.fired, t)
	}
	fired := c.takeFiredLocked()
	c.mu.Unlock()
	announce(fired)
	close(c.stop)
	<-c.done
}

func (c *Controller) takeFiredLocked() []*Ticket {
	if len(c.fired) == 0 {
		return nil
	}
	out := c.fired
	c.fired = nil
	return out
}

// announce closes the tickets' Done channels and calls their notify functions, outside
// the controller's lock (a notify may call back into the ticket).
func announce(ts []*Ticket) {
	for _, t := range ts {
		close(t.done)
		if t.notify != nil {
			t.notify(t)
		}
	}
}

// run is the dispatch loop: on a kick, a poll tick or a TTL expiry it evicts expired
// requests and dispatches while the pool has room.
func (c *Controller) run() {
	defer close(c.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		c.mu.Lock()
		now := time.Now()
		c.cycleLocked(now)
		wait := c.nextWakeLocked(now)
		fired := c.takeFiredLocked()
		c.mu.Unlock()
		announce(fired)

		timer.Reset(wait)
		select {
		case <-c.kick:
		case <-timer.C:
		case <-c.stop:
			return
		}
	}
}

// cycleLocked evicts expired requests, then dispatches by priority, fairness and ordering
// while the gate has room.
func (c *Controller) cycleLocked(now time.Time) {
	ns := now.UnixNano()
	for len(c.expiry) > 0 && c.expiry[0].expireAt <= ns {
		t := c.expiry[0]
		c.removeLocked(t)
		c.decideLocked(t, EvictedTTL, now)
		c.fired = append(c.fired, t)
	}
	for c.queued > 0 {
		room := c.gate.Capacity() - c.pending
		c.m.saturated.Set(boolFloat(room <= 0))
		if room <= 0 {
			return
		}
		for ; room > 0 && c.queued > 0; room-- {
			t := c.nextLocked()
			if room <= c.headroomFor(t.key.priority) {
				return // only sheddable work is left, and the rest of the room is reserved
			}
			c.removeLocked(t)
			c.dispatchLocked(t, now)
			c.fired = append(c.fired, t)
		}
	}
}

// headroomFor is the room a request of this priority must leave free.
func (c *Controller) headroomFor(priority int) int {
	if priority < 0 {
		return c.cfg.SheddableHeadroom
	}
	return 0
}

// nextLocked is the request to dispatch next: the highest band with queued requests, the
// flow its fairness policy picks, that flow's first request in its order.
func (c *Controller) nextLocked() *Ticket {
	for _, b := range c.bands {
		if b.queued == 0 {
			continue
		}
		return b.pickFlow(c.cfg.Fairness).items[0]
	}
	panic("flowcontrol: nextLocked with nothing queued") // callers check c.queued
}

// nextWakeLocked is how long the loop may sleep: until the next expiry, and no longer than
// the poll interval while requests wait.
func (c *Controller) nextWakeLocked(now time.Time) time.Duration {
	if c.queued == 0 {
		return time.Hour
	}
	wait := c.cfg.PollInterval
	if len(c.expiry) > 0 {
		wait = min(wait, time.Duration(c.expiry[0].expireAt-now.UnixNano()))
	}
	return max(wait, time.Millisecond)
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
