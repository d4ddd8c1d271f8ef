package main

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/infergw/infergw/loadtest"
)

func TestBaselineOf(t *testing.T) {
	for policy, want := range map[string]string{
		"precise": "default", "oracle": "default", "precise-shadow": "default", "default": "",
		"precise-x2": "default-x2", "precise-x2-restart": "default-x2-restart", "round-robin": "default",
	} {
		if got := baselineOf(policy); got != want {
			t.Errorf("baselineOf(%q) = %q, want %q", policy, got, want)
		}
	}
}

// cellOf is a cell whose TTFTs are n draws around median ms (log-normal, so p90 ≈ 1.9×
// the median).
func cellOf(policy string, round int, median float64, n int, rng *rand.Rand) *runResult {
	res := &runResult{Workload: "w", Policy: policy, Round: round, Summary: &loadtest.Summary{}}
	for range n {
		res.ttft = append(res.ttft, median*math.Exp(0.5*rng.NormFloat64()))
	}
	res.Summary.TTFT.P90 = p90(append([]float64(nil), res.ttft...))
	return res
}

// TestPooledRatio: rounds where the guess is 3× slower give a pooled ratio near 3 whose
// interval holds 3; one round where both are equal pulls the ratio down and widens the
// interval (the point of resampling rounds, not only requests).
func TestPooledRatio(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	build := func(guess []float64) *report {
		r := &report{Plan: plan{Policies: []string{"default", "precise"}, Repeat: len(guess)}}
		for i, g := range guess {
			r.Results = append(r.Results, cellOf("default", i+1, g, 600, rng), cellOf("precise", i+1, 100, 600, rng))
		}
		r.Pooled = pooledFigures(r)
		return r
	}
	steady := build([]float64{300, 300, 300, 300})
	if len(steady.Pooled) != 2 || steady.Pooled[1].Policy != "precise" || steady.Pooled[1].Baseline != "default" {
		t.Fatalf("pooled figures %+v", steady.Pooled)
	}
	f := steady.Pooled[1]
	if f.Ratio < 2.7 || f.Ratio > 3.3 || f.RatioCI[0] > 3 || f.RatioCI[1] < 3 {
		t.Errorf("steady 3× rounds: ratio %.2f [%.2f–%.2f], want ≈3 with 3 inside", f.Ratio, f.RatioCI[0], f.RatioCI[1])
	}
	if f.Requests != 2400 || len(f.RatioPerRound) != 4 || f.PooledCI[0] > f.PooledP90 || f.PooledCI[1] < f.PooledP90 {
		t.Errorf("steady: %+v", f)
	}
	if steady.Pooled[0].Baseline != "" || steady.Pooled[0].Ratio != 0 {
		t.Errorf("the guess has no baseline of its own: %+v", steady.Pooled[0])
	}
	swinging := build([]float64{300, 300, 300, 100})
	g := swinging.Pooled[1]
	if g.RatioCI[0] >= f.RatioCI[0] || g.RatioCI[1]-g.RatioCI[0] <= f.RatioCI[1]-f.RatioCI[0] {
		t.Errorf("a round without a gain should lower and widen the interval: steady [%.2f–%.2f], swinging [%.2f–%.2f]",
			f.RatioCI[0], f.RatioCI[1], g.RatioCI[0], g.RatioCI[1])
	}
	var b strings.Builder
	writeRepeatSection(&b, swinging)
	for _, want := range []string{"Pooled over 4 rounds", "| w | precise | 2400 |", "(vs default)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("section lacks %q:\n%s", want, b.String())
		}
	}
}

func TestPooledNeedsEveryRound(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	r := &report{Plan: plan{Policies: []string{"default", "precise"}, Repeat: 2}}
	r.Results = append(r.Results, cellOf("default", 1, 300, 100, rng), cellOf("precise", 1, 100, 100, rng), cellOf("default", 2, 300, 100, rng))
	got := pooledFigures(r)
	if len(got) != 1 || got[0].Policy != "default" {
		t.Errorf("a policy missing a round must not be pooled: %+v", got)
	}
	r.Plan.Repeat = 1
	if pooledFigures(r) != nil {
		t.Error("one round: no pooled figures")
	}
}
