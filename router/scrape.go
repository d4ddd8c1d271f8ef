package router

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cespare/xxhash/v2"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrapeTarget is where an endpoint's loop scrapes: the client (the endpoint's own
// connection when plain) and path, or the error its settings gave (every scrape fails).
type scrapeTarget struct {
	client *endpointClient
	path   string
	err    error
}

// runEndpoint is the one loop of an endpoint: scrape /metrics every ScrapeInterval and
// refresh /v1/models every ModelsRefresh, until ctx is cancelled.
func (r *Router) runEndpoint(ctx context.Context, e *endpoint) {
	defer close(e.done)
	// Metric names such as vllm:num_requests_waiting contain ':'; UTF-8 validation accepts
	// them (and anything the legacy scheme accepts).
	parser := expfmt.NewTextParser(model.UTF8Validation)
	var bufs scrapeBuffers                      // reused by every scrape of this endpoint
	client := newEndpointClient(e.spec.Address) // /v1/models, and /metrics when plain
	defer client.close()
	target := scrapeTarget{client: client}
	m, err := r.metricsFor(e)
	switch {
	case err != nil:
		// Every scrape fails with it: the endpoint is stale and says why (logged once).
		target.err = fmt.Errorf("scrape %s: %w", e.spec.Address, err)
	case !m.plain():
		target.client = newMetricsClient(m.address(e.spec.Address), m)
		defer target.client.close()
	}
	target.path = m.Path
	var nextModels time.Time
	r.loops.Add(1)
	defer r.loops.Add(-1)
	slotHash := xxhash.Sum64String(e.pool + "\x00" + e.spec.Address)
	// The first scrape runs at once, so a new endpoint gets metrics without delay. Later
	// ones run at fixed instants on the wall clock, shared by a group of about scrapeGroup
	// endpoints: the runtime fires timers that expire together in one pass, and the
	// scrapes' network events come back together, so the group's scrapes share wake-ups
	// instead of each paying its own (on a VM a wake-up costs tens of microseconds, as much
	// as a scrape's own work; the router README has the measurements). Groups, not the whole fleet: the
	// scrapes of one instant are processed back to back, and a thousand of them would hold
	// the picker's requests up behind them every interval; groups spread over the interval
	// bound that to a few scrapes' worth.
	tick := time.NewTimer(0)
	defer tick.Stop()
	idle := false // the pending tick is on the idle schedule
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.wake:
			// A pick on an endpoint scraped at the idle interval: back to the regular
			// schedule (its next instant), not a scrape out of turn.
			if idle {
				idle = false
				slots := max(1, (r.loops.Load()+scrapeGroup-1)/scrapeGroup)
				tick.Reset(untilNextTick(time.Now(), r.cfg.ScrapeInterval, int64(slotHash%uint64(slots)), slots)) //nolint:gosec // G115: a value below slots
			}
			continue
		case <-tick.C:
		}
		start := time.Now()
		err := r.scrape(ctx, e, target, &parser, &bufs)
		r.metrics.scrapeDuration.Observe(time.Since(start).Seconds())
		if ctx.Err() != nil {
			return // cancelled mid-scrape: not an endpoint failure
		}
		switch {
		case err == nil:
			e.lastFailed.Store(false)
			r.notifyScrape(e.pool)
		case isTimeout(err):
			// A slow answer (a loaded server) keeps the last metrics: the endpoint turns
			// stale when they pass the staleness threshold. Marking it stale at once made
			// every loaded endpoint stale together, leaving no fresh one to pick.
			r.metrics.scrapeErrors.WithLabelValues(e.pool, e.spec.Address).Inc()
		default: // refused, reset, a bad answer: stale now
			e.lastFailed.Store(true)
			r.metrics.scrapeErrors.WithLabelValues(e.pool, e.spec.Address).Inc()
		}
		r.observeStaleness(e, err)
		// The model list is refreshed after the scrape so that a slow /v1/models never
		// delays the first metrics of a new endpoint.
		if now := time.Now(); !now.Before(nextModels) {
			nextModels = now.Add(r.cfg.ModelsRefresh)
			r.refreshModels(ctx, e, client, &bufs.body)
		}
		slots := max(1, (r.loops.Load()+scrapeGroup-1)/scrapeGroup)
		interval := r.cfg.ScrapeInterval
		if idle = err == nil && r.idle(e); idle {
			interval = r.cfg.IdleScrapeInterval
		}
		tick.Reset(untilNextTick(time.Now(), interval, int64(slotHash%uint64(slots)), slots)) //nolint:gosec // G115: a value below slots
	}
}

// idle reports whether the endpoint may be scraped at the idle interval: nothing waiting
// or running at its last scrape and nothing in flight from this picker.
func (r *Router) idle(e *endpoint) bool {
	if r.cfg.IdleScrapeInterval <= r.cfg.ScrapeInterval {
		return false
	}
	m := e.metrics.Load()
	return m != nil && m.waiting == 0 && m.running == 0 && e.inflight.Load() == 0
}

// isTimeout reports whether a scrape failed by running out of time (fasthttp's timeout
// error has Timeout but is no net.Error).
func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		(errors.As(err, &te) && te.Timeout())
}

// scrapeGroup is about how many endpoint loops share a scrape instant.
const scrapeGroup = 16

// untilNextTick is how long from now to the next scrape instant of slot (of slots) in each
// interval: the instants are the multiples of interval since the zero time, shifted by
// slot/slots of an interval. Every loop of a slot computes the same instants.
func untilNextTick(now time.Time, interval time.Duration, slot, slots int64) time.Duration {
	offset := time.Duration(slot) * interval / time.Duration(slots)
	return now.Add(-offset).Truncate(interval).Add(interval).Add(offset).Sub(now)
}

// scrapeBuffers hold one endpoint's exposition and the part of it that is parsed.
type scrapeBuffers struct {
	body, kept bytes.Buffer
	memo       expositionMemo // the last parse, reused while only sample values change
}

// parseKept parses the kept lines: through the memo when only sample values changed since
// the last parse, with the Prometheus parser otherwise.
func (b *scrapeBuffers) parseKept(parser *expfmt.TextParser) (map[string]*dto.MetricFamily, error) {
	if fams, ok := b.memo.reuse(b.kept.Bytes()); ok {
		return fams, nil
	}
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(b.kept.Bytes()))
	if err != nil {
		b.memo.reset()
		return nil, err
	}
	b.memo.build(b.kept.Bytes(), fams)
	return fams, nil
}

// scrape fetches and parses /metrics and stores the new state.
func (r *Router) scrape(ctx context.Context, e *endpoint, t scrapeTarget, parser *expfmt.TextParser, bufs *scrapeBuffers) error {
	if t.err != nil {
		return t.err
	}
	c := t.client
	bufs.body.Reset()
	status, err := c.get(ctx, t.path, r.cfg.ScrapeTimeout, r.cfg.MaxScrapeBytes, &bufs.body)
	if err != nil {
		return fmt.Errorf("scrape %s: %w", c.addr, err)
	}
	if status != 200 {
		return fmt.Errorf("scrape %s: status %d", c.addr, status)
	}
	if n, over := countSeries(bufs.body.Bytes(), r.cfg.MaxScrapeSeries); over {
		return fmt.Errorf("scrape %s: more than %d series (limit %d)", c.addr, n-1, r.cfg.MaxScrapeSeries)
	}
	bufs.kept.Reset()
	bufs.kept.Write(keepFamilies(bufs.kept.AvailableBuffer(), bufs.body.Bytes(), e.engine.families()))
	fams, err := bufs.parseKept(parser)
	if err != nil {
		return fmt.Errorf("scrape %s: parse: %w", c.addr, err)
	}
	if err := checkEngineMetrics(e.engine, fams); err != nil {
		return fmt.Errorf("scrape %s: %w", c.addr, err)
	}
	m := &metricsState{scrapedAt: time.Now()}
	if !extractMetrics(e.engine, fams, m) {
		return fmt.Errorf("scrape %s: no %s queue or KV-cache metric in the exposition", c.addr, e.engine)
	}
	e.metrics.Store(m)
	if r.sched.usePrefix {
		r.updatePrefixGeometry(e, m)
	}
	return nil
}

// observeStaleness updates the stale gauge and logs once per transition.
func (r *Router) observeStaleness(e *endpoint, scrapeErr error) {
	now := healthFresh
	if !e.isFresh(e.metrics.Load(), time.Now(), r.cfg.StalenessThreshold) {
		now = healthStale
	}
	if now == e.health {
		return
	}
	e.health = now
	if now == healthStale {
		r.metrics.stale.WithLabelValues(e.pool, e.spec.Address).Set(1)
		r.log.Warn("router: endpoint metrics stale, not picked while fresh endpoints exist",
			"pool", e.pool, "endpoint", e.spec.Address, "name", e.spec.Name, "error", errString(scrapeErr))
		return
	}
	r.metrics.stale.WithLabelValues(e.pool, e.spec.Address).Set(0)
	r.log.Info("router: endpoint metrics fresh", "pool", e.pool, "endpoint", e.spec.Address, "name", e.spec.Name)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
