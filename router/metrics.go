package router

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Pick results, the "result" label of infergw_router_picks_total.
const (
	resultOK            = "ok"
	resultUnknownPool   = "unknown_pool"
	resultNoReady       = "no_ready_endpoint"
	resultEmptySubset   = "empty_subset"
	resultSaturated     = "saturated"
	resultPickedStale   = "ok_stale" // picked among stale endpoints because none was fresh
	labelPool           = "pool"
	labelEndpoint       = "endpoint"
	labelResult         = "result"
	unknownPoolLabelVal = ""
)

var pickResults = []string{resultOK, resultPickedStale, resultNoReady, resultEmptySubset, resultSaturated}

type routerMetrics struct {
	stale          *prometheus.GaugeVec
	scrapeErrors   *prometheus.CounterVec
	modelsErrors   *prometheus.CounterVec
	scrapeDuration prometheus.Histogram
	picks          *prometheus.CounterVec
	pickDuration   prometheus.Histogram
	failures       *prometheus.CounterVec
	ejections      *prometheus.CounterVec
	ejected        *prometheus.GaugeVec
}

func newRouterMetrics(reg prometheus.Registerer) (*routerMetrics, error) {
	m := &routerMetrics{
		stale: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "infergw_router_endpoint_stale",
			Help: "1 when the endpoint's metrics are stale (older than the staleness threshold or the last scrape failed), else 0.",
		}, []string{labelPool, labelEndpoint}),
		scrapeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "infergw_router_scrape_errors_total",
			Help: "Failed /metrics scrapes per endpoint.",
		}, []string{labelPool, labelEndpoint}),
		modelsErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "infergw_router_models_refresh_errors_total",
			Help: "Failed GET /v1/models requests per endpoint.",
		}, []string{labelPool, labelEndpoint}),
		scrapeDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "infergw_router_scrape_duration_seconds",
			Help:    "Duration of /metrics scrapes (fetch and parse), successful or not.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		picks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "infergw_router_picks_total",
			Help: "Pick calls by pool and result (ok, ok_stale, no_ready_endpoint, empty_subset, saturated, unknown_pool).",
		}, []string{labelPool, labelResult}),
		pickDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "infergw_router_pick_duration_seconds",
			Help:    "Duration of successful Pick calls (filters, scorers, picker).",
			Buckets: []float64{1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3},
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "infergw_router_endpoint_failures_total",
			Help: "Failed responses per endpoint (5xx, reset or retried elsewhere, no response, first byte after the timeout).",
		}, []string{labelPool, labelEndpoint}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "infergw_router_endpoint_ejections_total",
			Help: "Outlier ejections per endpoint.",
		}, []string{labelPool, labelEndpoint}),
		ejected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "infergw_router_endpoint_ejected",
			Help: "1 while the endpoint is ejected from picks for failing, else 0.",
		}, []string{labelPool, labelEndpoint}),
	}
	for _, c := range []prometheus.Collector{m.stale, m.scrapeErrors, m.modelsErrors, m.scrapeDuration, m.picks, m.pickDuration,
		m.failures, m.ejections, m.ejected} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("router metrics: %w (one Router per Registerer)", err)
			}
			return nil, fmt.Errorf("router metrics: %w", err)
		}
	}
	return m, nil
}

// poolCounters are a pool's pick counters resolved once, so a Pick does no label lookup.
type poolCounters map[string]prometheus.Counter

func (m *routerMetrics) poolCounters(pool string) poolCounters {
	pc := make(poolCounters, len(pickResults))
	for _, r := range pickResults {
		pc[r] = m.picks.WithLabelValues(pool, r)
	}
	return pc
}

func (m *routerMetrics) deletePool(pool string) {
	for _, r := range pickResults {
		m.picks.DeleteLabelValues(pool, r)
	}
}

func (m *routerMetrics) deleteEndpoint(pool, addr string) {
	m.stale.DeleteLabelValues(pool, addr)
	m.scrapeErrors.DeleteLabelValues(pool, addr)
	m.modelsErrors.DeleteLabelValues(pool, addr)
	m.failures.DeleteLabelValues(pool, addr)
	m.ejections.DeleteLabelValues(pool, addr)
	m.ejected.DeleteLabelValues(pool, addr)
}
