package loadtest

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// NamedSummary is one run to compare: its summary and the name it is shown under.
type NamedSummary struct {
	Name    string
	Summary *Summary
}

// ReadSummary reads a summary written by --summary-export.
func ReadSummary(path string) (NamedSummary, error) {
	f, err := os.Open(path)
	if err != nil {
		return NamedSummary{}, err
	}
	defer f.Close()
	var s Summary
	// A summary is small; the bound only stops a wrong file (a request log, say) early.
	dec := json.NewDecoder(io.LimitReader(f, 64<<20))
	if err := dec.Decode(&s); err != nil {
		return NamedSummary{}, fmt.Errorf("%s: not a loadtest summary: %w", path, err)
	}
	if s.Setup.URL == "" && s.Requests == 0 {
		return NamedSummary{}, fmt.Errorf("%s: not a loadtest summary (no setup, no requests)", path)
	}
	return NamedSummary{Name: strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)), Summary: &s}, nil
}

// compareRow is one measure across runs.
type compareRow struct {
	Name   string
	Unit   string
	Better string // "lower" or "higher"
	Values []float64
	CIs    []*CI // per run, nil when the run has no interval for this measure
}

// Verdict of a run against the first (baseline) run for one measure.
type verdict struct {
	Delta  float64 // relative change, (v - base) / base
	Marker string  // "better", "worse", "~" (within the intervals) or "" (no interval)
}

func (r compareRow) verdict(i int) verdict {
	base, v := r.Values[0], r.Values[i]
	out := verdict{Delta: math.NaN()}
	if base != 0 {
		out.Delta = (v - base) / base
	}
	if r.CIs[0] == nil || r.CIs[i] == nil {
		return out
	}
	switch {
	case r.CIs[0].overlaps(*r.CIs[i]):
		out.Marker = "~"
	case (v < base) == (r.Better == "lower"):
		out.Marker = "better"
	default:
		out.Marker = "worse"
	}
	return out
}

func compareRows(runs []NamedSummary) []compareRow {
	ci := func(get func(*Summary) *PercentileCIs, pick func(*PercentileCIs) CI) func(*Summary) *CI {
		return func(s *Summary) *CI {
			p := get(s)
			if p == nil {
				return nil
			}
			c := pick(p)
			return &c
		}
	}
	ttft := func(s *Summary) *PercentileCIs { return s.TTFTCI }
	e2e := func(s *Summary) *PercentileCIs { return s.E2ECI }
	p50 := func(p *PercentileCIs) CI { return p.P50 }
	p90 := func(p *PercentileCIs) CI { return p.P90 }
	p99 := func(p *PercentileCIs) CI { return p.P99 }
	none := func(*Summary) *CI { return nil }
	defs := []struct {
		name, unit, better string
		get                func(*Summary) float64
		ci                 func(*Summary) *CI
	}{
		{"ttft p50", "ms", "lower", func(s *Summary) float64 { return s.TTFT.P50 }, ci(ttft, p50)},
		{"ttft p90", "ms", "lower", func(s *Summary) float64 { return s.TTFT.P90 }, ci(ttft, p90)},
		{"ttft p99", "ms", "lower", func(s *Summary) float64 { return s.TTFT.P99 }, ci(ttft, p99)},
		{"tpot p50", "ms", "lower", func(s *Summary) float64 { return s.TPOT.P50 }, none},
		{"tpot p99", "ms", "lower", func(s *Summary) float64 { return s.TPOT.P99 }, none},
		{"itl p50", "ms", "lower", func(s *Summary) float64 { return s.ITL.P50 }, none},
		{"e2e p50", "ms", "lower", func(s *Summary) float64 { return s.E2E.P50 }, ci(e2e, p50)},
		{"e2e p99", "ms", "lower", func(s *Summary) float64 { return s.E2E.P99 }, ci(e2e, p99)},
		{"request rate", "/s", "higher", func(s *Summary) float64 { return s.RequestRate }, none},
		{"output tokens", "/s", "higher", func(s *Summary) float64 { return s.OutputTokensPerS }, none},
		{"error rate", "%", "lower", func(s *Summary) float64 { return 100 * s.ErrorRate }, none},
		{"cached tokens", "%", "higher", func(s *Summary) float64 { return 100 * s.CachedTokenRatio }, none},
		{"requests", "", "higher", func(s *Summary) float64 { return float64(s.Requests) }, none},
	}
	rows := make([]compareRow, 0, len(defs))
	for _, d := range defs {
		r := compareRow{Name: d.name, Unit: d.unit, Better: d.better}
		for _, run := range runs {
			r.Values = append(r.Values, d.get(run.Summary))
			r.CIs = append(r.CIs, d.ci(run.Summary))
		}
		rows = append(rows, r)
	}
	return rows
}

// WriteCompareText prints the runs side by side: each measure, each run's value, and for
// every run after the first its change against the first and whether the change is outside
// both runs' 95 % intervals ("better"/"worse") or within them ("~", not a real difference).
func WriteCompareText(w io.Writer, runs []NamedSummary) error {
	if len(runs) < 2 {
		return fmt.Errorf("compare: want at least two summaries, got %d", len(runs))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n  infergw loadtest compare (baseline: %s)\n\n", runs[0].Name)
	fmt.Fprintf(&b, "  %-16s", "measure")
	for i, r := range runs {
		col := r.Name
		if i > 0 {
			col += " (vs base)"
		}
		fmt.Fprintf(&b, " %-28s", truncate(col, 28))
	}
	b.WriteString("\n")
	for _, row := range compareRows(runs) {
		fmt.Fprintf(&b, "  %-16s", row.Name)
		for i, v := range row.Values {
			cell := fmtValue(v, row.Unit)
			if i > 0 {
				vd := row.verdict(i)
				if !math.IsNaN(vd.Delta) {
					cell += fmt.Sprintf(" %+.1f%%", 100*vd.Delta)
				}
				if vd.Marker != "" {
					cell += " " + vd.Marker
				}
			}
			fmt.Fprintf(&b, " %-28s", cell)
		}
		b.WriteString("\n")
	}
	b.WriteString("\n  better/worse: the 95% bootstrap intervals of the two runs do not overlap; ~: they do (no clear difference).\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func fmtValue(v float64, unit string) string {
	switch unit {
	case "ms":
		return fmtMs(v)
	case "%":
		return fmt.Sprintf("%.2f%%", v)
	case "/s":
		return fmt.Sprintf("%.1f/s", v)
	}
	return fmt.Sprintf("%.0f", v)
}

// WriteCompareHTML writes the comparison as one self-contained page: the table and each
// run's TTFT and end-to-end CDFs overlaid.
func WriteCompareHTML(w io.Writer, runs []NamedSummary) error {
	var text strings.Builder
	if err := WriteCompareText(&text, runs); err != nil {
		return err
	}
	data := struct {
		Names         []string
		Text          string
		TTFTCDF, E2E  template.HTML
		BaselineIndex int
	}{Text: text.String(), TTFTCDF: overlayCDF(runs, "ttft"), E2E: overlayCDF(runs, "e2e")}
	for _, r := range runs {
		data.Names = append(data.Names, r.Name)
	}
	return compareTmpl.Execute(w, data)
}

var compareTmpl = template.Must(template.New("compare").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>infergw loadtest compare</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
h1{font-size:1.4em} h2{font-size:1.1em;margin-top:2em}
pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:12px}
svg{background:#fff;border:1px solid #ddd} .ax{stroke:#999;stroke-width:1} .lbl{font-size:11px;fill:#555}
</style></head><body>
<h1>infergw loadtest compare</h1>
<pre>{{.Text}}</pre>
<h2>TTFT CDF</h2>{{.TTFTCDF}}
<h2>End-to-end latency CDF</h2>{{.E2E}}
</body></html>
`))

var runColors = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"}

func overlayCDF(runs []NamedSummary, measure string) template.HTML {
	series := make([]cdfSeries, 0, len(runs))
	for i, r := range runs {
		series = append(series, cdfSeries{name: r.Name, color: runColors[i%len(runColors)], pts: r.Summary.CDFs[measure]})
	}
	return cdfSVG(series)
}
