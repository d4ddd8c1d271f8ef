package kvroute

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/infergw/infergw/router"
)

// shadow compares, at every pick the Source answers from events, its answer with the
// Oracle's (the sims' own cache and admitted requests). Benchmark only: it finds where the
// events' view of a pod departs from the pod's, and why (a speculative block the pod does
// not hold, a stored block the pod has evicted, a block the index misses), without
// changing the routing: the pick still uses the events' answer.
type shadow struct {
	oracle *Oracle
	hosts  *prometheus.CounterVec // per candidate: agree, over_spec, over_stored, under
	picks  *prometheus.CounterVec // per pick: same_best, other_best
}

func newShadow(o *Oracle, reg prometheus.Registerer) (*shadow, error) {
	sh := &shadow{oracle: o,
		hosts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "infergw_precise_prefix_shadow_hosts_total",
			Help: "Benchmark only (--kv-oracle-port with KV events): candidates whose events' match agreed with the pod's own answer, " +
				"claimed more through speculation (over_spec) or through stored blocks the pod no longer holds (over_stored), or less (under).",
		}, []string{"verdict"}),
		picks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "infergw_precise_prefix_shadow_picks_total",
			Help: "Benchmark only: picks where the candidates holding the most of the prompt by events were among those by the pods' own answer (same_best) or not (other_best).",
		}, []string{"verdict"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{sh.hosts, sh.picks} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return sh, nil
}

// compare asks the oracle about the same hosts and counts the differences. stored is the
// events' match without speculation.
func (sh *shadow) compare(req *router.Request, adapter bool, hosts []string, hit, stored, total []int, exact []router.PrefixExactness) {
	n := len(hosts)
	ohit, ototal, oexact := make([]int, n), make([]int, n), make([]router.PrefixExactness, n)
	sh.oracle.MatchPrefix(req, adapter, hosts, ohit, ototal, oexact)
	bestE, bestO := -1, -1
	for i := range n {
		if exact[i] == router.PrefixUnknown || oexact[i] == router.PrefixUnknown {
			continue
		}
		bestE, bestO = max(bestE, hit[i]), max(bestO, ohit[i])
		switch {
		case hit[i] == ohit[i]:
			sh.hosts.WithLabelValues("agree").Inc()
		case hit[i] > ohit[i] && stored[i] > ohit[i]:
			sh.hosts.WithLabelValues("over_stored").Inc()
		case hit[i] > ohit[i]:
			sh.hosts.WithLabelValues("over_spec").Inc()
		default:
			sh.hosts.WithLabelValues("under").Inc()
		}
	}
	if bestE < 0 {
		return
	}
	for i := range n {
		if exact[i] != router.PrefixUnknown && oexact[i] != router.PrefixUnknown && hit[i] == bestE && ohit[i] == bestO {
			sh.picks.WithLabelValues("same_best").Inc()
			return
		}
	}
	sh.picks.WithLabelValues("other_best").Inc()
}
