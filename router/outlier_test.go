package router

import (
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// metricValue reads a counter or gauge (prometheus' testutil would add dependencies).
func metricValue(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		t.Fatal(err)
	}
	if out.Counter != nil {
		return out.Counter.GetValue()
	}
	return out.Gauge.GetValue()
}

func testMachine(mutate func(*OutlierConfig)) *outlierMachine {
	cfg := DefaultOutlierConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	return &outlierMachine{cfg: &cfg}
}

func TestOutlierMachineBackoffGrowsToCap(t *testing.T) {
	m := testMachine(func(c *OutlierConfig) { c.BaseEjection, c.MaxEjection = time.Second, 10*time.Second })
	var got []time.Duration
	for range 6 {
		for !m.record(true) {
		}
		got = append(got, m.eject())
		m.readmit()
	}
	want := []time.Duration{1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("backoffs %v, want %v", got, want)
		}
	}
}

func TestOutlierMachineTriggers(t *testing.T) {
	t.Run("consecutive failures", func(t *testing.T) {
		m := testMachine(nil)
		for i := 1; i < DefaultConsecutiveFailures; i++ {
			if m.record(true) {
				t.Fatalf("ejected after %d failures, want %d in a row", i, DefaultConsecutiveFailures)
			}
		}
		if !m.record(true) {
			t.Fatalf("not ejected after %d failures in a row", DefaultConsecutiveFailures)
		}
	})
	t.Run("failure ratio over the window", func(t *testing.T) {
		// Alternating success/failure: never 3 in a row, but half of the window fails.
		m := testMachine(nil)
		ejected := -1
		for i := range 20 {
			if m.record(i%2 == 1) {
				ejected = i
				break
			}
		}
		// Min 5 outcomes and 30 %: the 6th outcome (index 5, 3 failures of 6) ejects.
		if ejected != 5 {
			t.Fatalf("ejected at outcome %d, want 5", ejected)
		}
	})
	t.Run("successes and rare failures never eject", func(t *testing.T) {
		m := testMachine(nil)
		for i := range 1000 {
			if m.record(i%10 == 0) { // 10 % failures
				t.Fatalf("ejected at outcome %d with 10 %% failures", i)
			}
		}
	})
	t.Run("window forgets old failures", func(t *testing.T) {
		m := testMachine(nil)
		m.record(true)
		m.record(true)
		for range DefaultOutlierWindow {
			m.record(false)
		}
		if m.record(true) {
			t.Fatal("ejected on one failure after a window of successes")
		}
	})
}

func TestOutlierMachineProbation(t *testing.T) {
	m := testMachine(nil)
	for !m.record(true) {
	}
	m.eject()
	for i := 0; i < 3; i++ {
		if m.record(true) {
			t.Fatal("outcomes of an ejected endpoint must be ignored")
		}
	}
	m.readmit()
	if m.phase != phaseProbation {
		t.Fatalf("phase %v after readmit, want probation", m.phase)
	}
	if !m.record(true) {
		t.Fatal("a failure on probation must eject at once")
	}
	if d := m.eject(); d != 2*DefaultBaseEjection {
		t.Fatalf("second ejection %v, want %v", d, 2*DefaultBaseEjection)
	}
	m.readmit()
	for i := range DefaultProbationSuccesses {
		if m.record(false) {
			t.Fatalf("success %d on probation ejected", i)
		}
	}
	if m.phase != phaseHealthy || m.level != 1 {
		t.Fatalf("after %d successes: phase %v level %d, want healthy, level 1", DefaultProbationSuccesses, m.phase, m.level)
	}
	// Healthy again: one failure no longer ejects.
	if m.record(true) {
		t.Fatal("one failure after a passed probation ejected")
	}
}

func TestOutlierConfigValidate(t *testing.T) {
	for _, bad := range []func(*OutlierConfig){
		func(c *OutlierConfig) { c.Window = 0 },
		func(c *OutlierConfig) { c.Window = 65 },
		func(c *OutlierConfig) { c.MinRequests = c.Window + 1 },
		func(c *OutlierConfig) { c.FailureRatio = 0 },
		func(c *OutlierConfig) { c.FailureRatio = 1.5 },
		func(c *OutlierConfig) { c.ConsecutiveFailures = 0 },
		func(c *OutlierConfig) { c.BaseEjection = 0 },
		func(c *OutlierConfig) { c.MaxEjection = c.BaseEjection / 2 },
		func(c *OutlierConfig) { c.MaxEjectedPercent = 101 },
		func(c *OutlierConfig) { c.ProbationSuccesses = 0 },
		func(c *OutlierConfig) { c.FirstByteTimeout = -1 },
	} {
		cfg := DefaultConfig()
		bad(&cfg.Outlier)
		if _, err := New(cfg, nil, nil); err == nil {
			t.Errorf("config %+v accepted", cfg.Outlier)
		}
	}
	cases := map[int]int{0: 0, 1: 0, 2: 1, 3: 1, 4: 2, 8: 4, 9: 4}
	c := DefaultOutlierConfig()
	for n, want := range cases {
		if got := c.maxEjected(n); got != want {
			t.Errorf("maxEjected(%d) = %d, want %d", n, got, want)
		}
	}
}

// newOutlierRouter is a router with short ejections whose log is kept for counting.
func newOutlierRouter(t *testing.T, mutate func(*OutlierConfig)) (*Router, *prometheus.Registry, *logBuffer) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Outlier.BaseEjection, cfg.Outlier.MaxEjection = 50*time.Millisecond, 200*time.Millisecond
	if mutate != nil {
		mutate(&cfg.Outlier)
	}
	lb := &logBuffer{t: t}
	reg := prometheus.NewRegistry()
	r, err := New(cfg, slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelInfo})), reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r, reg, lb
}

// failOn picks until the pick lands on addr and answers it with status; other picks succeed.
func answer(t *testing.T, r *Router, failing map[string]int) string {
	t.Helper()
	d := mustPick(t, r, &Request{Pool: "ns/p", Model: "m"})
	status := 200
	if s, ok := failing[d.Endpoints[0]]; ok {
		status = s
	}
	d.ResponseHeaders(status, d.Endpoints[0])
	if status < 500 {
		d.FirstByte()
	}
	d.Done()
	return d.Endpoints[0]
}

// TestEjectionAvoidsFailingEndpointAndReadmits: an endpoint answering 500 is ejected within
// a bounded number of its requests, gets no picks while ejected, is readmitted on probation
// after the backoff, and the transitions are logged once each and counted.
func TestEjectionAvoidsFailingEndpointAndReadmits(t *testing.T) {
	r, reg, lb := newOutlierRouter(t, nil)
	installPool(r, "ns/p", []*endpoint{
		staticEndpoint("bad:1", metricsState{}), staticEndpoint("a:1", metricsState{}),
		staticEndpoint("b:1", metricsState{}), staticEndpoint("c:1", metricsState{})})
	failing := map[string]int{"bad:1": 500}
	toBad := 0
	for i := 0; i < 200 && metricValue(t, r.metrics.ejected.WithLabelValues("ns/p", "bad:1")) == 0; i++ {
		if answer(t, r, failing) == "bad:1" {
			toBad++
		}
	}
	if toBad != DefaultConsecutiveFailures {
		t.Fatalf("bad endpoint got %d requests before ejection, want %d (3 failures in a row)", toBad, DefaultConsecutiveFailures)
	}
	// While ejected (50 ms; the loop does not sleep) it is never the primary nor a fallback.
	for range 50 {
		d := mustPick(t, r, &Request{Pool: "ns/p", Model: "m"})
		for _, ep := range d.Endpoints {
			if ep == "bad:1" && r.lookup("ns/p").view.Load().endpoints[0].out.ejected.Load() {
				t.Fatalf("ejected endpoint in %v", d.Endpoints)
			}
		}
		d.Done()
	}
	// Recovered: after the backoff it is readmitted and picked again.
	delete(failing, "bad:1")
	eventually(t, 5*time.Second, "readmission", func() bool { return lb.count("readmitted on probation") == 1 })
	picked := 0
	for range 200 {
		if answer(t, r, failing) == "bad:1" {
			picked++
		}
	}
	if picked == 0 {
		t.Fatal("readmitted endpoint never picked")
	}
	if n := lb.count("endpoint ejected"); n != 1 {
		t.Errorf("%d ejection log lines, want 1", n)
	}
	if n := lb.count("passed probation"); n != 1 {
		t.Errorf("%d probation log lines, want 1", n)
	}
	if v := metricValue(t, r.metrics.ejections.WithLabelValues("ns/p", "bad:1")); v != 1 {
		t.Errorf("ejections_total %v, want 1", v)
	}
	if v := metricValue(t, r.metrics.failures.WithLabelValues("ns/p", "bad:1")); v != float64(DefaultConsecutiveFailures) {
		t.Errorf("failures_total %v, want %d", v, DefaultConsecutiveFailures)
	}
	if v := metricValue(t, r.metrics.ejected.WithLabelValues("ns/p", "bad:1")); v != 0 {
		t.Errorf("ejected gauge %v after readmission, want 0", v)
	}
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
}

// TestEjectionCapAndFailOpen: with every endpoint failing, at most MaxEjectedPercent of the
// pool is ejected, and picks still succeed.
func TestEjectionCapAndFailOpen(t *testing.T) {
	r, _, _ := newOutlierRouter(t, func(c *OutlierConfig) { c.BaseEjection, c.MaxEjection = time.Hour, time.Hour })
	eps := []*endpoint{staticEndpoint("a:1", metricsState{}), staticEndpoint("b:1", metricsState{}),
		staticEndpoint("c:1", metricsState{}), staticEndpoint("d:1", metricsState{}), staticEndpoint("e:1", metricsState{})}
	installPool(r, "ns/p", eps)
	failing := map[string]int{"a:1": 503, "b:1": 503, "c:1": 503, "d:1": 503, "e:1": 503}
	for range 300 {
		answer(t, r, failing)
	}
	ejected := 0
	for _, e := range eps {
		if e.out.ejected.Load() {
			ejected++
		}
	}
	if want := 2; ejected != want { // 50 % of 5, rounded down
		t.Fatalf("%d of 5 endpoints ejected, want the cap %d", ejected, want)
	}

	// A pool whose every candidate is ejected still answers (here: a subset of ejected ones).
	var out []string
	for _, e := range eps {
		if e.out.ejected.Load() {
			out = append(out, e.spec.Address)
		}
	}
	d := mustPick(t, r, &Request{Pool: "ns/p", Model: "m", Subset: out})
	d.Done()
}

// TestOutcomeAttribution: how each response report counts.
func TestOutcomeAttribution(t *testing.T) {
	r, _, _ := newOutlierRouter(t, func(c *OutlierConfig) { c.FirstByteTimeout = time.Nanosecond })
	a, b := staticEndpoint("a:1", metricsState{}), staticEndpoint("b:1", metricsState{})
	installPool(r, "ns/p", []*endpoint{a, b})
	failures := func(addr string) float64 { return metricValue(t, r.metrics.failures.WithLabelValues("ns/p", addr)) }

	// Answered by the other endpoint: Envoy retried, the primary failed; the answer (200
	// but its first byte after the 1 ns timeout) is a failure of the one that answered.
	d := mustPick(t, r, &Request{Pool: "ns/p", Model: "m", Stream: true})
	primary, other := d.Endpoints[0], d.Endpoints[1]
	d.ResponseHeaders(200, other)
	time.Sleep(time.Millisecond)
	d.FirstByte()
	d.Done()
	if failures(primary) != 1 || failures(other) != 1 {
		t.Fatalf("failures primary %v other %v, want 1 and 1", failures(primary), failures(other))
	}
	// Not streamed: the first byte comes with the whole answer, late is no failure.
	d = mustPick(t, r, &Request{Pool: "ns/p", Model: "m"})
	before := failures(d.Endpoints[0])
	d.ResponseHeaders(200, d.Endpoints[0])
	time.Sleep(time.Millisecond)
	d.FirstByte()
	d.Done()
	if failures(d.Endpoints[0]) != before {
		t.Fatalf("a non-streamed answer counted as a late first byte")
	}
	// No response at all: the primary failed. Reports after Done are ignored.
	d = mustPick(t, r, &Request{Pool: "ns/p", Model: "m"})
	p := d.Endpoints[0]
	before = failures(p)
	d.NoResponse()
	d.Done()
	d.ResponseHeaders(500, p)
	d.FirstByte()
	if failures(p) != before+1 {
		t.Fatalf("failures %v, want %v", failures(p), before+1)
	}
	// Done alone reports nothing; pending prefill bytes and awaiting counts return to 0.
	d = mustPick(t, r, &Request{Pool: "ns/p", Model: "m", Prompt: []byte("some prompt bytes")})
	d.Done()
	for _, e := range []*endpoint{a, b} {
		if e.out.pendingBytes.Load() != 0 || e.out.awaiting.Load() != 0 {
			t.Fatalf("%s: pending %d awaiting %d after Done", e.spec.Address, e.out.pendingBytes.Load(), e.out.awaiting.Load())
		}
	}
}

// TestFirstByteStallEjects: an endpoint holding streamed requests without a first byte for
// the timeout is ejected at the next pick, and new requests go elsewhere. Non-streamed
// requests (answered whole at the end) never count as a stall.
func TestFirstByteStallEjects(t *testing.T) {
	r, _, lb := newOutlierRouter(t, func(c *OutlierConfig) { c.FirstByteTimeout = 20 * time.Millisecond })
	slow, fast := staticEndpoint("slow:1", metricsState{}), staticEndpoint("fast:1", metricsState{})
	installPool(r, "ns/p", []*endpoint{slow, fast})
	var held []*Decision
	for range 20 {
		held = append(held, mustPick(t, r, &Request{Pool: "ns/p", Model: "m", Subset: []string{"slow:1"}}))
	}
	time.Sleep(50 * time.Millisecond) // past the timeout: a lower bound, not a timed assertion
	for range 20 {
		d := mustPick(t, r, &Request{Pool: "ns/p", Model: "m"})
		d.Done()
	}
	if slow.out.ejected.Load() {
		t.Fatal("ejected for non-streamed requests without a first byte")
	}
	// Streamed requests to slow never get a first byte; fast answers at once.
	for range 20 {
		d := mustPick(t, r, &Request{Pool: "ns/p", Model: "m", Subset: []string{"slow:1"}, Stream: true})
		held = append(held, d)
	}
	eventually(t, 5*time.Second, "stall ejection", func() bool {
		d := mustPick(t, r, &Request{Pool: "ns/p", Model: "m"})
		d.ResponseHeaders(200, d.Endpoints[0])
		d.FirstByte()
		d.Done()
		return slow.out.ejected.Load()
	})
	for range 20 {
		d := mustPick(t, r, &Request{Pool: "ns/p", Model: "m"})
		if d.Endpoints[0] != "fast:1" && slow.out.ejected.Load() {
			t.Fatalf("picked %s while slow:1 is ejected", d.Endpoints[0])
		}
		d.Done()
	}
	for _, d := range held {
		d.Done()
	}
	if lb.count("reason=first_byte_timeout") != 1 {
		t.Fatalf("want one first-byte-timeout ejection line")
	}
}

// TestPendingPrefillSpreadsUniquePrompts: the herding the unique-prompt benchmark showed.
// Scraped metrics make a look emptiest (they are one scrape old) and the in-flight counts
// tie once a has taken a request; without the pending-prefill scorer the next request
// would follow to a, behind the prompt it is still prefilling.
func TestPendingPrefillSpreadsUniquePrompts(t *testing.T) {
	for _, withScorer := range []bool{true, false} {
		r, _ := newTestRouter(t, func(c *Config) {
			// least-recent alone would also avoid a: keep it out to test pending-prefill.
			c.Scheduler.Scorers = slicesDeleteScorer(c.Scheduler.Scorers, ScorerLeastRecent)
			if !withScorer {
				c.Scheduler.Scorers = slicesDeleteScorer(slicesDeleteScorer(c.Scheduler.Scorers, ScorerPendingPrefill), ScorerLeastRecent)
			}
		})
		eps := []*endpoint{staticEndpoint("a:1", metricsState{kvUsage: 0.1}), staticEndpoint("b:1", metricsState{kvUsage: 0.5}),
			staticEndpoint("c:1", metricsState{kvUsage: 0.5}), staticEndpoint("d:1", metricsState{kvUsage: 0.5})}
		installPool(r, "ns/p", eps)
		prompt := []byte(stringsRepeat("unique words for this prompt ", 100))
		var ds []*Decision
		for _, addr := range []string{"b:1", "c:1", "d:1"} { // one decoding request each
			d := mustPick(t, r, &Request{Pool: "ns/p", Model: "m", Subset: []string{addr}})
			d.FirstByte()
			ds = append(ds, d)
		}
		first := mustPick(t, r, &Request{Pool: "ns/p", Model: "m", Prompt: prompt})
		second := mustPick(t, r, &Request{Pool: "ns/p", Model: "m", Prompt: append([]byte("x"), prompt...)})
		if first.Endpoints[0] != "a:1" {
			t.Fatalf("first pick %s, want a:1 (fewest in flight, emptiest)", first.Endpoints[0])
		}
		if withScorer && second.Endpoints[0] == "a:1" {
			t.Fatal("second pick queued behind a:1's pending prefill")
		}
		if !withScorer && second.Endpoints[0] != "a:1" {
			t.Fatalf("without the scorer the second pick went to %s: the test no longer shows the herding", second.Endpoints[0])
		}
		for _, d := range append(ds, first, second) {
			d.Done()
		}
	}
}

func slicesDeleteScorer(s []PluginSpec, name string) []PluginSpec {
	var out []PluginSpec
	for _, sc := range s {
		if sc.Name != name {
			out = append(out, sc)
		}
	}
	return out
}

// TestPendingPrefillKeepsPrefixAffinity: a second request of a shared prompt follows the
// first to its endpoint even while that one is still prefilling it: elsewhere it would
// prefill the whole prompt itself, no sooner.
func TestPendingPrefillKeepsPrefixAffinity(t *testing.T) {
	r, _ := newTestRouter(t, nil)
	installPool(r, "ns/p", []*endpoint{staticEndpoint("a:1", metricsState{}), staticEndpoint("b:1", metricsState{})})
	shared := []byte(stringsRepeat("a long shared system prompt of many words ", 200))
	first := mustPick(t, r, &Request{Pool: "ns/p", Model: "m", Prompt: append(slices.Clip(shared), "question one"...)})
	second := mustPick(t, r, &Request{Pool: "ns/p", Model: "m", Prompt: append(slices.Clip(shared), "question two"...)})
	if second.Endpoints[0] != first.Endpoints[0] {
		t.Fatalf("second request went to %s, first to %s: prefix affinity lost to the pending prefill", second.Endpoints[0], first.Endpoints[0])
	}
	first.Done()
	second.Done()
}

// TestLeastRecentRotatesWhenSignalsAreFlat: with nothing to tell endpoints apart (equal
// metrics, nothing in flight or pending), picks rotate like round robin instead of landing
// at random, which would queue some requests behind others.
func TestLeastRecentRotatesWhenSignalsAreFlat(t *testing.T) {
	r, _ := newTestRouter(t, nil)
	installPool(r, "ns/p", []*endpoint{staticEndpoint("a:1", metricsState{}), staticEndpoint("b:1", metricsState{}),
		staticEndpoint("c:1", metricsState{}), staticEndpoint("d:1", metricsState{})})
	for round := range 5 {
		seen := map[string]bool{}
		for range 4 {
			d := mustPick(t, r, &Request{Pool: "ns/p", Model: "m", Stream: true})
			seen[d.Endpoints[0]] = true
			d.FirstByte()
			d.Done()
		}
		if len(seen) != 4 {
			t.Fatalf("round %d: 4 picks went to %d endpoints, want every endpoint once", round, len(seen))
		}
	}
}
