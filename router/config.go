package router

import (
	"fmt"
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
	// Fallbacks is the number of fallback endpoints returned after the primary (0 = none).
	Fallbacks int
	// MaxScrapeBytes and MaxScrapeSeries bound one /metrics exposition (bytes after
	// decompression; sample lines). A larger one fails the scrape: the endpoint turns stale.
	MaxScrapeBytes  int
	MaxScrapeSeries int
	// Outlier is the ejection of endpoints whose responses fail (a zero value means
	// DefaultOutlierConfig()).
	Outlier OutlierConfig
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
	if c.Scheduler.isZero() {
		c.Scheduler = DefaultSchedulerConfig()
	}
	if c.Outlier.isZero() {
		c.Outlier = DefaultOutlierConfig()
	}
	return c
}

func (c Config) validate() error {
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
	if err := c.Scheduler.Validate(); err != nil {
		return fmt.Errorf("router config: %w", err)
	}
	return nil
}
