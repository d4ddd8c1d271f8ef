package e2e

import (
	"testing"

	"github.com/infergw/infergw/router"
	"github.com/infergw/infergw/sim"
	"github.com/infergw/infergw/stack"
)

// TestRetryBudgetHoldsUnderFleetWideFailure: every pod resets every connection. Each
// request may be retried twice (NumRetries 2) on the picker's fallbacks, three tries per
// request. The pool cluster's retry budget (20 % of active requests, at least 3 retries in
// flight) must hold the retries to about a fifth of the traffic: Envoy refuses the rest
// (upstream_rq_retry_overflow) and the pods see at most ~1.2 tries per request (1.35 with
// slack for the minimum of 3). With a budget of 100 % the same load is retried
// more, so the test tells the budget's effect apart from Envoy's default limit of 3 retries
// in flight, which the budget replaces.
func TestRetryBudgetHoldsUnderFleetWideFailure(t *testing.T) {
	const workers, total = 24, 240
	triesAt := map[float64]uint64{}
	for _, tc := range []struct {
		name   string
		budget float64
	}{{"budget 20%", 20}, {"budget 100%", 100}} {
		t.Run(tc.name, func(t *testing.T) {
			// Ejection off: this is about Envoy's retries, not about the picker avoiding pods.
			f := startFaultFleetWith(t, 4, func(c *stack.Config) {
				c.Router.Outlier = router.DefaultOutlierConfig()
				c.Router.Outlier.Disabled = true
				c.Translate.RetryBudgetPercent = tc.budget
			})
			for _, s := range f.sims {
				if err := s.SetFaults(sim.Faults{ResetRate: 1}); err != nil {
					t.Fatal(err)
				}
			}
			before := f.received()
			statuses := f.load(workers, total)
			tries := sum(minus(f.received(), before))
			overflow := int64(0)
			for name, n := range f.gw.envoyCounters(t, "upstream_rq_retry_overflow") {
				if len(name) > 5 && name[:5] == "clust" {
					overflow += n
				}
			}
			t.Logf("%d requests: statuses %v, %d tries at the pods, %d retries refused by the budget", total, statuses, tries, overflow)
			if statuses[200] != 0 {
				t.Fatalf("statuses %v: every pod resets, nothing can succeed", statuses)
			}
			limit := uint64(total * 135 / 100)
			switch {
			case tc.budget == 20 && (overflow == 0 || tries > limit):
				t.Errorf("budget 20%%: %d retries refused and %d tries for %d requests; want refusals and at most %d tries", overflow, tries, total, limit)
			case tc.budget == 100 && tries <= triesAt[20]:
				t.Errorf("budget 100%%: %d tries, no more than the %d with a 20%% budget: the budget is not what limits retries", tries, triesAt[20])
			}
			triesAt[tc.budget] = tries
		})
	}
}
