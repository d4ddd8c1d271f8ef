package sim

import (
	"bytes"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/valyala/fasthttp"
)

// vLLM's histogram buckets (vllm/v1/metrics/loggers.py), so dashboards built for vLLM work.
var (
	ttftBuckets = []float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
		1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0}
	itlBuckets = []float64{0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
		2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0}
	requestLatencyBuckets = []float64{0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0,
		30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0}
)

// engineIndex is vLLM's `engine` label; a sim is one engine.
const engineIndex = "0"

// metrics holds the event-driven series; gauges are read from the engine at scrape time by
// gaugeCollector so they are never stale.
type metrics struct {
	prefixQueries prometheus.Counter
	prefixHits    prometheus.Counter
	promptTokens  prometheus.Counter
	genTokens     prometheus.Counter
	preemptions   prometheus.Counter
	success       *prometheus.CounterVec // by finished_reason
	ttft          prometheus.Observer
	itl           prometheus.Observer
	e2e           prometheus.Observer
	queueTime     prometheus.Observer
}

func newMetrics(reg prometheus.Registerer, cfg *Config, e *engine) (*metrics, error) {
	labels := prometheus.Labels{"model_name": cfg.Model, "engine": engineIndex}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels})
	}
	histogram := func(name, help string, buckets []float64) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets, ConstLabels: labels})
	}
	m := &metrics{
		prefixQueries: counter("vllm:prefix_cache_queries_total", "Prefix cache queries, in terms of number of queried tokens."),
		prefixHits:    counter("vllm:prefix_cache_hits_total", "Prefix cache hits, in terms of number of cached tokens."),
		promptTokens:  counter("vllm:prompt_tokens_total", "Number of prefill tokens processed."),
		genTokens:     counter("vllm:generation_tokens_total", "Number of generation tokens processed."),
		preemptions:   counter("vllm:num_preemptions_total", "Cumulative number of preemption from the engine."),
		success: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vllm:request_success_total", Help: "Count of successfully processed requests.", ConstLabels: labels,
		}, []string{"finished_reason"}),
	}
	ttft := histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", ttftBuckets)
	itl := histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", itlBuckets)
	e2e := histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", requestLatencyBuckets)
	queue := histogram("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", requestLatencyBuckets)
	m.ttft, m.itl, m.e2e, m.queueTime = ttft, itl, e2e, queue
	for _, reason := range []string{finishStop, finishLength, finishAbort} {
		m.success.WithLabelValues(reason) // vLLM exports every reason from the start
	}
	cs := []prometheus.Collector{m.prefixQueries, m.prefixHits, m.promptTokens, m.genTokens, m.preemptions, m.success,
		ttft, itl, e2e, queue, newGaugeCollector(cfg, e)}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// gaugeCollector reads the engine's state at scrape time.
type gaugeCollector struct {
	e           *engine
	running     *prometheus.Desc
	waiting     *prometheus.Desc
	kvUsage     *prometheus.Desc
	loraInfo    *prometheus.Desc
	cacheConfig *prometheus.Desc
	maxLoRA     string
	cacheLabels []string

	mu         sync.Mutex
	loraSeries []loraSeries // every LoRA state reported so far, as vLLM keeps them
}

// loraSeries is one label set of vllm:lora_requests_info and the time it was last seen.
type loraSeries struct {
	waiting, running string
	seen             float64
}

// maxLoRASeries bounds the old lora_requests_info series kept (vLLM keeps all of them; a
// sim that ran many adapters would otherwise grow without bound).
const maxLoRASeries = 64

// cacheConfigLabels are vllm:cache_config_info's labels as vLLM 0.32 reports them (the
// router reads block_size and num_gpu_blocks; the rest is there so that the exposition has
// the same shape).
var cacheConfigLabels = []string{"_block_size_resolved", "block_size", "cache_dtype", "cache_hit_alignment_tokens",
	"effective_attention_block_size", "enable_mamba_shared_prefix_checkpoint", "enable_prefix_caching", "engine",
	"gpu_memory_utilization", "hash_block_size", "is_attention_free", "kv_cache_dtype_skip_layers", "kv_cache_layout",
	"kv_cache_max_concurrency", "kv_cache_memory_bytes", "kv_cache_size_tokens", "kv_offloading_backend",
	"kv_offloading_size", "kv_sharing_fast_prefill", "mamba_block_size", "mamba_cache_dtype", "mamba_cache_mode",
	"mamba_page_size_padded", "mamba_ssm_cache_dtype", "num_cpu_blocks", "num_gpu_blocks", "num_gpu_blocks_override",
	"prefix_cache_retention_interval", "prefix_caching_hash_algo", "prefix_match_unit", "replayssm_buffer_len",
	"skip_page_size_padded", "sliding_window", "swa_bounded_replay", "use_kda_recoverssm", "use_replayssm",
	"user_specified_block_size"}

func cacheConfigValues(cfg *Config) []string {
	tokens := cfg.KVBlocks * cfg.BlockSize
	bs := strconv.Itoa(cfg.BlockSize)
	v := map[string]string{
		"_block_size_resolved": "True", "block_size": bs, "cache_dtype": "auto", "effective_attention_block_size": bs,
		"enable_prefix_caching": "True", "engine": engineIndex, "gpu_memory_utilization": "0.9",
		"kv_cache_dtype_skip_layers": "[]", "kv_cache_max_concurrency": strconv.FormatFloat(float64(tokens)/float64(cfg.MaxModelLen), 'f', 1, 64),
		"kv_cache_size_tokens": strconv.Itoa(tokens), "kv_offloading_backend": "native", "mamba_cache_dtype": "auto",
		"mamba_cache_mode": "none", "mamba_ssm_cache_dtype": "float32", "num_gpu_blocks": strconv.Itoa(cfg.KVBlocks),
		"prefix_cache_retention_interval": "0", "prefix_caching_hash_algo": "sha256", "replayssm_buffer_len": "16",
		"swa_bounded_replay": "True", "kv_cache_memory_bytes": strconv.Itoa(tokens * 128 * 1024),
	}
	out := make([]string, len(cacheConfigLabels))
	for i, name := range cacheConfigLabels {
		switch val, ok := v[name]; {
		case ok:
			out[i] = val
		case strings.HasPrefix(name, "is_") || strings.HasPrefix(name, "use_") || strings.HasPrefix(name, "enable_") ||
			name == "kv_sharing_fast_prefill" || name == "user_specified_block_size":
			out[i] = "False"
		default:
			out[i] = "None"
		}
	}
	return out
}

func newGaugeCollector(cfg *Config, e *engine) *gaugeCollector {
	labels := prometheus.Labels{"model_name": cfg.Model, "engine": engineIndex}
	return &gaugeCollector{
		e:           e,
		running:     prometheus.NewDesc("vllm:num_requests_running", "Number of requests in model execution batches.", nil, labels),
		waiting:     prometheus.NewDesc("vllm:num_requests_waiting", "Number of requests waiting to be processed.", nil, labels),
		kvUsage:     prometheus.NewDesc("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", nil, labels),
		loraInfo:    prometheus.NewDesc("vllm:lora_requests_info", "Running stats on lora requests.", []string{"max_lora", "waiting_lora_adapters", "running_lora_adapters"}, nil),
		cacheConfig: prometheus.NewDesc("vllm:cache_config_info", "Information of the LLMEngine CacheConfig", cacheConfigLabels, nil),
		maxLoRA:     strconv.Itoa(cfg.MaxLoRAs),
		cacheLabels: cacheConfigValues(cfg),
	}
}

func (g *gaugeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- g.running
	ch <- g.waiting
	ch <- g.kvUsage
	ch <- g.loraInfo
	ch <- g.cacheConfig
}

func (g *gaugeCollector) Collect(ch chan<- prometheus.Metric) {
	st := g.e.stats()
	ch <- prometheus.MustNewConstMetric(g.running, prometheus.GaugeValue, float64(st.running))
	ch <- prometheus.MustNewConstMetric(g.waiting, prometheus.GaugeValue, float64(st.waiting))
	ch <- prometheus.MustNewConstMetric(g.kvUsage, prometheus.GaugeValue, st.kvUsage)
	for _, ls := range g.loraState(st) {
		ch <- prometheus.MustNewConstMetric(g.loraInfo, prometheus.GaugeValue, ls.seen, g.maxLoRA, ls.waiting, ls.running)
	}
	ch <- prometheus.MustNewConstMetric(g.cacheConfig, prometheus.GaugeValue, 1, g.cacheLabels...)
}

// loraState follows vLLM 0.32's vllm:lora_requests_info: no sample before the engine's
// first step; afterwards one series per LoRA state ever reported, its value the time it
// was last current (the newest is the state now); every active adapter (running or
// waiting) is listed in waiting_lora_adapters, even with nothing waiting.
func (g *gaugeCollector) loraState(st engineStats) []loraSeries {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !st.stepped {
		return nil
	}
	running := strings.Join(st.runningLoRAs, ",")
	active := append(slices.Clone(st.runningLoRAs), st.waitingLoRAs...)
	slices.Sort(active)
	waiting := strings.Join(slices.Compact(active), ",")
	now := float64(time.Now().UnixNano()) / 1e9
	i := slices.IndexFunc(g.loraSeries, func(ls loraSeries) bool { return ls.running == running && ls.waiting == waiting })
	switch {
	case i >= 0:
		g.loraSeries[i].seen = now
	case len(g.loraSeries) < maxLoRASeries:
		g.loraSeries = append(g.loraSeries, loraSeries{waiting: waiting, running: running, seen: now})
	default: // replace the oldest
		oldest := 0
		for j, ls := range g.loraSeries {
			if ls.seen < g.loraSeries[oldest].seen {
				oldest = j
			}
		}
		g.loraSeries[oldest] = loraSeries{waiting: waiting, running: running, seen: now}
	}
	return slices.Clone(g.loraSeries)
}

// exposition serves the registry as vLLM serves its /metrics: the text format with the
// content type vLLM sends, and Python-style floats in histogram "le" labels ("1.0", not
// Go's "1"), so that a client parsing vLLM's text sees the same shape from the sim.
func exposition(reg prometheus.Gatherer) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		mfs, err := reg.Gather()
		if err != nil {
			ctx.Error("gather metrics: "+err.Error(), fasthttp.StatusInternalServerError)
			return
		}
		var text bytes.Buffer
		for _, mf := range mfs {
			if _, err := expfmt.MetricFamilyToText(&text, mf); err != nil {
				ctx.Error("encode metrics: "+err.Error(), fasthttp.StatusInternalServerError)
				return
			}
		}
		ctx.SetContentType(vllmMetricsContentType)
		ctx.SetBody(pythonLe(make([]byte, 0, text.Len()+text.Len()/16), text.Bytes()))
	}
}

// vllmMetricsContentType is what vLLM 0.32 answers /metrics with.
const vllmMetricsContentType = "text/plain; version=1.0.0; charset=utf-8"

// pythonLe appends text to dst with every integral le="N" written le="N.0".
func pythonLe(dst, text []byte) []byte {
	const key = `le="`
	for {
		i := bytes.Index(text, []byte(key))
		if i < 0 {
			return append(dst, text...)
		}
		j := i + len(key)
		end := bytes.IndexByte(text[j:], '"')
		if end < 0 {
			return append(dst, text...)
		}
		val := text[j : j+end]
		dst = append(dst, text[:j+end]...)
		if len(val) > 0 && isDigits(val) {
			dst = append(dst, ".0"...)
		}
		text = text[j+end:]
	}
}

func isDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
