package router

import (
	"math"
	"testing"
	"time"
)

// TestEndpointGauges: the per-endpoint gauges show what the router holds for each
// endpoint, NaN where it knows nothing yet, and vanish with the pool.
func TestEndpointGauges(t *testing.T) {
	r, reg := newTestRouter(t, nil)
	known := staticEndpoint("10.0.0.1:8000", metricsState{waiting: 3, running: 5, kvUsage: 0.25,
		loraRunning: []string{"a"}, maxLoRA: 2, blockSize: 128, numGPUBlocks: 8192,
		scrapedAt: time.Now().Add(-100 * time.Millisecond)})
	known.inflight.Store(4)
	known.prefix.add([]uint64{1, 2, 3})
	unknownLoRA := staticEndpoint("10.0.0.2:8000", metricsState{loraUnknown: true, scrapedAt: time.Now().Add(-time.Hour)})
	never := staticEndpoint("10.0.0.3:8000", metricsState{})
	never.metrics.Store(nil) // never scraped
	installPool(r, "ns/p", []*endpoint{known, unknownLoRA, never})

	get := func(name, addr string) float64 {
		v, ok := gaugeValue(t, reg, "infergw_router_endpoint_"+name, map[string]string{"pool": "ns/p", "endpoint": addr})
		if !ok {
			t.Fatalf("no infergw_router_endpoint_%s for %s", name, addr)
		}
		return v
	}
	for name, want := range map[string]float64{"queue_depth": 3, "running_requests": 5, "kv_cache_usage": 0.25,
		"in_flight_requests": 4, "lora_adapters_running": 1, "lora_adapters_waiting": 0, "lora_max_adapters": 2,
		"kv_block_size_tokens": 128, "kv_blocks": 8192, "prefix_cache_blocks": 3, "fresh": 1} {
		if got := get(name, known.spec.Address); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if age := get("last_scrape_age_seconds", known.spec.Address); age < 0.1 || age > 60 {
		t.Errorf("last scrape age %v s, want about 0.1", age)
	}
	for _, name := range []string{"lora_adapters_running", "lora_max_adapters", "kv_block_size_tokens"} {
		if v := get(name, unknownLoRA.spec.Address); !math.IsNaN(v) {
			t.Errorf("%s of an endpoint that reported none = %v, want NaN", name, v)
		}
	}
	if get("fresh", unknownLoRA.spec.Address) != 0 || !math.IsNaN(get("queue_depth", never.spec.Address)) {
		t.Error("stale endpoint shown fresh, or never-scraped endpoint shown with a queue")
	}
	r.RemovePool("ns/p")
	if _, ok := gaugeValue(t, reg, "infergw_router_endpoint_queue_depth", map[string]string{"pool": "ns/p"}); ok {
		t.Error("gauges of a removed pool remain")
	}
}
