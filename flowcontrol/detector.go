package flowcontrol

import (
	"math"
	"sync"
	"time"
)

// EndpointSignal is what the detector reads of one endpoint.
type EndpointSignal struct {
	// Key identifies the endpoint ("ip:port"): the detector remembers its learned batch
	// limit by it. Empty: nothing is learned.
	Key string
	// Fresh: the endpoint's metrics are recent and its last scrape succeeded. A stale
	// endpoint has no room (as in GIE's detector: no data is not "idle").
	Fresh bool
	// Scraped by the model server.
	Waiting, Running, KVCacheUsage float64
	// InFlight is the gateway's own count of requests sent to the endpoint and not finished.
	InFlight int64
}

// SignalSource fills dst (reset to length 0) with the pool's endpoints and returns it.
type SignalSource func(dst []EndpointSignal) []EndpointSignal

// endpointState is the detector's verdict on one endpoint: free, or the first limit it hit.
type endpointState uint8

const (
	stateFree endpointState = iota
	stateStale
	stateKVCache
	stateQueueDepth
	stateRunning
	stateInFlight
	stateBatchFull
	numEndpointStates
)

func (s endpointState) String() string {
	return [...]string{"free", "stale", "kv_cache", "queue_depth", "running", "in_flight", "batch_full"}[s]
}

// Detector decides how many more requests a pool can take from scraped signals and the
// gateway's in-flight counts. It implements Gate.
//
// An endpoint's room is the number of requests it can take before one of its limits:
//   - none when its metrics are stale or its KV cache is at KVCacheUtilThreshold;
//   - QueueDepthThreshold − waiting, where waiting is the larger of the scraped queue and
//     in-flight − running (requests this gateway sent since the last scrape show up in
//     neither count yet: without this estimate a burst would overshoot between scrapes);
//   - MaxRunningRequests − running, when set;
//   - MaxInFlightPerEndpoint − in-flight, when set;
//   - the endpoint's learned batch limit − in-flight (BatchLimitLearned): the most requests
//     it was seen running while requests waited in its queue is the batch it can run, so
//     sending more only makes them wait inside the model server, in its order, bound to
//     it. Keeping every pod's own queue empty leaves the order to the gateway's queue
//     (priority, fairness) and the choice of pod to the moment one has a free place.
//     Until a pod has been seen with a queue, the thresholds above bound it. The limit
//     grows as soon as a pod is seen running more while others wait. It falls only on
//     stronger evidence, a queue that lasts lowerEvidence while the pod runs fewer (its
//     capacity dropped: KV-cache pressure, a slower GPU), because a long prompt's prefill
//     also keeps requests waiting with few running, for a while. A lowered limit is
//     forgotten after relearnAfter and learned again from the pod's next lasting queue:
//     at the lowered limit the pod never shows a queue, so it could not otherwise show
//     that its capacity came back. A limit learned low at the first queue (while the KV
//     cache was the bound) stays until a pod runs more: set maxInFlightPerEndpoint, or
//     batchLimit: none, where that matters.
//
// The pool's capacity is the sum of its endpoints' room.
type Detector struct {
	pool    string
	cfg     SaturationConfig
	source  SignalSource
	metrics *Metrics

	mu  sync.Mutex // guards buf and learned (Capacity may be called from several goroutines)
	buf []EndpointSignal
	// learned is each endpoint's batch limit (BatchLimitLearned); gen marks the
	// endpoints seen at the last Capacity, so that removed endpoints are forgotten.
	learned map[string]learnedLimit
	gen     uint64
	clock   func() time.Time // time.Now; tests step it
}

type learnedLimit struct {
	running float64 // the learned limit; 0 = not yet
	gen     uint64
	// The current streak of readings with requests waiting: since when (unix ns; 0 = no
	// streak) and the most running seen in it.
	waitingSince int64
	streakMax    float64
	// loweredAt is when the limit was last lowered (unix ns; 0 = it was not).
	loweredAt int64
}

// queueEvidence is how long an endpoint must keep requests waiting before its running
// count is taken as its batch limit. A request that arrives while the engine runs a step
// waits until the next one (a long prompt's prefill step takes ~100 ms on the sim), so a
// single reading with a queue says nothing about the batch; a queue that outlasts a few
// steps does. Learning too low is the costly mistake: the limit only grows.
const queueEvidence = 250 * time.Millisecond

// lowerEvidence is how long a queue must last, with the pod running fewer than its limit
// throughout, before the limit is lowered to what it ran: longer than a long prompt's
// prefill keeps the next requests waiting (a 32k-token prompt is ~2 s of prefill on a
// 8B model, in the few-thousand-token chunks vLLM runs beside the batch's decodes).
const lowerEvidence = 2 * time.Second

// relearnAfter is how long a lowered limit is kept before it is forgotten and learned
// again, so that a pod whose capacity came back gets its batch back.
const relearnAfter = 30 * time.Second

// NewDetector builds a detector; metrics may be nil (no series).
func NewDetector(pool string, cfg SaturationConfig, source SignalSource, metrics *Metrics) *Detector {
	return &Detector{pool: pool, cfg: cfg, source: source, metrics: metrics, clock: time.Now}
}

// Capacity implements Gate.
func (d *Detector) Capacity() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.buf = d.source(d.buf[:0])
	d.gen++
	var counts [numEndpointStates]int
	total := 0
	for i := range d.buf {
		d.learnLocked(&d.buf[i])
		room, st := d.room(&d.buf[i])
		counts[st]++
		total += room
	}
	for k, l := range d.learned {
		if l.gen != d.gen {
			delete(d.learned, k) // the endpoint left the pool
		}
	}
	if d.metrics != nil {
		d.metrics.setEndpointStates(d.pool, &counts)
	}
	return total
}

// HasRoom reports whether one endpoint can take one more request: the picker keeps a
// dispatched request on such endpoints.
func (d *Detector) HasRoom(s EndpointSignal) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	room, _ := d.room(&s)
	return room > 0
}

// BatchLimit is the endpoint's learned batch limit (0 = not learned).
func (d *Detector) BatchLimit(key string) float64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.learned[key].running
}

// learnLocked updates the endpoint's batch limit from one reading: requests kept waiting
// for queueEvidence while it ran n means it runs at most n at once (now).
func (d *Detector) learnLocked(s *EndpointSignal) {
	if d.cfg.BatchLimit != BatchLimitLearned || s.Key == "" {
		return
	}
	l, ok := d.learned[s.Key]
	if !ok && !(s.Fresh && s.Waiting > 0 && s.Running > 0) {
		return
	}
	if d.learned == nil {
		d.learned = make(map[string]learnedLimit)
	}
	l.gen = d.gen
	now := d.clock().UnixNano()
	if l.loweredAt != 0 && now-l.loweredAt >= int64(relearnAfter) {
		l.running, l.loweredAt = 0, 0 // learn it again from the pod's next lasting queue
	}
	switch {
	case !s.Fresh:
	case s.Waiting <= 0:
		l.waitingSince, l.streakMax = 0, 0
	case l.waitingSince == 0:
		l.waitingSince, l.streakMax = now, s.Running
	default:
		l.streakMax = max(l.streakMax, s.Running)
		age := now - l.waitingSince
		if age >= int64(queueEvidence) && l.streakMax >= l.running {
			if l.streakMax > l.running {
				l.loweredAt = 0 // seen running more: learned, not a lowered guess
			}
			l.running = l.streakMax
		} else if age >= int64(lowerEvidence) && l.streakMax > 0 && l.streakMax < l.running {
			l.running, l.loweredAt = l.streakMax, now
		}
	}
	d.learned[s.Key] = l
}

// room is one endpoint's room and the limit that bounds it (stateFree when it has room).
func (d *Detector) room(s *EndpointSignal) (int, endpointState) {
	c := d.cfg
	if !s.Fresh {
		return 0, stateStale
	}
	if s.KVCacheUsage >= c.KVCacheUtilThreshold {
		return 0, stateKVCache
	}
	waiting := math.Max(s.Waiting, float64(s.InFlight)-s.Running)
	room, st := roomUnder(c.QueueDepthThreshold, waiting), stateQueueDepth
	if c.MaxRunningRequests > 0 {
		// Requests sent and not yet shown as running will run: count them against the limit.
		running := math.Max(s.Running, float64(s.InFlight)-s.Waiting)
		if r := roomUnder(c.MaxRunningRequests, running); r < room {
			room, st = r, stateRunning
		}
	}
	if c.MaxInFlightPerEndpoint > 0 {
		if r := c.MaxInFlightPerEndpoint - int(s.InFlight); r < room {
			room, st = r, stateInFlight
		}
	}
	if l := d.learned[s.Key].running; l > 0 {
		if r := roomUnder(l, float64(s.InFlight)); r < room {
			room, st = r, stateBatchFull
		}
	}
	if room <= 0 {
		return 0, st
	}
	return room, stateFree
}

// roomUnder is how many whole requests fit below limit when used are taken.
func roomUnder(limit, used float64) int {
	r := math.Ceil(limit - used)
	if r <= 0 || math.IsNaN(r) {
		return 0
	}
	return int(min(r, 1<<20))
}
