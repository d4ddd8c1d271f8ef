package extproc

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the picker's Prometheus series, named as GIE endpoint pickers name them.
type metrics struct {
	requests      *prometheus.CounterVec
	errors        *prometheus.CounterVec
	running       *prometheus.GaugeVec
	duration      *prometheus.HistogramVec
	ttft          *prometheus.HistogramVec
	ntpot         *prometheus.HistogramVec
	requestSizes  *prometheus.HistogramVec
	responseSizes *prometheus.HistogramVec
	inputTokens   *prometheus.HistogramVec
	outputTokens  *prometheus.HistogramVec
	cachedTokens  *prometheus.HistogramVec
	// series caches the label-bound children per (model, target, pool): one map lookup per
	// request instead of ten hashed label lookups. Its size is the series count itself,
	// which only served models reach (see modelSeriesKey).
	series       sync.Map // modelSeriesKey → *modelSeries
	schedulerE2E prometheus.Histogram
	// observer counts the response observer's streams by outcome (observe.go).
	observer *prometheus.CounterVec
}

var (
	modelLabels = []string{"model_name", "target_model_name", "pool"}
	// latencyBuckets cover 5 ms to 1 h, like GIE's request latency buckets.
	latencyBuckets = []float64{0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1, 1.25, 1.5, 2, 3, 4, 5, 6, 8,
		10, 15, 20, 30, 45, 60, 120, 180, 240, 300, 360, 480, 600, 900, 1200, 1800, 2700, 3600}
	tpotBuckets  = []float64{0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10}
	sizeBuckets  = prometheus.ExponentialBuckets(64, 4, 12)      // 64 B … 268 MB
	tokenBuckets = prometheus.ExponentialBuckets(1, 2, 21)       // 1 … 1,048,576
	schedBuckets = prometheus.ExponentialBuckets(0.00001, 2, 16) // 10 µs … 0.33 s
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "inference_objective_request_total", Help: "Requests picked, by model, target model and pool."}, modelLabels),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "inference_objective_request_error_total", Help: "Requests answered with an error by the picker, by error code."},
			append(append([]string{}, modelLabels...), "error_code")),
		running: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "inference_objective_running_requests", Help: "Requests picked and not yet complete, by model."}, []string{"model_name"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "inference_objective_request_duration_seconds", Help: "Request duration at the gateway, from request headers to the end of the response.",
			Buckets: latencyBuckets}, modelLabels),
		ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "inference_objective_request_ttft_seconds", Help: "Time to first response body byte at the gateway, from request headers.",
			Buckets: latencyBuckets}, modelLabels),
		ntpot: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "inference_objective_normalized_time_per_output_token_seconds", Help: "Request duration divided by output tokens.",
			Buckets: tpotBuckets}, modelLabels),
		requestSizes: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "inference_objective_request_sizes", Help: "Request body sizes in bytes.", Buckets: sizeBuckets}, modelLabels),
		responseSizes: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "inference_objective_response_sizes", Help: "Response body sizes in bytes.", Buckets: sizeBuckets}, modelLabels),
		inputTokens: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "inference_objective_input_tokens", Help: "Prompt tokens per request, from the response usage.", Buckets: tokenBuckets}, modelLabels),
		outputTokens: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "inference_objective_output_tokens", Help: "Completion tokens per request, from the response usage.", Buckets: tokenBuckets}, modelLabels),
		cachedTokens: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "inference_objective_prompt_cached_tokens", Help: "Cached prompt tokens per request, from the response usage (prompt_tokens_details.cached_tokens); " +
				"0 for a model server that does not report them: vLLM reports them only with --enable-prompt-tokens-details.", Buckets: tokenBuckets}, modelLabels),
		schedulerE2E: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "inference_extension_scheduler_e2e_duration_seconds", Help: "Time spent in the router's Pick per request.", Buckets: schedBuckets}),
		observer: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "infergw_picker_response_observer_streams_total",
			Help: "Streams of the response observer filter, by outcome: observed (the picker handed the response body over), " +
				"kept (the picker changes the body, or the observer came too late: the picker processed it), " +
				"unmatched (no request of this picker to observe: the picker closed the stream at once)."},
			[]string{"outcome"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.errors, m.running, m.duration, m.ttft, m.ntpot,
		m.requestSizes, m.responseSizes, m.inputTokens, m.outputTokens, m.cachedTokens, m.schedulerE2E, m.observer} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register picker metrics: %w", err)
		}
	}
	return m, nil
}

type modelSeriesKey struct{ model, target, pool string }

// modelSeries are the per-model metrics of one (model, target model, pool).
type modelSeries struct {
	requests                                           prometheus.Counter
	running                                            prometheus.Gauge
	duration, ttft, ntpot, requestSizes, responseSizes prometheus.Observer
	inputTokens, outputTokens, cachedTokens            prometheus.Observer
}

// seriesFor returns the metrics of a picked request. Only call it for a model the pool
// serves: client-chosen names must not create series.
func (m *metrics) seriesFor(model, target, pool string) *modelSeries {
	key := modelSeriesKey{model, target, pool}
	if v, ok := m.series.Load(key); ok {
		return v.(*modelSeries)
	}
	labels := []string{model, target, pool}
	ms := &modelSeries{
		requests:      m.requests.WithLabelValues(labels...),
		running:       m.running.WithLabelValues(model),
		duration:      m.duration.WithLabelValues(labels...),
		ttft:          m.ttft.WithLabelValues(labels...),
		ntpot:         m.ntpot.WithLabelValues(labels...),
		requestSizes:  m.requestSizes.WithLabelValues(labels...),
		responseSizes: m.responseSizes.WithLabelValues(labels...),
		inputTokens:   m.inputTokens.WithLabelValues(labels...),
		outputTokens:  m.outputTokens.WithLabelValues(labels...),
		cachedTokens:  m.cachedTokens.WithLabelValues(labels...),
	}
	v, _ := m.series.LoadOrStore(key, ms)
	return v.(*modelSeries)
}
