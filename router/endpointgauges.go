package router

import (
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// endpointCollector exposes what the router sees of each endpoint, labelled by pool and
// endpoint, so that operators can compare the picker's view with the model servers' own
// metrics. It reads the state at collection time: the scrape loops pay nothing for it,
// and removed endpoints disappear without bookkeeping.
type endpointCollector struct {
	r                                 *Router
	waiting, running, kv, inflight    *prometheus.Desc
	loraRunning, loraWaiting, maxLoRA *prometheus.Desc
	blockSize, gpuBlocks, age, fresh  *prometheus.Desc
	prefixBlocks                      *prometheus.Desc
}

func newEndpointCollector(r *Router) *endpointCollector {
	labels := []string{labelPool, labelEndpoint}
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("infergw_router_endpoint_"+name, help, labels, nil)
	}
	return &endpointCollector{
		r:        r,
		waiting:  d("queue_depth", "Requests waiting in the endpoint's engine, as last scraped (NaN before the first successful scrape)."),
		running:  d("running_requests", "Requests the endpoint's engine is running, as last scraped (NaN before the first successful scrape)."),
		kv:       d("kv_cache_usage", "KV-cache use of the endpoint in [0,1], as last scraped (NaN before the first successful scrape)."),
		inflight: d("in_flight_requests", "Requests the picker sent to the endpoint that have not finished (gateway-side)."),
		loraRunning: d("lora_adapters_running", "LoRA adapters the endpoint reports running (vLLM lora_requests_info; NaN while unknown: "+
			"vLLM reports no LoRA state before its first engine step)."),
		loraWaiting: d("lora_adapters_waiting", "LoRA adapters with requests waiting on the endpoint (vLLM lists every active adapter as "+
			"waiting too; the router counts an adapter as waiting only while requests wait; NaN while unknown)."),
		maxLoRA:      d("lora_max_adapters", "LoRA adapters the endpoint holds at once (vLLM max_lora; NaN while unknown)."),
		blockSize:    d("kv_block_size_tokens", "KV-cache block size in tokens (vllm:cache_config_info block_size; NaN while unknown)."),
		gpuBlocks:    d("kv_blocks", "KV-cache blocks of the endpoint (vllm:cache_config_info num_gpu_blocks; NaN while unknown)."),
		prefixBlocks: d("prefix_cache_blocks", "Prefix blocks the router's approximate cache of the endpoint holds."),
		age:          d("last_scrape_age_seconds", "Seconds since the endpoint's last successful /metrics scrape (NaN before the first)."),
		fresh:        d("fresh", "1 when the router picks the endpoint on fresh metrics (last scrape succeeded, within the staleness threshold), else 0."),
	}
}

func (c *endpointCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.waiting, c.running, c.kv, c.inflight, c.loraRunning, c.loraWaiting,
		c.maxLoRA, c.blockSize, c.gpuBlocks, c.prefixBlocks, c.age, c.fresh} {
		ch <- d
	}
}

func (c *endpointCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for _, p := range *c.r.pools.Load() {
		for _, e := range p.view.Load().endpoints {
			c.collectEndpoint(ch, p.name, e, now)
		}
	}
}

func (c *endpointCollector) collectEndpoint(ch chan<- prometheus.Metric, pool string, e *endpoint, now time.Time) {
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, pool, e.spec.Address)
	}
	m := e.metrics.Load()
	fresh := 0.0
	if e.isFresh(m, now, c.r.cfg.StalenessThreshold) {
		fresh = 1
	}
	gauge(c.fresh, fresh)
	gauge(c.inflight, float64(e.inflight.Load()))
	gauge(c.prefixBlocks, float64(e.prefix.len()))
	if m == nil {
		for _, d := range []*prometheus.Desc{c.waiting, c.running, c.kv, c.loraRunning, c.loraWaiting, c.maxLoRA,
			c.blockSize, c.gpuBlocks, c.age} {
			gauge(d, math.NaN())
		}
		return
	}
	gauge(c.waiting, m.waiting)
	gauge(c.running, m.running)
	gauge(c.kv, m.kvUsage)
	gauge(c.age, now.Sub(m.scrapedAt).Seconds())
	if !m.loraUnknown {
		gauge(c.loraRunning, float64(len(m.loraRunning)))
		gauge(c.loraWaiting, float64(len(m.loraWaiting)))
	} else {
		gauge(c.loraRunning, math.NaN())
		gauge(c.loraWaiting, math.NaN())
	}
	gauge(c.maxLoRA, positiveOrNaN(m.maxLoRA))
	gauge(c.blockSize, positiveOrNaN(m.blockSize))
	gauge(c.gpuBlocks, positiveOrNaN(m.numGPUBlocks))
}

func positiveOrNaN(n int) float64 {
	if n <= 0 {
		return math.NaN()
	}
	return float64(n)
}
