package sim

import (
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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
}

func newGaugeCollector(cfg *Config, e *engine) *gaugeCollector {
	labels := prometheus.Labels{"model_name": cfg.Model, "engine": engineIndex}
	return &gaugeCollector{
		e:        e,
		running:  prometheus.NewDesc("vllm:num_requests_running", "Number of requests in model execution batches.", nil, labels),
		waiting:  prometheus.NewDesc("vllm:num_requests_waiting", "Number of requests waiting to be processed.", nil, labels),
		kvUsage:  prometheus.NewDesc("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", nil, labels),
		loraInfo: prometheus.NewDesc("vllm:lora_requests_info", "Running stats on lora requests.", []string{"max_lora", "waiting_lora_adapters", "running_lora_adapters"}, nil),
		cacheConfig: prometheus.NewDesc("vllm:cache_config_info", "Information of the LLMEngine CacheConfig",
			[]string{"block_size", "cache_dtype", "enable_prefix_caching", "engine", "gpu_memory_utilization", "num_gpu_blocks"}, nil),
		maxLoRA: strconv.Itoa(cfg.MaxLoRAs),
		cacheLabels: []string{strconv.Itoa(cfg.BlockSize), "auto", "True", engineIndex, "0.9",
			strconv.Itoa(cfg.KVBlocks)},
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
	// vLLM sets this gauge to the time of its last update; the newest series wins.
	ch <- prometheus.MustNewConstMetric(g.loraInfo, prometheus.GaugeValue,
		float64(time.Now().UnixNano())/1e9,
		g.maxLoRA, strings.Join(st.waitingLoRAs, ","), strings.Join(st.runningLoRAs, ","))
	ch <- prometheus.MustNewConstMetric(g.cacheConfig, prometheus.GaugeValue, 1, g.cacheLabels...)
}
