package loadtest

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
)

// WriteHTML writes one self-contained HTML page (inline SVG plots, inline CSS, no scripts):
// TTFT over time, latency CDFs and throughput per second, plus the summary tables.
func WriteHTML(w io.Writer, s *Summary) error {
	var text strings.Builder
	if err := WriteText(&text, s); err != nil {
		return err
	}
	data := struct {
		S                        *Summary
		Text                     string
		TTFTPlot, CDFPlot, TPlot template.HTML
	}{S: s, Text: text.String(), TTFTPlot: ttftOverTime(s), CDFPlot: cdfPlot(s), TPlot: throughputPlot(s)}
	if err := htmlTmpl.Execute(w, data); err != nil {
		return fmt.Errorf("write html report: %w", err)
	}
	return nil
}

var htmlTmpl = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>infergw loadtest {{.S.Setup.URL}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
h1{font-size:1.4em} h2{font-size:1.1em;margin-top:2em}
pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:12px}
svg{background:#fff;border:1px solid #ddd} .ax{stroke:#999;stroke-width:1} .lbl{font-size:11px;fill:#555}
</style></head><body>
<h1>infergw loadtest — {{.S.Setup.URL}}</h1>
<p>Started {{.S.StartedAt.Format "2006-01-02 15:04:05 MST"}}; {{.S.Requests}} requests in {{printf "%.1f" .S.DurationS}} s;
{{printf "%.1f" .S.RequestRate}} req/s; {{printf "%.1f" .S.OutputTokensPerS}} output tokens/s.</p>
<h2>TTFT over time</h2>{{.TTFTPlot}}
<h2>Latency CDFs</h2>{{.CDFPlot}}
<h2>Throughput</h2>{{.TPlot}}
<h2>Summary</h2><pre>{{.Text}}</pre>
</body></html>
`))

const (
	plotW, plotH  = 1000, 320
	padL, padR    = 60, 20
	padT, padB    = 20, 40
	innerW        = plotW - padL - padR
	innerH        = plotH - padT - padB
	plotFontAttrs = `class="lbl"`
)

type axis struct{ min, max float64 }

func (a axis) scale(v float64, size float64) float64 {
	if a.max <= a.min {
		return 0
	}
	return (v - a.min) / (a.max - a.min) * size
}

func svgOpen(b *strings.Builder, xa, ya axis, xlabel, ylabel string) {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">`, plotW, plotH, plotW, plotH)
	fmt.Fprintf(b, `<line class="ax" x1="%d" y1="%d" x2="%d" y2="%d"/>`, padL, padT+innerH, padL+innerW, padT+innerH)
	fmt.Fprintf(b, `<line class="ax" x1="%d" y1="%d" x2="%d" y2="%d"/>`, padL, padT, padL, padT+innerH)
	for i := 0; i <= 4; i++ {
		xv := xa.min + (xa.max-xa.min)*float64(i)/4
		yv := ya.min + (ya.max-ya.min)*float64(i)/4
		fmt.Fprintf(b, `<text %s x="%.1f" y="%d" text-anchor="middle">%s</text>`, plotFontAttrs, padL+float64(innerW)*float64(i)/4, padT+innerH+15, fmtNum(xv))
		fmt.Fprintf(b, `<text %s x="%d" y="%.1f" text-anchor="end">%s</text>`, plotFontAttrs, padL-5, float64(padT+innerH)-float64(innerH)*float64(i)/4+4, fmtNum(yv))
	}
	fmt.Fprintf(b, `<text %s x="%d" y="%d" text-anchor="middle">%s</text>`, plotFontAttrs, padL+innerW/2, plotH-5, template.HTMLEscapeString(xlabel))
	fmt.Fprintf(b, `<text %s x="12" y="%d" transform="rotate(-90 12 %d)" text-anchor="middle">%s</text>`, plotFontAttrs, padT+innerH/2, padT+innerH/2, template.HTMLEscapeString(ylabel))
}

func fmtNum(v float64) string {
	switch {
	case math.Abs(v) >= 1000:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func px(xa axis, v float64) float64 { return padL + xa.scale(v, innerW) }
func py(ya axis, v float64) float64 { return padT + innerH - ya.scale(v, innerH) }

func ttftOverTime(s *Summary) template.HTML {
	if len(s.Samples) == 0 {
		return "<p>No samples.</p>"
	}
	xa, ya := axis{0, 1}, axis{0, 1}
	for _, p := range s.Samples {
		xa.max = math.Max(xa.max, p.T)
		ya.max = math.Max(ya.max, p.TTFT)
	}
	ya.max *= 1.05
	var b strings.Builder
	svgOpen(&b, xa, ya, "seconds since start of measurement", "TTFT (ms)")
	for _, p := range s.Samples {
		color := "#1f77b4"
		if !p.OK {
			color = "#d62728"
		}
		fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="1.5" fill="%s" fill-opacity="0.5"/>`, px(xa, p.T), py(ya, p.TTFT), color)
	}
	b.WriteString(`</svg><p class="lbl">Blue: successful requests (a bounded random sample); red: failed.</p>`)
	return template.HTML(b.String()) //nolint:gosec // built from numbers and escaped labels only
}

func cdfPlot(s *Summary) template.HTML {
	names := []string{"ttft", "tpot", "itl", "e2e"}
	colors := map[string]string{"ttft": "#1f77b4", "tpot": "#ff7f0e", "itl": "#2ca02c", "e2e": "#9467bd"}
	// Log-scaled x axis: latencies span several decades (ITL ~ ms, E2E ~ s).
	xa, ya := axis{math.Inf(1), math.Inf(-1)}, axis{0, 1}
	for _, n := range names {
		for _, p := range s.CDFs[n] {
			lv := math.Log10(math.Max(p[0], 0.001))
			xa.min, xa.max = math.Min(xa.min, lv), math.Max(xa.max, lv)
		}
	}
	if math.IsInf(xa.min, 0) {
		return "<p>No latency data.</p>"
	}
	xa.min, xa.max = math.Floor(xa.min), math.Ceil(xa.max)
	if xa.max <= xa.min {
		xa.max = xa.min + 1
	}
	var b strings.Builder
	svgOpen(&b, xa, ya, "log10(latency ms)", "fraction of samples")
	for i, n := range names {
		pts := s.CDFs[n]
		if len(pts) == 0 {
			continue
		}
		var path strings.Builder
		for j, p := range pts {
			cmd := "L"
			if j == 0 {
				cmd = "M"
			}
			fmt.Fprintf(&path, "%s%.1f,%.1f ", cmd, px(xa, math.Log10(math.Max(p[0], 0.001))), py(ya, p[1]))
		}
		fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="%s" stroke-width="2"/>`, path.String(), colors[n])
		fmt.Fprintf(&b, `<text x="%d" y="%d" fill="%s" font-size="12">%s</text>`, padL+10, padT+15+15*i, colors[n], n)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) //nolint:gosec // numbers and fixed names only
}

func throughputPlot(s *Summary) template.HTML {
	if len(s.Series) == 0 {
		return "<p>No completions.</p>"
	}
	xa, ya := axis{0, float64(max(1, len(s.Series)))}, axis{0, 1}
	for _, p := range s.Series {
		ya.max = math.Max(ya.max, float64(p.Completed+p.Failed))
	}
	ya.max *= 1.1
	var b strings.Builder
	svgOpen(&b, xa, ya, "second of measurement", "requests completed per second")
	line := func(get func(secondBucket) float64, color string) {
		var path strings.Builder
		for i, p := range s.Series {
			cmd := "L"
			if i == 0 {
				cmd = "M"
			}
			fmt.Fprintf(&path, "%s%.1f,%.1f ", cmd, px(xa, float64(i)+0.5), py(ya, get(p)))
		}
		fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="%s" stroke-width="2"/>`, path.String(), color)
	}
	line(func(p secondBucket) float64 { return float64(p.Completed) }, "#1f77b4")
	line(func(p secondBucket) float64 { return float64(p.Failed) }, "#d62728")
	b.WriteString(`</svg><p class="lbl">Blue: successful completions per second; red: failures. Output tokens per second are in the summary JSON series.</p>`)
	return template.HTML(b.String()) //nolint:gosec // numbers only
}
