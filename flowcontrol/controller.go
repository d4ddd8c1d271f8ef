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
	// HeldPlaceSeconds is the integral over time of the room the reservation kept free
	// while requests waited (places × seconds): divided by a period, the mean number of
	// places the reservation held idle, what a flood pays for it.
	HeldPlaceSeconds float64
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
	expiry   indexedHeap
	queued   int
	bytes    int64
	inflight int // dispatched, not released
	pending  int // dispatched, not bound to an endpoint
	seq      uint64
	counts   Counts
	closed   bool
	fired    []*Ticket // outcomes decided under mu, announced after it
	// lingering counts the idle flow states kept for their demand (at most MaxFlows);
	// nextPrune is when they are next swept (unix ns).
	lingering int
	nextPrune int64
	// held is the room the last dispatch decision left free for the reservation while
	// requests waited, since heldSince (unix ns); counts.HeldPlaceSeconds integrates it.
	held      int
	heldSince int64

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
	vs       *flowState
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
		cfg:    cfg,
		gate:   gate,
		log:    log,
		m:      metrics.pool(pool, cfg.MaxFlows),
		flows:  make(map[flowKey]*flow),
		expiry: newExpiryHeap(),
		kick:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
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
		f != nil && (f.items.Len()+1 > c.cfg.MaxFlowRequests || f.bytes+t.bytes > c.cfg.MaxFlowBytes),
		f == nil && t.bytes > c.cfg.MaxFlowBytes:
		c.decideLocked(t, RejectedCapacity, now)
		c.mu.Unlock()
		close(t.done)
		return t, nil
	}
	var vs *flowState
	queuedAhead := 0 // of this flow
	if f != nil {
		vs, queuedAhead = f.vs, f.items.Len()
	} else {
		vs = c.stateFor(b, t.key.id, now.UnixNano())
	}
	vs.noteArrival(now.UnixNano(), vs.inflight+queuedAhead+1)
	if c.queued == 0 {
		if free := c.gate.Capacity() - c.pending; free > 0 {
			// Nothing waits ahead and the pool has room (beyond what is reserved for
			// others): no queue, no goroutine hop.
			if c.allowedLocked(vs, b, free, free+c.inflight, now.UnixNano()) {
				t.vs = vs
				c.dispatchLocked(t, now)
				c.mu.Unlock()
				close(t.done)
				return t, nil
			}
		}
	}
	othersQueued := c.queued > 0
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
	if othersQueued && c.dispatchIfNextLocked(t, now) {
		c.mu.Unlock()
		close(t.done)
		return t, nil
	}
	c.mu.Unlock()
	c.wake()
	return t, nil
}

// dispatchIfNextLocked dispatches the just queued t at once, and reports true, when the pool
// has room and the policies pick t for it: the decision the dispatch loop would make a
// moment later, without the hop to the loop's goroutine and back through the transport.
// This is the case of a light or higher-priority flow arriving while a heavy one is
// backlogged and the room reserved for it is free: its wait is then the time to decide,
// not a goroutine wake-up on a busy machine. When the policies pick another request, the
// round-robin positions are left as they were (the loop decides, on its own cycle).
func (c *Controller) dispatchIfNextLocked(t *Ticket, now time.Time) bool {
	free := c.gate.Capacity() - c.pending
	if free <= 0 {
		return false
	}
	var ring [8]int
	saved := ring[:0]
	for _, b := range c.bands {
		saved = append(saved, b.next)
	}
	if c.nextLocked(free, free+c.inflight, now.UnixNano()) != t {
		for i, b := range c.bands {
			b.next = saved[i]
		}
		return false
	}
	c.removeLocked(t)
	c.dispatchLocked(t, now)
	if c.held > 0 { // t took one of the places held for it
		c.setHeldLocked(c.held-1, now.UnixNano())
	}
	return true
}

// bandFor returns the band of a priority, creating it in order. Bands are few (one per
// InferenceObjective priority) and kept.
func (c *Controller) bandFor(priority int) *band {
	for _, b := range c.bands {
		if b.priority == priority {
			return b
		}
	}
	b := &band{priority: priority, states: make(map[string]*flowState), m: c.m.band(priority)}
	i := 0
	for i < len(c.bands) && c.bands[i].priority > priority {
		i++
	}
	c.bands = append(c.bands, nil)
	copy(c.bands[i+1:], c.bands[i:])
	c.bands[i] = b
	return b
}

// stateFor returns the state of a fairness ID in a band, creating it with its
// token-weighted counter lifted to the least counter of the band's backlogged flows: a
// flow that was idle does not bank credit it could spend in a burst (VTC's counter lift).
func (c *Controller) stateFor(b *band, id string, now int64) *flowState {
	vs := b.states[id]
	if vs == nil {
		vs = &flowState{counter: b.minCounter(), lastActive: now}
		b.states[id] = vs
	} else if !vs.queued {
		vs.counter = max(vs.counter, b.minCounter())
	}
	if vs.lingering {
		vs.lingering = false
		c.lingering--
	}
	return vs
}

// idleLocked is called when a fairness ID's state may have become idle (nothing queued or
// in flight): it lingers for its demand while the reservation needs it and there is
// room among the MaxFlows lingering states, and is deleted otherwise.
func (c *Controller) idleLocked(b *band, id string, vs *flowState) {
	if vs == nil || !vs.idle() || vs.lingering || b.states[id] != vs {
		return
	}
	if c.cfg.Reservation == ReservationDemand && c.lingering < c.cfg.MaxFlows {
		vs.lingering = true
		c.lingering++
		return
	}
	delete(b.states, id)
}

// pruneLocked deletes the lingering states idle for two demand windows; it sweeps at most
// once a window.
func (c *Controller) pruneLocked(now int64) {
	if c.lingering == 0 || now < c.nextPrune {
		return
	}
	w := int64(c.cfg.DemandWindow)
	c.nextPrune = now + w
	for _, b := range c.bands {
		for id, vs := range b.states {
			if vs.lingering && !vs.recent(now, w) {
				delete(b.states, id)
				c.lingering--
			}
		}
	}
}

func (c *Controller) newFlowLocked(b *band, key flowKey) *flow {
	f := &flow{key: key, band: b, ringIdx: -1, items: newItemHeap(), m: c.m.flow(key)}
	f.vs = c.stateFor(b, key.id, time.Now().UnixNano())
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
	if f.items.Len() == 0 {
		b.removeActive(f)
		delete(c.flows, f.key)
		f.vs.queued = false
		c.idleLocked(b, f.key.id, f.vs)
		c.m.deleteFlow(f.key)
	}
}

// dispatchLocked records t as dispatched and charges its prompt to its flow.
func (c *Controller) dispatchLocked(t *Ticket, now time.Time) {
	c.decideLocked(t, Dispatched, now)
	if t.vs.wait == nil {
		t.vs.wait = c.m.flowWait(t.key)
	}
	t.vs.wait.Observe(now.Sub(t.arrival).Seconds())
	c.inflight++
	c.pending++
	t.vs.inflight++
	t.vs.counter += float64(t.prompt)
	t.vs.lastActive = now.UnixNano()
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
	t.vs.lastActive = time.Now().UnixNano()
	if b := c.bandIfAny(t.key.priority); b != nil {
		c.idleLocked(b, t.key.id, t.vs)
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
	if c.held > 0 {
		out.HeldPlaceSeconds += float64(c.held) * float64(time.Now().UnixNano()-c.heldSince) / 1e9
	}
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
	for c.expiry.Len() > 0 {
		t := c.expiry.ts[0]
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
	var evicted []*Ticket
	for c.expiry.Len() > 0 && c.expiry.ts[0].expireAt <= ns {
		t := c.expiry.ts[0]
		c.removeLocked(t)
		c.decideLocked(t, EvictedTTL, now)
		evicted = append(evicted, t)
	}
	// The dispatched are announced before the evicted: an answer to a rejected request can
	// wait a moment, a dispatched one is someone's time to first token.
	defer func() { c.fired = append(c.fired, evicted...) }()
	c.pruneLocked(ns)
	held := 0
	defer func() { c.setHeldLocked(held, ns) }()
	for c.queued > 0 {
		free := c.gate.Capacity() - c.pending
		c.m.saturated.Set(boolFloat(free <= 0))
		if free <= 0 {
			return
		}
		for ; free > 0 && c.queued > 0; free-- {
			t := c.nextLocked(free, free+c.inflight, ns)
			if t == nil {
				held = free
				return // what is queued may not take the room that is reserved for others
			}
			c.removeLocked(t)
			c.dispatchLocked(t, now)
			c.fired = append(c.fired, t)
		}
	}
}

// setHeldLocked integrates the held room up to now and sets its new value.
func (c *Controller) setHeldLocked(held int, now int64) {
	if c.held > 0 && now > c.heldSince {
		d := float64(c.held) * float64(now-c.heldSince) / 1e9
		c.counts.HeldPlaceSeconds += d
		c.m.held.Add(d)
	}
	c.held, c.heldSince = held, now
}

// headroomFor is the room a request of this priority must leave free.
func (c *Controller) headroomFor(priority int) int {
	if priority < 0 {
		return c.cfg.SheddableHeadroom
	}
	return 0
}

// nextLocked is the request to dispatch next with free room in a pool of slots (free +
// in flight): the highest band with queued requests, the flow its fairness policy picks,
// that flow's first request in its order. When the reservation holds that flow back (it
// holds its share and others recently needed the room), the band's other flows are tried
// in ring order, then the bands below. nil: nothing queued may take the room.
func (c *Controller) nextLocked(free, slots int, now int64) *Ticket {
	for _, b := range c.bands {
		if b.queued == 0 {
			continue
		}
		f := b.pickFlow(c.cfg.Fairness)
		if c.allowedLocked(f.vs, b, free, slots, now) {
			return f.items.ts[0]
		}
		n := len(b.active)
		for k := 1; k < n; k++ {
			if g := b.active[(f.ringIdx+k)%n]; c.allowedLocked(g.vs, b, free, slots, now) {
				return g.items.ts[0]
			}
		}
	}
	return nil
}

// allowedLocked reports whether a request of the flow with state vs in band b may take
// one of the free room's places: what is left after it must cover the room reserved for
// others (reserveLocked) and, for sheddable work, SheddableHeadroom.
func (c *Controller) allowedLocked(vs *flowState, b *band, free, slots int, now int64) bool {
	need := 1 + c.headroomFor(b.priority)
	if free < need {
		return false
	}
	if c.cfg.Reservation != ReservationDemand {
		return true
	}
	return float64(free)-c.reserveLocked(vs, b, slots, now) >= float64(need)
}

// reserveLocked is the room a request of flow vs (band b) must leave free in a pool of
// slots, the demand reservation:
//   - for every recent flow of a higher band, its demand (at least 1)
//     minus what it holds: strict priority that does not wait for the next completion;
//   - when vs holds at least its fair share of the pool (slots / the band's recent flows),
//     for every other recent flow of the band below its share, its demand up to its share
//     minus what it holds: a heavy flow borrows only the room the light ones are not
//     expected to need. A flow's demand is the DemandQuantile of the room it needed at
//     its arrivals of the last demandHorizon windows (flowState.demand); from fewer than
//     minQuantileSamples arrivals it is the largest, + 1 in the same band: a light flow's
//     few samples are small and noisy (2 or 3 for a tenant at 10 % of the pool), where a
//     higher band's busier flows give more.
//
// The total is capped at half the pool (rounded down), so that many lightly active flows
// (or a higher band's past demand) cannot hold a busy flow to a trickle, and a pool of one
// slot reserves nothing.
func (c *Controller) reserveLocked(vs *flowState, b *band, slots int, now int64) float64 {
	w := int64(c.cfg.DemandWindow)
	horizon := demandHorizon * w
	r := 0.0
	for _, hb := range c.bands {
		if hb.priority <= b.priority {
			break // bands are sorted highest first
		}
		for _, g := range hb.states {
			if g.recent(now, w) {
				d, _ := g.demand(now, horizon, c.cfg.DemandQuantile)
				r += float64(max(0, max(d, 1)-g.inflight))
			}
		}
	}
	n := 0
	for _, g := range b.states {
		if g.recent(now, w) {
			n++
		}
	}
	if share := float64(slots) / float64(max(n, 1)); n > 1 && float64(vs.inflight) >= share {
		for _, g := range b.states {
			if g == vs || float64(g.inflight) >= share || !g.recent(now, w) {
				continue
			}
			d, confident := g.demand(now, horizon, c.cfg.DemandQuantile)
			if !confident {
				d++
			}
			r += max(0, min(float64(d), share)-float64(g.inflight))
		}
	}
	return min(r, float64(slots/2))
}

// demandHorizon is how many demand windows of a flow's arrivals its demand is estimated
// from: enough arrivals of a light tenant for a percentile (30 s: ~40 at 1.3 req/s). A flow
// idle for two windows reserves nothing however long its history.
const demandHorizon = 6

// nextWakeLocked is how long the loop may sleep: until the next expiry, and no longer than
// the poll interval while requests wait.
func (c *Controller) nextWakeLocked(now time.Time) time.Duration {
	if c.queued == 0 {
		return time.Hour
	}
	wait := c.cfg.PollInterval
	if c.expiry.Len() > 0 {
		wait = min(wait, time.Duration(c.expiry.ts[0].expireAt-now.UnixNano()))
	}
	return max(wait, time.Millisecond)
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
