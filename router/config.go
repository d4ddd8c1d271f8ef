package router

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Config configures a Router. Zero durations take their defaults; use DefaultConfig as a
// starting point.
type Config struct {
	// ScrapeInterval is the period of each endpoint's /metrics scrape (one loop per endpoint).
	ScrapeInterval time.Duration
	// ScrapeTimeout bounds one scrape (and one /v1/models request).
	ScrapeTimeout time.Duration
	// StalenessThreshold: an endpoint whose last successful scrape is older than this, or
	// whose last scrape failed, is stale and is not picked while a fresh endpoint exists.
	StalenessThreshold time.Duration
	// IdleScrapeInterval is the scrape period of an idle endpoint: nothing waiting or
	// running at its last scrape and nothing in flight from this picker. A pick on it
	// brings it back to ScrapeInterval at once. Scrapes cost the model server CPU (a vLLM
	// API process spent ~80 ms/s serving /metrics every 50 ms); an idle server's numbers
	// do not move. 0 = min(10 × ScrapeInterval, StalenessThreshold / 4); a value not above
	// ScrapeInterval turns the adaptation off. It must stay below StalenessThreshold.
	IdleScrapeInterval time.Duration
	// ModelsRefresh is the period of the GET /v1/models request of each endpoint.
	ModelsRefresh time.Duration
	// Scheduler lists the filters, weighted scorers and picker. A zero value means
	// DefaultSchedulerConfig().
	Scheduler SchedulerConfig
	// Plugins is the registry the Scheduler's plugin types are looked up in (nil =
	// NewRegistry(), the built-in plugins).
	Plugins *Registry
	// Fallbacks is the number of fallback endpoints returned after the primary (0 = none).
	Fallbacks int
	// MaxScrapeBytes and MaxScrapeSeries bound one /metrics exposition (bytes after
	// decompression; sample lines). A larger one fails the scrape: the endpoint turns stale.
	MaxScrapeBytes  int
	MaxScrapeSeries int
	// Outlier is the ejection of endpoints whose responses fail (a zero value means
	// DefaultOutlierConfig()).
	Outlier OutlierConfig
	// Metrics says where and how model servers' metrics are scraped; the zero value is
	// plain HTTP on the serving port at /metrics.
	Metrics MetricsEndpoint
}

// MetricsEndpoint locates the model servers' Prometheus metrics when they are not plain
// HTTP at /metrics on the serving port (GIE's --model-server-metrics-* flags): another
// port or path, HTTPS, a bearer token. /v1/models is still read from the serving port.
type MetricsEndpoint struct {
	// Scheme is "http" (default) or "https".
	Scheme string
	// Path is the exposition's path (default /metrics).
	Path string
	// Port, when not 0, replaces the endpoint's serving port for scrapes.
	Port int
	// TLS configures https scrapes (roots, skip-verify, client certificate); nil = the
	// system roots. The server name checked is the endpoint's IP unless TLS.ServerName is set.
	TLS *tls.Config
	// BearerToken, when set, is sent as "Authorization: Bearer TOKEN" with each scrape.
	BearerToken string
}

func (m MetricsEndpoint) validate() error {
	switch {
	case m.Scheme != "" && m.Scheme != "http" && m.Scheme != "https":
		return fmt.Errorf("router config: metrics scheme %q: want http or https", m.Scheme)
	case m.Path != "" && !strings.HasPrefix(m.Path, "/"):
		return fmt.Errorf("router config: metrics path %q must start with /", m.Path)
	case strings.ContainsAny(m.Path, " \r\n?#"):
		return fmt.Errorf("router config: metrics path %q: no spaces, line breaks, query or fragment", m.Path)
	case m.Port < 0 || m.Port > 65535:
		return fmt.Errorf("router config: metrics port %d out of range", m.Port)
	case strings.ContainsAny(m.BearerToken, "\r\n"):
		return errors.New("router config: metrics bearer token contains a line break")
	case m.TLS != nil && m.Scheme != "https":
		return errors.New("router config: metrics TLS settings need the https scheme")
	}
	return nil
}

// address is where an endpoint serving at addr exposes its metrics.
func (m MetricsEndpoint) address(addr string) string {
	if m.Port == 0 {
		return addr
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return net.JoinHostPort(host, strconv.Itoa(m.Port))
}

// plain reports whether scrapes can share the connection that reads /v1/models.
func (m MetricsEndpoint) plain() bool {
	return m.Scheme != "https" && m.Port == 0 && m.BearerToken == ""
}

// Defaults of Config.
const (
	DefaultScrapeInterval     = 50 * time.Millisecond
	DefaultScrapeTimeout      = time.Second
	DefaultStalenessThreshold = 2 * time.Second
	DefaultModelsRefresh      = 5 * time.Second
	DefaultFallbacks          = 2
)

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		ScrapeInterval:     DefaultScrapeInterval,
		ScrapeTimeout:      DefaultScrapeTimeout,
		StalenessThreshold: DefaultStalenessThreshold,
		ModelsRefresh:      DefaultModelsRefresh,
		Scheduler:          DefaultSchedulerConfig(),
		Fallbacks:          DefaultFallbacks,
		MaxScrapeBytes:     DefaultMaxScrapeBytes,
		MaxScrapeSeries:    DefaultMaxScrapeSeries,
		Outlier:            DefaultOutlierConfig(),
	}
}

// withDefaults fills zero durations and a zero scheduler config with their defaults.
func (c Config) withDefaults() Config {
	if c.ScrapeInterval == 0 {
		c.ScrapeInterval = DefaultScrapeInterval
	}
	if c.ScrapeTimeout == 0 {
		c.ScrapeTimeout = DefaultScrapeTimeout
	}
	if c.StalenessThreshold == 0 {
		c.StalenessThreshold = DefaultStalenessThreshold
	}
	if c.ModelsRefresh == 0 {
		c.ModelsRefresh = DefaultModelsRefresh
	}
	if c.IdleScrapeInterval == 0 {
		c.IdleScrapeInterval = min(10*c.ScrapeInterval, c.StalenessThreshold/4)
	}
	if c.MaxScrapeBytes == 0 {
		c.MaxScrapeBytes = DefaultMaxScrapeBytes
	}
	if c.MaxScrapeSeries == 0 {
		c.MaxScrapeSeries = DefaultMaxScrapeSeries
	}
	if c.Metrics.Path == "" {
		c.Metrics.Path = "/metrics"
	}
	if c.Scheduler.isZero() {
		c.Scheduler = DefaultSchedulerConfig()
	}
	if c.Outlier.isZero() {
		c.Outlier = DefaultOutlierConfig()
	}
	return c
}

func (c Config) validate() error {
	if err := c.Metrics.validate(); err != nil {
		return err
	}
	switch {
	case c.ScrapeInterval < 0:
		return fmt.Errorf("router config: scrape interval %v is negative", c.ScrapeInterval)
	case c.ScrapeTimeout < 0:
		return fmt.Errorf("router config: scrape timeout %v is negative", c.ScrapeTimeout)
	case c.StalenessThreshold < 0:
		return fmt.Errorf("router config: staleness threshold %v is negative", c.StalenessThreshold)
	case c.IdleScrapeInterval < 0:
		return fmt.Errorf("router config: idle scrape interval %v is negative", c.IdleScrapeInterval)
	case c.IdleScrapeInterval >= c.StalenessThreshold:
		return fmt.Errorf("router config: idle scrape interval %v must be below the staleness threshold %v (idle endpoints would go stale)",
			c.IdleScrapeInterval, c.StalenessThreshold)
	case c.ModelsRefresh < 0:
		return fmt.Errorf("router config: models refresh %v is negative", c.ModelsRefresh)
	case c.Fallbacks < 0:
		return fmt.Errorf("router config: fallbacks %d is negative", c.Fallbacks)
	case c.MaxScrapeBytes < 0:
		return fmt.Errorf("router config: max scrape bytes %d is negative", c.MaxScrapeBytes)
	case c.MaxScrapeSeries < 0:
		return fmt.Errorf("router config: max scrape series %d is negative", c.MaxScrapeSeries)
	case c.StalenessThreshold <= c.ScrapeInterval:
		// Metrics would go stale between two successful scrapes: endpoints would flap.
		return fmt.Errorf("router config: staleness threshold %v must exceed the scrape interval %v", c.StalenessThreshold, c.ScrapeInterval)
	}
	if err := c.Outlier.validate(); err != nil {
		return fmt.Errorf("router config: %w", err)
	}
	return nil
}
