package loadtest

import (
	"bytes"
	"context"
	"math"
	"runtime"
	"sort"
	"testing"
	"time"
)

// TestOpenLoopKeepsScheduleWhileServerIsSlow offers 100 req/s for 1 s to a server that takes
// 200 ms per request, with at most 10 in flight. A closed loop would fall to 50 req/s and
// hide it; the open loop must keep its absolute schedule (every start at k × 10 ms), drop
// and count the starts that found 10 requests running, and report the lag of the others.
func TestOpenLoopKeepsScheduleWhileServerIsSlow(t *testing.T) {
	ts := startTimingServer(t, "slow")
	var log bytes.Buffer
	cfg := testConfig(ts.url)
	cfg.Rate, cfg.Duration, cfg.MaxInFlight, cfg.RequestLog = 100, time.Second, 10, &log
	t0 := time.Now()
	s, err := Run(context.Background(), cfg, nil)
	t.Logf("run took %v", time.Since(t0))
	if err != nil {
		t.Fatal(err)
	}
	sc := s.Schedule
	t.Logf("schedule: started %d dropped %d late %d lag p50 %.3f p99 %.3f max %.3f ms",
		sc.Started, sc.Dropped, sc.Late, sc.Lag.P50, sc.Lag.P99, sc.Lag.Max)
	if sc.Mode != "open" || sc.Started+sc.Dropped != 100 {
		t.Fatalf("started %d + dropped %d = %d, want the 100 scheduled arrivals", sc.Started, sc.Dropped, sc.Started+sc.Dropped)
	}
	// 10 in flight for 200 ms each sustains 50 req/s: about half the starts must be dropped.
	if sc.Dropped < 30 || sc.Dropped > 70 {
		t.Errorf("dropped %d of 100, want about 50", sc.Dropped)
	}
	if sc.Lag.Count != sc.Started || sc.Lag.Max <= 0 {
		t.Errorf("lag recorded for %d of %d starts (max %.3f ms)", sc.Lag.Count, sc.Started, sc.Lag.Max)
	}
	// Each start's scheduled instant (actual send minus lag) sits exactly on the 10 ms grid.
	var offsets []float64
	for _, r := range readNDJSON(t, log.Bytes()) {
		off := r.StartMs - r.LagMs
		if k := math.Round(off / 10); math.Abs(off-k*10) > 0.001 {
			t.Errorf("request %d scheduled at %.4f ms, not on the 10 ms grid", r.Seq, off)
		}
		if r.LagMs < 0 {
			t.Errorf("request %d: negative lag %.3f ms", r.Seq, r.LagMs)
		}
		offsets = append(offsets, off)
	}
	sort.Float64s(offsets)
	for i := 1; i < len(offsets); i++ {
		if offsets[i] == offsets[i-1] {
			t.Errorf("two starts for the same scheduled instant %.1f ms", offsets[i])
		}
	}
	if s.Requests != sc.Started || s.Failed != 0 {
		t.Errorf("requests %d failed %d, want %d and 0", s.Requests, s.Failed, sc.Started)
	}
}

// TestCancelStopsPromptlyWithSummary cancels a run while requests are in flight (Ctrl-C):
// Run must return soon with a summary, in-flight requests counted as interrupted, and no
// goroutine left behind.
func TestCancelStopsPromptlyWithSummary(t *testing.T) {
	ts := startTimingServer(t, "slow")
	before := runtime.NumGoroutine()
	cfg := testConfig(ts.url)
	cfg.Rate, cfg.Duration = 50, 10*time.Second
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(500*time.Millisecond, cancel)
	start := time.Now()
	s, err := Run(ctx, cfg, nil)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if took > 3*time.Second {
		t.Errorf("Run took %v after cancellation at 500ms", took)
	}
	if s.Requests == 0 || s.Interrupted == 0 {
		t.Errorf("requests %d interrupted %d: want some finished and some interrupted", s.Requests, s.Interrupted)
	}
	if s.Failed != 0 {
		t.Errorf("interrupted requests counted as failures: %v", s.ErrorsByStatus)
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+2 {
		t.Errorf("goroutines: %d before, %d after", before, n)
	}
}

func TestStagesRampRate(t *testing.T) {
	p := levelProfile{start: 0, stages: []Stage{{Duration: time.Second, Target: 10}, {Duration: time.Second, Target: 10}, {Duration: time.Second, Target: 0}}}
	for _, c := range []struct {
		at   time.Duration
		want float64
	}{{-time.Second, 0}, {0, 0}, {500 * time.Millisecond, 5}, {1500 * time.Millisecond, 10}, {2500 * time.Millisecond, 5}, {5 * time.Second, 0}} {
		if got := p.at(c.at); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("level at %v = %v, want %v", c.at, got, c.want)
		}
	}
	if p.total() != 3*time.Second {
		t.Errorf("total %v", p.total())
	}
}

// TestArrivalMeans checks that each arrival process has the configured mean gap and the
// expected dispersion (CV 0 constant, 1 Poisson, 1/√k gamma), from a fixed seed.
func TestArrivalMeans(t *testing.T) {
	for _, c := range []struct {
		kind   string
		shape  float64
		wantCV float64
	}{{"constant", 0, 0}, {"poisson", 0, 1}, {"gamma", 0.25, 2}, {"gamma", 4, 0.5}} {
		a := newArrivals(c.kind, c.shape, newTestRand(3), levelProfile{start: 100}, 0)
		var gaps []float64
		prev, _ := a.next()
		for i := 0; i < 20000; i++ {
			n, ok := a.next()
			if !ok {
				t.Fatal("schedule ended at a constant rate")
			}
			gaps = append(gaps, float64(n-prev))
			prev = n
		}
		mean, sd := meanSD(gaps)
		if math.Abs(mean/float64(10*time.Millisecond)-1) > 0.05 {
			t.Errorf("%s: mean gap %v, want 10ms", c.kind, time.Duration(mean))
		}
		if cv := sd / mean; math.Abs(cv-c.wantCV) > 0.1*math.Max(c.wantCV, 0.1) {
			t.Errorf("%s k=%v: CV %.3f, want %.3f", c.kind, c.shape, cv, c.wantCV)
		}
	}
}

// TestArrivalsFollowRamps counts constant-rate arrivals through a warm-up at 20/s, a ramp
// 0→100/s over 1 s, 1 s at 100/s and a ramp down to 0: the counts per window equal the
// integral of the rate, and the schedule ends when the rate stays at zero.
func TestArrivalsFollowRamps(t *testing.T) {
	p := levelProfile{start: 20, stages: []Stage{{Duration: time.Second, Target: 100}, {Duration: time.Second, Target: 100}, {Duration: time.Second, Target: 0}}}
	a := newArrivals("constant", 0, newTestRand(1), p, 500*time.Millisecond)
	var offs []time.Duration
	for {
		o, ok := a.next()
		if !ok {
			break
		}
		offs = append(offs, o)
		if len(offs) > 1000 {
			t.Fatal("schedule did not end")
		}
	}
	count := func(from, to time.Duration) int {
		n := 0
		for _, o := range offs {
			if o >= from && o < to {
				n++
			}
		}
		return n
	}
	// Λ: warm-up 0.5 s × 20 = 10; ramp 20→100 over 1 s = 60; 100 for 1 s = 100; 100→0 = 50.
	for _, c := range []struct {
		from, to time.Duration
		want     int
	}{{0, 500 * time.Millisecond, 10}, {500 * time.Millisecond, 1500 * time.Millisecond, 60},
		{1500 * time.Millisecond, 2500 * time.Millisecond, 100}, {2500 * time.Millisecond, 3500 * time.Millisecond, 50}} {
		if got := count(c.from, c.to); got < c.want-1 || got > c.want+1 {
			t.Errorf("arrivals in [%v, %v): %d, want %d±1", c.from, c.to, got, c.want)
		}
	}
	if len(offs) < 219 || len(offs) > 221 {
		t.Errorf("%d arrivals in total, want 220", len(offs))
	}
}

func meanSD(v []float64) (float64, float64) {
	var sum, sq float64
	for _, x := range v {
		sum += x
	}
	m := sum / float64(len(v))
	for _, x := range v {
		sq += (x - m) * (x - m)
	}
	return m, math.Sqrt(sq / float64(len(v)))
}

// TestSweepFindsSaturation sweeps 10 and 60 req/s against a server that sustains 25 req/s
// (200 ms per request, at most 5 in flight): 10 is sustained, 60 saturates.
func TestSweepFindsSaturation(t *testing.T) {
	ts := startTimingServer(t, "slow")
	cfg := testConfig(ts.url)
	cfg.Duration, cfg.MaxInFlight = time.Second, 5
	s, err := RunSweep(context.Background(), cfg, []float64{10, 60, 100}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sw := s.Sweep
	if sw == nil || len(sw.Steps) != 2 {
		t.Fatalf("sweep %+v: want 2 steps (stop at the first saturated one)", sw)
	}
	t.Logf("steps: %+v", sw.Steps)
	if sw.MaxSustainableRate != 10 || sw.SaturationRate != 60 || sw.Steps[0].Saturated || !sw.Steps[1].Saturated {
		t.Errorf("max sustainable %v, saturation %v", sw.MaxSustainableRate, sw.SaturationRate)
	}
	if s.Setup.Rate != 10 {
		t.Errorf("summary is of rate %v, want the sustainable step 10", s.Setup.Rate)
	}
}

func TestParseSweep(t *testing.T) {
	got, err := ParseSweep("10:30:10")
	if err != nil || len(got) != 3 || got[2] != 30 {
		t.Errorf("10:30:10 -> %v %v", got, err)
	}
	if got, err := ParseSweep("5, 7"); err != nil || len(got) != 2 {
		t.Errorf("5, 7 -> %v %v", got, err)
	}
	for _, bad := range []string{"", "a", "10:5:1", "1:100000:1", "0,1"} {
		if _, err := ParseSweep(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestClosedLoopCancelAbortsInFlight: a VU blocked in a slow request must not hold Run after
// cancellation (its connection is closed), and the summary still comes back.
func TestClosedLoopCancelAbortsInFlight(t *testing.T) {
	ts := startTimingServer(t, "slow")
	cfg := testConfig(ts.url)
	cfg.VUs, cfg.Duration = 3, 30*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	s, err := Run(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Run took %v after cancellation at 300ms", took)
	}
	if s.Requests+s.Interrupted == 0 || s.Interrupted == 0 || s.Failed != 0 {
		t.Errorf("requests %d interrupted %d failed %d: want interrupted requests and no failures", s.Requests, s.Interrupted, s.Failed)
	}
}

// TestClosedLoopStagesRampVUs ramps 1 → 4 VUs against a 200 ms server: the first 200 ms
// window can hold at most 2 requests (1 VU + ramping), the run as a whole more than the 5 a
// single VU could do in 1 s.
func TestClosedLoopStagesRampVUs(t *testing.T) {
	ts := startTimingServer(t, "slow")
	cfg := testConfig(ts.url)
	cfg.VUs, cfg.Stages = 1, []Stage{{Duration: 500 * time.Millisecond, Target: 4}, {Duration: 500 * time.Millisecond, Target: 4}}
	s, err := Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Requests <= 6 || s.Requests > 20 || s.Setup.Mode != "closed" {
		t.Errorf("%d requests in mode %s, want 7..20 in closed loop (1→4 VUs, 200 ms each, 1 s)", s.Requests, s.Setup.Mode)
	}
}

// TestRequestRateIsTheStartRate runs an exact constant-rate open loop against a server that
// answers in 200 ms: the reported request rate is the start rate over the schedule's span
// (exactly the offered rate), while completions, which run 200 ms past the schedule, are
// reported separately at a lower rate. Dividing by the time to the last completion (the old
// figure) reported 100 req/s as about 83 here.
func TestRequestRateIsTheStartRate(t *testing.T) {
	ts := startTimingServer(t, "slow")
	for _, tc := range []struct {
		name     string
		duration time.Duration
		requests int
		started  int64
		schedule float64
	}{
		{name: "duration", duration: time.Second, started: 100, schedule: 1},
		// The request limit ends the schedule at the due time of the first arrival not
		// started: 30 starts at 10 ms spacing span 300 ms.
		{name: "request limit", requests: 30, started: 30, schedule: 0.3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(ts.url)
			cfg.Rate, cfg.Duration, cfg.Requests, cfg.MaxInFlight = 100, tc.duration, tc.requests, 1000
			s, err := Run(context.Background(), cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			if s.Schedule.Started != tc.started || s.Schedule.Dropped != 0 {
				t.Fatalf("started %d dropped %d, want %d and 0", s.Schedule.Started, s.Schedule.Dropped, tc.started)
			}
			if math.Abs(s.ScheduleS-tc.schedule) > 1e-9 || math.Abs(s.RequestRate-100) > 1e-6 {
				t.Errorf("schedule %.6fs, request rate %.6f/s; want %.3fs and exactly 100/s", s.ScheduleS, s.RequestRate, tc.schedule)
			}
			// The last start is 10 ms before the schedule's end and completes 200 ms later:
			// completions span at least 190 ms more than the schedule, at a lower rate.
			minSpan := tc.schedule + 0.19
			if s.CompletionRate <= 0 || s.DurationS < minSpan || s.CompletionRate > float64(tc.started)/minSpan {
				t.Errorf("completion rate %.2f/s over %.3fs, want at most %.2f/s over at least %.3fs",
					s.CompletionRate, s.DurationS, float64(tc.started)/minSpan, minSpan)
			}
		})
	}
}
