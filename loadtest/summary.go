package loadtest

import (
	"time"
)

// Summary is the end-of-run report; its JSON form is what --summary-export writes.
// Durations are milliseconds, rates are per second of the measured period.
type Summary struct {
	StartedAt time.Time `json:"started_at"`
	// DurationS is the measured period: from the end of warm-up to the last completion.
	DurationS float64      `json:"duration_s"`
	Setup     SummarySetup `json:"setup"`
	Requests  int64        `json:"requests"`
	Succeeded int64        `json:"succeeded"`
	Failed    int64        `json:"failed"`
	ErrorRate float64      `json:"error_rate"`
	// ErrorsByStatus counts failures by class ("http_503", "timeout", "transport", ...).
	ErrorsByStatus map[string]int64 `json:"errors_by_status"`
	// Interrupted requests were cut by Ctrl-C / cancellation and are in no other figure.
	Interrupted int64 `json:"interrupted"`
	// Protocols counts measured responses by the HTTP version they came over.
	Protocols      map[string]int64 `json:"protocols,omitempty"`
	WarmupRequests int64            `json:"warmup_requests"`

	// RequestRate is the start rate: measured requests started per second of the schedule's
	// span (ScheduleS), so an exact open loop at R req/s reports R. It does not include the
	// tail of completions after the schedule ended; CompletionRate does.
	RequestRate float64 `json:"request_rate"`
	// ScheduleS is the measured part of the schedule: from the end of warm-up to the planned
	// end, the first arrival not started (request limit), or an early stop.
	ScheduleS float64 `json:"schedule_s"`
	// CompletionRate is completed requests per second of DurationS (to the last completion).
	CompletionRate   float64 `json:"completion_rate"`
	OutputTokensPerS float64 `json:"output_tokens_per_s"`
	InputTokensPerS  float64 `json:"input_tokens_per_s"`
	OutputTokens     int64   `json:"output_tokens"`
	PromptTokens     int64   `json:"prompt_tokens"`
	CachedTokens     int64   `json:"cached_tokens"`
	// CachedTokenRatio = cached prompt tokens / prompt tokens (usage.prompt_tokens_details).
	CachedTokenRatio float64  `json:"cached_token_ratio"`
	Goodput          *Goodput `json:"goodput,omitempty"`

	// TTFTCI and E2ECI are bootstrap 95 % intervals of p50/p90/p99 from the sampled
	// successful requests (nil with fewer than 20).
	TTFTCI *PercentileCIs `json:"ttft_ci95_ms,omitempty"`
	E2ECI  *PercentileCIs `json:"e2e_ci95_ms,omitempty"`

	TTFT       Latency `json:"ttft_ms"`
	TTFB       Latency `json:"ttfb_ms"`
	ITL        Latency `json:"itl_ms"`
	InterChunk Latency `json:"inter_chunk_ms"`
	TPOT       Latency `json:"tpot_ms"`
	E2E        Latency `json:"e2e_ms"`

	Schedule ScheduleStats `json:"schedule"`

	ByModel    map[string]*Breakdown `json:"by_model"`
	ByEndpoint map[string]*Breakdown `json:"by_endpoint"`

	// Scrapes are the --scrape URLs' signals over the run.
	Scrapes []ScrapeSeries `json:"scrapes,omitempty"`

	Thresholds []ThresholdResult `json:"thresholds,omitempty"`
	Sweep      *SweepResult      `json:"sweep,omitempty"`

	// Series is per-second completions and output tokens of the measured period.
	Series []secondBucket `json:"series,omitempty"`
	// Samples are (a bounded reservoir of) per-request points, used by the HTML report.
	Samples []Sample `json:"-"`
	// CDFs are latency CDF points (ms, fraction) per measure, for the HTML report and compare.
	CDFs map[string][][2]float64 `json:"cdfs,omitempty"`
}

// SummarySetup records what was run.
type SummarySetup struct {
	URL    string `json:"url"`
	API    string `json:"api"`
	Stream bool   `json:"stream"`
	Mode   string `json:"mode"` // "open" or "closed"
	// HTTP2 tells whether HTTP/2 was asked for (Summary.Protocols shows what was used).
	HTTP2     bool            `json:"http2,omitempty"`
	Rate      float64         `json:"rate,omitempty"`
	VUs       int             `json:"vus,omitempty"`
	Arrival   string          `json:"arrival,omitempty"`
	Stages    []Stage         `json:"stages,omitempty"`
	Models    []WeightedModel `json:"models"`
	Workload  WorkloadConfig  `json:"workload"`
	Seed      uint64          `json:"seed"`
	WarmupS   float64         `json:"warmup_s"`
	DurationS float64         `json:"planned_duration_s"`
}

// Goodput counts requests that succeeded within the SLO.
type Goodput struct {
	SLO      SLO     `json:"slo"`
	Requests int64   `json:"requests"`
	Rate     float64 `json:"rate"`
	Ratio    float64 `json:"ratio"`
}

// ScheduleStats shows coordinated omission instead of hiding it: how late open-loop
// requests started against their schedule, and how many could not start at all.
type ScheduleStats struct {
	Mode        string  `json:"mode"`
	Started     int64   `json:"started"`
	Lag         Latency `json:"lag_ms"`
	LateAfterMs float64 `json:"late_after_ms"`
	Late        int64   `json:"late"`
	Dropped     int64   `json:"dropped"`
}

// Breakdown is the per-model / per-endpoint view.
type Breakdown struct {
	Requests         int64            `json:"requests"`
	Failed           int64            `json:"failed"`
	Errors           map[string]int64 `json:"errors,omitempty"`
	OutputTokens     int64            `json:"output_tokens"`
	OutputTokensPerS float64          `json:"output_tokens_per_s"`
	CachedTokenRatio float64          `json:"cached_token_ratio"`
	TTFT             Latency          `json:"ttft_ms"`
	TPOT             Latency          `json:"tpot_ms"`
	E2E              Latency          `json:"e2e_ms"`
}

func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func perSecond(n int64, secs float64) float64 {
	if secs <= 0 {
		return 0
	}
	return float64(n) / secs
}

// summarize builds the Summary of everything recorded so far.
func (c *collector) summarize(cfg *Config, startedAt time.Time) *Summary {
	c.mu.Lock()
	defer c.mu.Unlock()
	end := c.lastEnd
	secs := end.Sub(c.measureFrom).Seconds()
	if secs < 0 {
		secs = 0
	}
	schedSecs := secs
	if !c.scheduleEnd.IsZero() {
		schedSecs = max(0, c.scheduleEnd.Sub(c.measureFrom).Seconds())
	}
	a := c.all
	mode := "closed"
	if cfg.openLoop() {
		mode = "open"
	}
	s := &Summary{
		StartedAt: startedAt,
		DurationS: secs,
		Setup: SummarySetup{URL: cfg.URL, API: cfg.API, Stream: !cfg.NoStream, Mode: mode, HTTP2: cfg.HTTP2, Rate: cfg.Rate,
			VUs: cfg.VUs, Stages: cfg.Stages, Models: cfg.Models, Workload: cfg.Workload, Seed: cfg.Seed,
			WarmupS: cfg.Warmup.Seconds(), DurationS: cfg.Duration.Seconds()},
		Requests: a.requests, Succeeded: a.requests - a.failed, Failed: a.failed,
		ErrorRate: ratio(a.failed, a.requests), ErrorsByStatus: copyMap(a.errors),
		Interrupted: c.interrupted, WarmupRequests: c.warmupReqs, Protocols: copyMap(c.protocols),
		RequestRate: perSecond(c.started, schedSecs), ScheduleS: schedSecs,
		CompletionRate:   perSecond(a.requests, secs),
		OutputTokensPerS: perSecond(a.outTokens, secs), InputTokensPerS: perSecond(a.promptTokens, secs),
		OutputTokens: a.outTokens, PromptTokens: a.promptTokens, CachedTokens: a.cachedTokens,
		CachedTokenRatio: ratio(a.cachedTokens, a.promptTokens),
		TTFT:             latencyOf(a.ttft), TTFB: latencyOf(a.ttfb), ITL: latencyOf(a.itl),
		InterChunk: latencyOf(a.chunkGap), TPOT: latencyOf(a.tpot), E2E: latencyOf(a.e2e),
		Schedule: ScheduleStats{Mode: mode, Started: c.started, Lag: latencyOf(c.lag),
			LateAfterMs: ms(cfg.LateAfter), Late: c.late, Dropped: c.dropped},
		ByModel: breakdowns(c.byModel, secs), ByEndpoint: breakdowns(c.byEndpoint, secs),
		Series:  append([]secondBucket(nil), c.series...),
		Samples: append([]Sample(nil), c.samples...),
		CDFs: map[string][][2]float64{"ttft": cdfPoints(a.ttft), "tpot": cdfPoints(a.tpot),
			"itl": cdfPoints(a.itl), "e2e": cdfPoints(a.e2e)},
	}
	if cfg.openLoop() {
		s.Setup.Arrival = cfg.Arrival
	}
	var ttft, e2e []float64
	for _, p := range c.samples {
		if !p.OK {
			continue
		}
		e2e = append(e2e, p.E2E)
		if p.TTFT > 0 {
			ttft = append(ttft, p.TTFT)
		}
	}
	s.TTFTCI, s.E2ECI = bootstrapCIs(ttft, cfg.Seed), bootstrapCIs(e2e, cfg.Seed+1)
	if cfg.SLO.set() {
		s.Goodput = &Goodput{SLO: cfg.SLO, Requests: a.good, Rate: perSecond(a.good, secs), Ratio: ratio(a.good, a.requests)}
	}
	return s
}

func breakdowns(m map[string]*metricSet, secs float64) map[string]*Breakdown {
	out := make(map[string]*Breakdown, len(m))
	for k, s := range m {
		out[k] = &Breakdown{Requests: s.requests, Failed: s.failed, Errors: copyMap(s.errors),
			OutputTokens: s.outTokens, OutputTokensPerS: perSecond(s.outTokens, secs),
			CachedTokenRatio: ratio(s.cachedTokens, s.promptTokens),
			TTFT:             latencyOf(s.ttft), TPOT: latencyOf(s.tpot), E2E: latencyOf(s.e2e)}
	}
	return out
}

func copyMap(m map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
