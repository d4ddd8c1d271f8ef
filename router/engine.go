package router

import (
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
)

// engine selects the metric names of a model server.
type engine uint8

const (
	engineVLLM engine = iota
	engineSGLang
	engineTRTLLM
)

func (e engine) String() string {
	switch e {
	case engineSGLang:
		return "sglang"
	case engineTRTLLM:
		return "trtllm"
	}
	return "vllm"
}

// parseEngine maps the engine-type label to an engine; ok is false for an unknown value
// (treated as vLLM).
func parseEngine(label string) (e engine, ok bool) {
	switch strings.ToLower(label) {
	case "", "vllm":
		return engineVLLM, true
	case "sglang":
		return engineSGLang, true
	case "trtllm", "tensorrt-llm", "trt-llm":
		return engineTRTLLM, true
	}
	return engineVLLM, false
}

// Metric names per engine.
const (
	vllmWaiting     = "vllm:num_requests_waiting"
	vllmRunning     = "vllm:num_requests_running"
	vllmKV          = "vllm:kv_cache_usage_perc"
	vllmKVLegacy    = "vllm:gpu_cache_usage_perc" // before vLLM 0.10
	vllmLoRAInfo    = "vllm:lora_requests_info"
	vllmCacheConfig = "vllm:cache_config_info"

	sglangWaiting = "sglang:num_queue_reqs"
	sglangRunning = "sglang:num_running_reqs"
	sglangKV      = "sglang:token_usage"

	trtllmWaiting = "trtllm_num_requests_waiting"
	trtllmRunning = "trtllm_num_requests_running"
	trtllmKV      = "trtllm_kv_cache_utilization"
)

// extractMetrics reads the engine's metrics from parsed families into m. It returns false
// when none of the engine's queue/KV metrics is present (wrong engine type or not a model
// server), which counts as a failed scrape.
func extractMetrics(eng engine, fams map[string]*dto.MetricFamily, m *metricsState) bool {
	waiting, running, kv := engineFamilies(eng, fams)
	if waiting == nil && running == nil && kv == nil {
		return false
	}
	m.waiting = finiteNonNegative(sumValues(waiting))
	m.running = finiteNonNegative(sumValues(running))
	m.kvUsage = clamp01(maxValue(kv))
	if eng == engineVLLM {
		extractLoRA(fams[vllmLoRAInfo], m)
		extractCacheConfig(fams[vllmCacheConfig], m)
	}
	return true
}

// engineFamilies are the engine's queue, running and KV-cache use families (nil when absent).
func engineFamilies(eng engine, fams map[string]*dto.MetricFamily) (waiting, running, kv *dto.MetricFamily) {
	switch eng {
	case engineSGLang:
		return fams[sglangWaiting], fams[sglangRunning], fams[sglangKV]
	case engineTRTLLM:
		return fams[trtllmWaiting], fams[trtllmRunning], fams[trtllmKV]
	}
	kv = fams[vllmKV]
	if kv == nil {
		kv = fams[vllmKVLegacy]
	}
	return fams[vllmWaiting], fams[vllmRunning], kv
}

// extractLoRA reads vllm:lora_requests_info as real vLLM (0.32) reports it:
//   - before the engine's first step there is no sample at all: the state is unknown
//     (loraUnknown), which is not the same as zero adapter slots;
//   - old series stay in the exposition; the one whose value (a timestamp) is the newest
//     is current;
//   - every active adapter is listed in waiting_lora_adapters as well as in
//     running_lora_adapters, even when nothing waits, so the waiting list is believed only
//     while the engine reports waiting requests (m.waiting, read before this).
func extractLoRA(mf *dto.MetricFamily, m *metricsState) {
	m.loraUnknown = true
	var newest *dto.Metric
	newestVal := 0.0
	for _, s := range mf.GetMetric() {
		if v := value(s); newest == nil || v > newestVal {
			newest, newestVal = s, v
		}
	}
	if newest == nil {
		return
	}
	m.loraUnknown = false
	for _, lp := range newest.GetLabel() {
		switch lp.GetName() {
		case "running_lora_adapters":
			m.loraRunning = splitAdapters(lp.GetValue())
		case "waiting_lora_adapters":
			m.loraWaiting = splitAdapters(lp.GetValue())
		case "max_lora":
			if n, err := strconv.Atoi(strings.TrimSpace(lp.GetValue())); err == nil && n > 0 {
				m.maxLoRA = n
			}
		}
	}
	if m.waiting == 0 {
		m.loraWaiting = nil
	}
}

// extractCacheConfig reads block_size and num_gpu_blocks from vllm:cache_config_info.
func extractCacheConfig(mf *dto.MetricFamily, m *metricsState) {
	if mf == nil || len(mf.GetMetric()) == 0 {
		return
	}
	for _, lp := range mf.GetMetric()[0].GetLabel() {
		n, err := strconv.Atoi(strings.TrimSpace(lp.GetValue()))
		if err != nil || n <= 0 {
			continue
		}
		switch lp.GetName() {
		case "block_size":
			m.blockSize = n
		case "num_gpu_blocks":
			m.numGPUBlocks = n
		}
	}
}

func splitAdapters(s string) []string {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	parts := strings.Split(s, ",")
	out := parts[:0]
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// value returns the sample value of a gauge, counter or untyped series.
func value(s *dto.Metric) float64 {
	switch {
	case s.Gauge != nil:
		return s.Gauge.GetValue()
	case s.Counter != nil:
		return s.Counter.GetValue()
	case s.Untyped != nil:
		return s.Untyped.GetValue()
	}
	return 0
}

// sumValues sums the series of a family (engines may label counts by model name).
func sumValues(mf *dto.MetricFamily) float64 {
	total := 0.0
	for _, s := range mf.GetMetric() {
		total += value(s)
	}
	return total
}

// maxValue returns the largest series of a family (the busiest engine for utilisation).
func maxValue(mf *dto.MetricFamily) float64 {
	best := 0.0
	for i, s := range mf.GetMetric() {
		if v := value(s); i == 0 || v > best {
			best = v
		}
	}
	return best
}

func finiteNonNegative(v float64) float64 {
	if v != v || v < 0 || v > 1e12 { // NaN, negative or absurd (+Inf)
		return 0
	}
	return v
}

func clamp01(v float64) float64 {
	switch {
	case v != v || v < 0: // NaN or negative
		return 0
	case v > 1:
		return 1
	}
	return v
}
