package loadtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// SweepStep is one offered rate of a sweep.
type SweepStep struct {
	OfferedRate      float64 `json:"offered_rate"`
	AchievedRate     float64 `json:"achieved_rate"`
	ErrorRate        float64 `json:"error_rate"`
	Dropped          int64   `json:"dropped"`
	Late             int64   `json:"late"`
	LagP99Ms         float64 `json:"lag_p99_ms"`
	TTFTP50Ms        float64 `json:"ttft_p50_ms"`
	TTFTP99Ms        float64 `json:"ttft_p99_ms"`
	TPOTP50Ms        float64 `json:"tpot_p50_ms"`
	OutputTokensPerS float64 `json:"output_tokens_per_s"`
	GoodputRate      float64 `json:"goodput_rate,omitempty"`
	Saturated        bool    `json:"saturated"`
	Reason           string  `json:"reason,omitempty"`
}

// SweepResult lists the steps and the saturation point: the first offered rate the system
// could not sustain, and the highest one it could.
type SweepResult struct {
	Steps              []SweepStep `json:"steps"`
	SaturationRate     float64     `json:"saturation_rate,omitempty"`
	MaxSustainableRate float64     `json:"max_sustainable_rate"`
}

// ParseSweep reads "100,200,400" or "START:STOP:STEP" (e.g. 100:1000:100).
func ParseSweep(s string) ([]float64, error) {
	s = strings.TrimSpace(s)
	if parts := strings.Split(s, ":"); len(parts) == 3 {
		var v [3]float64
		for i, p := range parts {
			f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
			if err != nil || !(f > 0) {
				return nil, fmt.Errorf("sweep %q: want START:STOP:STEP with positive numbers", s)
			}
			v[i] = f
		}
		if v[1] < v[0] || (v[1]-v[0])/v[2] > 1000 {
			return nil, fmt.Errorf("sweep %q: STOP must be >= START and at most 1000 steps", s)
		}
		var out []float64
		for r := v[0]; r <= v[1]+1e-9; r += v[2] {
			out = append(out, r)
		}
		return out, nil
	}
	var out []float64
	for _, p := range strings.Split(s, ",") {
		f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || !(f > 0) {
			return nil, fmt.Errorf("sweep %q: want a list of positive rates", s)
		}
		out = append(out, f)
	}
	return out, nil
}

// saturated judges one step. A step is saturated when the system (or this client) could not
// keep up with the offered rate: over 1 % errors; over 1 % of starts dropped (in-flight bound
// reached); a backlog (the last completion came later than the schedule's end plus twice
// the median E2E plus 0.5 s, so requests queued); over 5 % of at least 10 starts late
// (the load generator itself lagged); or, with an SLO, under 90 % of requests within it.
func saturated(planned float64, s *Summary) (bool, string) {
	started := float64(max(1, s.Schedule.Started))
	backlog := s.DurationS - planned - 2*s.E2E.P50/1000
	switch {
	case s.ErrorRate > 0.01:
		return true, fmt.Sprintf("error rate %.2f%%", 100*s.ErrorRate)
	case float64(s.Schedule.Dropped) > 0.01*started:
		return true, fmt.Sprintf("%d dropped starts", s.Schedule.Dropped)
	case backlog > 0.5:
		return true, fmt.Sprintf("backlog: completions ran %.1fs past the schedule", backlog)
	case s.Schedule.Late >= 10 && float64(s.Schedule.Late) > 0.05*started:
		return true, fmt.Sprintf("%d late starts (load generator lagging)", s.Schedule.Late)
	case s.Goodput != nil && s.Goodput.Ratio < 0.9:
		return true, fmt.Sprintf("goodput %.1f%% of requests", 100*s.Goodput.Ratio)
	}
	return false, ""
}

// RunSweep runs cfg once per offered rate (open loop, cfg.Duration each (default 30s),
// stages and Requests ignored),
// stopping after the first saturated step. The returned summary is that of the highest
// sustainable step (the first step when none was), with Sweep filled in.
func RunSweep(ctx context.Context, cfg Config, rates []float64, log *slog.Logger) (*Summary, error) {
	if len(rates) == 0 {
		return nil, errors.New("sweep: no rates")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	res := &SweepResult{}
	var best, first *Summary
	for i, rate := range rates {
		if ctx.Err() != nil {
			break
		}
		c := cfg
		c.Rate, c.VUs, c.Stages, c.Requests = rate, 0, nil, 0
		if c.Duration <= 0 {
			c.Duration = 30 * time.Second
		}
		c.noCSVHeader = i > 0
		log.Info("sweep step", "rate", rate)
		s, err := Run(ctx, c, log)
		if err != nil {
			return nil, fmt.Errorf("sweep step %g req/s: %w", rate, err)
		}
		if first == nil {
			first = s
		}
		sat, why := saturated(c.Duration.Seconds(), s)
		step := SweepStep{OfferedRate: rate, AchievedRate: s.RequestRate, ErrorRate: s.ErrorRate,
			Dropped: s.Schedule.Dropped, Late: s.Schedule.Late, LagP99Ms: s.Schedule.Lag.P99,
			TTFTP50Ms: s.TTFT.P50, TTFTP99Ms: s.TTFT.P99, TPOTP50Ms: s.TPOT.P50,
			OutputTokensPerS: s.OutputTokensPerS, Saturated: sat, Reason: why}
		if s.Goodput != nil {
			step.GoodputRate = s.Goodput.Rate
		}
		res.Steps = append(res.Steps, step)
		if sat {
			res.SaturationRate = rate
			break
		}
		best = s
		res.MaxSustainableRate = rate
	}
	if best == nil {
		best = first
	}
	if best == nil {
		return nil, fmt.Errorf("sweep: cancelled before the first step: %w", ctx.Err())
	}
	best.Sweep = res
	return best, nil
}
