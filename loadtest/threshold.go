package loadtest

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Threshold is a pass/fail criterion on a summary metric, e.g. `ttft_p95<500ms`.
type Threshold struct {
	Expr   string  `json:"expr"`
	Metric string  `json:"metric"`
	Op     string  `json:"op"`
	Value  float64 `json:"value"` // durations in ms
}

// ThresholdResult is a Threshold with the measured value.
type ThresholdResult struct {
	Threshold
	Actual float64 `json:"actual"`
	Passed bool    `json:"passed"`
}

// Latency measures usable in thresholds as NAME_STAT (e.g. ttft_p95, e2e_avg, lag_p99).
var latencyMeasures = map[string]func(*Summary) Latency{
	"ttft": func(s *Summary) Latency { return s.TTFT }, "ttfb": func(s *Summary) Latency { return s.TTFB },
	"itl": func(s *Summary) Latency { return s.ITL }, "inter_chunk": func(s *Summary) Latency { return s.InterChunk },
	"tpot": func(s *Summary) Latency { return s.TPOT }, "e2e": func(s *Summary) Latency { return s.E2E },
	"lag": func(s *Summary) Latency { return s.Schedule.Lag },
}

var latencyStats = map[string]func(Latency) float64{
	"avg": func(l Latency) float64 { return l.Avg }, "min": func(l Latency) float64 { return l.Min },
	"max": func(l Latency) float64 { return l.Max }, "p50": func(l Latency) float64 { return l.P50 },
	"med": func(l Latency) float64 { return l.P50 }, "p90": func(l Latency) float64 { return l.P90 },
	"p95": func(l Latency) float64 { return l.P95 }, "p99": func(l Latency) float64 { return l.P99 },
	"p99.9": func(l Latency) float64 { return l.P999 }, "p999": func(l Latency) float64 { return l.P999 },
}

// Plain (unit-less) metrics.
var scalarMetrics = map[string]func(*Summary) float64{
	"error_rate":          func(s *Summary) float64 { return s.ErrorRate },
	"request_rate":        func(s *Summary) float64 { return s.RequestRate },
	"completion_rate":     func(s *Summary) float64 { return s.CompletionRate },
	"output_tokens_per_s": func(s *Summary) float64 { return s.OutputTokensPerS },
	"cached_token_ratio":  func(s *Summary) float64 { return s.CachedTokenRatio },
	"requests":            func(s *Summary) float64 { return float64(s.Requests) },
	"failed":              func(s *Summary) float64 { return float64(s.Failed) },
	"dropped":             func(s *Summary) float64 { return float64(s.Schedule.Dropped) },
	"late":                func(s *Summary) float64 { return float64(s.Schedule.Late) },
	"goodput_rate": func(s *Summary) float64 {
		if s.Goodput == nil {
			return 0
		}
		return s.Goodput.Rate
	},
	"goodput_ratio": func(s *Summary) float64 {
		if s.Goodput == nil {
			return 0
		}
		return s.Goodput.Ratio
	},
}

// metricValue looks a metric up; isDuration tells whether it is in ms.
func metricValue(s *Summary, name string) (v float64, isDuration, ok bool) {
	if f, ok := scalarMetrics[name]; ok {
		if s == nil {
			return 0, false, true
		}
		return f(s), false, true
	}
	i := strings.LastIndexByte(name, '_')
	if i <= 0 {
		return 0, false, false
	}
	m, okm := latencyMeasures[name[:i]]
	st, oks := latencyStats[name[i+1:]]
	if !okm || !oks {
		return 0, false, false
	}
	if s == nil {
		return 0, true, true
	}
	return st(m(s)), true, true
}

var thresholdOps = []string{"<=", ">=", "==", "!=", "<", ">"} // two-char operators first

// ParseThreshold reads `METRIC OP VALUE[UNIT]`: OP is <, <=, >, >=, ==, !=; a duration
// metric takes a unit (us, µs, ms, s, m; ms when omitted), others a plain number.
func ParseThreshold(expr string) (Threshold, error) {
	e := strings.TrimSpace(expr)
	for _, op := range thresholdOps {
		i := strings.Index(e, op)
		if i < 0 {
			continue
		}
		name := strings.TrimSpace(e[:i])
		valStr := strings.TrimSpace(e[i+len(op):])
		_, isDur, ok := metricValue(nil, name)
		if !ok {
			return Threshold{}, fmt.Errorf("threshold %q: unknown metric %q (e.g. ttft_p95, tpot_p99, error_rate, request_rate)", expr, name)
		}
		v, err := parseThresholdValue(valStr, isDur)
		if err != nil {
			return Threshold{}, fmt.Errorf("threshold %q: %w", expr, err)
		}
		return Threshold{Expr: e, Metric: name, Op: op, Value: v}, nil
	}
	return Threshold{}, fmt.Errorf("threshold %q: want METRIC<VALUE, e.g. ttft_p95<500ms", expr)
}

func parseThresholdValue(s string, isDur bool) (float64, error) {
	num, scale := s, 1.0
	if isDur {
		for _, u := range []struct {
			suffix string
			ms     float64
		}{{"us", 0.001}, {"µs", 0.001}, {"ms", 1}, {"s", 1000}, {"m", 60000}} {
			if strings.HasSuffix(s, u.suffix) {
				num, scale = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.ms
				break
			}
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("bad value %q", s)
	}
	return v * scale, nil
}

// Check evaluates the threshold on s.
func (t Threshold) Check(s *Summary) ThresholdResult {
	v, _, _ := metricValue(s, t.Metric)
	var pass bool
	switch t.Op {
	case "<":
		pass = v < t.Value
	case "<=":
		pass = v <= t.Value
	case ">":
		pass = v > t.Value
	case ">=":
		pass = v >= t.Value
	case "==":
		pass = v == t.Value
	case "!=":
		pass = v != t.Value
	}
	return ThresholdResult{Threshold: t, Actual: v, Passed: pass}
}

// CheckThresholds evaluates every threshold, stores the results in s and returns a
// *ThresholdError when one fails.
func CheckThresholds(s *Summary, ts []Threshold) error {
	s.Thresholds = s.Thresholds[:0]
	var failed []string
	for _, t := range ts {
		r := t.Check(s)
		s.Thresholds = append(s.Thresholds, r)
		if !r.Passed {
			failed = append(failed, fmt.Sprintf("%s (actual %.4g)", t.Expr, r.Actual))
		}
	}
	if len(failed) > 0 {
		return &ThresholdError{Failed: failed}
	}
	return nil
}

// ThresholdError reports failed thresholds; the CLI exits with its ExitCode, 99 like k6.
type ThresholdError struct{ Failed []string }

func (e *ThresholdError) Error() string {
	return "thresholds failed: " + strings.Join(e.Failed, "; ")
}

// ExitCode is 99, k6's code for failed thresholds.
func (e *ThresholdError) ExitCode() int { return 99 }
