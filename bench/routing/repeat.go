package main

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/infergw/infergw/loadtest"
)

// One run of a cell says little about a tail near a fleet's capacity: whether a queue
// builds up inside a 20-30 s window moves p90 by 2× between identical runs. With --repeat
// every policy runs once per round (seed seed+round-1, the same for every policy of the
// round), and the report pools the rounds: the p90 of all their requests, and the ratio
// to the guess, each with a 95 % interval from a two-stage bootstrap (resample rounds,
// then requests within each), so that run-to-run swings widen the interval instead of
// hiding in one lucky or unlucky run.

// pooledResamples: 1,000 resamples put the 2.5 % and 97.5 % points at the 25th and 975th.
const pooledResamples = 1000

// maxRepeat bounds --repeat (each round is a full set of cells).
const maxRepeat = 50

// pooledFigure is one workload × policy over every round.
type pooledFigure struct {
	Workload string `json:"workload"`
	Policy   string `json:"policy"`
	// Baseline is the guess with the same picker layout ("default", "default-x2", …), the
	// denominator of the ratios ("" for the guess itself and policies without one).
	Baseline string `json:"baseline,omitempty"`
	Rounds   int    `json:"rounds"`
	Requests int    `json:"requests"`
	// P90PerRound and CachedPerRound are each round's own figures (the load tester's).
	P90PerRound    []float64 `json:"p90_ms_per_round"`
	CachedPerRound []float64 `json:"cached_ratio_per_round"`
	// PooledP90 is the nearest-rank p90 of every round's successful requests' TTFT.
	PooledP90 float64    `json:"pooled_p90_ms"`
	PooledCI  [2]float64 `json:"pooled_p90_ci95_ms"`
	// RatioPerRound is baseline p90 ÷ this p90, round by round; Ratio is the same of the
	// pooled p90s, with its interval (rounds resampled in pairs: a round is one seed).
	RatioPerRound []float64  `json:"ratio_per_round,omitempty"`
	Ratio         float64    `json:"ratio,omitempty"`
	RatioCI       [2]float64 `json:"ratio_ci95,omitempty"`
}

// baselineOf is the guess that policy is compared with: "default" with the same replicas
// and restart ("precise-x2-restart" → "default-x2-restart"), "" when there is none.
func baselineOf(policy string) string {
	ps, err := parsePolicy(policy)
	if err != nil || ps.Base == "default" {
		return ""
	}
	name := "default"
	if ps.Pickers > 0 {
		name += fmt.Sprintf("-x%d", ps.Pickers)
	}
	if ps.Restart {
		name += "-restart"
	}
	return name
}

// pooledFigures computes the pooled figures of every workload × policy present in every
// round; nil with one round.
func pooledFigures(r *report) []pooledFigure {
	n := r.rounds()
	if n < 2 {
		return nil
	}
	var out []pooledFigure
	for wi, wl := range r.workloads() {
		byPolicy := map[string][]*runResult{}
		for _, pol := range r.Plan.Policies {
			var cells []*runResult
			for round := 1; round <= n; round++ {
				if res := r.findRound(wl, pol, round); res != nil && len(res.ttft) > 0 {
					cells = append(cells, res)
				}
			}
			if len(cells) == n {
				byPolicy[pol] = cells
			}
		}
		for pi, pol := range r.Plan.Policies {
			cells := byPolicy[pol]
			if cells == nil {
				continue
			}
			f := pooledFigure{Workload: wl, Policy: pol, Rounds: n}
			rounds := make([][]float64, n)
			for i, res := range cells {
				rounds[i] = res.ttft
				f.Requests += len(res.ttft)
				f.P90PerRound = append(f.P90PerRound, res.Summary.TTFT.P90)
				f.CachedPerRound = append(f.CachedPerRound, res.Summary.CachedTokenRatio)
			}
			f.PooledP90 = p90(slices.Concat(rounds...))
			seed := uint64(wi)<<32 | uint64(pi)
			f.PooledCI = bootstrapP90(rounds, nil, seed)
			if base := baselineOf(pol); base != "" && byPolicy[base] != nil {
				f.Baseline = base
				baseRounds := make([][]float64, n)
				for i, res := range byPolicy[base] {
					baseRounds[i] = res.ttft
					if this := cells[i].Summary.TTFT.P90; this > 0 {
						f.RatioPerRound = append(f.RatioPerRound, res.Summary.TTFT.P90/this)
					}
				}
				if f.PooledP90 > 0 {
					f.Ratio = p90(slices.Concat(baseRounds...)) / f.PooledP90
				}
				f.RatioCI = bootstrapP90(rounds, baseRounds, seed)
			}
			out = append(out, f)
		}
	}
	return out
}

// p90 is the nearest-rank 90th percentile, as the load tester defines it (0 for no values).
// It sorts values.
func p90(values []float64) float64 {
	if len(values) == 0 {
		return 0
	}
	slices.Sort(values)
	return values[loadtest.NearestRank(0.9, len(values))-1]
}

// bootstrapP90 is the 95 % interval of the pooled p90 of rounds (base nil), or of
// p90(base) ÷ p90(rounds) with the two resampled in pairs of the same round: draw n rounds
// with replacement, then within each drawn round as many requests as it has, with
// replacement.
func bootstrapP90(rounds, base [][]float64, seed uint64) [2]float64 {
	rng := rand.New(rand.NewPCG(seed, 0x5eed9090))
	n := len(rounds)
	var a, b []float64
	est := make([]float64, 0, pooledResamples)
	pick := make([]int, n)
	for range pooledResamples {
		for i := range pick {
			pick[i] = rng.IntN(n)
		}
		a = resampleRounds(a[:0], rounds, pick, rng)
		pa := p90(a)
		if base == nil {
			est = append(est, pa)
			continue
		}
		b = resampleRounds(b[:0], base, pick, rng)
		if pa > 0 {
			est = append(est, p90(b)/pa)
		}
	}
	if len(est) == 0 {
		return [2]float64{}
	}
	slices.Sort(est)
	return [2]float64{est[int(0.025*float64(len(est)))], est[min(len(est)-1, int(0.975*float64(len(est))))]}
}

// resampleRounds appends, for each picked round, as many of its values drawn with
// replacement as it holds.
func resampleRounds(dst []float64, rounds [][]float64, pick []int, rng *rand.Rand) []float64 {
	for _, ri := range pick {
		vs := rounds[ri]
		for range vs {
			dst = append(dst, vs[rng.IntN(len(vs))])
		}
	}
	return dst
}

// writeRepeatSection writes the pooled figures (with --repeat).
func writeRepeatSection(b *strings.Builder, r *report) {
	if len(r.Pooled) == 0 {
		return
	}
	n := r.rounds()
	fmt.Fprintf(b, "\n## Pooled over %d rounds\n\nEvery policy ran once per round, interleaved; round k sent the request "+
		"sequence of seed %d+k−1 to every policy. Pooled p90: the p90 TTFT of every round's successful requests together. "+
		"Intervals: 95 %%, two-stage bootstrap (%d resamples of the rounds with replacement, then of the requests within "+
		"each), so run-to-run swings widen them; ratios resample the two policies' rounds in pairs. Guess ÷ this: the "+
		"p90 of the guess with the same picker layout (`default`, `default-x2`, …) over this policy's; above 1 is better "+
		"than the guess.\n\n", n, r.Plan.Seed, pooledResamples)
	b.WriteString("| workload | policy | requests | p90 ms per round | pooled p90 ms [95 % CI] | cached ratio per round | guess ÷ this per round | guess ÷ this pooled [95 % CI] |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, f := range r.Pooled {
		ratio, perRound := "—", "—"
		if f.Baseline != "" {
			ratio = fmt.Sprintf("%.2f× [%.2f–%.2f] (vs %s)", f.Ratio, f.RatioCI[0], f.RatioCI[1], f.Baseline)
			perRound = joinFloats(f.RatioPerRound, "%.2f×")
		}
		fmt.Fprintf(b, "| %s | %s | %d | %s | %s [%s–%s] | %s | %s | %s |\n", f.Workload, f.Policy, f.Requests,
			joinFloats(f.P90PerRound, "%.0f"), ms(f.PooledP90), ms(f.PooledCI[0]), ms(f.PooledCI[1]),
			joinFloats(f.CachedPerRound, "%.3f"), perRound, ratio)
	}
}

func joinFloats(vs []float64, format string) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = fmt.Sprintf(format, v)
	}
	return strings.Join(parts, ", ")
}
