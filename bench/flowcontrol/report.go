package main

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

func sortedKeysInt(m map[string]int64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortedKeys(m map[string]float64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

type report struct {
	Command      string    `json:"command"`
	StartedAt    time.Time `json:"started_at"`
	WallS        float64   `json:"wall_s"`
	CPUs         int       `json:"cpus"`
	LoadavgStart string    `json:"loadavg_start"`
	LoadavgEnd   string    `json:"loadavg_end"`
	Plan         plan      `json:"plan"`
	Cells        []cell    `json:"cells"`
}

// markdown renders one table per scenario plus the gateway's flow-control accounting.
func (r report) markdown() string {
	var b strings.Builder
	p := r.Plan
	fc := p.FlowConfig.WithDefaults()
	fmt.Fprintf(&b, "# Flow-control benchmark\n\n`%s` — %s, %.0f s wall, %d CPUs, load average %s at the start and %s at the end "+
		"(the machine is shared: absolute latencies carry that noise; compare rows of one table).\n\n",
		r.Command, r.StartedAt.Format(time.RFC3339), r.WallS, r.CPUs, r.LoadavgStart, r.LoadavgEnd)
	fmt.Fprintf(&b, "%d simulated pods × %d sequences, time scale %g, prompts %d tokens (long: %d), outputs %d tokens; "+
		"fleet capacity %.1f req/s of the short shape, measured at the start (%.1f by the sims' cost model); poisson arrivals, seed %d in every cell, %s measured after %s warm-up (%s in the noisy scenario's B-alone, CPU-hog and flow-control-on cells); "+
		"goodput = served with TTFT ≤ %s. Flow control on: %s fairness, %s ordering, TTL %s, everything else the feature's default "+
		"(pods' batch sizes learned from their metrics, %s reservation of the %g quantile of a flow's need over %s windows).\n\n",
		p.Pods, p.MaxNumSeqs, p.TimeScale, p.ShortIn, p.LongIn, p.Output, p.Capacity, p.Nominal, p.Seed, p.Duration, p.Warmup, p.NoisyDuration, p.SLOTTFT,
		fc.Fairness, fc.Ordering, fc.RequestTTL, fc.Reservation, fc.DemandQuantile, fc.DemandWindow)
	scenario := ""
	for _, c := range r.Cells {
		if c.Scenario != scenario {
			scenario = c.Scenario
			fmt.Fprintf(&b, "\n## %s\n\n| cell | tenant | rate/s | offered | served | rejected | failed | cancelled | adds up | TTFT n | TTFT p50 ms | TTFT p90 ms [95 %% CI] | TTFT p99 ms | goodput/s | completions/s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n", title(scenario))
		}
		rows := c.Tenants
		if len(rows) > 1 {
			rows = append(rows, c.Sum)
		}
		for _, t := range rows {
			ttft := fmt.Sprintf("%d | %.0f | %s | %.0f", t.TTFTN, t.TTFTP50, p90WithCI(t), t.TTFTP99)
			if t.Name == "total" {
				ttft = "– | – | – | –" // percentiles do not add across tenants
			}
			fmt.Fprintf(&b, "| %s | %s | %.1f | %d | %d | %d | %d | %d | %s | %s | %.2f | %.2f |\n",
				c.Name, t.Name, t.Rate, t.Offered, t.Served, t.Rejected, t.Failed, t.Cancelled, yes(t.addsUp()),
				ttft, t.Goodput, t.Through)
		}
	}
	b.WriteString("\n## Failures by class\n\n| scenario | cell | tenant | errors |\n|---|---|---|---|\n")
	for _, c := range r.Cells {
		for _, t := range c.Tenants {
			if len(t.Errors) == 0 {
				continue
			}
			parts := make([]string, 0, len(t.Errors))
			for _, k := range sortedKeysInt(t.Errors) {
				parts = append(parts, fmt.Sprintf("%s %d", k, t.Errors[k]))
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", c.Scenario, c.Name, t.Name, strings.Join(parts, ", "))
		}
	}
	b.WriteString("\n## Where the time to first token goes inside the pods\n\n" +
		"From every sim's first-token traces (`/debug/engine`; warm-up included): time queued in the model server, time from admission " +
		"into the batch to the first token (the prefill, in steps shared with other requests' prefill chunks), and the share of requests " +
		"that arrived while another prompt was still prefilling on their pod (mean prompt tokens found ahead). The rest of the TTFT is the gateway's: " +
		"queued in flow control, the picker, Envoy.\n\n" +
		"| scenario | cell | tenant | traced | pod queue p50 ms | pod queue p90 ms | admission → first token p50 ms | p90 ms | arrived behind a prefill |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range r.Cells {
		for _, t := range c.Tenants {
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", c.Scenario, c.Name, t.Name, t.Pods)
		}
	}
	b.WriteString("\n## Where the time to first token goes at the gateway\n\n" +
		"Per tenant: its TTFT p90 as the load tester saw it; its flow's wait in the picker's flow-control queue (mean / the upper bound of the " +
		"histogram bucket holding the p90, from `infergw_flow_control_flow_dispatch_wait_seconds`); its time in the pods (above); and, per cell, " +
		"the mean time of the router's Pick, the CPU the load used (the bench process holds the load tester, the sims and the picker; Envoy is " +
		"its own process) and the load average at the end of the load. The rest of the TTFT is Envoy, the network stack and waiting for a CPU.\n\n" +
		"| scenario | cell | measured s | tenant | TTFT p90 ms | gateway queue wait mean / p90 ms | pod queue p90 ms | admission → first token p90 ms | pick mean µs | bench process cores | Envoy cores | load average at end |\n" +
		"|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range r.Cells {
		for _, t := range c.Tenants {
			podQ, podP := "–", "–"
			if t.Pods != nil {
				podQ, podP = fmt.Sprintf("%.0f", t.Pods.QueueP90), fmt.Sprintf("%.0f", t.Pods.PrefillP90)
			}
			fmt.Fprintf(&b, "| %s | %s | %.0f | %s | %.0f | %s | %s | %s | %.0f | %.2f | %.2f | %s |\n", c.Scenario, c.Name, c.Measured.Seconds(), t.Name,
				t.TTFTP90, t.GatewayWait, podQ, podP, c.PickUs, c.CPU.SelfCores, c.CPU.EnvoyCores, c.CPU.LoadavgEnd)
		}
	}
	b.WriteString("\n## The gateway's flow-control accounting (cells with flow control on)\n\n| scenario | cell | enqueued | dispatched | rejected | cancelled | queued at end | adds up | mean queue wait of dispatched requests, by priority | places held idle by the reservation (mean) |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range r.Cells {
		if g := c.Gateway; g != nil {
			waits := make([]string, 0, len(g.QueueWaitMs))
			for _, p := range sortedKeys(g.QueueWaitMs) {
				waits = append(waits, fmt.Sprintf("%s: %.0f ms", p, g.QueueWaitMs[p]))
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %d | %d | %s | %s | %.2f |\n", c.Scenario, c.Name, g.Enqueued, g.Dispatched,
				g.Rejected, g.Cancelled, g.Queued, yes(g.Balanced), strings.Join(waits, ", "), g.HeldPlaces)
		}
	}
	return b.String()
}

func title(s string) string {
	switch s {
	case "noisy":
		return "Noisy neighbour: A at 3× capacity with long prompts, B at 10 %"
	case "priority":
		return "Priority: critical at 30 % of capacity under a batch flood at 2×"
	case "late":
		return "Late binding: bursts at 1.5× capacity (3 s) between lulls at 0.5× (3 s)"
	}
	return s
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "**no**"
}

// p90WithCI is the TTFT p90 with its bootstrap interval when there is one.
func p90WithCI(t tenantResult) string {
	if t.TTFTP90CI == nil {
		return fmt.Sprintf("%.0f", t.TTFTP90)
	}
	return fmt.Sprintf("%.0f [%.0f–%.0f]", t.TTFTP90, t.TTFTP90CI.Lo, t.TTFTP90CI.Hi)
}
