package flowcontrol

import (
	"math"
	"sync"
)

// EndpointSignal is what the detector reads of one endpoint.
type EndpointSignal struct {
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
	numEndpointStates
)

func (s endpointState) String() string {
	return [...]string{"free", "stale", "kv_cache", "queue_depth", "running", "in_flight"}[s]
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
//   - MaxInFlightPerEndpoint − in-flight, when set.
//
// The pool's capacity is the sum of its endpoints' room.
type Detector struct {
	pool    string
	cfg     SaturationConfig
	source  SignalSource
	metrics *Metrics

	mu  sync.Mutex // guards buf (Capacity may be called from several goroutines)
	buf []EndpointSignal
}

// NewDetector builds a detector; metrics may be nil (no series).
func NewDetector(pool string, cfg SaturationConfig, source SignalSource, metrics *Metrics) *Detector {
	return &Detector{pool: pool, cfg: cfg, source: source, metrics: metrics}
}

// Capacity implements Gate.
func (d *Detector) Capacity() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.buf = d.source(d.buf[:0])
	var counts [numEndpointStates]int
	total := 0
	for i := range d.buf {
		room, st := d.room(&d.buf[i])
		counts[st]++
		total += room
	}
	if d.metrics != nil {
		d.metrics.setEndpointStates(d.pool, &counts)
	}
	return total
}

// HasRoom reports whether one endpoint can take one more request: the picker keeps a
// dispatched request on such endpoints.
func (d *Detector) HasRoom(s EndpointSignal) bool {
	room, _ := d.room(&s)
	return room > 0
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
