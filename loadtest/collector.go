package loadtest

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// metricSet is one set of distributions and counters (the whole run, a model, an endpoint).
type metricSet struct {
	ttft, ttfb, itl, chunkGap, tpot, e2e  *hdrhistogram.Histogram
	requests, failed, good                int64
	outTokens, promptTokens, cachedTokens int64
	errors                                map[string]int64
}

// newMetricSet makes the run-wide set: every distribution at 3 significant digits.
func newMetricSet() *metricSet {
	return &metricSet{ttft: newHist(), ttfb: newHist(), itl: newHist(), chunkGap: newHist(),
		tpot: newHist(), e2e: newHist(), errors: map[string]int64{}}
}

// newBreakdownSet makes a per-model / per-endpoint set: only what Breakdown reports (TTFT,
// TPOT, E2E), at 2 significant digits (1 % error), ~25 KiB per histogram instead of ~190.
func newBreakdownSet() *metricSet {
	return &metricSet{ttft: newHistSmall(), tpot: newHistSmall(), e2e: newHistSmall(), errors: map[string]int64{}}
}

// maxBreakdowns bounds the per-endpoint / per-model tables (~75 KiB each).
const maxBreakdowns = 256

// secondBucket is one second of the measured period, for the throughput plot.
type secondBucket struct {
	Completed int64 `json:"completed"`
	Failed    int64 `json:"failed"`
	OutTokens int64 `json:"output_tokens"`
}

// Sample is one request kept for the HTML report's TTFT-over-time plot.
type Sample struct {
	T    float64 `json:"t"` // seconds since the measured period began
	TTFT float64 `json:"ttft"`
	E2E  float64 `json:"e2e"`
	OK   bool    `json:"ok"`
}

// collector aggregates results. One mutex is enough: recording a result costs a few
// histogram updates, far below the cost of the request itself.
type collector struct {
	mu          sync.Mutex
	cfg         *Config
	measureFrom time.Time
	all         *metricSet
	byModel     map[string]*metricSet
	byEndpoint  map[string]*metricSet
	lag         *hdrhistogram.Histogram
	late        int64
	dropped     int64
	interrupted int64
	warmupReqs  int64
	started     int64
	inFlight    int64
	protocols   map[string]int64 // responses by HTTP version (a handful of values)
	lastEnd     time.Time
	// scheduleEnd is when the load schedule ended (no start after it); zero until then.
	scheduleEnd time.Time
	series      []secondBucket
	samples     []Sample
	seen        int64
	rng         *rand.Rand
	jsonW       *bufio.Writer
	csvW        *csv.Writer
	sinkErr     error
}

func newCollector(cfg *Config) *collector {
	c := &collector{cfg: cfg, all: newMetricSet(), byModel: map[string]*metricSet{},
		byEndpoint: map[string]*metricSet{}, lag: newHist(),
		rng: rand.New(rand.NewPCG(cfg.Seed, 7))}
	if cfg.RequestLog != nil {
		c.jsonW = bufio.NewWriterSize(cfg.RequestLog, 64<<10)
	}
	if cfg.RequestCSV != nil {
		c.csvW = csv.NewWriter(cfg.RequestCSV)
		if !cfg.noCSVHeader {
			c.sinkErr = c.csvW.Write(csvHeader)
		}
	}
	return c
}

var csvHeader = []string{"seq", "model", "endpoint", "status", "error", "warmup", "start_ms", "lag_ms",
	"ttfb_ms", "ttft_ms", "tpot_ms", "e2e_ms", "prompt_tokens", "output_tokens", "cached_tokens", "content_chunks"}

func (c *collector) breakdown(m map[string]*metricSet, key string) *metricSet {
	if key == "" {
		key = "(none)"
	}
	s, ok := m[key]
	if !ok {
		if len(m) >= maxBreakdowns {
			key = "(other)"
			if s, ok = m[key]; ok {
				return s
			}
		}
		s = newBreakdownSet()
		m[key] = s
	}
	return s
}

// add records a finished request.
func (c *collector) add(r *Result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inFlight--
	c.writeSinks(r)
	if r.Error == "interrupted" {
		c.interrupted++
		return
	}
	if r.Warmup {
		c.warmupReqs++
		return
	}
	if r.Proto != "" {
		if c.protocols == nil {
			c.protocols = map[string]int64{}
		}
		if _, ok := c.protocols[r.Proto]; ok || len(c.protocols) < 8 {
			c.protocols[r.Proto]++
		}
	}
	if r.open { // schedule lag: actual send minus scheduled send
		recordMs(c.lag, r.LagMs, 1)
		if r.LagMs > ms(c.cfg.LateAfter) {
			c.late++
		}
	}
	end := r.sent.Add(time.Duration(r.E2EMs * float64(time.Millisecond)))
	if end.After(c.lastEnd) {
		c.lastEnd = end
	}
	sets := [3]*metricSet{c.all, c.breakdown(c.byModel, r.Model), c.breakdown(c.byEndpoint, r.Endpoint)}
	good := r.ok() && c.meetsSLO(r)
	for _, s := range sets {
		s.requests++
		if !r.ok() {
			s.failed++
			s.errors[r.Error]++
			continue
		}
		if good {
			s.good++
		}
		s.outTokens += int64(r.OutputTokens)
		s.promptTokens += int64(r.PromptTokens)
		s.cachedTokens += int64(r.CachedTokens)
		recordMs(s.e2e, r.E2EMs, 1)
		if r.ContentChunks > 0 {
			recordMs(s.ttft, r.TTFTMs, 1)
		}
		if r.OutputTokens > 1 && r.ContentChunks > 0 {
			recordMs(s.tpot, r.TPOTMs, 1)
		}
		if s.itl == nil { // a breakdown set: TTFB and ITL are run-wide only
			continue
		}
		recordMs(s.ttfb, r.TTFBMs, 1)
		for _, g := range r.itl {
			recordMs(s.chunkGap, ms(g.gap), 1)
			recordMs(s.itl, ms(g.gap)/float64(g.tokens), int64(g.tokens))
		}
	}
	sec := int(end.Sub(c.measureFrom) / time.Second)
	if sec >= 0 && sec < 24*3600 {
		for len(c.series) <= sec {
			c.series = append(c.series, secondBucket{})
		}
		if r.ok() {
			c.series[sec].Completed++
			c.series[sec].OutTokens += int64(r.OutputTokens)
		} else {
			c.series[sec].Failed++
		}
	}
	// Reservoir sampling keeps an unbiased, bounded set of points for the report.
	c.seen++
	sample := Sample{T: r.sent.Sub(c.measureFrom).Seconds(), TTFT: r.TTFTMs, E2E: r.E2EMs, OK: r.ok()}
	if len(c.samples) < c.cfg.MaxSamples {
		c.samples = append(c.samples, sample)
	} else if j := c.rng.Int64N(c.seen); j < int64(c.cfg.MaxSamples) {
		c.samples[j] = sample
	}
}

func (c *collector) meetsSLO(r *Result) bool {
	s := c.cfg.SLO
	if s.TTFT > 0 && (r.ContentChunks == 0 || r.TTFTMs > ms(s.TTFT)) {
		return false
	}
	if s.TPOT > 0 && r.OutputTokens > 1 && r.TPOTMs > ms(s.TPOT) {
		return false
	}
	if s.E2E > 0 && r.E2EMs > ms(s.E2E) {
		return false
	}
	return true
}

// start counts a request that is about to be sent.
func (c *collector) start(warmup bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inFlight++
	if !warmup {
		c.started++
	}
}

// setScheduleEnd records when the schedule ended, for the start rate.
func (c *collector) setScheduleEnd(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.scheduleEnd = t
}

func (c *collector) drop(warmup bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !warmup {
		c.dropped++
	}
}

func (c *collector) writeSinks(r *Result) {
	if c.sinkErr != nil {
		return
	}
	if c.jsonW != nil {
		b, err := json.Marshal(r)
		if err == nil {
			b = append(b, '\n')
			_, err = c.jsonW.Write(b)
		}
		if err != nil {
			c.sinkErr = fmt.Errorf("write request log: %w", err)
			return
		}
	}
	if c.csvW != nil {
		f := func(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }
		rec := []string{strconv.FormatInt(r.Seq, 10), r.Model, r.Endpoint, strconv.Itoa(r.Status), r.Error,
			strconv.FormatBool(r.Warmup), f(r.StartMs), f(r.LagMs), f(r.TTFBMs), f(r.TTFTMs), f(r.TPOTMs),
			f(r.E2EMs), strconv.Itoa(r.PromptTokens), strconv.Itoa(r.OutputTokens), strconv.Itoa(r.CachedTokens),
			strconv.Itoa(r.ContentChunks)}
		if err := c.csvW.Write(rec); err != nil {
			c.sinkErr = fmt.Errorf("write request csv: %w", err)
		}
	}
}

func (c *collector) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.jsonW != nil && c.sinkErr == nil {
		if err := c.jsonW.Flush(); err != nil {
			c.sinkErr = fmt.Errorf("flush request log: %w", err)
		}
	}
	if c.csvW != nil && c.sinkErr == nil {
		c.csvW.Flush()
		if err := c.csvW.Error(); err != nil {
			c.sinkErr = fmt.Errorf("flush request csv: %w", err)
		}
	}
	return c.sinkErr
}

// progressLine is the live status: elapsed, rate, in flight, TTFT p50/p99, errors.
func (c *collector) progressLine(now time.Time, runStart time.Time) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	el := now.Sub(runStart)
	mel := now.Sub(c.measureFrom).Seconds()
	rate := 0.0
	if mel > 0 {
		rate = float64(c.all.requests) / mel
	}
	return fmt.Sprintf("%6.1fs  done %d  %.1f req/s  in flight %d  ttft p50 %.1fms p99 %.1fms  errors %d  dropped %d",
		el.Seconds(), c.all.requests, rate, c.inFlight,
		float64(c.all.ttft.ValueAtQuantile(50))/1000, float64(c.all.ttft.ValueAtQuantile(99))/1000,
		c.all.failed, c.dropped)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
