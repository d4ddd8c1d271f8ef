package router

import (
	"context"
	"sync/atomic"
	"time"
)

// EngineTypeLabel is the pod label that selects the metric names of an endpoint.
const EngineTypeLabel = "inference.networking.k8s.io/engine-type"

// EndpointSpec describes one model-server endpoint of a pool.
type EndpointSpec struct {
	Name    string            // pod name (unique within the pool together with port)
	Address string            // "ip:port" — the endpoint identity everywhere
	Labels  map[string]string // EngineTypeLabel selects vllm|sglang|trtllm (default vllm)
	// Metrics are the pool's own scrape settings (nil = Config.Metrics).
	Metrics *PoolMetrics
}

// metricsState is one successful scrape of an endpoint. It is immutable once stored.
type metricsState struct {
	waiting float64 // requests queued in the engine
	running float64 // requests being decoded
	kvUsage float64 // KV-cache utilisation in [0,1]
	// LoRA state (vLLM only): adapters running and waiting, max concurrent adapters.
	// loraUnknown: a vLLM endpoint reported no lora_requests_info sample (vLLM has none
	// before its first engine step); maxLoRA 0 = unknown.
	loraUnknown bool
	loraRunning []string
	loraWaiting []string
	maxLoRA     int
	// Engine KV-cache geometry from vllm:cache_config_info (0 = unknown).
	blockSize    int
	numGPUBlocks int
	scrapedAt    time.Time
}

// modelSet maps each model id an endpoint serves to its parent (the base model of a LoRA
// adapter; "" for a base model).
type modelSet map[string]string

// endpoint is the router's state of one endpoint of one pool.
type endpoint struct {
	pool   string
	spec   EndpointSpec
	engine engine

	metrics    atomic.Pointer[metricsState] // last successful scrape; nil before the first
	lastFailed atomic.Bool                  // the most recent scrape failed
	models     atomic.Pointer[modelSet]     // nil until /v1/models answered once
	inflight   atomic.Int64                 // picks not yet Done (gateway-side)
	lastPick   atomic.Int64                 // unix nanoseconds of the last pick as primary
	prefix     *prefixLRU
	prefixSpan atomic.Int64 // prompt characters per prefix block (scheduler.span)
	out        *outlier     // response outcomes and ejection

	cancel context.CancelFunc
	done   chan struct{} // closed when the scrape loop returned
	wake   chan struct{} // (cap 1) a pick on an idle endpoint: back to the regular scrape interval
	health health        // last reported staleness; owned by the scrape loop
}

// health is the staleness last reported for an endpoint (for logging transitions once).
type health uint8

const (
	healthUnknown health = iota // not scraped yet
	healthFresh
	healthStale
)

// isFresh reports whether the endpoint has metrics no older than threshold and its last
// scrape succeeded.
func (e *endpoint) isFresh(m *metricsState, now time.Time, threshold time.Duration) bool {
	return m != nil && !m.scrapedAt.IsZero() && !e.lastFailed.Load() && now.Sub(m.scrapedAt) <= threshold
}

// emptyMetrics stands in for an endpoint never scraped so that scorers need no nil checks.
var emptyMetrics = &metricsState{}

func (e *endpoint) loadMetrics() *metricsState {
	if m := e.metrics.Load(); m != nil {
		return m
	}
	return emptyMetrics
}

// wakeScrape tells the endpoint's loop that traffic started (it may be on the idle
// schedule). It never blocks.
func (e *endpoint) wakeScrape() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}
