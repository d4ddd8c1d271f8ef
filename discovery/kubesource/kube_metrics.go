package kubesource

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// kubeMetrics are the Kubernetes source's metrics, registered on the Registerer passed in
// KubeOptions (or on nothing).
type kubeMetrics struct {
	events       *prometheus.CounterVec
	snapshots    prometheus.Counter
	version      prometheus.Gauge
	buildSeconds prometheus.Histogram
	invalid      *prometheus.GaugeVec
	statusWrites *prometheus.CounterVec
}

func newKubeMetrics(reg prometheus.Registerer) (*kubeMetrics, error) {
	m := &kubeMetrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "infergw_discovery_kube_events_total",
			Help: "Informer events received, by resource kind and operation (add, update, delete).",
		}, []string{"kind", "op"}),
		snapshots: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "infergw_discovery_kube_snapshots_published_total",
			Help: "Snapshots published by the Kubernetes source (rebuilds that changed nothing are not counted).",
		}),
		version: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "infergw_discovery_kube_snapshot_version",
			Help: "Version of the latest snapshot published by the Kubernetes source.",
		}),
		buildSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "infergw_discovery_kube_build_seconds",
			Help:    "Time to validate the informers' objects and build a snapshot.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 8),
		}),
		invalid: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "infergw_discovery_kube_invalid_objects",
			Help: "Objects left out of the latest snapshot because they failed validation, by kind.",
		}, []string{"kind"}),
		statusWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "infergw_discovery_kube_status_writes_total",
			Help: "Status writes, by kind (InferencePool, HTTPRoute) and result (ok, conflict, error).",
		}, []string{"kind", "result"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.events, m.snapshots, m.version, m.buildSeconds, m.invalid, m.statusWrites} {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if errors.As(err, &already) {
				return nil, fmt.Errorf("discovery/kube: metrics already registered (one KubeSource per registry): %w", err)
			}
			return nil, fmt.Errorf("discovery/kube: register metrics: %w", err)
		}
	}
	return m, nil
}
