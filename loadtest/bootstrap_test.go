package loadtest

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestBootstrapCoversTruePercentiles draws many samples from a known distribution
// (exponential, mean 100 ms) and checks that the 95 % intervals cover the true
// percentiles in about 95 % of the samples (well above chance for a wrong method: an
// interval of zero width, or one around the wrong quantile, covers almost never).
func TestBootstrapCoversTruePercentiles(t *testing.T) {
	truth := map[string]float64{"p50": 69.3147, "p90": 230.2585} // -100·ln(1-q)
	rng := rand.New(rand.NewPCG(3, 4))
	const trials, n = 200, 400
	covered := map[string]int{}
	for tr := 0; tr < trials; tr++ {
		v := make([]float64, n)
		for i := range v {
			v[i] = 100 * rng.ExpFloat64()
		}
		ci := bootstrapCIs(v, uint64(tr))
		if ci.N != n || !(ci.P50.Lo <= ci.P50.Hi && ci.P90.Lo <= ci.P90.Hi && ci.P99.Lo <= ci.P99.Hi) {
			t.Fatalf("malformed intervals %+v", ci)
		}
		if ci.P50.Lo <= truth["p50"] && truth["p50"] <= ci.P50.Hi {
			covered["p50"]++
		}
		if ci.P90.Lo <= truth["p90"] && truth["p90"] <= ci.P90.Hi {
			covered["p90"]++
		}
	}
	for q, c := range covered {
		if rate := float64(c) / trials; rate < 0.88 || rate > 0.99 {
			t.Errorf("%s: the interval covered the true value in %.0f%% of trials, want about 95%%", q, 100*rate)
		}
	}
	if len(covered) != 2 {
		t.Errorf("coverage %v", covered)
	}
}

func TestBootstrapSmallAndDeterministic(t *testing.T) {
	if bootstrapCIs(make([]float64, 19), 1) != nil {
		t.Error("an interval from 19 values")
	}
	v := make([]float64, 100)
	for i := range v {
		v[i] = float64(i)
	}
	a, b := bootstrapCIs(v, 7), bootstrapCIs(slices.Clone(v), 7)
	if *a != *b {
		t.Errorf("same seed, different intervals: %+v %+v", a, b)
	}
	if a.P50.Lo > 49 || a.P50.Hi < 49 || a.P99.Hi > 99 {
		t.Errorf("intervals %+v around 0..99", a)
	}
}
