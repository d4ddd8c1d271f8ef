package loadtest

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Run executes one load test and returns its summary. Cancelling ctx stops the run:
// in-flight requests are aborted (counted as interrupted) and the summary of what finished
// is still returned, with a nil error. An error means a bad config or a failed output sink.
func Run(ctx context.Context, cfg Config, log *slog.Logger) (*Summary, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	gen, err := newGenerator(c.Workload, c.Models, c.Seed)
	if err != nil {
		return nil, err
	}
	cl, err := newClient(&c)
	if err != nil {
		return nil, err
	}
	r := &runner{cfg: &c, log: log, gen: gen, client: cl, col: newCollector(&c)}
	return r.run(ctx)
}

type runner struct {
	cfg    *Config
	log    *slog.Logger
	gen    *generator
	client *client
	col    *collector
	seq    atomic.Int64
	// measured counts measured (non-warm-up) starts, for the Requests limit.
	measured atomic.Int64
	wg       sync.WaitGroup
	// reqCtx is the caller's context, given to requests; dispatch loops get a child that is
	// cancelled when no new request may start, which must not mark in-flight ones aborted.
	reqCtx context.Context
}

func (r *runner) run(ctx context.Context) (*Summary, error) {
	cfg := r.cfg
	startedAt := time.Now()
	runStart := startedAt
	r.col.measureFrom = runStart.Add(cfg.Warmup)
	r.col.lastEnd = r.col.measureFrom
	mode := "closed"
	if cfg.openLoop() {
		mode = "open"
	}
	r.log.Info("load test starting", "url", cfg.URL, "mode", mode, "rate", cfg.Rate, "vus", cfg.VUs,
		"duration", cfg.Duration, "warmup", cfg.Warmup, "requests", cfg.Requests)

	// end is the time after which no request starts (zero = only Requests limits the run).
	var end time.Time
	if cfg.Duration > 0 {
		end = runStart.Add(cfg.Warmup + cfg.Duration)
	}
	r.reqCtx = ctx
	var sc *scraper
	scrapeDone := make(chan struct{})
	stopScrape := func() {}
	if len(cfg.Scrape) > 0 {
		var err error
		if sc, err = newScraper(cfg.Scrape, cfg.ScrapeInterval, min(cfg.ScrapeInterval, 5*time.Second), r.col.measureFrom); err != nil {
			return nil, err
		}
		var scrapeCtx context.Context
		scrapeCtx, stopScrape = context.WithCancel(context.Background())
		go func() { defer close(scrapeDone); sc.run(scrapeCtx) }()
	} else {
		close(scrapeDone)
	}
	runCtx, stopDispatch := context.WithCancel(ctx)
	defer stopDispatch()
	stopProgress := r.startProgress(runStart)

	var scheduleEnd time.Time
	if cfg.openLoop() {
		scheduleEnd = r.openLoop(runCtx, runStart, end)
	} else {
		scheduleEnd = r.closedLoop(runCtx, runStart, end)
	}
	stopDispatch() // closed-loop VUs start nothing more
	r.col.setScheduleEnd(scheduleEnd)
	r.drain(ctx)
	stopProgress()
	stopScrape()
	<-scrapeDone

	s := r.col.summarize(cfg, startedAt)
	if sc != nil {
		s.Scrapes = sc.results()
	}
	if err := r.col.flush(); err != nil {
		return s, err
	}
	r.log.Info("load test finished", "requests", s.Requests, "failed", s.Failed, "interrupted", s.Interrupted,
		"request_rate", s.RequestRate, "dropped", s.Schedule.Dropped)
	return s, nil
}

// drain waits for in-flight requests: up to the grace period normally, not at all once ctx
// is cancelled (their connections are closed so that every reader returns promptly).
func (r *runner) drain(ctx context.Context) {
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	grace := time.NewTimer(r.cfg.GracePeriod)
	defer grace.Stop()
	select {
	case <-done:
		return
	case <-ctx.Done():
	case <-grace.C:
		r.log.Warn("grace period over: aborting in-flight requests", "grace", r.cfg.GracePeriod)
	}
	r.client.abort()
	<-done
}

// limitReached reports whether the measured-request budget is spent.
func (r *runner) limitReached() bool {
	return r.cfg.Requests > 0 && r.measured.Load() >= int64(r.cfg.Requests)
}

// openLoop starts requests on an absolute schedule: arrival i is due at runStart + offset_i
// whatever happened before, so a slow server cannot slow the offered load down (no
// coordinated omission). Starts that find MaxInFlight requests running are dropped.
// It returns the end of the schedule it played: the planned end, the due time of the first
// arrival it did not start (request limit), or the moment it was cancelled.
func (r *runner) openLoop(ctx context.Context, runStart, end time.Time) time.Time {
	cfg := r.cfg
	var arr schedule = newArrivals(cfg.Arrival, cfg.GammaShape, rand.New(rand.NewPCG(cfg.Seed, 0xa24baed4963ee407)),
		levelProfile{start: cfg.Rate, stages: cfg.Stages}, cfg.Warmup)
	if r.gen.trace != nil {
		arr = &traceArrivals{entries: r.gen.trace, scale: cfg.Workload.TimeScale}
	}
	var inflight atomic.Int64
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		offset, ok := arr.next()
		if !ok {
			return time.Now()
		}
		due := runStart.Add(offset)
		if !end.IsZero() && !due.Before(end) {
			return end
		}
		if r.limitReached() {
			return due
		}
		if !waitUntil(ctx, timer, due) {
			return time.Now()
		}
		warm := due.Before(r.col.measureFrom)
		if inflight.Load() >= int64(cfg.MaxInFlight) {
			r.col.drop(warm)
			r.gen.skipArrival()
			continue
		}
		if !warm {
			r.measured.Add(1)
		}
		inflight.Add(1)
		req := r.gen.Next()
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer inflight.Add(-1)
			r.exec(r.reqCtx, &req, due, warm, true, runStart)
		}()
	}
}

// spinWindow is how close to a due time the open loop stops sleeping and yields in a loop
// instead. Go's timers wake through epoll, whose timeout has millisecond granularity, so a
// sleep shorter than a millisecond can end a millisecond or more late; at thousands of
// requests per second every gap is that short.
const spinWindow = time.Millisecond

// waitUntil sleeps until due - spinWindow, then yields until due. It reports false when ctx
// ends first.
func waitUntil(ctx context.Context, timer *time.Timer, due time.Time) bool {
	if d := time.Until(due) - spinWindow; d > 0 {
		timer.Reset(d)
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
		}
	}
	for time.Now().Before(due) {
		if ctx.Err() != nil {
			return false
		}
		runtime.Gosched()
	}
	return ctx.Err() == nil
}

// closedLoop runs virtual users; with stages the number of active VUs follows the profile.
// It returns at the end time, on cancellation or when every VU has stopped (request limit);
// VUs still in a request are tracked by r.wg and finish (or are aborted) in drain.
// It returns when the schedule ended: the planned end, or the moment it stopped early.
func (r *runner) closedLoop(ctx context.Context, runStart, end time.Time) time.Time {
	cfg := r.cfg
	profile := levelProfile{start: float64(cfg.VUs), stages: cfg.Stages}
	maxVUs := cfg.VUs
	for _, s := range cfg.Stages {
		maxVUs = max(maxVUs, int(s.Target+0.5))
	}
	var vus sync.WaitGroup
	for i := 0; i < maxVUs; i++ {
		vus.Add(1)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer vus.Done()
			r.virtualUser(ctx, i, profile, runStart, end)
		}()
	}
	allDone := make(chan struct{})
	go func() { vus.Wait(); close(allDone) }()
	var endC <-chan time.Time
	if !end.IsZero() {
		t := time.NewTimer(time.Until(end))
		defer t.Stop()
		endC = t.C
	}
	select {
	case <-ctx.Done():
	case <-endC:
		return end
	case <-allDone:
	}
	return time.Now()
}

// virtualUser is VU number i: it sends a request as soon as its previous one ended, while
// the profile has at least i+1 active VUs.
func (r *runner) virtualUser(ctx context.Context, i int, profile levelProfile, runStart, end time.Time) {
	cfg := r.cfg
	for ctx.Err() == nil {
		now := time.Now()
		if !end.IsZero() && !now.Before(end) {
			return
		}
		active := int(profile.at(now.Sub(runStart)-cfg.Warmup) + 0.5)
		if i >= active {
			select { // this VU is ramped down: wait for the profile to reach it
			case <-ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
			continue
		}
		warm := now.Before(r.col.measureFrom)
		if !warm && cfg.Requests > 0 && r.measured.Add(1) > int64(cfg.Requests) {
			return
		}
		req := r.gen.Next()
		r.exec(r.reqCtx, &req, now, warm, false, runStart)
	}
}

// exec runs one request and hands the result to the collector.
func (r *runner) exec(ctx context.Context, req *Request, due time.Time, warm, open bool, runStart time.Time) {
	res := &Result{Seq: r.seq.Add(1), Model: req.Model, Warmup: warm, open: open}
	if req.Session >= 0 {
		res.Session, res.Turn = req.Session, req.Turn
	}
	r.col.start(warm)
	r.client.do(ctx, req, res)
	res.StartMs = ms(res.sent.Sub(runStart))
	if open {
		res.LagMs = ms(res.sent.Sub(due))
	}
	r.col.add(res)
}

// startProgress prints the live line every second when cfg.Progress is set.
func (r *runner) startProgress(runStart time.Time) (stop func()) {
	w := r.cfg.Progress
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprint(w, "\r\033[K")
				return
			case now := <-t.C:
				fmt.Fprint(w, "\r\033[K"+r.col.progressLine(now, runStart))
			}
		}
	}()
	return func() { close(done); <-stopped }
}
