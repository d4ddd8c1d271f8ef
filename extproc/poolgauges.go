package extproc

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/infergw/infergw/router"
)

// poolStatser is implemented by *router.Router; the pool gauges need it.
type poolStatser interface {
	PoolStats(pool string) router.PoolStats
}

// poolGauges computes the inference_pool_* gauges at scrape time from the router, so they
// cost nothing on the request path and are never stale.
type poolGauges struct {
	s        *Server
	stats    poolStatser
	kv       *prometheus.Desc
	queue    *prometheus.Desc
	ready    *prometheus.Desc
	inFlight *prometheus.Desc
}

func registerPoolGauges(reg prometheus.Registerer, s *Server) error {
	ps, ok := s.router.(poolStatser)
	if !ok {
		return nil // a router without stats: no pool gauges
	}
	g := &poolGauges{
		s:     s,
		stats: ps,
		kv: prometheus.NewDesc("inference_pool_average_kv_cache_utilization",
			"Average KV-cache utilization (0-1) of the pool's ready endpoints.", []string{"name"}, nil),
		queue: prometheus.NewDesc("inference_pool_average_queue_size",
			"Average number of requests waiting at the pool's ready endpoints.", []string{"name"}, nil),
		ready: prometheus.NewDesc("inference_pool_ready_pods",
			"Endpoints of the pool with fresh metrics.", []string{"name"}, nil),
		inFlight: prometheus.NewDesc("infergw_pool_inflight_requests",
			"Requests picked by this gateway for the pool and not yet complete.", []string{"name"}, nil),
	}
	if err := reg.Register(g); err != nil {
		return fmt.Errorf("register pool gauges: %w", err)
	}
	return nil
}

func (g *poolGauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- g.kv
	ch <- g.queue
	ch <- g.ready
	ch <- g.inFlight
}

func (g *poolGauges) Collect(ch chan<- prometheus.Metric) {
	for _, pool := range g.s.state.Load().pools {
		st := g.stats.PoolStats(pool)
		ch <- prometheus.MustNewConstMetric(g.kv, prometheus.GaugeValue, st.AvgKVCacheUsage, pool)
		ch <- prometheus.MustNewConstMetric(g.queue, prometheus.GaugeValue, st.AvgQueueDepth, pool)
		ch <- prometheus.MustNewConstMetric(g.ready, prometheus.GaugeValue, float64(st.Ready), pool)
		ch <- prometheus.MustNewConstMetric(g.inFlight, prometheus.GaugeValue, float64(st.InFlight), pool)
	}
}
