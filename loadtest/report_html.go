package loadtest

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
)

// WriteHTML writes one self-contained HTML page (inline SVG plots, inline CSS, no scripts):
// the sweep's latency and throughput against offered rate (with the knee marked), TTFT over
// time, a TTFT histogram, latency CDFs and throughput per second, plus the summary tables.
func WriteHTML(w io.Writer, s *Summary) error {
	var text strings.Builder
	if err := WriteText(&text, s); err != nil {
		return err
	}
	data := struct {
		S                                         *Summary
		Text                                      string
		TTFTPlot, CDFPlot, TPlot, Hist, SweepPlot template.HTML
		ServerPlots                               template.HTML
	}{S: s, Text: text.String(), TTFTPlot: ttftOverTime(s), CDFPlot: cdfPlot(s), TPlot: throughputPlot(s),
		Hist: ttftHistogram(s), SweepPlot: sweepPlots(s), ServerPlots: serverPlots(s)}
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
{{if .SweepPlot}}<h2>Sweep: latency and throughput against offered rate</h2>{{.SweepPlot}}{{end}}
<h2>TTFT over time</h2>{{.TTFTPlot}}
{{if .ServerPlots}}<h2>The servers' view (scraped)</h2>{{.ServerPlots}}{{end}}
<h2>TTFT histogram</h2>{{.Hist}}
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
	svgOpenTicks(b, &xa, ya, xlabel, ylabel)
}

// svgOpenTicks opens a plot with linear ticks on the y axis and, when xa is not nil, on the
// x axis (a caller with a log axis draws its own x ticks).
func svgOpenTicks(b *strings.Builder, xa *axis, ya axis, xlabel, ylabel string) {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">`, plotW, plotH, plotW, plotH)
	fmt.Fprintf(b, `<line class="ax" x1="%d" y1="%d" x2="%d" y2="%d"/>`, padL, padT+innerH, padL+innerW, padT+innerH)
	fmt.Fprintf(b, `<line class="ax" x1="%d" y1="%d" x2="%d" y2="%d"/>`, padL, padT, padL, padT+innerH)
	for i := 0; i <= 4; i++ {
		if xa != nil {
			xv := xa.min + (xa.max-xa.min)*float64(i)/4
			fmt.Fprintf(b, `<text %s x="%.1f" y="%d" text-anchor="middle">%s</text>`, plotFontAttrs, padL+float64(innerW)*float64(i)/4, padT+innerH+15, fmtNum(xv))
		}
		yv := ya.min + (ya.max-ya.min)*float64(i)/4
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
	series := make([]cdfSeries, 0, len(names))
	for _, n := range names {
		series = append(series, cdfSeries{name: n, color: colors[n], pts: s.CDFs[n]})
	}
	return cdfSVG(series)
}

// cdfSeries is one curve of a CDF plot: (latency ms, cumulative fraction) points.
type cdfSeries struct {
	name, color string
	pts         [][2]float64
}

// cdfSVG draws CDFs on a logarithmic latency axis (latencies span decades: ITL ~ ms, E2E ~
// s) labelled in milliseconds at each power of ten.
func cdfSVG(series []cdfSeries) template.HTML {
	xa, ya := axis{math.Inf(1), math.Inf(-1)}, axis{0, 1}
	for _, sr := range series {
		for _, p := range sr.pts {
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
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">`, plotW, plotH, plotW, plotH)
	fmt.Fprintf(&b, `<line class="ax" x1="%d" y1="%d" x2="%d" y2="%d"/>`, padL, padT+innerH, padL+innerW, padT+innerH)
	fmt.Fprintf(&b, `<line class="ax" x1="%d" y1="%d" x2="%d" y2="%d"/>`, padL, padT, padL, padT+innerH)
	for d := xa.min; d <= xa.max; d++ {
		x := px(xa, d)
		fmt.Fprintf(&b, `<line class="ax" x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke-dasharray="2,4"/>`, x, padT, x, padT+innerH)
		fmt.Fprintf(&b, `<text %s x="%.1f" y="%d" text-anchor="middle">%s ms</text>`, plotFontAttrs, x, padT+innerH+15, fmtNum(math.Pow(10, d)))
	}
	for i := 0; i <= 4; i++ {
		yv := float64(i) / 4
		fmt.Fprintf(&b, `<text %s x="%d" y="%.1f" text-anchor="end">%s</text>`, plotFontAttrs, padL-5, py(ya, yv)+4, fmtNum(yv))
	}
	fmt.Fprintf(&b, `<text %s x="%d" y="%d" text-anchor="middle">latency (ms, log scale)</text>`, plotFontAttrs, padL+innerW/2, plotH-5)
	fmt.Fprintf(&b, `<text %s x="12" y="%d" transform="rotate(-90 12 %d)" text-anchor="middle">fraction of requests</text>`, plotFontAttrs, padT+innerH/2, padT+innerH/2)
	for i, sr := range series {
		if len(sr.pts) == 0 {
			continue
		}
		var path strings.Builder
		for j, p := range sr.pts {
			cmd := "L"
			if j == 0 {
				cmd = "M"
			}
			fmt.Fprintf(&path, "%s%.1f,%.1f ", cmd, px(xa, math.Log10(math.Max(p[0], 0.001))), py(ya, p[1]))
		}
		fmt.Fprintf(&b, `<path class="cdf" d="%s" fill="none" stroke="%s" stroke-width="2"/>`, path.String(), sr.color)
		fmt.Fprintf(&b, `<text x="%d" y="%d" fill="%s" font-size="12">%s</text>`, padL+10, padT+15+15*i, sr.color, template.HTMLEscapeString(sr.name))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) //nolint:gosec // numbers and escaped names only
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

// sweepPlots draws, against the offered rate of each sweep step, the latency percentiles
// and the achieved rate, with the saturation knee (the first saturated step) marked.
func sweepPlots(s *Summary) template.HTML {
	if s.Sweep == nil || len(s.Sweep.Steps) == 0 {
		return ""
	}
	steps := s.Sweep.Steps
	xa := axis{0, 0}
	lat, thr := axis{0, 0}, axis{0, 0}
	for _, st := range steps {
		xa.max = math.Max(xa.max, st.OfferedRate)
		lat.max = math.Max(lat.max, math.Max(st.TTFTP99Ms, st.TPOTP50Ms))
		thr.max = math.Max(thr.max, math.Max(st.AchievedRate, st.OfferedRate))
	}
	xa.max *= 1.05
	lat.max = math.Max(lat.max*1.1, 1)
	thr.max = math.Max(thr.max*1.1, 1)
	knee := func(b *strings.Builder, ya axis) {
		if s.Sweep.SaturationRate <= 0 {
			return
		}
		x := px(xa, s.Sweep.SaturationRate)
		fmt.Fprintf(b, `<line class="knee" x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#d62728" stroke-dasharray="6,3"/>`, x, padT, x, padT+innerH)
		fmt.Fprintf(b, `<text x="%.1f" y="%d" fill="#d62728" font-size="12">saturated at %s req/s</text>`, x+4, padT+12, fmtNum(s.Sweep.SaturationRate))
	}
	line := func(b *strings.Builder, ya axis, name, color string, i int, get func(SweepStep) float64) {
		var path strings.Builder
		for j, st := range steps {
			cmd := "L"
			if j == 0 {
				cmd = "M"
			}
			x, y := px(xa, st.OfferedRate), py(ya, get(st))
			fmt.Fprintf(&path, "%s%.1f,%.1f ", cmd, x, y)
			fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`, x, y, color)
		}
		fmt.Fprintf(b, `<path class="sweep" d="%s" fill="none" stroke="%s" stroke-width="2"/>`, path.String(), color)
		fmt.Fprintf(b, `<text x="%d" y="%d" fill="%s" font-size="12">%s</text>`, padL+10, padT+15+15*i, color, name)
	}
	var b strings.Builder
	svgOpen(&b, xa, lat, "offered rate (req/s)", "latency (ms)")
	line(&b, lat, "ttft p50", "#1f77b4", 0, func(st SweepStep) float64 { return st.TTFTP50Ms })
	line(&b, lat, "ttft p99", "#9467bd", 1, func(st SweepStep) float64 { return st.TTFTP99Ms })
	line(&b, lat, "tpot p50", "#ff7f0e", 2, func(st SweepStep) float64 { return st.TPOTP50Ms })
	knee(&b, lat)
	b.WriteString(`</svg>`)
	svgOpen(&b, xa, thr, "offered rate (req/s)", "requests per second")
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#bbb" stroke-dasharray="3,3"/>`,
		px(xa, 0), py(thr, 0), px(xa, math.Min(xa.max, thr.max)), py(thr, math.Min(xa.max, thr.max)))
	line(&b, thr, "achieved start rate", "#2ca02c", 0, func(st SweepStep) float64 { return st.AchievedRate })
	knee(&b, thr)
	b.WriteString(`</svg><p class="lbl">Each point is one sweep step; the grey diagonal is achieved = offered.</p>`)
	return template.HTML(b.String()) //nolint:gosec // numbers and fixed labels only
}

// ttftHistogram draws the sampled successful requests' TTFT in logarithmic bins (five per
// decade), so the body and the tail are both visible.
func ttftHistogram(s *Summary) template.HTML {
	var vals []float64
	for _, p := range s.Samples {
		if p.OK && p.TTFT > 0 {
			vals = append(vals, p.TTFT)
		}
	}
	if len(vals) == 0 {
		return "<p>No TTFT samples.</p>"
	}
	const perDecade = 5
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range vals {
		lv := math.Log10(v)
		lo, hi = math.Min(lo, lv), math.Max(hi, lv)
	}
	lo, hi = math.Floor(lo*perDecade)/perDecade, math.Ceil(hi*perDecade)/perDecade
	if hi <= lo {
		hi = lo + 1.0/perDecade
	}
	nb := int(math.Round((hi - lo) * perDecade))
	counts := make([]int, nb)
	for _, v := range vals {
		i := min(nb-1, int((math.Log10(v)-lo)*perDecade))
		counts[max(0, i)]++
	}
	xa, ya := axis{lo, hi}, axis{0, 0}
	for _, c := range counts {
		ya.max = math.Max(ya.max, float64(c))
	}
	ya.max *= 1.1
	var b strings.Builder
	svgOpenTicks(&b, nil, ya, "TTFT (ms, log scale)", "requests (sampled)")
	for i, c := range counts {
		x0, x1 := px(xa, lo+float64(i)/perDecade), px(xa, lo+float64(i+1)/perDecade)
		y := py(ya, float64(c))
		fmt.Fprintf(&b, `<rect class="bar" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#1f77b4" fill-opacity="0.7"/>`, x0+1, y, math.Max(0, x1-x0-2), float64(padT+innerH)-y)
	}
	// Label every bin edge when there are few bins, else every decade.
	step := 1.0 / perDecade
	if nb > 20 {
		step = 1
	}
	for e := math.Ceil(lo/step-1e-9) * step; e <= hi+1e-9; e += step {
		fmt.Fprintf(&b, `<text %s x="%.1f" y="%d" text-anchor="middle">%s</text>`, plotFontAttrs, px(xa, e), padT+innerH+15, fmtNum(math.Pow(10, e)))
	}
	b.WriteString(`</svg><p class="lbl">TTFT of the sampled successful requests, log-spaced bins (5 per decade).</p>`)
	return template.HTML(b.String()) //nolint:gosec // numbers only
}

// serverPlots draws each scraped signal over time, one line per --scrape URL, on the same
// time axis as "TTFT over time" (seconds since the measured period began).
func serverPlots(s *Summary) template.HTML {
	if len(s.Scrapes) == 0 {
		return ""
	}
	xa := axis{0, 1}
	for _, p := range s.Samples {
		xa.max = math.Max(xa.max, p.T)
	}
	for _, sr := range s.Scrapes {
		for _, p := range sr.Points {
			xa.max = math.Max(xa.max, p.T)
		}
	}
	var b strings.Builder
	for _, m := range []struct {
		title, ylabel string
		get           func(ScrapePoint) jsonFloat
		fixedMax      float64
	}{
		{"KV-cache use", "fraction of KV cache in use", func(p ScrapePoint) jsonFloat { return p.KVUsage }, 1},
		{"Queue depth", "requests waiting", func(p ScrapePoint) jsonFloat { return p.Waiting }, 0},
		{"Prefix-cache hit rate", "hits / lookups per interval", func(p ScrapePoint) jsonFloat { return p.PrefixHitRate }, 1},
	} {
		ya := axis{0, m.fixedMax}
		seen := false
		for _, sr := range s.Scrapes {
			for _, p := range sr.Points {
				if v := float64(m.get(p)); !math.IsNaN(v) && p.T >= 0 {
					seen = true
					ya.max = math.Max(ya.max, v)
				}
			}
		}
		if !seen {
			continue
		}
		if m.fixedMax == 0 {
			ya.max = math.Max(1, ya.max*1.1)
		}
		fmt.Fprintf(&b, `<h3>%s</h3>`, m.title)
		svgOpen(&b, xa, ya, "seconds since start of measurement", m.ylabel)
		for i, sr := range s.Scrapes {
			color := runColors[i%len(runColors)]
			var path strings.Builder
			pen := "M"
			for _, p := range sr.Points {
				v := float64(m.get(p))
				if math.IsNaN(v) || p.T < 0 {
					pen = "M" // a gap where the signal is missing
					continue
				}
				fmt.Fprintf(&path, "%s%.1f,%.1f ", pen, px(xa, p.T), py(ya, v))
				pen = "L"
			}
			fmt.Fprintf(&b, `<path class="server" d="%s" fill="none" stroke="%s" stroke-width="1.5"/>`, path.String(), color)
			fmt.Fprintf(&b, `<text x="%d" y="%d" fill="%s" font-size="12">%s</text>`, padL+10, padT+15+15*i, color, template.HTMLEscapeString(sr.URL))
		}
		b.WriteString(`</svg>`)
	}
	return template.HTML(b.String()) //nolint:gosec // numbers and escaped URLs only
}
