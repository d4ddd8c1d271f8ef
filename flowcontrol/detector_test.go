package flowcontrol

import (
	"testing"

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
