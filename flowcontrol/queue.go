package flowcontrol

import (
	"container/heap"
	"math"
)

// flowKey identifies a flow: a fairness ID within a priority band.
type flowKey struct {
	priority int
	id       string
}

// flow is the queue of one (priority, fairness ID). It exists while it holds requests:
// an empty flow is deleted, so the flows held are bounded by Config.MaxFlows.
type flow struct {
	key   flowKey
	band  *band
	items itemHeap
	bytes int64
	// ringIdx is the flow's index in band.active.
	ringIdx int
	vs      *vtcState
	m       *flowMetrics
}

// band is one priority level: its backlogged flows and the round-robin position.
type band struct {
	priority int
	active   []*flow // flows with queued requests, in ring order
	next     int     // round-robin: index in active of the flow served next
	queued   int
	bytes    int64
	// vtc holds the token-weighted counters (weighted tokens served) of the band's
	// fairness IDs. An entry outlives its flow's queue while the flow has requests in
	// flight (their output tokens are charged when they finish) and is deleted after: the
	// map holds at most the backlogged flows plus the requests in flight.
	vtc map[string]*vtcState
	m   *bandMetrics
}

// addActive appends f to the ring (it just received its first request).
func (b *band) addActive(f *flow) {
	f.ringIdx = len(b.active)
	b.active = append(b.active, f)
}

// removeActive takes f out of the ring, keeping the round-robin position on the flow that
// was to be served next.
func (b *band) removeActive(f *flow) {
	i := f.ringIdx
	copy(b.active[i:], b.active[i+1:])
	b.active[len(b.active)-1] = nil
	b.active = b.active[:len(b.active)-1]
	for j := i; j < len(b.active); j++ {
		b.active[j].ringIdx = j
	}
	if b.next > i {
		b.next--
	}
	if b.next >= len(b.active) {
		b.next = 0
	}
	f.ringIdx = -1
}

// vtcState is one fairness ID's token-weighted counter in a band.
type vtcState struct {
	counter  float64
	inflight int  // dispatched, not yet released
	queued   bool // the flow has queued requests
}

// minCounter is the least token-weighted counter among the band's backlogged flows (0
// when none is backlogged).
func (b *band) minCounter() float64 {
	if len(b.active) == 0 {
		return 0
	}
	lo := math.Inf(1)
	for _, f := range b.active {
		lo = min(lo, f.vs.counter)
	}
	return lo
}

// pickFlow chooses the flow to serve next under the policy.
func (b *band) pickFlow(policy string) *flow {
	switch policy {
	case FairnessTokenWeighted:
		var best *flow
		bestC := math.Inf(1)
		// Ties go to the flow after the last one served (ring order), so equal counters
		// alternate instead of favouring the first flow.
		n := len(b.active)
		for k := 0; k < n; k++ {
			f := b.active[(b.next+k)%n]
			if c := f.vs.counter; c < bestC {
				best, bestC = f, c
			}
		}
		b.next = (best.ringIdx + 1) % n
		return best
	case FairnessGlobalStrict:
		var best *flow
		for _, f := range b.active {
			if best == nil || f.items[0].less(best.items[0]) {
				best = f
			}
		}
		return best
	default: // round-robin
		f := b.active[b.next]
		b.next = (b.next + 1) % len(b.active)
		return f
	}
}

// itemHeap orders a flow's tickets by their ordering key, then arrival.
type itemHeap []*Ticket

func (h itemHeap) Len() int           { return len(h) }
func (h itemHeap) Less(i, j int) bool { return h[i].less(h[j]) }
func (h itemHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].qi, h[j].qi = i, j
}
func (h *itemHeap) Push(x any) {
	t, _ := x.(*Ticket)
	t.qi = len(*h)
	*h = append(*h, t)
}
func (h *itemHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.qi = -1
	return t
}

// expiryHeap orders every queued ticket of a controller by its expiry.
type expiryHeap []*Ticket

func (h expiryHeap) Len() int { return len(h) }
func (h expiryHeap) Less(i, j int) bool {
	if h[i].expireAt != h[j].expireAt {
		return h[i].expireAt < h[j].expireAt
	}
	return h[i].seq < h[j].seq
}
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].ei, h[j].ei = i, j
}
func (h *expiryHeap) Push(x any) {
	t, _ := x.(*Ticket)
	t.ei = len(*h)
	*h = append(*h, t)
}
func (h *expiryHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.ei = -1
	return t
}

var (
	_ heap.Interface = (*itemHeap)(nil)
	_ heap.Interface = (*expiryHeap)(nil)
)
