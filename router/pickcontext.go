package router

import "time"

// PickContext's accessors for plugins in other packages (the built-in ones read its fields).

// Request is the request being scheduled. Plugins must not modify it.
func (pc *PickContext) Request() *Request { return pc.req }

// Now is the time the pick started.
func (pc *PickContext) Now() time.Time { return pc.now }

// Len is the number of candidates left.
func (pc *PickContext) Len() int { return len(pc.eps) }

// Endpoint describes candidate i. The spec is shared: plugins must not modify it.
func (pc *PickContext) Endpoint(i int) *EndpointSpec { return &pc.eps[i].spec }

// Pool is the name of the pool being picked from.
func (pc *PickContext) Pool() string { return pc.req.Pool }

// EndpointMetrics is the last successful scrape of an endpoint as a plugin sees it (zero
// values before the first scrape; ScrapedAt is zero then).
type EndpointMetrics struct {
	Waiting, Running float64 // requests queued in the engine, being decoded
	KVCacheUsage     float64 // KV-cache use in [0,1]
	// LoRA state (vLLM): adapters running and waiting (shared slices: do not modify),
	// maximum concurrent adapters (0 = unknown); LoRAUnknown before the engine's first step.
	LoRARunning, LoRAWaiting []string
	MaxLoRA                  int
	LoRAUnknown              bool
	// KV geometry from vllm:cache_config_info (0 = unknown).
	BlockSize, NumGPUBlocks int
	ScrapedAt               time.Time
}

// Metrics returns candidate i's scraped metrics.
func (pc *PickContext) Metrics(i int) EndpointMetrics {
	m := pc.ms[i]
	return EndpointMetrics{
		Waiting: m.waiting, Running: m.running, KVCacheUsage: m.kvUsage,
		LoRARunning: m.loraRunning, LoRAWaiting: m.loraWaiting, MaxLoRA: m.maxLoRA, LoRAUnknown: m.loraUnknown,
		BlockSize: m.blockSize, NumGPUBlocks: m.numGPUBlocks, ScrapedAt: m.scrapedAt,
	}
}

// InFlight is the number of this picker's requests on candidate i not yet done.
func (pc *PickContext) InFlight(i int) int64 { return pc.eps[i].inflight.Load() }

// Saturated reports whether candidate i is over the scheduler's saturation thresholds.
func (pc *PickContext) Saturated(i int) bool { return pc.sched.saturated(pc.ms[i]) }

// IsAdapter reports whether the requested model is known to be a LoRA adapter.
func (pc *PickContext) IsAdapter() bool { return pc.isAdapter }

// Keep compacts the candidates to those for which keep(i) is true (for filters; indices
// passed to keep are the ones before the call).
func (pc *PickContext) Keep(keep func(i int) bool) { pc.keep(keep) }
