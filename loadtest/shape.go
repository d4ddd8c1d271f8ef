package loadtest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// Stage ramps the load level (VUs in closed loop, requests/s in open loop) linearly from the
// previous level to Target over Duration, like k6 stages.
type Stage struct {
	Duration time.Duration `json:"duration"`
	Target   float64       `json:"target"`
}

// ParseStage reads "30s:10".
func ParseStage(s string) (Stage, error) {
	d, t, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return Stage{}, fmt.Errorf("stage %q: want DURATION:TARGET, e.g. 30s:10", s)
	}
	dur, err := time.ParseDuration(d)
	if err != nil || dur <= 0 {
		return Stage{}, fmt.Errorf("stage %q: bad duration", s)
	}
	tgt, err := strconv.ParseFloat(t, 64)
	if err != nil || tgt < 0 || math.IsInf(tgt, 0) || math.IsNaN(tgt) {
		return Stage{}, fmt.Errorf("stage %q: target must be a number >= 0", s)
	}
	return Stage{Duration: dur, Target: tgt}, nil
}

// levelProfile is the load level as a function of time since the start of the measured
// period: piecewise linear through the stages, starting at start; constant start without
// stages. During warm-up (negative time) the level is the starting level.
type levelProfile struct {
	start  float64
	stages []Stage
}

func (p levelProfile) at(t time.Duration) float64 {
	level := p.start
	if t < 0 {
		return level
	}
	for _, s := range p.stages {
		if t < s.Duration {
			return level + (s.Target-level)*float64(t)/float64(s.Duration)
		}
		t -= s.Duration
		level = s.Target
	}
	return level
}

func (p levelProfile) total() time.Duration {
	var d time.Duration
	for _, s := range p.stages {
		d += s.Duration
	}
	return d
}

// schedule yields the open-loop start offsets (since the run start) in order; false at the end.
type schedule interface {
	next() (offset time.Duration, ok bool)
}

// arrivals generates an open-loop schedule for a time-varying rate by time rescaling: the
// i-th arrival is where the integrated rate Λ(t) = ∫ rate reaches the running sum of unit
// increments, each exactly 1 ("constant"), exponential ("poisson") or gamma with shape k and
// mean 1 ("gamma"; coefficient of variation 1/√k, k < 1 is burstier than Poisson). With a
// constant rate the gaps are therefore 1/rate, Exp(rate) or Gamma(k, 1/(k·rate)), and a ramp
// from zero starts gently instead of jumping a whole 1/rate(0+) gap ahead.
type arrivals struct {
	kind  string
	shape float64
	rng   *rand.Rand
	segs  []rateSegment
	seg   int     // current segment
	used  float64 // Λ already consumed inside the current segment
	begun bool
}

// rateSegment: the rate goes linearly from r0 to r1 (per second) over dur seconds, starting
// at offset start (seconds since the run start). The last segment may be infinitely long.
type rateSegment struct {
	start, dur, r0, r1 float64
}

func newArrivals(kind string, shape float64, rng *rand.Rand, p levelProfile, warmup time.Duration) *arrivals {
	a := &arrivals{kind: kind, shape: shape, rng: rng}
	t := 0.0
	if warmup > 0 {
		a.segs = append(a.segs, rateSegment{start: 0, dur: warmup.Seconds(), r0: p.start, r1: p.start})
		t = warmup.Seconds()
	}
	level := p.start
	for _, st := range p.stages {
		a.segs = append(a.segs, rateSegment{start: t, dur: st.Duration.Seconds(), r0: level, r1: st.Target})
		t += st.Duration.Seconds()
		level = st.Target
	}
	a.segs = append(a.segs, rateSegment{start: t, dur: math.Inf(1), r0: level, r1: level})
	return a
}

func (a *arrivals) increment() float64 {
	switch a.kind {
	case "poisson":
		return a.rng.ExpFloat64()
	case "gamma":
		return gammaSample(a.rng, a.shape) / a.shape
	default:
		return 1
	}
}

// next returns the offset from the run start of the next arrival; ok is false when the rate
// stays zero for ever.
func (a *arrivals) next() (offset time.Duration, ok bool) {
	need := a.increment()
	if !a.begun && a.kind == "constant" && a.segs[0].r0 > 0 {
		need = 0 // like k6's constant-arrival-rate, the first request starts at once
	}
	a.begun = true
	for a.seg < len(a.segs) {
		s := a.segs[a.seg]
		area := math.Inf(1)
		if !math.IsInf(s.dur, 1) {
			area = (s.r0 + s.r1) / 2 * s.dur
		} else if s.r0 <= 0 {
			return 0, false
		}
		if a.used+need <= area {
			a.used += need
			tau := solveRamp(s, a.used)
			return time.Duration((s.start + tau) * float64(time.Second)), true
		}
		need -= area - a.used
		a.seg++
		a.used = 0
	}
	return 0, false
}

// solveRamp returns τ in [0, dur] with ∫₀^τ rate = L, for rate r0 + (r1−r0)·τ/dur.
func solveRamp(s rateSegment, l float64) float64 {
	if math.IsInf(s.dur, 1) || s.r1 == s.r0 {
		return l / s.r0
	}
	a := (s.r1 - s.r0) / (2 * s.dur)
	disc := s.r0*s.r0 + 4*a*l
	if disc < 0 {
		disc = 0
	}
	// 2L / (r0 + √disc) is the root of aτ² + r0τ − L = 0 that stays accurate for a → 0.
	den := s.r0 + math.Sqrt(disc)
	if den <= 0 {
		return s.dur
	}
	return math.Min(2*l/den, s.dur)
}

// gammaSample draws Gamma(k, 1) by Marsaglia and Tsang's method (k < 1 via the k+1 boost).
func gammaSample(rng *rand.Rand, k float64) float64 {
	if k < 1 {
		u := rng.Float64()
		return gammaSample(rng, k+1) * math.Pow(u, 1/k)
	}
	d := k - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := rng.NormFloat64()
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := rng.Float64()
		if u < 1-0.0331*x*x*x*x || math.Log(u) < 0.5*x*x+d*(1-v+math.Log(v)) {
			return d * v
		}
	}
}
