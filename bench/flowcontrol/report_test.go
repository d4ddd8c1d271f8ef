package main

import (
	"strings"
	"testing"
	"time"
)

// The report marks a cell whose counts do not add up, shows every tenant and the gateway's
// accounting, and keeps percentiles off the total row.
func TestReportMarkdown(t *testing.T) {
	p := newPlan(10*time.Second, 2*time.Second, 1)
	good := tenantResult{Name: "B", Rate: 1, Offered: 10, Served: 7, Rejected: 2, Cancelled: 1, TTFTP90: 42}
	bad := tenantResult{Name: "A", Rate: 3, Offered: 10, Served: 7, Rejected: 2, TTFTP90: 420}
	c := cell{Scenario: "noisy", Name: "A+B, on", Flow: true, Tenants: []tenantResult{bad, good},
		Gateway: &gatewayCounts{Enqueued: 20, Dispatched: 14, Rejected: 4, Cancelled: 2, Balanced: true, QueueWaitMs: map[string]float64{"0": 12}}}
	c.Sum = total(c.Tenants)
	md := report{Plan: p, Cells: []cell{c}}.markdown()
	for _, want := range []string{
		"| A+B, on | B | 1.0 | 10 | 7 | 2 | 0 | 1 | yes |",
		"| A+B, on | A | 3.0 | 10 | 7 | 2 | 0 | 0 | **no** |",
		"| A+B, on | total | 4.0 | 20 | 14 | 4 | 0 | 1 | **no** | – | – | – |",
		"| noisy | A+B, on | 20 | 14 | 4 | 2 | 0 | yes | 0: 12 ms |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if !good.addsUp() || bad.addsUp() {
		t.Fatal("addsUp is wrong")
	}
}

// The nominal capacity follows the sim's cost model: 8 pods × 2 sequences over one
// request's modelled service time.
func TestPlanNominalCapacity(t *testing.T) {
	p := newPlan(time.Second, 0, 1)
	// 192 decode steps of 5 ms + 2 × 0.1 ms, plus 64 prompt tokens at 60 µs: 1.0022 s.
	if p.Nominal < 15.9 || p.Nominal > 16.1 {
		t.Fatalf("nominal capacity %.3f req/s, want ~15.97", p.Nominal)
	}
}
