package loadtest

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"strings"
	"time"
)

// Header is one extra request header.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Config describes one load test. Zero values take the defaults listed on each field.
type Config struct {
	// URL is the server's base URL, e.g. http://127.0.0.1:8080 (a path ending in /v1 or the
	// full endpoint path is accepted too).
	URL string
	// API is "chat" (/v1/chat/completions, default), "completions" (/v1/completions) or
	// "embeddings" (/v1/embeddings: not streamed, so only TTFB and end-to-end latency).
	API string
	// NoStream sends stream:false (TTFT/ITL/TPOT are then not measured).
	NoStream bool
	// NoUsage leaves out stream_options.include_usage (token counts then come from chunks).
	NoUsage bool
	// IgnoreEOS sends ignore_eos:true (vLLM) so that output length equals max_tokens.
	IgnoreEOS bool
	// APIKey, when set, is sent as `Authorization: Bearer KEY`.
	APIKey string
	// Headers are added to every request.
	Headers []Header
	// Models is the weighted model mix (required).
	Models []WeightedModel
	// EndpointHeader names the response header that identifies the serving endpoint
	// (default x-infergw-upstream; x-sim-instance is used when it is absent).
	EndpointHeader string

	// VUs > 0 selects the closed loop: VUs virtual users each send a request as soon as the
	// previous one ends. Rate > 0 selects the open loop: requests start on an absolute
	// schedule of Rate per second whatever the responses do.
	VUs  int
	Rate float64
	// Arrival is the open-loop gap distribution: "constant" (default), "poisson", "gamma".
	Arrival string
	// GammaShape is the gamma shape k (default 0.5; CV = 1/√k).
	GammaShape float64
	// Stages ramp the level (rate in open loop, VUs otherwise) from Rate/VUs; when set, the
	// measured duration is their sum.
	Stages []Stage
	// Duration of the measured period (default 30s unless Requests is set).
	Duration time.Duration
	// Requests, when > 0, stops after that many measured requests have started.
	Requests int
	// Warmup runs the starting load level for this long before the measured period; its
	// requests are excluded from every figure.
	Warmup time.Duration
	// MaxInFlight bounds open-loop concurrency (default 10000): a start due while the bound
	// is reached is dropped and counted, never silently delayed.
	MaxInFlight int
	// LateAfter: an open-loop start whose schedule lag exceeds it is counted late (default 10ms).
	LateAfter time.Duration
	// Timeout bounds each request's reads (default 120s).
	Timeout time.Duration
	// HTTP2 sends requests over HTTP/2: negotiated by ALPN on https URLs (a server that only
	// offers HTTP/1.1 gets HTTP/1.1; the summary shows what was used), h2c with prior
	// knowledge on http URLs. Without it requests use HTTP/1.1 (fasthttp).
	HTTP2 bool
	// TLS configures https URLs: a CA bundle, skipping verification, a client certificate.
	TLS TLSOptions
	// Scrape lists Prometheus /metrics URLs (the gateway, model servers) polled every
	// ScrapeInterval (default 1s) during the run: KV use, queue depth, running requests and
	// prefix-cache hit rate over time go into the summary and the report.
	Scrape         []string
	ScrapeInterval time.Duration
	// GracePeriod is how long in-flight requests may finish after the end (default 30s).
	// On context cancellation in-flight requests are aborted at once.
	GracePeriod time.Duration

	// Workload generates the prompts.
	Workload WorkloadConfig
	// Seed makes the request sequence reproducible (default 1).
	Seed uint64
	// SLO defines goodput: a request is good when it succeeded within every non-zero bound.
	SLO SLO

	// RequestLog, when set, receives one JSON object per request (NDJSON).
	RequestLog io.Writer
	// RequestCSV, when set, receives one CSV row per request (with a header row).
	RequestCSV io.Writer
	// Progress, when set, receives a live one-line status every second ("\r"-rewritten).
	Progress io.Writer
	// MaxSamples bounds the per-request points kept for the HTML report (default 20000).
	MaxSamples int

	// noCSVHeader is set for the second and later steps of a sweep sharing one CSV file.
	noCSVHeader bool
}

// TLSOptions configures TLS for https URLs. Zero values verify the server against the
// system's roots and send no client certificate.
type TLSOptions struct {
	// CAFile is a PEM bundle of CA certificates that replaces the system roots.
	CAFile string
	// InsecureSkipVerify accepts any server certificate (for tests and self-signed setups).
	InsecureSkipVerify bool
	// CertFile and KeyFile are a PEM client certificate and key, sent when the server asks.
	CertFile, KeyFile string
	// ServerName overrides the name checked in the server's certificate (default: the URL's host).
	ServerName string
}

func (o TLSOptions) set() bool {
	return o.CAFile != "" || o.InsecureSkipVerify || o.CertFile != "" || o.KeyFile != "" || o.ServerName != ""
}

// SLO bounds for goodput; a zero field is not checked.
type SLO struct {
	TTFT time.Duration `json:"ttft,omitempty"`
	TPOT time.Duration `json:"tpot,omitempty"`
	E2E  time.Duration `json:"e2e,omitempty"`
}

func (s SLO) set() bool { return s.TTFT > 0 || s.TPOT > 0 || s.E2E > 0 }

// ParseSLO reads "ttft=500ms,tpot=50ms[,e2e=10s]".
func ParseSLO(s string) (SLO, error) {
	var out SLO
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return SLO{}, fmt.Errorf("slo %q: want name=duration", part)
		}
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d <= 0 {
			return SLO{}, fmt.Errorf("slo %q: bad duration", part)
		}
		switch strings.TrimSpace(k) {
		case "ttft":
			out.TTFT = d
		case "tpot":
			out.TPOT = d
		case "e2e":
			out.E2E = d
		default:
			return SLO{}, fmt.Errorf("slo %q: unknown measure (ttft, tpot, e2e)", part)
		}
	}
	return out, nil
}

// withDefaults returns a copy with defaults filled in, or an error for an invalid config.
func (c Config) withDefaults() (Config, error) {
	if c.URL == "" {
		return c, errors.New("config: no URL")
	}
	if len(c.Models) == 0 {
		return c, errors.New("config: no model")
	}
	if c.API == "" {
		c.API = "chat"
	}
	switch c.API {
	case "chat", "completions":
	case "embeddings":
		c.NoStream = true // an embeddings response is one JSON body
	default:
		return c, fmt.Errorf("config: api %q: want chat, completions or embeddings", c.API)
	}
	if c.EndpointHeader == "" {
		c.EndpointHeader = "x-infergw-upstream"
	}
	if c.VUs < 0 || c.Rate < 0 {
		return c, errors.New("config: vus and rate must be >= 0")
	}
	if c.VUs > 0 && c.Rate > 0 {
		return c, errors.New("config: choose --vus (closed loop) or --rate (open loop), not both")
	}
	trace := c.Workload.Kind == "trace"
	if trace {
		if c.VUs > 0 || c.Rate > 0 || len(c.Stages) > 0 {
			return c, errors.New("config: a trace sets its own schedule: --rate, --vus and --stage do not apply (use --time-scale)")
		}
		if c.Workload.TimeScale == 0 {
			c.Workload.TimeScale = 1
		}
		if !(c.Workload.TimeScale > 0) || math.IsInf(c.Workload.TimeScale, 0) || c.Workload.TimeScale > 1e6 {
			return c, fmt.Errorf("config: time scale %v: want a number in (0, 1e6]", c.Workload.TimeScale)
		}
	} else if c.Workload.TimeScale != 0 {
		return c, errors.New("config: --time-scale applies only to --trace")
	}
	if c.VUs == 0 && c.Rate == 0 && len(c.Stages) == 0 && !trace {
		c.VUs = 1
	}
	if c.Arrival == "" {
		c.Arrival = "constant"
	}
	switch c.Arrival {
	case "constant", "poisson", "gamma":
	default:
		return c, fmt.Errorf("config: arrival %q: want constant, poisson or gamma", c.Arrival)
	}
	if c.GammaShape <= 0 {
		c.GammaShape = 0.5
	}
	if len(c.Stages) > 0 {
		c.Duration = levelProfile{stages: c.Stages}.total()
	}
	if c.Duration <= 0 && c.Requests <= 0 && !trace { // a trace plays to its end by default
		c.Duration = 30 * time.Second
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 10000
	}
	if c.LateAfter <= 0 {
		c.LateAfter = 10 * time.Millisecond
	}
	if c.Timeout <= 0 {
		c.Timeout = 120 * time.Second
	}
	if c.ScrapeInterval <= 0 {
		c.ScrapeInterval = time.Second
	}
	if len(c.Scrape) > maxScrapeURLs {
		return c, fmt.Errorf("config: %d scrape URLs: at most %d", len(c.Scrape), maxScrapeURLs)
	}
	for _, u := range c.Scrape {
		if pu, err := url.Parse(u); err != nil || pu.Host == "" || (pu.Scheme != "http" && pu.Scheme != "https") {
			return c, fmt.Errorf("config: scrape url %q: want http(s)://HOST:PORT/metrics", u)
		}
	}
	if c.GracePeriod <= 0 {
		c.GracePeriod = 30 * time.Second
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.MaxSamples <= 0 {
		c.MaxSamples = 20000
	}
	if c.Workload.Input.Kind == "" && c.Workload.Input.Mean == 0 {
		c.Workload.Input = LengthDist{Kind: "fixed", Mean: 128}
	}
	if c.Workload.Output.Kind == "" && c.Workload.Output.Mean == 0 {
		c.Workload.Output = LengthDist{Kind: "fixed", Mean: 128}
	}
	if _, err := c.endpointURL(); err != nil {
		return c, err
	}
	return c, nil
}

// openLoop reports whether requests follow a schedule (rate) rather than VUs.
func (c Config) openLoop() bool {
	return c.Rate > 0 || (c.VUs == 0 && len(c.Stages) > 0) || c.Workload.Kind == "trace"
}

// endpointURL is the full request URL for the configured API.
func (c Config) endpointURL() (string, error) {
	u, err := url.Parse(c.URL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("config: url %q: want http(s)://HOST:PORT", c.URL)
	}
	p := strings.TrimRight(u.Path, "/")
	if strings.HasSuffix(p, "/completions") || strings.HasSuffix(p, "/embeddings") {
		return u.String(), nil
	}
	if !strings.HasSuffix(p, "/v1") {
		p += "/v1"
	}
	switch c.API {
	case "completions":
		p += "/completions"
	case "embeddings":
		p += "/embeddings"
	default:
		p += "/chat/completions"
	}
	u.Path = p
	return u.String(), nil
}
