package router

import (
	"bytes"
	"math"
	"strconv"

	dto "github.com/prometheus/client_model/go"
)

// expositionMemo remembers the last exposition one endpoint's scrape handed to the
// Prometheus text parser, and the families the parser made of it, so that the next scrape
// can skip the parser when only sample values changed.
//
// Why: the parser is most of a scrape's CPU (24 % of the picker process in the routing
// benchmark's shared-prefix cell, ~165 µs per scrape in place for a dozen kept lines; its
// label parsing allocates per label), and between two scrapes 50 ms apart a model server's
// kept lines differ only in the numbers: the same names, labels and TYPE lines, with a new
// queue length or KV-cache use. The info families (vllm:cache_config_info,
// vllm:lora_requests_info) do not change at all until an adapter is loaded.
//
// How it stays the library's answer: the structure is always the library's. A memo is made
// only from a text the parser accepted, and only when every sample line maps to exactly one
// gauge, counter or untyped sample (no histograms, summaries or timestamps). A later text
// is reused only when it has the same lines, every non-sample line byte for byte the same,
// and every sample line the same bytes up to its value token, which must be one token read
// with the parser's own float rule. Anything else goes to the parser, and the memo is
// rebuilt from its answer. FuzzExpositionMemo holds reuse to the parser's answer.
type expositionMemo struct {
	valid   bool
	text    []byte   // the text the memo was built from
	lines   [][2]int // each line of text, [start, end) without its newline
	samples []memoSample
	fams    map[string]*dto.MetricFamily
	scratch []float64
}

// memoSample is one sample line: the bytes before its value token, and the value the
// parser made of it.
type memoSample struct {
	line   int
	prefix int
	value  *float64
}

// reset forgets the memo: the next scrape is parsed.
func (m *expositionMemo) reset() {
	m.valid = false
	m.fams = nil
}

// reuse returns the memo's families updated with text's sample values when text differs
// from the memo's text only in sample values; otherwise false, and the memo is unchanged.
// The families returned are the memo's own: valid until the next reuse or build.
func (m *expositionMemo) reuse(text []byte) (map[string]*dto.MetricFamily, bool) {
	if !m.valid {
		return nil, false
	}
	vals := m.scratch[:0]
	next := 0 // the next sample's index
	rest := text
	for i, ln := range m.lines {
		if len(rest) == 0 {
			return nil, false // fewer lines
		}
		j := bytes.IndexByte(rest, '\n')
		if j < 0 {
			return nil, false // the parser wants every line ended, the last one too
		}
		line := rest[:j]
		rest = rest[j+1:]
		old := m.text[ln[0]:ln[1]]
		if next < len(m.samples) && m.samples[next].line == i {
			p := m.samples[next].prefix
			if len(line) <= p || !bytes.Equal(line[:p], old[:p]) {
				return nil, false
			}
			v, ok := parseSampleValue(line[p:])
			if !ok {
				return nil, false
			}
			vals = append(vals, v)
			next++
			continue
		}
		if !bytes.Equal(line, old) {
			return nil, false
		}
	}
	if len(rest) != 0 {
		return nil, false // more lines
	}
	for k, v := range vals {
		*m.samples[k].value = v
	}
	m.scratch = vals
	return m.fams, true
}

// build makes the memo from a text the parser accepted and the families it returned. When
// the text's sample lines cannot be matched one to one with the families' samples, the
// memo stays invalid and every scrape is parsed.
func (m *expositionMemo) build(text []byte, fams map[string]*dto.MetricFamily) {
	m.reset()
	m.text = append(m.text[:0], text...)
	m.lines = m.lines[:0]
	m.samples = m.samples[:0]
	seen := make(map[string]int, len(fams))
	start := 0
	for start < len(m.text) {
		end := len(m.text)
		if j := bytes.IndexByte(m.text[start:], '\n'); j >= 0 {
			end = start + j
		}
		line := m.text[start:end]
		idx := len(m.lines)
		m.lines = append(m.lines, [2]int{start, end})
		start = end + 1
		l := bytes.TrimLeft(line, " \t")
		if len(l) == 0 || l[0] == '#' {
			continue // a TYPE line (kept lines are never blank): compared byte for byte
		}
		name := nameToken(l)
		mf := fams[string(name)]
		if name == nil || mf == nil {
			return
		}
		n := seen[string(name)]
		seen[string(name)] = n + 1
		if n >= len(mf.GetMetric()) {
			return
		}
		value := sampleValuePtr(mf.GetType(), mf.GetMetric()[n])
		if value == nil {
			return
		}
		// The value token is the line's last one; the parser read it (the metric has no
		// timestamp, so nothing follows it).
		tok := bytes.LastIndexAny(line, " \t") + 1
		v, ok := parseSampleValue(line[tok:])
		if tok == 0 || !ok || !sameFloat(v, *value) {
			return
		}
		m.samples = append(m.samples, memoSample{line: idx, prefix: tok, value: value})
	}
	for name, mf := range fams {
		if seen[name] != len(mf.GetMetric()) {
			return
		}
	}
	m.fams = fams
	m.valid = true
}

// sampleValuePtr is the value field of a one-line sample, nil for other kinds (histogram,
// summary) and for samples with a timestamp.
func sampleValuePtr(t dto.MetricType, s *dto.Metric) *float64 {
	if s.TimestampMs != nil {
		return nil
	}
	switch t {
	case dto.MetricType_GAUGE:
		if s.Gauge != nil {
			return s.Gauge.Value
		}
	case dto.MetricType_COUNTER:
		if s.Counter != nil {
			return s.Counter.Value
		}
	case dto.MetricType_UNTYPED:
		if s.Untyped != nil {
			return s.Untyped.Value
		}
	}
	return nil
}

// parseSampleValue reads a value token as expfmt's text parser does: one token without
// blanks, Go's float syntax without hexadecimal floats or digit separators.
func parseSampleValue(tok []byte) (float64, bool) {
	if len(tok) == 0 || bytes.ContainsAny(tok, " \t\npP_") {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(tok), 64)
	return v, err == nil
}

func sameFloat(a, b float64) bool {
	return a == b || (math.IsNaN(a) && math.IsNaN(b))
}
