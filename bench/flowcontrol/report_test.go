package main

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/infergw/infergw/loadtest"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// The report marks a cell whose counts do not add up, shows every tenant and the gateway's
// accounting, and keeps percentiles off the total row.
func TestReportMarkdown(t *testing.T) {
	p := newPlan(10*time.Second, 2*time.Second, 1)
	good := tenantResult{Name: "B", Rate: 1, Offered: 10, Served: 7, Rejected: 2, Cancelled: 1, TTFTN: 7, TTFTP90: 42,
		TTFTP90CI: &loadtest.CI{Lo: 30, Hi: 61}, GatewayWait: &waitStats{N: 7, MeanMs: 1.25, P90LeMs: 2.5}}
	bad := tenantResult{Name: "A", Rate: 3, Offered: 10, Served: 7, Rejected: 2, TTFTN: 7, TTFTP90: 420}
	c := cell{Scenario: "noisy", Name: "A+B, on", Flow: true, Tenants: []tenantResult{bad, good}, Measured: 90 * time.Second,
		CPU: cpuUse{SelfCores: 0.5, EnvoyCores: 0.25, LoadavgEnd: "1.00 2.00 3.00"}, PickUs: 42,
		Gateway: &gatewayCounts{Enqueued: 20, Dispatched: 14, Rejected: 4, Cancelled: 2, Balanced: true, QueueWaitMs: map[string]float64{"0": 12}, HeldPlaces: 2.5}}
	c.Sum = total(c.Tenants)
	md := report{Plan: p, Cells: []cell{c}}.markdown()
	for _, want := range []string{
		"| A+B, on | B | 1.0 | 10 | 7 | 2 | 0 | 1 | yes | 7 | 0 | 42 [30–61] | 0 |",
		"| A+B, on | A | 3.0 | 10 | 7 | 2 | 0 | 0 | **no** | 7 | 0 | 420 | 0 |",
		"| A+B, on | total | 4.0 | 20 | 14 | 4 | 0 | 1 | **no** | – | – | – | – |",
		"| noisy | A+B, on | 90 | B | 42 | 1.2 / ≤ 2.5 | – | – | 42 | 0.50 | 0.25 | 1.00 2.00 3.00 |",
		"| noisy | A+B, on | 90 | A | 420 | – |",
		"| noisy | A+B, on | 20 | 14 | 4 | 2 | 0 | yes | 0: 12 ms | 2.50 |",
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

// The p90 of a histogram is reported as the upper bound of the bucket where the cumulative
// count reaches 90 %; past the last bucket it is +Inf, and an empty histogram has none.
func TestStatsOfHistogram(t *testing.T) {
	h := &dto.Histogram{SampleCount: proto.Uint64(10), SampleSum: proto.Float64(0.05), Bucket: []*dto.Bucket{
		{UpperBound: proto.Float64(0.001), CumulativeCount: proto.Uint64(5)},
		{UpperBound: proto.Float64(0.005), CumulativeCount: proto.Uint64(8)},
		{UpperBound: proto.Float64(0.01), CumulativeCount: proto.Uint64(9)},
		{UpperBound: proto.Float64(0.1), CumulativeCount: proto.Uint64(9)},
	}}
	w := statsOf(h)
	if w.N != 10 || w.MeanMs != 5 || w.P90LeMs != 10 {
		t.Fatalf("stats %+v, want n 10, mean 5 ms, p90 ≤ 10 ms", *w)
	}
	h.Bucket[2].CumulativeCount = proto.Uint64(8)
	h.Bucket[3].CumulativeCount = proto.Uint64(8)
	if w := statsOf(h); !math.IsInf(w.P90LeMs, 1) {
		t.Fatalf("p90 past the last bucket: %v, want +Inf", w.P90LeMs)
	}
	if w := statsOf(&dto.Histogram{}); w.N != 0 || w.String() != "–" {
		t.Fatalf("empty histogram: %+v %q", *w, w.String())
	}
}
