package router

import (
	"bytes"
	"fmt"
	"math"

	dto "github.com/prometheus/client_model/go"
)

// Bounds of one scrape. A model server's exposition is a few hundred KB and a few thousand
// series; a server that sends far more is broken or hostile, and parsing it every scrape
// interval costs the picker CPU and memory (a 40,000-series exposition raised picker CPU 8×).
const (
	DefaultMaxScrapeBytes  = 4 << 20
	DefaultMaxScrapeSeries = 10000
)

// countSeries counts the sample lines of a text exposition (lines that are neither blank
// nor comments), stopping as soon as the count passes limit: a scrape over the limit is
// rejected before the parser sees it.
func countSeries(text []byte, limit int) (n int, over bool) {
	for len(text) > 0 {
		line := text
		if i := bytes.IndexByte(text, '\n'); i >= 0 {
			line, text = text[:i], text[i+1:]
		} else {
			text = nil
		}
		line = bytes.TrimLeft(line, " \t")
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		n++
		if n > limit {
			return n, true
		}
	}
	return n, false
}

// checkEngineMetrics rejects an exposition whose load metrics parse but cannot be true: a
// NaN or infinite value, a negative queue or running count, KV-cache use outside [0, 1].
// Such a server must not look idle (clamping NaN to 0 would make it the most attractive
// endpoint); the scrape fails and the endpoint turns stale instead.
func checkEngineMetrics(eng engine, fams map[string]*dto.MetricFamily) error {
	waiting, running, kv := engineFamilies(eng, fams)
	for _, c := range []struct {
		mf       *dto.MetricFamily
		max      float64
		fraction bool
	}{{waiting, math.MaxFloat64, false}, {running, math.MaxFloat64, false}, {kv, 1, true}} {
		for _, s := range c.mf.GetMetric() {
			v := value(s)
			switch {
			case math.IsNaN(v) || math.IsInf(v, 0):
				return fmt.Errorf("%s = %v is not a finite number", c.mf.GetName(), v)
			case v < 0:
				return fmt.Errorf("%s = %v is negative", c.mf.GetName(), v)
			case c.fraction && v > c.max:
				return fmt.Errorf("%s = %v is outside [0, 1]", c.mf.GetName(), v)
			}
		}
	}
	return nil
}
