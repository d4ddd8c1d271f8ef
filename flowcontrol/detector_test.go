package flowcontrol

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func staticSource(sigs ...EndpointSignal) SignalSource {
	return func(dst []EndpointSignal) []EndpointSignal { return append(dst, sigs...) }
}

func TestDetectorRoomAndReasons(t *testing.T) {
	cfg := SaturationConfig{QueueDepthThreshold: 5, KVCacheUtilThreshold: 0.8}
	cases := []struct {
		name  string
		cfg   SaturationConfig
		sig   EndpointSignal
		room  int
		state endpointState
	}{
		{"idle", cfg, EndpointSignal{Fresh: true}, 5, stateFree},
		{"stale", cfg, EndpointSignal{Fresh: false}, 0, stateStale},
		{"kv full", cfg, EndpointSignal{Fresh: true, KVCacheUsage: 0.8}, 0, stateKVCache},
		{"queue at threshold", cfg, EndpointSignal{Fresh: true, Waiting: 5}, 0, stateQueueDepth},
		{"queue partly used", cfg, EndpointSignal{Fresh: true, Waiting: 3}, 2, stateFree},
		// Sent since the last scrape: 9 in flight, 4 shown running, 0 waiting → 5 waiting.
		{"in-flight estimate", cfg, EndpointSignal{Fresh: true, Running: 4, InFlight: 9}, 0, stateQueueDepth},
		{"running limit", SaturationConfig{QueueDepthThreshold: 5, KVCacheUtilThreshold: 0.8, MaxRunningRequests: 4},
			EndpointSignal{Fresh: true, Running: 4}, 0, stateRunning},
		{"in-flight limit", SaturationConfig{QueueDepthThreshold: 5, KVCacheUtilThreshold: 0.8, MaxInFlightPerEndpoint: 3},
			EndpointSignal{Fresh: true, Running: 3, InFlight: 3}, 0, stateInFlight},
		{"in-flight limit with room", SaturationConfig{QueueDepthThreshold: 5, KVCacheUtilThreshold: 0.8, MaxInFlightPerEndpoint: 3},
			EndpointSignal{Fresh: true, Running: 1, InFlight: 1}, 2, stateFree},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := NewDetector("p", tc.cfg, staticSource(tc.sig), nil)
			room, st := d.room(&tc.sig)
			if room != tc.room || st != tc.state {
				t.Fatalf("room %d (%v), want %d (%v)", room, st, tc.room, tc.state)
			}
			if got := d.Capacity(); got != tc.room {
				t.Fatalf("Capacity %d, want %d", got, tc.room)
			}
		})
	}
}

// The pool's capacity sums its endpoints; the metric says why each endpoint is (not) full.
func TestDetectorPoolAndMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	d := NewDetector("ns/p", SaturationConfig{QueueDepthThreshold: 2, KVCacheUtilThreshold: 0.9}, staticSource(
		EndpointSignal{Fresh: true},                     // room 2
		EndpointSignal{Fresh: true, Waiting: 1},         // room 1
		EndpointSignal{Fresh: true, KVCacheUsage: 0.95}, // kv_cache
		EndpointSignal{Fresh: false},                    // stale
	), m)
	if got := d.Capacity(); got != 3 {
		t.Fatalf("capacity %d, want 3", got)
	}
	want := map[string]float64{"free": 2, "kv_cache": 1, "stale": 1, "queue_depth": 0}
	for state, v := range want {
		if got := testutil.ToFloat64(m.endpoints.WithLabelValues("ns/p", state)); got != v {
			t.Errorf("endpoints{state=%s} = %v, want %v", state, got, v)
		}
	}
}

// The learned batch limit: an endpoint that keeps 3 requests waiting for queueEvidence
// while it runs 2 takes no more than 2 in flight from then on, whatever the queue-depth
// threshold allows; a queue seen for less (a request that arrived during a step) teaches
// nothing; the limit only grows; an endpoint that leaves the pool is forgotten;
// batchLimit: none learns nothing.
func TestDetectorLearnsBatchLimit(t *testing.T) {
	cfg := SaturationConfig{QueueDepthThreshold: 5, KVCacheUtilThreshold: 0.8, BatchLimit: BatchLimitLearned}
	key := "10.0.0.1:8000"
	src := []EndpointSignal{{Key: key, Fresh: true, Running: 2}}
	d := NewDetector("p", cfg, func(dst []EndpointSignal) []EndpointSignal { return append(dst, src...) }, nil)
	now := time.Unix(1000, 0)
	d.clock = func() time.Time { return now }
	read := func(running, waiting float64, inflight int64, after time.Duration) int {
		now = now.Add(after)
		src[0] = EndpointSignal{Key: key, Fresh: true, Running: running, Waiting: waiting, InFlight: inflight}
		return d.Capacity()
	}
	if got := read(2, 0, 2, 0); got != 5 {
		t.Fatalf("before any queue was seen: capacity %d, want the queue-depth room 5", got)
	}
	// A transient queue: one request waits for one step, then runs.
	read(1, 1, 2, 10*time.Millisecond)
	read(2, 0, 2, 100*time.Millisecond)
	read(2, 0, 2, 300*time.Millisecond)
	if l := d.BatchLimit(key); l != 0 {
		t.Fatalf("a queue that lasted one step taught limit %v", l)
	}
	// A queue that lasts.
	if got := read(2, 3, 5, 10*time.Millisecond); got != 2 {
		t.Fatalf("3 waiting, not yet learned: capacity %d, want the queue-depth room 2", got)
	}
	read(2, 3, 5, 100*time.Millisecond)
	if got := read(2, 2, 4, 200*time.Millisecond); got != 0 {
		t.Fatalf("with a queue for 300 ms: capacity %d, want 0", got)
	}
	if l := d.BatchLimit(key); l != 2 {
		t.Fatalf("learned limit %v, want 2", l)
	}
	// The queue drained: one in flight, one place left in the batch, not the 5 the
	// queue-depth threshold would allow.
	if got := read(1, 0, 1, 50*time.Millisecond); got != 1 {
		t.Fatalf("one in flight: capacity %d, want 1", got)
	}
	if !d.HasRoom(EndpointSignal{Key: key, Fresh: true, Running: 1, InFlight: 1}) || d.HasRoom(EndpointSignal{Key: key, Fresh: true, Running: 2, InFlight: 2}) {
		t.Fatal("HasRoom disagrees with the learned limit")
	}
	if _, st := d.room(&EndpointSignal{Key: key, Fresh: true, Running: 2, InFlight: 2}); st != stateBatchFull {
		t.Fatalf("verdict %v, want batch_full", st)
	}
	// A lasting queue with fewer running does not lower it; with more it rises.
	read(1, 1, 2, 10*time.Millisecond)
	read(1, 1, 2, 300*time.Millisecond)
	if l := d.BatchLimit(key); l != 2 {
		t.Fatalf("limit fell to %v", l)
	}
	read(0, 0, 0, 10*time.Millisecond)
	read(4, 1, 5, 10*time.Millisecond)
	read(4, 1, 5, 300*time.Millisecond)
	if l := d.BatchLimit(key); l != 4 {
		t.Fatalf("limit %v, want 4", l)
	}
	// The pod's capacity drops: a queue lasts 2 s while it runs 3 (not a long prefill,
	// which ends sooner): the limit falls to 3.
	read(4, 0, 4, 10*time.Millisecond)
	read(3, 2, 5, 10*time.Millisecond)
	for i := 0; i < 9; i++ {
		read(3, 2, 5, 250*time.Millisecond)
	}
	if l := d.BatchLimit(key); l != 3 {
		t.Fatalf("after a 2 s queue with 3 running: limit %v, want 3", l)
	}
	// Kept while it holds...
	read(3, 0, 3, 10*time.Millisecond)
	read(3, 0, 3, 20*time.Second)
	if l := d.BatchLimit(key); l != 3 {
		t.Fatalf("a lowered limit gone after 20 s: %v", l)
	}
	// ...forgotten after 30 s, then learned again from the next lasting queue: the pod runs 4
	// again.
	read(3, 0, 3, 10*time.Second)
	if l := d.BatchLimit(key); l != 0 {
		t.Fatalf("a lowered limit kept past relearnAfter: %v", l)
	}
	if got := read(3, 0, 3, 10*time.Millisecond); got != 5 {
		t.Fatalf("while re-learning: capacity %d, want the queue-depth room 5", got)
	}
	read(4, 2, 6, 10*time.Millisecond)
	read(4, 2, 6, 300*time.Millisecond)
	if l := d.BatchLimit(key); l != 4 {
		t.Fatalf("re-learned limit %v, want 4", l)
	}
	// The endpoint left: forgotten.
	src = src[:0]
	d.Capacity()
	if l := d.BatchLimit(key); l != 0 {
		t.Fatalf("a removed endpoint keeps limit %v", l)
	}
	// batchLimit: none learns nothing.
	cfg.BatchLimit = BatchLimitNone
	src = []EndpointSignal{{Key: key, Fresh: true, Running: 2, Waiting: 3, InFlight: 5}}
	dn := NewDetector("p", cfg, func(dst []EndpointSignal) []EndpointSignal { return append(dst, src...) }, nil)
	dn.clock = func() time.Time { return now }
	dn.Capacity()
	now = now.Add(time.Second)
	dn.Capacity()
	if l := dn.BatchLimit(key); l != 0 {
		t.Fatalf("batchLimit none learned %v", l)
	}
}
