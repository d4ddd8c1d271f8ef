package flowcontrol

import (
	"container/heap"
	"math"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
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
	items indexedHeap
	bytes int64
	// ringIdx is the flow's index in band.active.
	ringIdx int
	vs      *flowState
	m       *flowMetrics
}

// band is one priority level: its backlogged flows and the round-robin position.
type band struct {
	priority int
	active   []*flow // flows with queued requests, in ring order
	next     int     // round-robin: index in active of the flow served next
	queued   int
	bytes    int64
	// states holds the band's fairness IDs' flowState: the backlogged flows, the flows with
	// requests in flight (their output tokens are charged when they finish) and at most
	// MaxFlows lingering ones.
	states map[string]*flowState
	m      *bandMetrics
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

// flowState is what a band knows of one fairness ID beyond its queue: its token-weighted
// counter, its requests in flight and the room it needed at its recent arrivals (its
// expected demand, which the demand reservation keeps room for). It outlives the flow's
// queue while the flow has requests in flight, and, idle, for two demand windows
// (lingering), so that a tenant between two requests keeps its reservation; lingering
// states are bounded by MaxFlows.
type flowState struct {
	counter  float64
	inflight int  // dispatched, not yet released
	queued   bool // the flow has queued requests
	// lingering: idle (nothing queued or in flight) and kept for its demand.
	lingering bool
	// lastActive is the last arrival, dispatch or release (unix ns).
	lastActive int64
	// needs is a ring of the flow's last arrivals: when, and the room it needed then (its
	// requests in flight or queued, plus the new one).
	needs    [needSamples]needSample
	needLen  int
	needNext int
	// The last demand estimate (without the in-flight floor), valid while no arrival was
	// added and no counted one left the horizon (until demandUntil, unix ns): the
	// reservation asks for it at every dispatch decision, arrivals come far less often.
	demandCached bool
	demandD      int
	demandSure   bool
	demandUntil  int64
	demandFor    int64   // the horizon it was computed for
	demandQ      float64 // and the quantile
	// wait is the flow's dispatch-wait series (resolved at its first dispatch).
	wait prometheus.Observer
}

type needSample struct {
	at   int64
	need int
}

// needSamples is the arrivals a flow's demand is estimated from: enough for a 95th
// percentile that is not simply the largest value (64 arrivals: the 61st).
const needSamples = 64

// minQuantileSamples is the fewest recent arrivals the quantile is taken from; below, the
// demand is the largest need seen and the caller adds a margin.
const minQuantileSamples = 20

// Config.DemandQuantile (default 0.95) is the share of a flow's arrivals its reserved room
// should cover. An arrival that finds the room taken waits for the next completion in the
// pool (~ a request's service time / the pool's slots, 70 ms for 16 one-second slots);
// keeping that to 5 % of arrivals leaves the flow's p90 to the pods. By PASTA, a Poisson
// flow's arrivals see its time-average in-flight count, so this is the 95th percentile of
// what it holds, + 1: for a tenant at 10 % of a 16-slot pool (1.3 in flight on average) 4,
// where the peak over a few seconds + 1 is 4 or 5 and the peak over more arrivals more.

// idle reports whether the state has nothing queued and nothing in flight.
func (s *flowState) idle() bool { return !s.queued && s.inflight == 0 }

// noteArrival records the room the flow needs as one of its requests arrives.
func (s *flowState) noteArrival(now int64, need int) {
	s.needs[s.needNext] = needSample{at: now, need: need}
	s.needNext = (s.needNext + 1) % needSamples
	s.needLen = min(s.needLen+1, needSamples)
	s.lastActive = now
	s.demandCached = false
}

// demand is the flow's expected need of room, from its arrivals of the last horizon (ns):
// with at least minQuantileSamples of them, the q-quantile of their needs (confident);
// with fewer, the largest (not confident: the caller may add a margin). Never less than
// what it holds now.
func (s *flowState) demand(now, horizon int64, q float64) (d int, confident bool) {
	if !s.demandCached || now >= s.demandUntil || horizon != s.demandFor || q != s.demandQ {
		s.estimateDemand(now, horizon, q)
	}
	return max(s.inflight, s.demandD), s.demandSure
}

// estimateDemand computes and caches the demand from the arrivals within the horizon.
func (s *flowState) estimateDemand(now, horizon int64, q float64) {
	var buf [needSamples]int
	k := 0
	until := int64(math.MaxInt64)
	for i := 0; i < s.needLen; i++ {
		if at := s.needs[i].at; now-at < horizon {
			buf[k] = s.needs[i].need
			k++
			until = min(until, at+horizon)
		}
	}
	s.demandCached, s.demandUntil, s.demandFor, s.demandQ = true, until, horizon, q
	switch v := buf[:k]; {
	case k == 0:
		s.demandD, s.demandSure = 0, false
	case k < minQuantileSamples:
		s.demandD, s.demandSure = slices.Max(v), false
	default:
		slices.Sort(v)
		s.demandD, s.demandSure = v[max(1, int(math.Ceil(q*float64(k))))-1], true
	}
}

// recent reports whether the flow counts for fair shares: busy, or active within two
// windows.
func (s *flowState) recent(now, w int64) bool {
	return !s.idle() || now-s.lastActive < 2*w
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
			if best == nil || f.items.ts[0].less(best.items.ts[0]) {
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

// indexedHeap is a container/heap of tickets that keeps each ticket's index in it current
// (through idx), so that a ticket can be removed from the middle when it leaves early.
type indexedHeap struct {
	ts   []*Ticket
	less func(a, b *Ticket) bool
	idx  func(t *Ticket) *int
}

func (h *indexedHeap) Len() int           { return len(h.ts) }
func (h *indexedHeap) Less(i, j int) bool { return h.less(h.ts[i], h.ts[j]) }
func (h *indexedHeap) Swap(i, j int) {
	h.ts[i], h.ts[j] = h.ts[j], h.ts[i]
	*h.idx(h.ts[i]), *h.idx(h.ts[j]) = i, j
}
func (h *indexedHeap) Push(x any) {
	t, _ := x.(*Ticket)
	*h.idx(t) = len(h.ts)
	h.ts = append(h.ts, t)
}
func (h *indexedHeap) Pop() any {
	n := len(h.ts) - 1
	t := h.ts[n]
	h.ts[n] = nil
	h.ts = h.ts[:n]
	*h.idx(t) = -1
	return t
}

// newItemHeap orders a flow's tickets by their ordering key, then arrival.
func newItemHeap() indexedHeap {
	return indexedHeap{less: (*Ticket).less, idx: func(t *Ticket) *int { return &t.qi }}
}

// newExpiryHeap orders every queued ticket of a controller by its expiry.
func newExpiryHeap() indexedHeap {
	return indexedHeap{less: func(a, b *Ticket) bool {
		if a.expireAt != b.expireAt {
			return a.expireAt < b.expireAt
		}
		return a.seq < b.seq
	}, idx: func(t *Ticket) *int { return &t.ei }}
}

var _ heap.Interface = (*indexedHeap)(nil)
