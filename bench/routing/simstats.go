package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// fleetCounters sums engine counters over every sim: they show what routing did to the
// GPUs (prefill work saved by cache hits, preemptions from KV pressure).
type fleetCounters struct {
	PrefixQueryTokens float64 `json:"prefix_cache_query_tokens"`
	PrefixHitTokens   float64 `json:"prefix_cache_hit_tokens"`
	PromptTokens      float64 `json:"prompt_tokens"`
	GenerationTokens  float64 `json:"generation_tokens"`
	Preemptions       float64 `json:"preemptions"`
	// Sim-side time to first token (arrival at the sim to first token), summed over
	// requests: its mean leaves out the gateway's own latency.
	SimTTFTSum   float64 `json:"sim_ttft_seconds_sum"`
	SimTTFTCount float64 `json:"sim_ttft_count"`
}

// SimTTFTMean is the mean sim-side TTFT in seconds (0 without requests).
func (a fleetCounters) SimTTFTMean() float64 {
	if a.SimTTFTCount == 0 {
		return 0
	}
	return a.SimTTFTSum / a.SimTTFTCount
}

func (a fleetCounters) minus(b fleetCounters) fleetCounters {
	return fleetCounters{
		PrefixQueryTokens: a.PrefixQueryTokens - b.PrefixQueryTokens,
		PrefixHitTokens:   a.PrefixHitTokens - b.PrefixHitTokens,
		PromptTokens:      a.PromptTokens - b.PromptTokens,
		GenerationTokens:  a.GenerationTokens - b.GenerationTokens,
		Preemptions:       a.Preemptions - b.Preemptions,
		SimTTFTSum:        a.SimTTFTSum - b.SimTTFTSum,
		SimTTFTCount:      a.SimTTFTCount - b.SimTTFTCount,
	}
}

// scrapeFleet reads every sim's /metrics with the Prometheus text parser and sums the
// counters of fleetCounters.
func scrapeFleet(ctx context.Context, addrs []string) (fleetCounters, error) {
	var total fleetCounters
	client := &http.Client{Timeout: 5 * time.Second}
	var errs []error
	for _, addr := range addrs {
		c, err := scrapeSim(ctx, client, addr)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		total.PrefixQueryTokens += c.PrefixQueryTokens
		total.PrefixHitTokens += c.PrefixHitTokens
		total.PromptTokens += c.PromptTokens
		total.GenerationTokens += c.GenerationTokens
		total.Preemptions += c.Preemptions
		total.SimTTFTSum += c.SimTTFTSum
		total.SimTTFTCount += c.SimTTFTCount
	}
	return total, errors.Join(errs...)
}

func scrapeSim(ctx context.Context, client *http.Client, addr string) (fleetCounters, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return fleetCounters{}, fmt.Errorf("scrape %s: %w", addr, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fleetCounters{}, fmt.Errorf("scrape %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return fleetCounters{}, fmt.Errorf("scrape %s: status %d", addr, resp.StatusCode)
	}
	return parseSimCounters(resp.Body)
}

// parseSimCounters sums the counters of fleetCounters from one Prometheus text exposition.
func parseSimCounters(r io.Reader) (fleetCounters, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return fleetCounters{}, fmt.Errorf("parse sim metrics: %w", err)
	}
	sum := func(name string) float64 {
		f, ok := fams[name]
		if !ok {
			return 0
		}
		v := 0.0
		for _, m := range f.GetMetric() {
			v += m.GetCounter().GetValue() + m.GetUntyped().GetValue()
		}
		return v
	}
	hist := func(name string) (s, n float64) {
		f, ok := fams[name]
		if !ok {
			return 0, 0
		}
		for _, m := range f.GetMetric() {
			s += m.GetHistogram().GetSampleSum()
			n += float64(m.GetHistogram().GetSampleCount())
		}
		return s, n
	}
	ttftSum, ttftCount := hist("vllm:time_to_first_token_seconds")
	return fleetCounters{
		SimTTFTSum: ttftSum, SimTTFTCount: ttftCount,
		PrefixQueryTokens: sum("vllm:prefix_cache_queries_total"),
		PrefixHitTokens:   sum("vllm:prefix_cache_hits_total"),
		PromptTokens:      sum("vllm:prompt_tokens_total"),
		GenerationTokens:  sum("vllm:generation_tokens_total"),
		Preemptions:       sum("vllm:num_preemptions_total"),
	}, nil
}
