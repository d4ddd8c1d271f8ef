package main

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"math"
	"sort"
	"strings"
	"time"
)

// report is the whole benchmark's outcome, written as results.json.
type report struct {
	StartedAt time.Time    `json:"started_at"`
	Command   string       `json:"command"`
	Took      string       `json:"took"`
	Statement string       `json:"statement"`
	Plan      plan         `json:"plan"`
	Results   []*runResult `json:"results"`
	// Pooled are the figures over every round (with --repeat).
	Pooled []pooledFigure `json:"pooled,omitempty"`
}

const fairness = "The policies differ only in routing: every cell starts fresh sims (same configuration) and a " +
	"fresh routing layer as its own process tree, and sends the same seeded request sequence at the same " +
	"offered open-loop (Poisson) rate. infergw's policies run `infergw up --no-sims` (control plane and " +
	"picker in one process, Envoy as its child) with the same generated manifests; round-robin turns the " +
	"picker off so Envoy's own round-robin load balancer chooses. The peers (with --peers) run their own " +
	"router process with its cache-aware policy in front of the same sims. envoy-bare is a reference, not " +
	"a product configuration: Envoy alone from a static bootstrap (one listener, the router filter, a " +
	"round-robin cluster of the sims, two workers; no picker, no ext_proc, no infergw process), what " +
	"relaying the workload costs the data plane before anything infergw adds."

// find returns a cell of round 1 (the only round without --repeat).
func (r *report) find(workload, policy string) *runResult { return r.findRound(workload, policy, 1) }

func (r *report) findRound(workload, policy string, round int) *runResult {
	for _, res := range r.Results {
		if res.Workload == workload && res.Policy == policy && max(res.Round, 1) == round {
			return res
		}
	}
	return nil
}

// rounds is the number of rounds the report holds (1 without --repeat).
func (r *report) rounds() int { return max(r.Plan.Repeat, 1) }

// label names a cell in the tables: its policy, and its round when there are several.
func (r *report) label(res *runResult) string {
	if r.rounds() > 1 {
		return fmt.Sprintf("%s #%d", res.Policy, max(res.Round, 1))
	}
	return res.Policy
}

// cells are a workload's cells by policy, then round.
func (r *report) cells(workload string) []*runResult {
	var out []*runResult
	for _, pol := range r.Plan.Policies {
		for round := 1; round <= r.rounds(); round++ {
			if res := r.findRound(workload, pol, round); res != nil {
				out = append(out, res)
			}
		}
	}
	return out
}

func (r *report) workloads() []string {
	var out []string
	seen := map[string]bool{}
	for _, res := range r.Results {
		if !seen[res.Workload] {
			seen[res.Workload] = true
			out = append(out, res.Workload)
		}
	}
	return out
}

// byProcessText is the layer's CPU seconds per process name, largest first ("envoy 6.1,
// infergw 3.9"), or the error that kept it from being measured.
func byProcessText(u CPUUsage) string {
	if u.Err != "" {
		return "not measured: " + u.Err
	}
	names := make([]string, 0, len(u.ByProcess))
	for k := range u.ByProcess {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool { return u.ByProcess[names[i]] > u.ByProcess[names[j]] })
	parts := make([]string, 0, len(names))
	for _, k := range names {
		parts = append(parts, fmt.Sprintf("%s %.1f s", k, u.ByProcess[k]))
	}
	return strings.Join(parts, ", ")
}

func errorsCell(res *runResult) string {
	s := res.Summary
	if s.Failed == 0 {
		return "0"
	}
	keys := make([]string, 0, len(s.ErrorsByStatus))
	for k := range s.ErrorsByStatus {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, s.ErrorsByStatus[k]))
	}
	return fmt.Sprintf("%d (%s)", s.Failed, strings.Join(parts, ", "))
}

func ms(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// busyWarn is the machine-busy fraction above which a cell is flagged as contended.
const busyWarn = 0.9

func scaleNote(scale float64) string {
	if scale == 1 {
		return " (time scale 1: wall time is modelled GPU time)"
	}
	return fmt.Sprintf(" at time scale %g: divide by %g for modelled GPU time", scale, scale)
}

// ratioText is a/b as "12.3×", or "n/a".
func ratioText(a, b float64) string {
	if b <= 0 || a <= 0 || math.IsNaN(a/b) {
		return "n/a"
	}
	return fmt.Sprintf("%.1f×", a/b)
}

// writeMarkdown writes the results table and, per workload, default vs round-robin.
func writeMarkdown(w io.Writer, r *report) error {
	var b strings.Builder
	p := r.Plan
	fmt.Fprintf(&b, "# Routing benchmark\n\n")
	fmt.Fprintf(&b, "Command: `%s` (took %s, started %s).\n\n", r.Command, r.Took, r.StartedAt.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "%s\n\n", r.Statement)
	fmt.Fprintf(&b, "Fleet: %d simulated vLLM pods (8B model on one H100-class GPU: step %s + %s/prefill token + %s/decoding sequence; "+
		"KV cache %d blocks × %d = %d tokens; %d LoRA slots; time scale %g). "+
		"Latencies are wall-clock milliseconds%s; throughput is output tokens per wall second; req/s is completions per second "+
		"of the measured period, which runs until the last completion (a backlog lowers it). Layer CPU is the CPU seconds "+
		"the routing layer's whole process tree (infergw: control plane + picker + Envoy; a peer: its router process) used "+
		"per 1,000 requests completed in the measured period, read from /proc at the end of the warm-up and of the run; "+
		"the breakdown is each process's CPU seconds over the whole measured run (not per 1,000 requests); machine busy includes the sims, the load tester and other users.\n\n",
		p.Pods, p.SimInfo.StepOverhead, p.SimInfo.PrefillTok, p.SimInfo.DecodeSeq, p.SimInfo.KVBlocks, p.SimInfo.BlockSize,
		p.SimInfo.KVTokens, p.SimInfo.MaxLoRAs, p.TimeScale, scaleNote(p.TimeScale))
	contended := false
	b.WriteString("| workload | policy | req/s | TTFT p50 | TTFT p90 | TTFT p99 | TPOT p50 | TPOT p99 | output tok/s | cached ratio | errors | p90 TTFT vs RR | layer CPU s/1k req | CPU s by process, whole run | machine busy |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, wl := range r.workloads() {
		for _, res := range r.cells(wl) {
			rr := r.findRound(wl, "round-robin", max(res.Round, 1))
			s := res.Summary
			vs := "—"
			if rr != nil && res.Policy != "round-robin" {
				vs = "÷" + strings.TrimSuffix(ratioText(rr.Summary.TTFT.P90, s.TTFT.P90), "×")
			}
			busy := ""
			if res.CPU.MachineBusy >= busyWarn {
				busy, contended = " ⚠", true
			}
			fmt.Fprintf(&b, "| %s | %s | %.1f | %s | %s | %s | %s | %s | %.0f | %.3f | %s | %s | %.2f | %s | %.0f%%%s |\n",
				wl, r.label(res), s.RequestRate, ms(s.TTFT.P50), ms(s.TTFT.P90), ms(s.TTFT.P99), ms(s.TPOT.P50), ms(s.TPOT.P99),
				s.OutputTokensPerS, s.CachedTokenRatio, errorsCell(res), vs,
				res.CPU.PerKRequests(s.Succeeded), byProcessText(res.CPU), 100*res.CPU.MachineBusy, busy)
		}
	}
	b.WriteString("\n")
	if contended {
		fmt.Fprintf(&b, "⚠ the machine was at least %.0f%% busy (other processes included) during that cell: the sims may have "+
			"fallen behind their modelled pace, so its latencies measure CPU contention as well as routing. Rerun it on a quieter machine.\n\n", 100*busyWarn)
	}
	for _, wl := range r.workloads() {
		rr, def := r.find(wl, "round-robin"), r.find(wl, "default")
		if rr == nil || def == nil {
			continue
		}
		fmt.Fprintf(&b, "- **%s**: default vs round-robin: p90 TTFT %s → %s ms (÷%s), output %.0f → %.0f tok/s (%s).\n",
			wl, ms(rr.Summary.TTFT.P90), ms(def.Summary.TTFT.P90), strings.TrimSuffix(ratioText(rr.Summary.TTFT.P90, def.Summary.TTFT.P90), "×"),
			rr.Summary.OutputTokensPerS, def.Summary.OutputTokensPerS, ratioText(def.Summary.OutputTokensPerS, rr.Summary.OutputTokensPerS))
	}
	writeOracleSection(&b, r)
	writeRepeatSection(&b, r)
	b.WriteString("\nThe sims' view (GET /debug/engine before and after each cell, warm-up included; sim TTFT is the sims' " +
		"own mean from arrival to first token, without the gateway's latency):\n\n")
	b.WriteString("| workload | policy | arrivals behind a prefill | prompt tokens ahead per arrival | sim TTFT mean (ms) | arrivals per pod |\n")
	b.WriteString("|---|---|---|---|---|---|\n")
	for _, wl := range r.workloads() {
		for _, res := range r.cells(wl) {
			if res.View == nil {
				continue
			}
			v := res.View
			fmt.Fprintf(&b, "| %s | %s | %.0f%% | %.0f | %s | %v |\n", wl, r.label(res), 100*v.BehindPrefill, v.TokensAhead,
				ms(1000*res.Sims.SimTTFTMean()), v.Arrivals)
		}
	}
	b.WriteString("\nWorkloads:\n\n")
	for _, wl := range p.Workloads {
		fmt.Fprintf(&b, "- **%s**: %s; %.1f requests per modelled second (%.1f/s wall), %s warm-up + %s measured.\n",
			wl.Name, wl.Description, wl.ModelRate, wl.ModelRate/p.TimeScale, wl.Warmup, wl.Duration)
	}
	b.WriteString("\nEquivalent load-tester commands (one per workload; the URL is that run's gateway):\n\n")
	for _, wl := range r.workloads() {
		for _, res := range r.Results {
			if res.Workload == wl {
				fmt.Fprintf(&b, "```sh\n%s\n```\n", res.Recipe)
				break
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeJSON(w io.Writer, r *report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// bar is one bar of a grouped bar chart.
type bar struct {
	Label string
	Value float64
}

// barChart renders one workload's values per policy as an inline SVG (log scale when the
// values span more than a factor 20, so that small and huge latencies both show).
func barChart(title, unit string, bars []bar) template.HTML {
	const w, h, padL, padB, padT = 520.0, 220.0, 60.0, 40.0, 24.0
	maxV, minV := 0.0, math.Inf(1)
	for _, b := range bars {
		maxV = max(maxV, b.Value)
		if b.Value > 0 {
			minV = min(minV, b.Value)
		}
	}
	logScale := maxV > 0 && minV > 0 && maxV/minV > 20
	scale := func(v float64) float64 {
		if maxV <= 0 || v <= 0 {
			return 0
		}
		if logScale {
			lo := math.Log10(minV) - 0.3
			return (math.Log10(v) - lo) / (math.Log10(maxV) - lo)
		}
		return v / maxV
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" role="img"><title>%s</title>`, w, h, template.HTMLEscapeString(title))
	fmt.Fprintf(&sb, `<text x="%.0f" y="16" font-size="13" font-weight="bold">%s</text>`, padL, template.HTMLEscapeString(title))
	innerW, innerH := w-padL-10, h-padB-padT
	slot := innerW / float64(max(1, len(bars)))
	colors := []string{"#888", "#d98c3a", "#3a7bd9", "#2e9e4f", "#9b59b6"}
	for i, b := range bars {
		bh := scale(b.Value) * innerH
		x := padL + float64(i)*slot + slot*0.15
		y := padT + innerH - bh
		fmt.Fprintf(&sb, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`, x, y, slot*0.7, bh, colors[i%len(colors)])
		fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="middle">%s</text>`, x+slot*0.35, y-3, template.HTMLEscapeString(ms(b.Value)))
		fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="middle">%s</text>`, x+slot*0.35, h-padB+14, template.HTMLEscapeString(b.Label))
	}
	axis := unit
	if logScale {
		axis += " (log)"
	}
	fmt.Fprintf(&sb, `<text x="4" y="%.0f" font-size="11">%s</text>`, padT+innerH/2, template.HTMLEscapeString(axis))
	fmt.Fprintf(&sb, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#333"/></svg>`, padL, padT+innerH, w-10, padT+innerH)
	return template.HTML(sb.String())
}

var indexTmpl = template.Must(template.New("index").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>infergw routing benchmark</title>
<style>body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#eee}td:first-child,td:nth-child(2){text-align:left}
.charts{display:flex;flex-wrap:wrap;gap:12px}</style></head><body>
<h1>infergw routing benchmark</h1>
<p><code>{{.Command}}</code> — started {{.Started}}, took {{.Took}}.</p>
<p><b>{{.Statement}}</b></p>
<pre>{{.Markdown}}</pre>
{{range .Workloads}}<h2>{{.Name}}</h2><div class="charts">{{range .Charts}}{{.}}{{end}}</div>
<p>Per-policy load-tester reports (TTFT over time, latency CDFs, throughput):
{{range .Links}}<a href="{{.Href}}">{{.Label}}</a> {{end}}</p>{{end}}
</body></html>
`))

type indexWorkload struct {
	Name   string
	Charts []template.HTML
	Links  []struct{ Href, Label string }
}

// writeIndexHTML writes the comparison page: per workload, bar charts of TTFT p90/p99,
// TPOT p99 and output throughput by policy, and links to each cell's loadtest report.
func writeIndexHTML(w io.Writer, r *report, markdown string, cellReport func(*runResult) string) error {
	data := struct {
		Command, Started, Took, Statement, Markdown string
		Workloads                                   []indexWorkload
	}{Command: r.Command, Started: r.StartedAt.UTC().Format(time.RFC3339), Took: r.Took, Statement: r.Statement, Markdown: markdown}
	for _, wl := range r.workloads() {
		iw := indexWorkload{Name: wl}
		var p90, p99, tpot, tput []bar
		for _, res := range r.cells(wl) {
			s, pol := res.Summary, r.label(res)
			p90 = append(p90, bar{pol, s.TTFT.P90})
			p99 = append(p99, bar{pol, s.TTFT.P99})
			tpot = append(tpot, bar{pol, s.TPOT.P99})
			tput = append(tput, bar{pol, s.OutputTokensPerS})
			iw.Links = append(iw.Links, struct{ Href, Label string }{cellReport(res), pol})
		}
		iw.Charts = []template.HTML{
			barChart("TTFT p90", "ms", p90), barChart("TTFT p99", "ms", p99),
			barChart("TPOT p99", "ms", tpot), barChart("output tokens/s", "tok/s", tput),
		}
		data.Workloads = append(data.Workloads, iw)
	}
	return indexTmpl.Execute(w, data)
}

// hitRatio is the fleet's prefix-cache hit ratio from the sims' own counters (warm-up
// included), 0 without queries.
func (a fleetCounters) hitRatio() float64 {
	if a.PrefixQueryTokens == 0 {
		return 0
	}
	return a.PrefixHitTokens / a.PrefixQueryTokens
}

// writeOracleSection compares every cell's fleet hit ratio with the oracle's (the precise
// scorer answered by the sims' own cache state) and notes the picker restarts.
func writeOracleSection(b *strings.Builder, r *report) {
	for _, wl := range r.workloads() {
		if r.find(wl, "oracle") == nil {
			continue
		}
		fmt.Fprintf(b, "\nFleet hit ratio against the oracle (%s): the oracle routes with the same scorers, its prefix "+
			"scorer answered at every pick by each sim's own cache and admitted requests (`POST /debug/prefix`). "+
			"Cached ratio: the responses' cached prompt tokens in the measured period; sims' hit ratio: the sims' "+
			"prefix-cache hit tokens over query tokens, warm-up included.\n\n", wl)
		b.WriteString("| policy | cached ratio | of the oracle's | sims' hit ratio | of the oracle's |\n|---|---|---|---|---|\n")
		for _, res := range r.cells(wl) {
			// Against the oracle of the same round: the same request sequence.
			or := r.findRound(wl, "oracle", max(res.Round, 1))
			if or == nil {
				continue
			}
			fmt.Fprintf(b, "| %s | %.3f | %s | %.3f | %s |\n", r.label(res), res.Summary.CachedTokenRatio,
				pct(res.Summary.CachedTokenRatio, or.Summary.CachedTokenRatio), res.Sims.hitRatio(), pct(res.Sims.hitRatio(), or.Sims.hitRatio()))
		}
	}
	first := true
	for _, res := range r.Results {
		if res.RestartAt == 0 && res.RestartErr == "" {
			continue
		}
		if first {
			b.WriteString("\nPicker restarts (replica 0, as a Kubernetes rollout: taken out of the picker Service's endpoints, " +
				"1 s later SIGTERM, started again with the same flags, put back once ready):\n\n")
			first = false
		}
		msg := fmt.Sprintf("out of the endpoints for %.2f s", res.RestartDown)
		if res.RestartErr != "" {
			msg = "failed: " + res.RestartErr
		}
		fmt.Fprintf(b, "- %s / %s: restarted %.1f s into the measured window, %s.\n", res.Workload, r.label(res), res.RestartAt, msg)
	}
}

// pct is a/b as a percentage ("94%"), or "n/a".
func pct(a, b float64) string {
	if b <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0f%%", 100*a/b)
}
