package loadtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The server's view: during a run the load tester can scrape Prometheus metrics from the
// target or the model servers and keep, per URL and per scrape, the signals that explain
// latency: KV-cache use, queue depth, running requests and the prefix-cache hit rate.

// ScrapeSeries is what one --scrape URL reported over the run.
type ScrapeSeries struct {
	URL    string        `json:"url"`
	Points []ScrapePoint `json:"points"`
	// Errors counts failed scrapes; LastError is the most recent one.
	Errors    int    `json:"errors"`
	LastError string `json:"last_error,omitempty"`
}

// ScrapePoint is one scrape. A measure the server does not expose is NaN in Go and
// omitted (null) in JSON.
type ScrapePoint struct {
	T float64 `json:"t"` // seconds since the measured period began (negative in warm-up)
	// KVUsage is KV-cache use in [0, 1] (vLLM kv_cache_usage_perc / gpu_cache_usage_perc,
	// SGLang token_usage), averaged over the series found (one per engine).
	KVUsage jsonFloat `json:"kv_usage"`
	Waiting jsonFloat `json:"waiting"` // requests queued (summed over series)
	Running jsonFloat `json:"running"` // requests running (summed over series)
	// PrefixHitRate is prefix-cache hits / queries since the previous scrape (vLLM's
	// counters), or SGLang's cache_hit_rate gauge.
	PrefixHitRate jsonFloat `json:"prefix_hit_rate"`
}

// jsonFloat is a float that encodes NaN as null.
type jsonFloat float64

func (f jsonFloat) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
		return []byte("null"), nil
	}
	return fmt.Appendf(nil, "%g", float64(f)), nil
}

func (f *jsonFloat) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*f = jsonFloat(math.NaN())
		return nil
	}
	var v float64
	if _, err := fmt.Sscanf(string(b), "%g", &v); err != nil {
		return err
	}
	*f = jsonFloat(v)
	return nil
}

// Bounds on what a scraped server can make the load tester hold.
const (
	maxScrapeBytes  = 8 << 20
	maxScrapePoints = 20000 // per URL: 5.5 hours at one scrape a second
	maxScrapeURLs   = 32
)

// metric names, by engine.
var (
	kvNames      = []string{"vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage"}
	waitingNames = []string{"vllm:num_requests_waiting", "sglang:num_queue_reqs"}
	runningNames = []string{"vllm:num_requests_running", "sglang:num_running_reqs"}
	hitNames     = []string{"vllm:prefix_cache_hits_total", "vllm:prefix_cache_hits", "vllm:gpu_prefix_cache_hits_total"}
	queryNames   = []string{"vllm:prefix_cache_queries_total", "vllm:prefix_cache_queries", "vllm:gpu_prefix_cache_queries_total"}
	hitRateNames = []string{"sglang:cache_hit_rate"}
)

// scraper polls every URL at an interval until stopped.
type scraper struct {
	urls     []string
	interval time.Duration
	hc       *http.Client
	origin   time.Time // the measured period's start
	maxBytes int64     // bound on one exposition (maxScrapeBytes)
	mu       sync.Mutex
	series   []ScrapeSeries
	prev     []counters // previous prefix counters per URL
}

type counters struct {
	hits, queries float64
	ok            bool
}

func newScraper(urls []string, interval, timeout time.Duration, origin time.Time) (*scraper, error) {
	if len(urls) > maxScrapeURLs {
		return nil, fmt.Errorf("config: %d scrape URLs: at most %d", len(urls), maxScrapeURLs)
	}
	s := &scraper{urls: urls, interval: interval, origin: origin, hc: &http.Client{Timeout: timeout}, maxBytes: maxScrapeBytes,
		series: make([]ScrapeSeries, len(urls)), prev: make([]counters, len(urls))}
	for i, u := range urls {
		s.series[i].URL = u
	}
	return s, nil
}

// run scrapes every URL at once, then every interval, until ctx ends.
func (s *scraper) run(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	var buf bytes.Buffer
	for {
		for i := range s.urls {
			s.scrapeOne(ctx, i, &parser, &buf)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *scraper) scrapeOne(ctx context.Context, i int, parser *expfmt.TextParser, buf *bytes.Buffer) {
	at := time.Now()
	fams, err := s.fetch(ctx, s.urls[i], parser, buf)
	s.mu.Lock()
	defer s.mu.Unlock()
	sr := &s.series[i]
	if err != nil {
		if ctx.Err() == nil {
			sr.Errors++
			sr.LastError = err.Error()
		}
		return
	}
	if len(sr.Points) >= maxScrapePoints {
		return
	}
	p := ScrapePoint{T: at.Sub(s.origin).Seconds(), KVUsage: jsonFloat(avgOf(fams, kvNames)),
		Waiting: jsonFloat(sumOf(fams, waitingNames)), Running: jsonFloat(sumOf(fams, runningNames)),
		PrefixHitRate: jsonFloat(sumOf(fams, hitRateNames))}
	hits, queries := sumOf(fams, hitNames), sumOf(fams, queryNames)
	cur := counters{hits: hits, queries: queries, ok: !math.IsNaN(hits) && !math.IsNaN(queries)}
	if prev := s.prev[i]; cur.ok && prev.ok {
		// Over the interval: a counter reset (server restart) gives no value, not a negative one.
		if dq, dh := cur.queries-prev.queries, cur.hits-prev.hits; dq > 0 && dh >= 0 {
			p.PrefixHitRate = jsonFloat(dh / dq)
		} else if dq == 0 && dh == 0 {
			p.PrefixHitRate = jsonFloat(math.NaN()) // no prefix lookups in the interval
		}
	}
	s.prev[i] = cur
	sr.Points = append(sr.Points, p)
}

func (s *scraper) fetch(ctx context.Context, url string, parser *expfmt.TextParser, buf *bytes.Buffer) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	if resp.ContentLength > s.maxBytes {
		return nil, fmt.Errorf("exposition larger than %d bytes (Content-Length %d)", s.maxBytes, resp.ContentLength)
	}
	buf.Reset()
	n, err := buf.ReadFrom(io.LimitReader(resp.Body, s.maxBytes+1))
	if err != nil {
		return nil, err
	}
	if n > s.maxBytes {
		return nil, fmt.Errorf("exposition larger than %d bytes", s.maxBytes)
	}
	fams, err := parser.TextToMetricFamilies(buf)
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	return fams, nil
}

// results returns a copy of the series.
func (s *scraper) results() []ScrapeSeries {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ScrapeSeries, len(s.series))
	for i, sr := range s.series {
		out[i] = sr
		out[i].Points = append([]ScrapePoint(nil), sr.Points...)
	}
	return out
}

// values returns every sample value of the first family found among names.
func values(fams map[string]*dto.MetricFamily, names []string) []float64 {
	for _, n := range names {
		f, ok := fams[n]
		if !ok {
			continue
		}
		var out []float64
		for _, m := range f.GetMetric() {
			var v float64
			switch {
			case m.GetGauge() != nil:
				v = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				v = m.GetCounter().GetValue()
			case m.GetUntyped() != nil:
				v = m.GetUntyped().GetValue()
			default:
				continue
			}
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				out = append(out, v)
			}
		}
		if len(out) > 0 {
			return out
		}
	}
	return nil
}

func sumOf(fams map[string]*dto.MetricFamily, names []string) float64 {
	vs := values(fams, names)
	if len(vs) == 0 {
		return math.NaN()
	}
	t := 0.0
	for _, v := range vs {
		t += v
	}
	return t
}

func avgOf(fams map[string]*dto.MetricFamily, names []string) float64 {
	vs := values(fams, names)
	if len(vs) == 0 {
		return math.NaN()
	}
	return sumOf(fams, names) / float64(len(vs))
}
