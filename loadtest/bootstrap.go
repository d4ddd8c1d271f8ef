package loadtest

import (
	"math/rand/v2"
	"slices"
)

// CI is a 95 % confidence interval.
type CI struct {
	Lo float64 `json:"lo"`
	Hi float64 `json:"hi"`
}

// overlaps reports whether two intervals share a point.
func (c CI) overlaps(o CI) bool { return c.Lo <= o.Hi && o.Lo <= c.Hi }

// PercentileCIs are bootstrap 95 % confidence intervals of the headline percentiles, in ms.
type PercentileCIs struct {
	P50 CI `json:"p50"`
	P90 CI `json:"p90"`
	P99 CI `json:"p99"`
	// N is the number of samples the intervals come from (the report's bounded reservoir).
	N int `json:"n"`
}

// bootstrapResamples is the number of resamples; 200 puts the 2.5 % and 97.5 % points of
// each percentile's distribution at the 5th and 195th values.
const bootstrapResamples = 200

// bootstrapCIs estimates 95 % intervals of p50, p90 and p99 by the percentile bootstrap:
// resample the values with replacement, take each resample's percentiles, and report the
// 2.5 % and 97.5 % points of those. A resample is drawn as counts over the sorted values,
// so each costs O(n) without a sort. Nil below 20 values: too few for an interval.
func bootstrapCIs(values []float64, seed uint64) *PercentileCIs {
	n := len(values)
	if n < 20 {
		return nil
	}
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	rng := rand.New(rand.NewPCG(seed, 0xb00757a9))
	counts := make([]int32, n)
	qs := []float64{0.50, 0.90, 0.99}
	est := make([][]float64, len(qs))
	for r := 0; r < bootstrapResamples; r++ {
		clear(counts)
		for i := 0; i < n; i++ {
			counts[rng.IntN(n)]++
		}
		// Walk the cumulative counts once, taking each quantile where it is reached
		// (the nearest-rank definition: the value at rank ceil(q·n)).
		qi, cum := 0, 0
		for i := 0; i < n && qi < len(qs); i++ {
			cum += int(counts[i])
			for qi < len(qs) && cum >= NearestRank(qs[qi], n) {
				est[qi] = append(est[qi], sorted[i])
				qi++
			}
		}
	}
	ci := func(v []float64) CI {
		slices.Sort(v)
		return CI{Lo: v[int(0.025*float64(len(v)))], Hi: v[min(len(v)-1, int(0.975*float64(len(v))))]}
	}
	return &PercentileCIs{P50: ci(est[0]), P90: ci(est[1]), P99: ci(est[2]), N: n}
}

// NearestRank is the 1-based nearest rank of quantile q among n values, ceil(q·n) within
// [1, n]: the percentile definition of the load tester's reports.
func NearestRank(q float64, n int) int {
	r := int(q*float64(n) + 0.999999999)
	return max(1, min(n, r))
}
