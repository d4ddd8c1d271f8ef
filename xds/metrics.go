package xds

import (
	"fmt"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
)

// serverMetrics are the control plane's Prometheus metrics.
type serverMetrics struct {
	nacks       *prometheus.CounterVec
	pushes      *prometheus.CounterVec
	proxies     prometheus.Gauge
	version     prometheus.Gauge
	updateError prometheus.Counter
	translate   prometheus.Histogram
}

func newServerMetrics(reg prometheus.Registerer) (*serverMetrics, error) {
	m := &serverMetrics{
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "infergw_xds_nacks_total",
			Help: "Configuration updates Envoy rejected (NACKs), by resource type URL.",
		}, []string{"type_url"}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "infergw_xds_pushes_total",
			Help: "Discovery responses sent to proxies, by resource type URL.",
		}, []string{"type_url"}),
		proxies: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "infergw_xds_connected_proxies",
			Help: "Open ADS streams (one per connected Envoy).",
		}),
		version: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "infergw_xds_snapshot_version",
			Help: "Version of the newest snapshot set in the cache.",
		}),
		updateError: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "infergw_xds_update_errors_total",
			Help: "Discovery snapshots that could not be translated; the last good config stays.",
		}),
		translate: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "infergw_xds_translate_seconds",
			Help:    "Time to translate a discovery snapshot into Envoy resources.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
	}
	// Zero series for the served types, so dashboards and alerts see 0 rather than nothing.
	for _, typeURL := range []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType} {
		m.nacks.WithLabelValues(typeURL)
		m.pushes.WithLabelValues(typeURL)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.nacks, m.pushes, m.proxies, m.version, m.updateError, m.translate} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register xds metrics: %w", err)
		}
	}
	return m, nil
}
