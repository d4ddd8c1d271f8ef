package flowcontrol

import (
	"container/heap"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// slotGate is a pool of n slots: capacity is n minus the requests bound and not released.
// It stands in for the saturation detector (tested on its own in detector_test.go) so that
// the tests decide exactly when room appears.
type slotGate struct {
	slots atomic.Int64
	used  atomic.Int64
}

func (g *slotGate) Capacity() int { return int(g.slots.Load() - g.used.Load()) }

func newGate(n int) *slotGate {
	g := &slotGate{}
	g.slots.Store(int64(n))
	return g
}

// recorder collects dispatch order from notify callbacks.
type recorder struct {
	mu    sync.Mutex
	order []string
	ch    chan *Ticket
}

func newRecorder() *recorder { return &recorder{ch: make(chan *Ticket, 4096)} }

func (r *recorder) notify(tag string) func(*Ticket) {
	return func(t *Ticket) {
		r.mu.Lock()
		if t.Outcome() == Dispatched {
			r.order = append(r.order, tag)
		}
		r.mu.Unlock()
		r.ch <- t
	}
}

func (r *recorder) wait(t *testing.T, n int) []*Ticket {
	t.Helper()
	out := make([]*Ticket, 0, n)
	deadline := time.After(10 * time.Second)
	for len(out) < n {
		select {
		case tk := <-r.ch:
			out = append(out, tk)
		case <-deadline:
			t.Fatalf("waited for %d notifications, got %d", n, len(out))
		}
	}
	return out
}

func newController(t *testing.T, cfg Config, g Gate) (*Controller, *prometheus.Registry) {
	t.Helper()
	cfg.Enabled = true
	reg := prometheus.NewRegistry()
	c, err := New("ns/pool", cfg, g, NewMetrics(reg), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, reg
}

// mustEnqueue enqueues and fails on error.
func mustEnqueue(t *testing.T, c *Controller, req Request, notify func(*Ticket)) *Ticket {
	t.Helper()
	tk, err := c.Enqueue(req, notify)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// serveOne binds and releases a dispatched ticket, freeing its slot.
func serveOne(g *slotGate, tk *Ticket, outputTokens int64) {
	g.used.Add(1)
	tk.Bound()
	g.used.Add(-1)
	tk.Release(outputTokens)
}

func checkBalanced(t *testing.T, c *Controller) Counts {
	t.Helper()
	n := c.Counts()
	if !n.Balanced() {
		t.Errorf("accounting does not add up: %+v", n)
	}
	return n
}

// A request that finds room and an empty queue is dispatched inside Enqueue.
func TestFastPathDispatchesAtOnce(t *testing.T) {
	g := newGate(1)
	c, _ := newController(t, Config{}, g)
	tk := mustEnqueue(t, c, Request{Bytes: 10}, func(*Ticket) { t.Error("notify called on the fast path") })
	if tk.Outcome() != Dispatched {
		t.Fatalf("outcome %v, want Dispatched", tk.Outcome())
	}
	select {
	case <-tk.Done():
	default:
		t.Fatal("Done not closed")
	}
	// The slot is pending (dispatched, not bound): a second request must queue.
	tk2 := mustEnqueue(t, c, Request{Bytes: 10}, nil)
	if tk2.Outcome() != Queued {
		t.Fatalf("second outcome %v, want Queued (the first holds the only slot)", tk2.Outcome())
	}
	serveOne(g, tk, 0)
	<-tk2.Done()
	if tk2.Outcome() != Dispatched {
		t.Fatalf("after release: %v", tk2.Outcome())
	}
	tk2.Release(0)
	checkBalanced(t, c)
}

// Strict priority: with the pool saturated, queued requests come out highest band first,
// whatever their arrival order; sheddable (negative) last.
func TestStrictPriority(t *testing.T) {
	g := newGate(0)
	c, _ := newController(t, Config{}, g)
	rec := newRecorder()
	prios := []int{0, -1, 5, 0, 5, -1, 10}
	for i, p := range prios {
		mustEnqueue(t, c, Request{Priority: p, FairnessID: fmt.Sprint("f", i%2)}, rec.notify(fmt.Sprint(p)))
	}
	for range prios {
		g.slots.Add(1) // one slot at a time: each dispatch is the best of what is queued
		c.Wake()
		closeSlot(g, rec.wait(t, 1)[0], 0)
	}
	got := strings.Join(rec.order, ",")
	if want := "10,5,5,0,0,-1,-1"; got != want {
		t.Fatalf("dispatch order %s, want %s", got, want)
	}
	checkBalanced(t, c)
}

// Round robin: a flow with 30 queued requests and one with 3 alternate, so the small flow
// is done within its first 6 dispatches.
func TestRoundRobinFairness(t *testing.T) {
	g := newGate(0)
	c, _ := newController(t, Config{Fairness: FairnessRoundRobin}, g)
	rec := newRecorder()
	for i := 0; i < 30; i++ {
		mustEnqueue(t, c, Request{FairnessID: "noisy"}, rec.notify("noisy"))
	}
	for i := 0; i < 3; i++ {
		mustEnqueue(t, c, Request{FairnessID: "quiet"}, rec.notify("quiet"))
	}
	drainOneByOne(t, c, g, rec, 33, 0)
	quietSeen := 0
	for _, tag := range rec.order[:6] {
		if tag == "quiet" {
			quietSeen++
		}
	}
	if quietSeen != 3 {
		t.Fatalf("quiet got %d of the first 6 dispatches, want 3 (order %v)", quietSeen, rec.order)
	}
	checkBalanced(t, c)
}

// Global-strict ignores flows: arrival order across flows.
func TestGlobalStrictIsArrivalOrder(t *testing.T) {
	g := newGate(0)
	c, _ := newController(t, Config{Fairness: FairnessGlobalStrict}, g)
	rec := newRecorder()
	tags := []string{"a", "a", "a", "b", "a", "b"}
	for i, f := range tags {
		mustEnqueue(t, c, Request{FairnessID: f}, rec.notify(fmt.Sprint(f, i)))
	}
	drainOneByOne(t, c, g, rec, len(tags), 0)
	if got := strings.Join(rec.order, ","); got != "a0,a1,a2,b3,a4,b5" {
		t.Fatalf("order %s, want arrival order", got)
	}
}

// drainOneByOne opens one slot at a time and serves each dispatch, charging outTokens.
func drainOneByOne(t *testing.T, c *Controller, g *slotGate, rec *recorder, n int, outTokens int64) {
	t.Helper()
	for i := 0; i < n; i++ {
		g.slots.Add(1)
		c.Wake()
		tk := rec.wait(t, 1)[0]
		closeSlot(g, tk, outTokens)
	}
}

// closeSlot takes the slot away before the release wakes the dispatcher, so that each
// dispatch sees exactly one slot.
func closeSlot(g *slotGate, tk *Ticket, outTokens int64) {
	g.slots.Add(-1)
	tk.Bound()
	tk.Release(outTokens)
}

// Token-weighted fairness: two backlogged flows, one sending prompts 4× as long. Served
// one at a time, their weighted tokens stay within one request's cost of each other, so
// the short-prompt flow gets ~4× as many requests through.
func TestTokenWeightedProportions(t *testing.T) {
	g := newGate(0)
	c, _ := newController(t, Config{Fairness: FairnessTokenWeighted}, g)
	rec := newRecorder()
	const each = 200
	for i := 0; i < each; i++ {
		mustEnqueue(t, c, Request{FairnessID: "long", PromptTokens: 400}, rec.notify("long"))
		mustEnqueue(t, c, Request{FairnessID: "short", PromptTokens: 100}, rec.notify("short"))
	}
	drainOneByOne(t, c, g, rec, 100, 0)
	long, short := 0, 0
	for _, tag := range rec.order {
		if tag == "long" {
			long++
		} else {
			short++
		}
	}
	// Equal tokens: 100·short ≈ 400·long with long+short = 100 → short 80, long 20.
	if short < 78 || short > 82 {
		t.Fatalf("short-prompt flow got %d of 100 dispatches, long %d; want ~80/20", short, long)
	}
}

// Output tokens reported at Release count too: a flow whose answers are long falls behind.
func TestTokenWeightedChargesOutput(t *testing.T) {
	g := newGate(0)
	c, _ := newController(t, Config{Fairness: FairnessTokenWeighted, OutputTokenWeight: 2}, g)
	rec := newRecorder()
	for i := 0; i < 100; i++ {
		mustEnqueue(t, c, Request{FairnessID: "chatty", PromptTokens: 10}, rec.notify("chatty"))
		mustEnqueue(t, c, Request{FairnessID: "terse", PromptTokens: 10}, rec.notify("terse"))
	}
	// chatty's answers are 145 tokens (cost 10 + 2·145 = 300), terse's 0 (cost 10): terse
	// should get ~30 requests per chatty one.
	chatty, terse := 0, 0
	for i := 0; i < 62; i++ {
		g.slots.Add(1)
		c.Wake()
		tk := rec.wait(t, 1)[0]
		out := int64(0)
		if tk.FairnessID() == "chatty" {
			chatty++
			out = 145
		} else {
			terse++
		}
		closeSlot(g, tk, out)
	}
	if chatty > 3 || terse < 59 {
		t.Fatalf("chatty %d, terse %d of 62; want chatty ≤ 3", chatty, terse)
	}
}

// A flow that was idle starts at the least active counter, not at zero: it cannot bank
// credit and then monopolise the band.
func TestTokenWeightedNoBankedCredit(t *testing.T) {
	g := newGate(0)
	c, _ := newController(t, Config{Fairness: FairnessTokenWeighted}, g)
	rec := newRecorder()
	for i := 0; i < 50; i++ {
		mustEnqueue(t, c, Request{FairnessID: "a", PromptTokens: 100}, rec.notify("a"))
	}
	drainOneByOne(t, c, g, rec, 40, 0) // a's counter is 4000 now
	for i := 0; i < 50; i++ {
		mustEnqueue(t, c, Request{FairnessID: "b", PromptTokens: 100}, rec.notify("b"))
	}
	rec.order = nil
	drainOneByOne(t, c, g, rec, 10, 0)
	b := strings.Count(strings.Join(rec.order, ""), "b")
	if b > 6 {
		t.Fatalf("late flow b got %d of 10 dispatches after a's 40: it banked credit (order %v)", b, rec.order)
	}
}

// EDF: within a flow, the request with the earlier deadline goes first.
func TestEDFOrdering(t *testing.T) {
	g := newGate(0)
	c, _ := newController(t, Config{Ordering: OrderingEDF}, g)
	rec := newRecorder()
	mustEnqueue(t, c, Request{LatencyTarget: 10 * time.Second}, rec.notify("slow"))
	mustEnqueue(t, c, Request{LatencyTarget: time.Second}, rec.notify("fast"))
	mustEnqueue(t, c, Request{}, rec.notify("ttl")) // deadline = arrival + TTL (30 s)
	mustEnqueue(t, c, Request{LatencyTarget: 2 * time.Second}, rec.notify("mid"))
	drainOneByOne(t, c, g, rec, 4, 0)
	if got := strings.Join(rec.order, ","); got != "fast,mid,slow,ttl" {
		t.Fatalf("order %s, want fast,mid,slow,ttl", got)
	}
	// FCFS ignores targets.
	c2, _ := newController(t, Config{Ordering: OrderingFCFS}, g)
	rec2 := newRecorder()
	mustEnqueue(t, c2, Request{LatencyTarget: 10 * time.Second}, rec2.notify("slow"))
	mustEnqueue(t, c2, Request{LatencyTarget: time.Second}, rec2.notify("fast"))
	drainOneByOne(t, c2, g, rec2, 2, 0)
	if got := strings.Join(rec2.order, ","); got != "slow,fast" {
		t.Fatalf("fcfs order %s", got)
	}
}

// TTL: a request that cannot be served in time is evicted with EvictedTTL and its notify
// runs; the metrics count it.
func TestTTLEviction(t *testing.T) {
	g := newGate(0)
	c, reg := newController(t, Config{RequestTTL: 30 * time.Millisecond}, g)
	rec := newRecorder()
	for i := 0; i < 5; i++ {
		mustEnqueue(t, c, Request{Priority: -1, Bytes: 100}, rec.notify("x"))
	}
	for _, tk := range rec.wait(t, 5) {
		if tk.Outcome() != EvictedTTL {
			t.Fatalf("outcome %v, want EvictedTTL", tk.Outcome())
		}
		if tk.Waited() < 30*time.Millisecond {
			t.Fatalf("evicted after %v, before its TTL", tk.Waited())
		}
	}
	n := checkBalanced(t, c)
	if n.Outcomes[EvictedTTL] != 5 || n.Queued != 0 || n.QueuedBytes != 0 {
		t.Fatalf("counts %+v", n)
	}
	if v := testutil.ToFloat64(c.m.m.outcomes.WithLabelValues("ns/pool", "-1", "EvictedTTL")); v != 5 {
		t.Fatalf("EvictedTTL metric %v, want 5", v)
	}
	if v := testutil.ToFloat64(c.m.m.size.WithLabelValues("ns/pool", "-1")); v != 0 {
		t.Fatalf("queue size metric %v after eviction", v)
	}
	_ = reg
}

// A cancelled request leaves the queue at once: the queue shrinks, the flow's series
// goes, and it is never dispatched later.
func TestCancelLeavesQueue(t *testing.T) {
	g := newGate(0)
	c, reg := newController(t, Config{}, g)
	tk := mustEnqueue(t, c, Request{FairnessID: "tenant-a", Bytes: 64}, func(*Ticket) { t.Error("notify after cancel") })
	if n := c.Counts(); n.Queued != 1 || n.QueuedBytes != 64 {
		t.Fatalf("counts before cancel %+v", n)
	}
	if !tk.Cancel() {
		t.Fatal("Cancel of a queued request returned false")
	}
	if tk.Cancel() {
		t.Fatal("second Cancel returned true")
	}
	n := checkBalanced(t, c)
	if n.Queued != 0 || n.QueuedBytes != 0 || n.Outcomes[EvictedContextCancelled] != 1 {
		t.Fatalf("counts after cancel %+v", n)
	}
	if got := testutil.CollectAndCount(reg, "inference_extension_flow_control_flow_queue_size"); got != 0 {
		t.Fatalf("%d flow series left after the flow emptied", got)
	}
	g.slots.Store(5)
	c.Wake()
	time.Sleep(20 * time.Millisecond) // give a wrong dispatch the chance to happen
	if tk.Outcome() != EvictedContextCancelled {
		t.Fatalf("outcome %v", tk.Outcome())
	}
	// Cancel after dispatch is refused: the caller must release.
	tk2 := mustEnqueue(t, c, Request{}, nil)
	if tk2.Outcome() != Dispatched || tk2.Cancel() {
		t.Fatalf("dispatched ticket: outcome %v, cancel should be refused", tk2.Outcome())
	}
	tk2.Release(0)
	checkBalanced(t, c)
}

// Every bound, tried one past its limit: requests, bytes, per-flow requests and bytes,
// flows. The rejection is immediate and counted.
func TestCapacityBounds(t *testing.T) {
	cases := []struct {
		name  string
		cfg   Config
		fill  []Request
		extra Request
	}{
		{"pool requests", Config{MaxRequests: 3}, reqs(3, "a", 1), Request{FairnessID: "b"}},
		{"pool bytes", Config{MaxBytes: 100}, reqs(2, "a", 50), Request{FairnessID: "b", Bytes: 1}},
		{"flow requests", Config{MaxFlowRequests: 2}, reqs(2, "a", 1), Request{FairnessID: "a"}},
		{"flow bytes", Config{MaxFlowBytes: 10}, reqs(1, "a", 10), Request{FairnessID: "a", Bytes: 1}},
		{"one request over a flow's bytes", Config{MaxFlowBytes: 10}, nil, Request{FairnessID: "new", Bytes: 11}},
		{"flows", Config{MaxFlows: 2}, append(reqs(1, "a", 1), reqs(1, "b", 1)...), Request{FairnessID: "c"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := newGate(0)
			c, _ := newController(t, tc.cfg, g)
			for _, r := range tc.fill {
				if tk := mustEnqueue(t, c, r, nil); tk.Outcome() != Queued {
					t.Fatalf("fill request got %v", tk.Outcome())
				}
			}
			tk := mustEnqueue(t, c, tc.extra, nil)
			if tk.Outcome() != RejectedCapacity {
				t.Fatalf("request past the bound got %v, want RejectedCapacity", tk.Outcome())
			}
			n := checkBalanced(t, c)
			if n.Queued != len(tc.fill) {
				t.Fatalf("queued %d, want %d", n.Queued, len(tc.fill))
			}
		})
	}
	// A different flow still fits when only one flow is full.
	g := newGate(0)
	c, _ := newController(t, Config{MaxFlowRequests: 1}, g)
	mustEnqueue(t, c, Request{FairnessID: "a"}, nil)
	if tk := mustEnqueue(t, c, Request{FairnessID: "b"}, nil); tk.Outcome() != Queued {
		t.Fatalf("other flow: %v", tk.Outcome())
	}
}

func reqs(n int, flow string, bytes int64) []Request {
	out := make([]Request, n)
	for i := range out {
		out[i] = Request{FairnessID: flow, Bytes: bytes}
	}
	return out
}

// Many goroutines enqueue, cancel and release at random while capacity comes and goes;
// at the end every request has exactly one outcome and the totals add up.
func TestAccountingUnderConcurrency(t *testing.T) {
	g := newGate(2)
	c, reg := newController(t, Config{MaxRequests: 50, RequestTTL: 40 * time.Millisecond, Fairness: FairnessTokenWeighted}, g)
	var wg sync.WaitGroup
	var outcomes [numOutcomes]atomic.Int64
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				tk, err := c.Enqueue(Request{FairnessID: fmt.Sprint("t", (w+i)%5), Priority: i%3 - 1, Bytes: 10}, nil)
				if err != nil {
					t.Error(err)
					return
				}
				if i%7 == 0 && tk.Cancel() {
					outcomes[EvictedContextCancelled].Add(1)
					continue
				}
				<-tk.Done()
				o := tk.Outcome()
				outcomes[o].Add(1)
				if o == Dispatched {
					serveOne(g, tk, int64(i%50))
				}
			}
		}(w)
	}
	wg.Wait()
	n := checkBalanced(t, c)
	if n.Enqueued != 1600 || n.Queued != 0 || n.InFlight != 0 {
		t.Fatalf("counts %+v", n)
	}
	for o := Dispatched; o < numOutcomes; o++ {
		if got := outcomes[o].Load(); got != n.Outcomes[o] {
			t.Errorf("%v: callers saw %d, controller counted %d", o, got, n.Outcomes[o])
		}
	}
	if n.Outcomes[Dispatched] == 0 {
		t.Fatal("nothing dispatched")
	}
	// The Prometheus series add up the same way.
	var enq, out float64
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "inference_extension_flow_control_enqueued_total":
				enq += m.GetCounter().GetValue()
			case "inference_extension_flow_control_request_outcomes_total":
				out += m.GetCounter().GetValue()
			}
		}
	}
	if enq != 1600 || out != 1600 {
		t.Fatalf("metrics: enqueued %v, outcomes %v; want 1600 each", enq, out)
	}
	c.mu.Lock()
	lingering := 0
	for _, b := range c.bands {
		for id, vs := range b.states {
			if !vs.idle() || !vs.lingering {
				t.Errorf("band %d flow %q: state kept busy or not lingering with nothing queued or in flight: %+v", b.priority, id, *vs)
			}
			lingering++
		}
	}
	if lingering != c.lingering || lingering > c.cfg.MaxFlows {
		t.Errorf("%d lingering states, counted %d, bound %d", lingering, c.lingering, c.cfg.MaxFlows)
	}
	c.mu.Unlock()
}

// Close rejects what is queued (RejectedOther, notify called), stops the goroutine, and
// refuses new requests.
func TestCloseRejectsAndStops(t *testing.T) {
	before := runtime.NumGoroutine()
	g := newGate(0)
	c, err := New("p", Config{Enabled: true}, g, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	for i := 0; i < 10; i++ {
		mustEnqueue(t, c, Request{}, rec.notify("x"))
	}
	c.Close()
	for _, tk := range rec.wait(t, 10) {
		if tk.Outcome() != RejectedOther {
			t.Fatalf("outcome %v", tk.Outcome())
		}
	}
	if _, err := c.Enqueue(Request{}, nil); err != ErrClosed {
		t.Fatalf("Enqueue after Close: %v", err)
	}
	c.Close() // idempotent
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines after Close, %d before: the dispatcher leaked", n, before)
	}
}

func TestConfigValidation(t *testing.T) {
	bad := []Config{
		{Fairness: "lottery"},
		{Ordering: "lifo"},
		{MaxRequests: 2, MaxFlowRequests: 3},
		{RequestTTL: -1},
		{Saturation: SaturationConfig{KVCacheUtilThreshold: 1.5}},
		{Saturation: SaturationConfig{QueueDepthThreshold: -1}},
		{Saturation: SaturationConfig{MaxInFlightPerEndpoint: -1}},
		{OutputTokenWeight: -1},
	}
	for _, cfg := range bad {
		if _, err := New("p", cfg, newGate(1), nil, nil); err == nil {
			t.Errorf("config %+v accepted", cfg)
		}
	}
	if _, err := New("p", Config{}, nil, nil, nil); err == nil {
		t.Error("nil gate accepted")
	}
}

// SheddableHeadroom keeps room for non-sheddable work: with 3 free slots and a headroom of
// 2, one sheddable request is dispatched and the rest wait; a critical request arriving then
// is dispatched at once into the reserved room.
func TestSheddableHeadroom(t *testing.T) {
	g := newGate(0)
	c, _ := newController(t, Config{SheddableHeadroom: 2}, g)
	rec := newRecorder()
	for i := 0; i < 5; i++ {
		mustEnqueue(t, c, Request{Priority: -1}, rec.notify("batch"))
	}
	g.slots.Store(3)
	c.Wake()
	first := rec.wait(t, 1)[0]
	first.Bound()
	g.used.Add(1) // the dispatched batch request now holds a slot: 2 left, both reserved
	c.Wake()
	time.Sleep(30 * time.Millisecond) // a wrong dispatch would happen here
	if n := c.Counts(); n.Outcomes[Dispatched] != 1 || n.Queued != 4 {
		t.Fatalf("with the headroom reserved: %+v", n)
	}
	// Dispatched inside Enqueue: the room is there and the policy picks it.
	crit := mustEnqueue(t, c, Request{Priority: 10}, rec.notify("critical"))
	if crit.Outcome() != Dispatched {
		t.Fatalf("the critical request was not dispatched into the reserved room: %v", crit.Outcome())
	}
	// Without headroom the sheddable requests take every free slot.
	g2 := newGate(0)
	c2, _ := newController(t, Config{}, g2)
	rec2 := newRecorder()
	for i := 0; i < 5; i++ {
		mustEnqueue(t, c2, Request{Priority: -1}, rec2.notify("batch"))
	}
	g2.slots.Store(3)
	c2.Wake()
	rec2.wait(t, 3)
}

// bindOnDispatch is a notify that binds each dispatched request into the gate (it holds a
// slot until released) and records it.
func bindOnDispatch(g *slotGate, rec *recorder, tag string) func(*Ticket) {
	inner := rec.notify(tag)
	return func(tk *Ticket) {
		if tk.Outcome() == Dispatched {
			g.used.Add(1)
			tk.Bound()
		}
		inner(tk)
	}
}

// enqueueBound enqueues a request that binds into the gate when dispatched, on the fast
// path (inside Enqueue) or later (notify).
func enqueueBound(t *testing.T, c *Controller, g *slotGate, rec *recorder, req Request, tag string) *Ticket {
	t.Helper()
	tk := mustEnqueue(t, c, req, bindOnDispatch(g, rec, tag))
	if tk.Outcome() == Dispatched {
		g.used.Add(1)
		tk.Bound()
	}
	return tk
}

// settle waits until n requests have been dispatched and then a moment more, long enough
// for a wrong further dispatch to show up in the counts.
func settle(t *testing.T, c *Controller, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.Counts().Outcomes[Dispatched] < n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(30 * time.Millisecond)
}

// The demand reservation: a light flow B that recently had 2 requests in flight keeps
// room for 3 (its peak + 1) while a heavy flow A floods a pool of 8, so A gets 5 slots and
// B's next request is dispatched at once instead of at A's next completion. With
// reservation none, A takes all 8; and once B has been idle for two demand windows, A
// takes all 8 too (the reservation is forgotten, its state pruned).
func TestDemandReservationKeepsRoomForLightFlow(t *testing.T) {
	run := func(t *testing.T, cfg Config, idle time.Duration, wantA int) {
		g := newGate(8)
		c, _ := newController(t, cfg, g)
		rec := newRecorder()
		b1 := mustEnqueue(t, c, Request{FairnessID: "B"}, nil)
		b2 := mustEnqueue(t, c, Request{FairnessID: "B"}, nil)
		for _, tk := range []*Ticket{b1, b2} {
			if tk.Outcome() != Dispatched {
				t.Fatalf("B on an idle pool: %v", tk.Outcome())
			}
			g.used.Add(1)
			tk.Bound()
		}
		for _, tk := range []*Ticket{b1, b2} {
			g.used.Add(-1)
			tk.Release(0)
		}
		time.Sleep(idle)
		for i := 0; i < 20; i++ {
			enqueueBound(t, c, g, rec, Request{FairnessID: "A"}, "A")
		}
		settle(t, c, int64(2+wantA))
		if n := c.Counts(); n.Outcomes[Dispatched] != int64(2+wantA) {
			t.Fatalf("A got %d slots of 8, want %d", n.Outcomes[Dispatched]-2, wantA)
		}
		if wantA == 8 {
			return
		}
		// B arrives behind A's backlog and finds its reserved room: dispatched inside Enqueue.
		if tk := enqueueBound(t, c, g, rec, Request{FairnessID: "B"}, "B"); tk.Outcome() != Dispatched {
			t.Fatalf("B's outcome %v, want Dispatched into its reserved room", tk.Outcome())
		}
		checkBalanced(t, c)
	}
	t.Run("demand", func(t *testing.T) { run(t, Config{}, 0, 5) })
	t.Run("none", func(t *testing.T) { run(t, Config{Reservation: ReservationNone}, 0, 8) })
	t.Run("forgotten after two windows", func(t *testing.T) {
		run(t, Config{DemandWindow: 20 * time.Millisecond}, 60*time.Millisecond, 8)
	})
}

// Priority with the demand reservation: a critical flow that recently had one request in
// flight keeps room for it while sheddable batch work floods a pool of 8 (batch gets 7);
// the next critical request is dispatched at once into that room. A single flow alone
// reserves nothing: it gets the whole pool.
func TestDemandReservationForHigherBand(t *testing.T) {
	g := newGate(8)
	c, _ := newController(t, Config{}, g)
	rec := newRecorder()
	crit := mustEnqueue(t, c, Request{Priority: 10}, nil)
	if crit.Outcome() != Dispatched {
		t.Fatalf("critical on an idle pool: %v", crit.Outcome())
	}
	crit.Bound()
	crit.Release(0)
	for i := 0; i < 20; i++ {
		enqueueBound(t, c, g, rec, Request{Priority: -1}, "batch")
	}
	settle(t, c, 1+7)
	if n := c.Counts(); n.Outcomes[Dispatched] != 1+7 {
		t.Fatalf("batch got %d slots of 8, want 7", n.Outcomes[Dispatched]-1)
	}
	if tk := enqueueBound(t, c, g, rec, Request{Priority: 10}, "critical"); tk.Outcome() != Dispatched {
		t.Fatalf("the critical request's outcome %v, want Dispatched into its reserved room", tk.Outcome())
	}
	checkBalanced(t, c)

	// One flow alone: nothing is reserved.
	g2 := newGate(8)
	c2, _ := newController(t, Config{}, g2)
	rec2 := newRecorder()
	for i := 0; i < 20; i++ {
		enqueueBound(t, c2, g2, rec2, Request{FairnessID: "A"}, "A")
	}
	settle(t, c2, 8)
	if n := c2.Counts(); n.Outcomes[Dispatched] != 8 {
		t.Fatalf("a flow alone got %d slots of 8", n.Outcomes[Dispatched])
	}
}

// Idle flows linger for their demand, but at most MaxFlows of them: the fairness ID is a
// client header, so 100 one-request tenants leave no more than MaxFlows states behind.
func TestLingeringStatesBounded(t *testing.T) {
	g := newGate(1000)
	c, _ := newController(t, Config{MaxFlows: 4}, g)
	for i := 0; i < 100; i++ {
		tk := mustEnqueue(t, c, Request{FairnessID: fmt.Sprint("tenant-", i)}, nil)
		if tk.Outcome() != Dispatched {
			t.Fatalf("request %d: %v", i, tk.Outcome())
		}
		tk.Bound()
		tk.Release(1)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	states := 0
	for _, b := range c.bands {
		states += len(b.states)
	}
	if states > 4 || c.lingering != states {
		t.Fatalf("%d states kept (%d counted lingering), bound 4", states, c.lingering)
	}
}

// The per-flow dispatch-wait histogram counts every dispatched request under its own
// fairness ID, and a pool makes at most MaxFlows such series: the IDs come from a client
// header, so the IDs beyond share the overflow series.
func TestFlowWaitSeriesPerFlowAndBounded(t *testing.T) {
	g := newGate(1000)
	c, reg := newController(t, Config{MaxFlows: 3, Reservation: ReservationNone}, g)
	for i := 0; i < 10; i++ {
		id := fmt.Sprintf("tenant-%d", i)
		for j := 0; j < 2; j++ {
			tk := mustEnqueue(t, c, Request{FairnessID: id, Bytes: 10}, nil)
			if tk.Outcome() != Dispatched {
				t.Fatalf("%s: outcome %v, want Dispatched", id, tk.Outcome())
			}
			serveOne(g, tk, 1)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != "infergw_flow_control_flow_dispatch_wait_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "fairness_id" {
					counts[l.GetValue()] += m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	want := map[string]uint64{"tenant-0": 2, "tenant-1": 2, "tenant-2": 2, OverflowFairnessID: 14}
	if len(counts) != len(want) {
		t.Fatalf("series %v, want %v", counts, want)
	}
	for id, n := range want {
		if counts[id] != n {
			t.Fatalf("series %v, want %v", counts, want)
		}
	}
	checkBalanced(t, c)
}

// countingGate is a slotGate that counts its Capacity calls: a test waits on the count to
// know that the dispatch loop has run its cycle, instead of sleeping.
type countingGate struct {
	*slotGate
	calls atomic.Int64
}

func (g *countingGate) Capacity() int {
	g.calls.Add(1)
	return g.slotGate.Capacity()
}

func (g *countingGate) waitCalls(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for g.calls.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("gate asked %d times, want %d", g.calls.Load(), n)
		}
		runtime.Gosched()
	}
}

// A light tenant arriving while a heavy one is backlogged and the room the reservation
// keeps for it is free is dispatched inside Enqueue (no hop through the dispatch loop):
// the noisy-neighbour case of the benchmark.
func TestEnqueueDispatchesReservedRoomAtOnce(t *testing.T) {
	g := newGate(4)
	c, _ := newController(t, Config{Fairness: FairnessTokenWeighted, PollInterval: time.Hour}, g)
	// B was recently active (one request, served): it has a demand of 1.
	serveOne(g, mustEnqueue(t, c, Request{FairnessID: "b", Bytes: 40}, nil), 1)
	// A floods: it may take its share and what B is not expected to need, no more.
	rec := newRecorder()
	var heavy []*Ticket
	for i := 0; i < 6; i++ {
		heavy = append(heavy, mustEnqueue(t, c, Request{FairnessID: "a", Bytes: 4000}, rec.notify("a")))
	}
	dispatchedA := 0
	for _, tk := range heavy {
		if tk.Outcome() == Dispatched {
			dispatchedA++
			g.used.Add(1)
			tk.Bound()
		}
	}
	if dispatchedA != 2 {
		t.Fatalf("A dispatched %d of 4 slots, want 2 (2 kept for B)", dispatchedA)
	}
	tk := mustEnqueue(t, c, Request{FairnessID: "b", Bytes: 40}, func(*Ticket) { t.Error("notify called for a request dispatched in Enqueue") })
	if tk.Outcome() != Dispatched {
		t.Fatalf("B's outcome right after Enqueue: %v, want Dispatched (the reserved room is free)", tk.Outcome())
	}
	select {
	case <-tk.Done():
	default:
		t.Fatal("Done not closed")
	}
	if n := c.Counts(); n.Queued != 4 || !n.Balanced() {
		t.Fatalf("counts %+v: want A's 4 still queued and the accounting balanced", n)
	}
}

// The dispatch in Enqueue never jumps the policy: with room for one and another flow's
// request first in round-robin order, the new request waits and the other goes first.
func TestEnqueueDispatchFollowsPolicy(t *testing.T) {
	g := &countingGate{slotGate: newGate(0)}
	c, _ := newController(t, Config{Reservation: ReservationNone, PollInterval: time.Hour}, g)
	rec := newRecorder()
	first := mustEnqueue(t, c, Request{FairnessID: "a", Bytes: 10}, rec.notify("a"))
	g.waitCalls(t, 2) // the Enqueue and the loop's cycle it woke both found no room
	g.slots.Store(1)  // room for one, the loop not told
	second := mustEnqueue(t, c, Request{FairnessID: "b", Bytes: 10}, rec.notify("b"))
	if second.Outcome() != Queued {
		t.Fatalf("b's outcome %v, want Queued: a is first in round-robin order", second.Outcome())
	}
	if got := rec.wait(t, 1); got[0] != first {
		t.Fatal("the loop dispatched b before a")
	}
	serveOne(g.slotGate, first, 1)
	rec.wait(t, 1)
	if got := strings.Join(rec.order, ","); got != "a,b" {
		t.Fatalf("order %s, want a,b", got)
	}
	checkBalanced(t, c)
}

// In a cycle that both evicts and dispatches, the dispatched request is announced first.
// The cycle is run by hand under the controller's lock with the older request's deadline
// moved into the past: the loop's own expiry timer cannot be lined up with a slot freeing
// (it may wake a few µs before the wall-clock deadline and dispatch first).
func TestCycleAnnouncesDispatchedBeforeEvicted(t *testing.T) {
	g := &countingGate{slotGate: newGate(0)}
	c, _ := newController(t, Config{Reservation: ReservationNone, PollInterval: time.Hour, RequestTTL: time.Hour}, g)
	old := mustEnqueue(t, c, Request{FairnessID: "a", Bytes: 10}, nil)
	young := mustEnqueue(t, c, Request{FairnessID: "b", Bytes: 10}, nil)
	g.slots.Store(1)
	c.mu.Lock()
	old.expireAt = time.Now().Add(-time.Second).UnixNano()
	heap.Fix(&c.expiry, old.ei)
	c.cycleLocked(time.Now())
	fired := c.takeFiredLocked()
	c.mu.Unlock()
	announce(fired)
	if len(fired) != 2 || fired[0] != young || fired[1] != old || young.Outcome() != Dispatched || old.Outcome() != EvictedTTL {
		t.Fatalf("fired %d tickets; want the dispatched young one first, then the evicted old one (young %v, old %v)",
			len(fired), young.Outcome(), old.Outcome())
	}
	checkBalanced(t, c)
}

// A flow's demand is the 95th percentile of the room it needed at its arrivals once it has
// enough of them, the largest before (and the caller adds a margin), never less than what
// it holds, and only from the arrivals within the horizon.
func TestFlowStateDemand(t *testing.T) {
	var s flowState
	if d, ok := s.demand(0, 100, 0.95); d != 0 || ok {
		t.Fatalf("no arrivals: %d %v", d, ok)
	}
	for i, need := range []int{1, 3, 2, 1, 2} {
		s.noteArrival(int64(i), need)
	}
	if d, ok := s.demand(10, 100, 0.95); d != 3 || ok {
		t.Fatalf("5 arrivals: demand %d (confident %v), want the largest, 3, not confident", d, ok)
	}
	s = flowState{}
	for i := 0; i < 64; i++ {
		need := 2
		if i%20 == 7 { // 3 outliers of 64 (5 %): above the 95th percentile
			need = 8
		}
		s.noteArrival(int64(i), need)
	}
	if d, ok := s.demand(64, 1000, 0.95); d != 2 || !ok {
		t.Fatalf("64 arrivals, 3 of them needing 8: demand %d (confident %v), want 2", d, ok)
	}
	s.inflight = 5
	if d, _ := s.demand(64, 1000, 0.95); d != 5 {
		t.Fatalf("holding 5: demand %d, want 5", d)
	}
	s.inflight = 0
	// Past the horizon, only the last 10 arrivals count: too few for a percentile.
	if d, ok := s.demand(64, 10, 0.95); ok || d != 2 {
		t.Fatalf("last 10 arrivals: demand %d (confident %v), want 2, not confident", d, ok)
	}
	// Later, with the same horizon: the arrivals at 55..63 remain (the cached estimate must
	// not outlive the ones that left).
	if d, ok := s.demand(1054, 1000, 0.95); ok || d != 2 {
		t.Fatalf("9 arrivals left in the horizon: demand %d (confident %v), want 2, not confident", d, ok)
	}
	if d, ok := s.demand(2000, 1000, 0.95); ok || d != 0 {
		t.Fatalf("none left in the horizon: demand %d (confident %v), want 0", d, ok)
	}
	// The quantile is the config's: with 5 of 64 arrivals (7.8 %) needing 8, the 95th
	// percentile is 8 and the 90th 2.
	q := flowState{}
	for i := 0; i < 64; i++ {
		need := 2
		if i%13 == 0 {
			need = 8
		}
		q.noteArrival(int64(i), need)
	}
	if d95, _ := q.demand(64, 1000, 0.95); d95 != 8 {
		t.Fatalf("95th percentile %d, want 8", d95)
	}
	if d90, _ := q.demand(64, 1000, 0.9); d90 != 2 {
		t.Fatalf("90th percentile %d, want 2", d90)
	}
	// The ring keeps the last 64: 64 more arrivals needing 1 push the old ones out.
	for i := 64; i < 128; i++ {
		s.noteArrival(int64(i), 1)
	}
	if d, _ := s.demand(128, 1000, 0.95); d != 1 {
		t.Fatalf("after 64 arrivals needing 1: demand %d, want 1", d)
	}
}

// With a history of arrivals, the reservation covers the light flow's 95th percentile of
// need, not its one-off peak + 1: a light tenant that once had 4 requests in flight but
// needs 1 or 2 at nearly every arrival leaves the heavy one 6 of 8 slots (its peak + 1
// would have kept 4 free), and its next request still finds room at once.
func TestDemandReservationFromArrivalPercentile(t *testing.T) {
	g := newGate(8)
	c, _ := newController(t, Config{PollInterval: time.Hour}, g)
	rec := newRecorder()
	var burst []*Ticket
	for i := 0; i < 4; i++ { // the one-off peak: 4 in flight at once
		burst = append(burst, enqueueBound(t, c, g, rec, Request{FairnessID: "B"}, "B"))
	}
	for _, tk := range burst {
		g.used.Add(-1)
		tk.Release(0)
	}
	for i := 0; i < 37; i++ { // then one at a time (need 1 at each arrival)
		tk := enqueueBound(t, c, g, rec, Request{FairnessID: "B"}, "B")
		g.used.Add(-1)
		tk.Release(0)
	}
	// 41 arrivals: 38 needing 1, then 2, 3, 4. The 95th percentile (the 39th) is 2.
	for i := 0; i < 20; i++ {
		enqueueBound(t, c, g, rec, Request{FairnessID: "A"}, "A")
	}
	n := c.Counts()
	if got := n.Outcomes[Dispatched] - 41; got != 6 {
		t.Fatalf("A got %d slots of 8, want 6 (2 kept for B)", got)
	}
	if tk := enqueueBound(t, c, g, rec, Request{FairnessID: "B"}, "B"); tk.Outcome() != Dispatched {
		t.Fatalf("B's outcome %v, want Dispatched into its reserved room", tk.Outcome())
	}
	checkBalanced(t, c)
}

// The room the reservation holds idle is integrated over time: a flood held back from 3 of
// 8 places accrues at most 3 place-seconds per second, and nothing without the reservation.
func TestHeldPlaceSeconds(t *testing.T) {
	run := func(cfg Config) (held, elapsed float64) {
		g := newGate(8)
		c, reg := newController(t, cfg, g)
		rec := newRecorder()
		start := time.Now()
		b1 := enqueueBound(t, c, g, rec, Request{FairnessID: "B"}, "B")
		b2 := enqueueBound(t, c, g, rec, Request{FairnessID: "B"}, "B")
		for _, tk := range []*Ticket{b1, b2} {
			g.used.Add(-1)
			tk.Release(0)
		}
		for i := 0; i < 20; i++ {
			enqueueBound(t, c, g, rec, Request{FairnessID: "A"}, "A")
		}
		settle(t, c, 2+5)
		c.Wake() // one more cycle: the held room is integrated at every cycle
		time.Sleep(10 * time.Millisecond)
		n := c.Counts()
		elapsed = time.Since(start).Seconds()
		if v := testutil.ToFloat64(c.m.held); v > n.HeldPlaceSeconds+1e-9 {
			t.Errorf("metric %v exceeds the count %v", v, n.HeldPlaceSeconds)
		}
		_ = reg
		return n.HeldPlaceSeconds, elapsed
	}
	held, elapsed := run(Config{})
	if held <= 0 || held > 3*elapsed {
		t.Fatalf("reservation demand: held %.4f place-seconds in %.3f s, want > 0 and at most 3 places × the time", held, elapsed)
	}
	if held, _ := run(Config{Reservation: ReservationNone}); held != 0 {
		t.Fatalf("reservation none: held %v place-seconds, want 0", held)
	}
}
