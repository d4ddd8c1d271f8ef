package loadtest

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
)

// WriteText writes the k6-like end-of-run summary.
func WriteText(w io.Writer, s *Summary) error {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	dots := func(name string) string {
		if len(name) >= 24 {
			return name
		}
		return name + strings.Repeat(".", 24-len(name))
	}
	lat := func(name string, l Latency) {
		if l.Count == 0 {
			p("     %s: no data\n", dots(name))
			return
		}
		p("     %s: avg=%s min=%s med=%s p(90)=%s p(95)=%s p(99)=%s p(99.9)=%s max=%s\n", dots(name),
			fmtMs(l.Avg), fmtMs(l.Min), fmtMs(l.P50), fmtMs(l.P90), fmtMs(l.P95), fmtMs(l.P99), fmtMs(l.P999), fmtMs(l.Max))
	}
	st := s.Setup
	p("\n  infergw loadtest  %s (%s, stream=%v)\n", st.URL, st.API, st.Stream)
	switch {
	case st.Workload.Kind == "trace":
		p("  scenario: trace replay of %s at %gx speed", st.Workload.TraceFile, st.Workload.TimeScale)
	case st.Mode == "open":
		p("  scenario: open loop, %g req/s %s arrivals", st.Rate, st.Arrival)
	default:
		p("  scenario: closed loop, %d VUs", st.VUs)
	}
	if len(st.Stages) > 0 {
		p(", %d stages", len(st.Stages))
	}
	p(", workload %s, seed %d, warm-up %.0fs\n", orDefault(st.Workload.Kind, "synthetic"), st.Seed, st.WarmupS)
	p("  protocol: %s\n", protocolLine(s.Protocols))
	if st.Workload.Tokenizer != "" {
		p("  tokens: generated prompts in the model's tokens (%s); counts below come from the server's usage\n\n", st.Workload.Tokenizer)
	} else {
		p("  tokens: approximate prompt lengths (a word stands in for a token; --tokenizer for exact ones); counts below come from the server's usage\n\n")
	}

	if len(s.Thresholds) > 0 {
		p("  THRESHOLDS\n")
		for _, t := range s.Thresholds {
			mark := "✓"
			if !t.Passed {
				mark = "✗"
			}
			p("     %s %s  (actual %.4g)\n", mark, t.Expr, t.Actual)
		}
		p("\n")
	}
	p("  LATENCY\n")
	lat("ttft", s.TTFT)
	if ci := s.TTFTCI; ci != nil {
		p("     %s: p50 %s–%s, p90 %s–%s, p99 %s–%s (bootstrap, %d samples)\n", dots("  ttft 95% CI"),
			fmtMs(ci.P50.Lo), fmtMs(ci.P50.Hi), fmtMs(ci.P90.Lo), fmtMs(ci.P90.Hi), fmtMs(ci.P99.Lo), fmtMs(ci.P99.Hi), ci.N)
	}
	lat("ttfb", s.TTFB)
	lat("itl (per token)", s.ITL)
	if s.ITL.Count > 0 && s.ITL.Min < 0.05 {
		p("     %s  (a minimum near 0 is chunks that arrived together, in one read: the server sent them back to back)\n", strings.Repeat(" ", 24))
	}
	lat("inter_chunk", s.InterChunk)
	lat("tpot", s.TPOT)
	lat("e2e", s.E2E)
	p("\n  THROUGHPUT\n")
	p("     %s: %d started in %.2fs of schedule, %.2f/s\n", dots("requests"), s.Schedule.Started, s.ScheduleS, s.RequestRate)
	p("     %s: %d in %.2fs (to the last completion), %.2f/s\n", dots("completions"), s.Requests, s.DurationS, s.CompletionRate)
	p("     %s: %d, %.1f/s\n", dots("output_tokens"), s.OutputTokens, s.OutputTokensPerS)
	p("     %s: %d, %.1f/s\n", dots("prompt_tokens"), s.PromptTokens, s.InputTokensPerS)
	p("     %s: %.2f%% (%d of %d prompt tokens)\n", dots("cached_token_ratio"), 100*s.CachedTokenRatio, s.CachedTokens, s.PromptTokens)
	if g := s.Goodput; g != nil {
		p("     %s: %d, %.2f/s, %.2f%% of requests (slo %s)\n", dots("goodput"), g.Requests, g.Rate, 100*g.Ratio, sloString(g.SLO))
	}
	p("\n  ERRORS\n")
	p("     %s: %.2f%% (%d of %d)\n", dots("error_rate"), 100*s.ErrorRate, s.Failed, s.Requests)
	for _, k := range sortedKeys(s.ErrorsByStatus) {
		p("     %s: %d\n", dots("  "+k), s.ErrorsByStatus[k])
	}
	if s.Interrupted > 0 {
		p("     %s: %d (aborted by stop, not counted)\n", dots("interrupted"), s.Interrupted)
	}
	for _, sr := range s.Scrapes {
		p("\n  SERVER %s (%d scrapes, %d failed)\n", sr.URL, len(sr.Points), sr.Errors)
		st := scrapeStats(sr.Points)
		p("     %s: mean %s, max %s\n", dots("kv_usage"), fmtPct(st.kvMean), fmtPct(st.kvMax))
		p("     %s: mean %s, max %s\n", dots("waiting"), fmtCount(st.waitMean), fmtCount(st.waitMax))
		p("     %s: mean %s, max %s\n", dots("running"), fmtCount(st.runMean), fmtCount(st.runMax))
		p("     %s: mean %s\n", dots("prefix_hit_rate"), fmtPct(st.hitMean))
		if sr.LastError != "" {
			p("     %s: %s\n", dots("last_error"), sr.LastError)
		}
	}
	sc := s.Schedule
	p("\n  SCHEDULE (%s loop)\n", sc.Mode)
	if sc.Mode == "open" {
		p("     %s: avg=%s p(50)=%s p(99)=%s p(99.9)=%s max=%s\n", dots("schedule_lag"),
			fmtMs(sc.Lag.Avg), fmtMs(sc.Lag.P50), fmtMs(sc.Lag.P99), fmtMs(sc.Lag.P999), fmtMs(sc.Lag.Max))
		p("     %s: %d started, %d late (> %s), %d dropped\n", dots("starts"), sc.Started, sc.Late, fmtMs(sc.LateAfterMs), sc.Dropped)
	} else {
		p("     %s: %d (closed loop: each VU waits for its response)\n", dots("starts"), sc.Started)
	}
	writeBreakdownText(&b, "BY MODEL", s.ByModel)
	writeBreakdownText(&b, "BY ENDPOINT", s.ByEndpoint)
	if sw := s.Sweep; sw != nil {
		p("\n  SWEEP\n     %-10s %-10s %-8s %-9s %-10s %-10s %s\n", "offered", "achieved", "errors", "lag p99", "ttft p50", "ttft p99", "")
		for _, st := range sw.Steps {
			note := ""
			if st.Saturated {
				note = "SATURATED: " + st.Reason
			}
			p("     %-10.1f %-10.1f %-8s %-9s %-10s %-10s %s\n", st.OfferedRate, st.AchievedRate,
				fmt.Sprintf("%.2f%%", 100*st.ErrorRate), fmtMs(st.LagP99Ms), fmtMs(st.TTFTP50Ms), fmtMs(st.TTFTP99Ms), note)
		}
		p("     max sustainable rate: %g req/s", sw.MaxSustainableRate)
		if sw.SaturationRate > 0 {
			p(", saturated at %g req/s", sw.SaturationRate)
		}
		p("\n")
	}
	p("\n")
	_, err := io.WriteString(w, b.String())
	if err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	return nil
}

func writeBreakdownText(b *strings.Builder, title string, m map[string]*Breakdown) {
	if len(m) == 0 {
		return
	}
	fmt.Fprintf(b, "\n  %s\n     %-28s %8s %7s %10s %10s %10s %10s\n", title, "", "requests", "failed", "ttft p50", "ttft p99", "tpot p50", "out tok/s")
	for _, k := range sortedKeys(m) {
		v := m[k]
		fmt.Fprintf(b, "     %-28s %8d %7d %10s %10s %10s %10.1f\n", k, v.Requests, v.Failed,
			fmtMs(v.TTFT.P50), fmtMs(v.TTFT.P99), fmtMs(v.TPOT.P50), v.OutputTokensPerS)
	}
}

// fmtMs prints milliseconds the k6 way: µs below 1 ms, s above 1 s.
func fmtMs(v float64) string {
	switch {
	case v == 0:
		return "0s"
	case v < 1:
		return fmt.Sprintf("%.0fµs", v*1000)
	case v < 1000:
		return fmt.Sprintf("%.2fms", v)
	default:
		return fmt.Sprintf("%.2fs", v/1000)
	}
}

func sloString(s SLO) string {
	var parts []string
	if s.TTFT > 0 {
		parts = append(parts, "ttft="+s.TTFT.String())
	}
	if s.TPOT > 0 {
		parts = append(parts, "tpot="+s.TPOT.String())
	}
	if s.E2E > 0 {
		parts = append(parts, "e2e="+s.E2E.String())
	}
	return strings.Join(parts, ",")
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// WriteJSON writes the summary as indented JSON (the --summary-export format).
func WriteJSON(w io.Writer, s *Summary) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s); err != nil {
		return fmt.Errorf("write summary json: %w", err)
	}
	return nil
}

// WriteMarkdown writes the headline figures as a Markdown table (for READMEs and PRs).
func WriteMarkdown(w io.Writer, s *Summary) error {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("| measure | p50 | p90 | p95 | p99 | p99.9 |\n|---|---|---|---|---|---|\n")
	for _, row := range []struct {
		name string
		l    Latency
	}{{"TTFT (ms)", s.TTFT}, {"TPOT (ms)", s.TPOT}, {"ITL (ms)", s.ITL}, {"E2E (ms)", s.E2E}, {"schedule lag (ms)", s.Schedule.Lag}} {
		p("| %s | %.2f | %.2f | %.2f | %.2f | %.2f |\n", row.name, row.l.P50, row.l.P90, row.l.P95, row.l.P99, row.l.P999)
	}
	p("\n| requests | req/s | output tok/s | error rate | cached-token ratio | dropped | late |\n|---|---|---|---|---|---|---|\n")
	p("| %d | %.1f | %.1f | %.2f%% | %.2f%% | %d | %d |\n", s.Requests, s.RequestRate, s.OutputTokensPerS,
		100*s.ErrorRate, 100*s.CachedTokenRatio, s.Schedule.Dropped, s.Schedule.Late)
	if len(s.ByEndpoint) > 0 {
		p("\n| endpoint | requests | failed | TTFT p50 (ms) | TTFT p99 (ms) |\n|---|---|---|---|---|\n")
		for _, k := range sortedKeys(s.ByEndpoint) {
			v := s.ByEndpoint[k]
			p("| %s | %d | %d | %.2f | %.2f |\n", k, v.Requests, v.Failed, v.TTFT.P50, v.TTFT.P99)
		}
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write markdown: %w", err)
	}
	return nil
}

// protocolLine lists the HTTP versions responses came over, most used first.
func protocolLine(m map[string]int64) string {
	if len(m) == 0 {
		return "none (no response)"
	}
	keys := sortedKeys(m)
	sort.SliceStable(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s (%d responses)", k, m[k])
	}
	return strings.Join(parts, ", ")
}

type scrapeSummary struct {
	kvMean, kvMax, waitMean, waitMax, runMean, runMax, hitMean float64
}

// scrapeStats averages and maximises each signal over the measured period's points
// (warm-up points, at negative times, are left out); NaN where a signal never appeared.
func scrapeStats(pts []ScrapePoint) scrapeSummary {
	agg := func(get func(ScrapePoint) jsonFloat) (mean, mx float64) {
		n, sum := 0, 0.0
		mx = math.NaN()
		for _, p := range pts {
			v := float64(get(p))
			if p.T < 0 || math.IsNaN(v) {
				continue
			}
			n++
			sum += v
			if math.IsNaN(mx) || v > mx {
				mx = v
			}
		}
		if n == 0 {
			return math.NaN(), math.NaN()
		}
		return sum / float64(n), mx
	}
	var st scrapeSummary
	st.kvMean, st.kvMax = agg(func(p ScrapePoint) jsonFloat { return p.KVUsage })
	st.waitMean, st.waitMax = agg(func(p ScrapePoint) jsonFloat { return p.Waiting })
	st.runMean, st.runMax = agg(func(p ScrapePoint) jsonFloat { return p.Running })
	st.hitMean, _ = agg(func(p ScrapePoint) jsonFloat { return p.PrefixHitRate })
	return st
}

func fmtPct(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.1f%%", 100*v)
}

func fmtCount(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.1f", v)
}
