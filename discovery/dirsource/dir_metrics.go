package dirsource

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// dirMetrics are the manifest-directory source's metrics, registered on the Registerer
// passed in DirOptions (or on nothing).
type dirMetrics struct {
	reloadErrors prometheus.Counter
	reloads      *prometheus.CounterVec
	goodVersion  prometheus.Gauge
	lastSuccess  prometheus.Gauge
}

func newDirMetrics(reg prometheus.Registerer) (*dirMetrics, error) {
	m := &dirMetrics{
		reloadErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "infergw_discovery_reload_errors_total",
			Help: "Manifest-directory reloads rejected because a file or object was invalid; the last good snapshot kept serving.",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "infergw_discovery_reloads_total",
			Help: "Manifest-directory reloads by result: published, unchanged (same files) or error.",
		}, []string{"result"}),
		goodVersion: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "infergw_discovery_last_good_version",
			Help: "Version of the last snapshot the manifest-directory source published.",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "infergw_discovery_last_success_timestamp_seconds",
			Help: "Unix time of the last successful manifest-directory reload (published or unchanged).",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.reloadErrors, m.reloads, m.goodVersion, m.lastSuccess} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("discovery/dir: register metrics (one DirSource per registry): %w", err)
		}
	}
	return m, nil
}
