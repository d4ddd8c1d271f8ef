package flowcontrol

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the flow-control series of every pool, named as GIE's EPP names them
// (inference_extension_flow_control_*) where the meaning is the same.
type Metrics struct {
	enqueued  *prometheus.CounterVec
	outcomes  *prometheus.CounterVec
	queueDur  *prometheus.HistogramVec
	size      *prometheus.GaugeVec
	bytes     *prometheus.GaugeVec
	flowSize  *prometheus.GaugeVec
	flowWait  *prometheus.HistogramVec
	saturated *prometheus.GaugeVec
	endpoints *prometheus.GaugeVec
	held      *prometheus.CounterVec
}

// NewMetrics registers the flow-control metrics with reg (nil = a private registry).
// Registration errors other than "already registered by an equal collector" panic: they
// are programming errors (two Metrics on one registry).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	pool, prio := "inference_pool", "priority"
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	}
	m := &Metrics{
		enqueued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "inference_extension_flow_control_enqueued_total",
			Help: "Requests that entered flow control, per pool and priority band. Equals the sum of outcomes plus the queue size.",
		}, []string{pool, prio}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "inference_extension_flow_control_request_outcomes_total",
			Help: "Requests that left flow control, by outcome: Dispatched, RejectedCapacity, EvictedTTL, EvictedContextCancelled, RejectedOther.",
		}, []string{pool, prio, "outcome"}),
		queueDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "inference_extension_flow_control_request_queue_duration_seconds",
			Help:    "Time a request spent in flow control, from enqueue to its outcome.",
			Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
		}, []string{pool, prio, "outcome"}),
		size: gauge("inference_extension_flow_control_queue_size",
			"Requests queued now, per pool and priority band.", pool, prio),
		bytes: gauge("inference_extension_flow_control_queue_bytes",
			"Request bytes queued now, per pool and priority band.", pool, prio),
		flowSize: gauge("inference_extension_flow_control_flow_queue_size",
			"Requests queued now per flow (fairness ID within a band); a flow's series is deleted when its queue empties, so series are bounded by maxFlows.",
			pool, prio, "fairness_id"),
		flowWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "infergw_flow_control_flow_dispatch_wait_seconds",
			Help: "Time a dispatched request spent in flow control, per flow (fairness ID within a band): how long each tenant waits. " +
				"The first maxFlows fairness IDs of a pool get their own series, for as long as the pool exists; later ones share fairness_id=\"" + OverflowFairnessID + "\".",
			Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
		}, []string{pool, prio, "fairness_id"}),
		saturated: gauge("infergw_flow_control_pool_saturated",
			"1 when the last dispatch cycle with requests waiting found no room in the pool.", pool),
		held: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "infergw_flow_control_reserved_idle_place_seconds_total",
			Help: "Places the demand reservation kept free while requests waited, integrated over time (places × seconds): its rate is the mean number of places held idle, the throughput a flood gives up for the flows the room is kept for.",
		}, []string{pool}),
		endpoints: gauge("infergw_flow_control_endpoints",
			"Endpoints of the pool by the saturation detector's verdict at its last evaluation: free, or the first limit reached (stale, kv_cache, queue_depth, running, in_flight, batch_full).",
			pool, "state"),
	}
	for _, c := range []prometheus.Collector{m.enqueued, m.outcomes, m.queueDur, m.size, m.bytes, m.flowSize, m.flowWait, m.saturated, m.endpoints, m.held} {
		if err := reg.Register(c); err != nil {
			panic("flowcontrol metrics: " + err.Error())
		}
	}
	return m
}

// OverflowFairnessID labels the per-flow wait of the fairness IDs beyond a pool's first
// maxFlows: the ID comes from a client header, so its series must be bounded.
const OverflowFairnessID = "__overflow__"

// poolMetrics are one pool's children of Metrics. Its methods run under the controller's
// lock.
type poolMetrics struct {
	m         *Metrics
	pool      string
	saturated prometheus.Gauge
	held      prometheus.Counter
	// waits holds the per-flow wait series made so far, at most maxWaitSeries of them.
	waits         map[flowKey]prometheus.Observer
	maxWaitSeries int
}

func (m *Metrics) pool(name string, maxFlows int) *poolMetrics {
	return &poolMetrics{m: m, pool: name, saturated: m.saturated.WithLabelValues(name), held: m.held.WithLabelValues(name),
		waits: make(map[flowKey]prometheus.Observer), maxWaitSeries: maxFlows}
}

// flowWait is the wait histogram of a flow: its own while the pool has made fewer than
// maxWaitSeries, the band's overflow series after.
func (p *poolMetrics) flowWait(k flowKey) prometheus.Observer {
	if o, ok := p.waits[k]; ok {
		return o
	}
	id := k.id
	if len(p.waits) >= p.maxWaitSeries {
		id = OverflowFairnessID
	}
	o := p.m.flowWait.WithLabelValues(p.pool, strconv.Itoa(k.priority), id)
	if id != OverflowFairnessID {
		p.waits[k] = o
	}
	return o
}

// bandMetrics are one band's series, resolved once (the hot path does no label lookups).
type bandMetrics struct {
	enqueued prometheus.Counter
	size     prometheus.Gauge
	bytes    prometheus.Gauge
	outcomes [numOutcomes]prometheus.Counter
	dur      [numOutcomes]prometheus.Observer
}

func (p *poolMetrics) band(priority int) *bandMetrics {
	pr := strconv.Itoa(priority)
	b := &bandMetrics{
		enqueued: p.m.enqueued.WithLabelValues(p.pool, pr),
		size:     p.m.size.WithLabelValues(p.pool, pr),
		bytes:    p.m.bytes.WithLabelValues(p.pool, pr),
	}
	for o := Dispatched; o < numOutcomes; o++ {
		b.outcomes[o] = p.m.outcomes.WithLabelValues(p.pool, pr, o.String())
		b.dur[o] = p.m.queueDur.WithLabelValues(p.pool, pr, o.String())
	}
	return b
}

func (b *bandMetrics) outcome(o Outcome, waited time.Duration) {
	b.outcomes[o].Inc()
	b.dur[o].Observe(waited.Seconds())
}

// flowMetrics are one flow's series.
type flowMetrics struct {
	size prometheus.Gauge
}

func (p *poolMetrics) flow(k flowKey) *flowMetrics {
	return &flowMetrics{size: p.m.flowSize.WithLabelValues(p.pool, strconv.Itoa(k.priority), k.id)}
}

func (p *poolMetrics) deleteFlow(k flowKey) {
	p.m.flowSize.DeleteLabelValues(p.pool, strconv.Itoa(k.priority), k.id)
}

// setEndpointStates publishes the detector's verdict counts.
func (m *Metrics) setEndpointStates(pool string, counts *[numEndpointStates]int) {
	for s := endpointState(0); s < numEndpointStates; s++ {
		m.endpoints.WithLabelValues(pool, s.String()).Set(float64(counts[s]))
	}
}

// DeletePool drops a removed pool's series.
func (m *Metrics) DeletePool(pool string) {
	for _, v := range []interface {
		DeletePartialMatch(prometheus.Labels) int
	}{m.enqueued, m.outcomes, m.queueDur, m.size, m.bytes, m.flowSize, m.flowWait, m.saturated, m.endpoints, m.held} {
		v.DeletePartialMatch(prometheus.Labels{"inference_pool": pool})
	}
}
