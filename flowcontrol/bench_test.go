package flowcontrol

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkEnqueueFastPath: a request that finds room is dispatched inside Enqueue (the
// common case when the pool is not saturated), then released.
func BenchmarkEnqueueFastPath(b *testing.B) {
	g := newGate(1 << 30)
	c, err := New("p", Config{Enabled: true}, g, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.ReportAllocs()
	for b.Loop() {
		tk, _ := c.Enqueue(Request{FairnessID: "a", Bytes: 1000}, nil)
		tk.Bound()
		tk.Release(10)
	}
}

// BenchmarkQueuedDispatch: requests queue behind a saturated pool across 16 flows and 3
// bands, then one cycle dispatches them by priority and token-weighted fairness. The
// time per op covers one enqueue and one dispatch (the dispatch loop is driven directly).
func BenchmarkQueuedDispatch(b *testing.B) {
	for _, policy := range []string{FairnessRoundRobin, FairnessTokenWeighted, FairnessGlobalStrict} {
		b.Run(policy, func(b *testing.B) {
			g := newGate(0)
			c, err := New("p", Config{Enabled: true, Fairness: policy, MaxRequests: 1 << 20}, g, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			ids := make([]string, 16)
			for i := range ids {
				ids[i] = fmt.Sprint("tenant-", i)
			}
			const batch = 256
			tks := make([]*Ticket, 0, batch)
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				tk, _ := c.Enqueue(Request{FairnessID: ids[n%16], Priority: n % 3, Bytes: 1000}, nil)
				tks = append(tks, tk)
				n++
				if len(tks) == batch {
					drainBatch(c, g, tks)
					tks = tks[:0]
				}
			}
			drainBatch(c, g, tks)
		})
	}
}

// drainBatch opens room for the batch, runs one dispatch cycle on this goroutine and
// releases what it dispatched.
func drainBatch(c *Controller, g *slotGate, tks []*Ticket) {
	g.slots.Store(int64(len(tks)))
	c.mu.Lock()
	c.cycleLocked(tks[0].arrival)
	fired := c.takeFiredLocked()
	c.mu.Unlock()
	announce(fired)
	g.slots.Store(0)
	for _, tk := range tks {
		tk.Bound()
		tk.Release(50)
	}
}

// BenchmarkEnqueueBehindBacklog: a flood's request arrives while its flow is backlogged and
// the only free room is kept for a light flow, so Enqueue asks the gate and the policies
// whether it may go at once (it may not) and queues it; it is then cancelled, keeping the
// backlog at 64. The op is that Enqueue and the Cancel.
func BenchmarkEnqueueBehindBacklog(b *testing.B) {
	g := newGate(16)
	c, err := New("p", Config{Enabled: true, Fairness: FairnessTokenWeighted, PollInterval: time.Hour}, g, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	// The light flow: 30 arrivals one at a time, so its demand is a percentile.
	for i := 0; i < 30; i++ {
		tk, _ := c.Enqueue(Request{FairnessID: "light", Bytes: 100}, nil)
		tk.Bound()
		tk.Release(10)
	}
	for i := 0; i < 64+16; i++ {
		if tk, _ := c.Enqueue(Request{FairnessID: "flood", Bytes: 4000}, nil); tk.Outcome() == Dispatched {
			g.used.Add(1)
			tk.Bound()
		}
	}
	if n := c.Counts(); n.Queued == 0 || g.Capacity() <= 0 {
		b.Fatalf("want a backlog and free room kept for the light flow: %+v, capacity %d", n, g.Capacity())
	}
	b.ReportAllocs()
	for b.Loop() {
		tk, _ := c.Enqueue(Request{FairnessID: "flood", Bytes: 4000}, nil)
		if !tk.Cancel() {
			b.Fatal("the flood's request was not queued")
		}
	}
}
