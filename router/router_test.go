package router

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const fastVLLM = "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 0\n# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc 0.1\n"

func mustPick(t testing.TB, r *Router, req *Request) *Decision {
	t.Helper()
	d, err := r.Pick(req)
	if err != nil {
		t.Fatalf("Pick: %v", err)
	}
	return d
}

// TestStaleness: an endpoint that stops answering becomes stale (metric and log), is not
// picked while a fresh one exists, is picked when it is the only choice, and recovers.
func TestStaleness(t *testing.T) {
	good := newModelServer(t, fastVLLM, "")
	bad := newModelServer(t, fastVLLM, "")
	logs := &logBuffer{t: t}
	cfg := DefaultConfig()
	cfg.ScrapeInterval, cfg.ScrapeTimeout, cfg.StalenessThreshold = 10*time.Millisecond, 100*time.Millisecond, 300*time.Millisecond
	reg := prometheus.NewRegistry()
	r, err := New(cfg, slog.New(slog.NewTextHandler(logs, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.SetPool("ns/p", []EndpointSpec{{Name: "good", Address: good.addr()}, {Name: "bad", Address: bad.addr()}})
	eventually(t, 3*time.Second, "both fresh", func() bool { return r.PoolStats("ns/p").Ready == 2 })

	staleGauge := func(addr string) float64 {
		v, _ := gaugeValue(t, reg, "infergw_router_endpoint_stale", map[string]string{"pool": "ns/p", "endpoint": addr})
		return v
	}
	if staleGauge(bad.addr()) != 0 {
		t.Fatal("fresh endpoint reported stale")
	}
	bad.setHang(true) // stops answering: scrapes time out
	eventually(t, 3*time.Second, "stale gauge 1", func() bool { return staleGauge(bad.addr()) == 1 })
	// Timed-out scrapes are not failures: the endpoint went stale by the age of its metrics.
	if st := r.PoolStats("ns/p"); st.Ready != 1 || st.Stale != 1 || st.Failed != 0 {
		t.Fatalf("stats %+v, want 1 ready, 1 stale, 0 failed", st)
	}
	for range 50 {
		d := mustPick(t, r, &Request{Pool: "ns/p", Model: "m"})
		if d.Endpoints[0] != good.addr() || d.Stale {
			t.Fatalf("picked %v (stale=%v), want the fresh %s first", d.Endpoints, d.Stale, good.addr())
		}
		d.Done()
	}
	staleLine := "metrics stale, not picked while fresh endpoints exist\" pool=ns/p endpoint=" + bad.addr()
	if n := logs.count(staleLine); n != 1 {
		t.Fatalf("stale transition logged %d times, want once", n)
	}
	// Only stale endpoints left: still pick rather than fail, on the freshest data (good's
	// last metrics are newer than bad's by more than the threshold).
	good.setFail(true)
	eventually(t, 3*time.Second, "both stale", func() bool { return r.PoolStats("ns/p").Ready == 0 })
	d := mustPick(t, r, &Request{Pool: "ns/p", Model: "m"})
	if !d.Stale || len(d.Endpoints) != 1 || d.Endpoints[0] != good.addr() {
		t.Fatalf("decision %+v, want a stale pick of %s, the freshest", d, good.addr())
	}
	d.Done()
	bad.setHang(false)
	eventually(t, 3*time.Second, "recovered", func() bool { return staleGauge(bad.addr()) == 0 })
	if logs.count("metrics fresh\" pool=ns/p endpoint="+bad.addr()) != 2 {
		t.Fatal("recovery not logged")
	}
}

// TestEndpointChurn: SetPool adds and removes endpoints, keeps the state of unchanged ones,
// stops removed loops, and Close leaves no goroutine behind.
func TestEndpointChurn(t *testing.T) {
	before := runtime.NumGoroutine()
	var srvs []*modelServer
	for range 4 {
		srvs = append(srvs, newModelServer(t, fastVLLM, ""))
	}
	func() {
		r, reg := newTestRouter(t, nil)
		spec := func(i int) EndpointSpec { return EndpointSpec{Name: fmt.Sprint("pod", i), Address: srvs[i].addr()} }
		r.SetPool("ns/p", []EndpointSpec{spec(0), spec(1), spec(2)})
		eventually(t, 3*time.Second, "3 ready", func() bool { return r.PoolStats("ns/p").Ready == 3 })
		kept := r.lookup("ns/p").view.Load().endpoints[1]
		removed := r.lookup("ns/p").view.Load().endpoints[0]
		d := mustPick(t, r, &Request{Pool: "ns/p", Model: "m", Subset: []string{srvs[1].addr()}})

		r.SetPool("ns/p", []EndpointSpec{spec(1), spec(2), spec(3)})
		select {
		case <-removed.done:
		default:
			t.Fatal("removed endpoint's loop still running after SetPool returned")
		}
		v := r.lookup("ns/p").view.Load()
		if v.endpoints[0] != kept || kept.inflight.Load() != 1 {
			t.Fatal("unchanged endpoint lost its state")
		}
		d.Done()
		if _, ok := gaugeValue(t, reg, "infergw_router_endpoint_stale", map[string]string{"endpoint": srvs[0].addr()}); ok {
			t.Fatal("metrics of the removed endpoint still exported")
		}
		eventually(t, 3*time.Second, "new endpoint ready", func() bool { return r.PoolStats("ns/p").Ready == 3 })
		// A changed name replaces the endpoint.
		r.SetPool("ns/p", []EndpointSpec{{Name: "renamed", Address: srvs[1].addr()}})
		if r.lookup("ns/p").view.Load().endpoints[0] == kept {
			t.Fatal("renamed endpoint kept the old state")
		}
		r.SetPool("ns/q", []EndpointSpec{spec(3)})
		if got := r.Pools(); !slices.Equal(got, []string{"ns/p", "ns/q"}) {
			t.Fatalf("Pools = %v", got)
		}
		r.RemovePool("ns/q")
		if _, err := r.Pick(&Request{Pool: "ns/q"}); !errors.Is(err, ErrUnknownPool) {
			t.Fatalf("Pick on removed pool: %v", err)
		}
		r.Close()
		r.Close() // idempotent
		r.SetPool("ns/z", []EndpointSpec{spec(0)})
		if len(r.Pools()) != 1 {
			t.Fatal("SetPool after Close started a pool")
		}
	}()
	for _, s := range srvs {
		s.srv.Close()
	}
	checkNoGoroutineLeak(t, before)
}

// TestLoRAPreferenceOrder: an adapter request goes to an endpoint running the adapter,
// else to one with a free slot, even when busier than one without either.
func TestLoRAPreferenceOrder(t *testing.T) {
	r, _ := newTestRouter(t, nil)
	running := staticEndpoint("running:1", metricsState{waiting: 3, kvUsage: 0.5, loraRunning: []string{"sql-lora"}, maxLoRA: 2})
	free := staticEndpoint("free:1", metricsState{waiting: 2, kvUsage: 0.4, loraRunning: []string{"a"}, maxLoRA: 2})
	full := staticEndpoint("full:1", metricsState{waiting: 0, kvUsage: 0, loraRunning: []string{"a", "b"}, maxLoRA: 2})
	// As vLLM does, every endpoint lists the adapter (with its parent) in /v1/models.
	for _, e := range []*endpoint{running, free, full} {
		withModels(e, map[string]string{"base": "", "sql-lora": "base", "a": "base", "b": "base"})
	}
	installPool(r, "ns/p", []*endpoint{running, free, full})
	req := &Request{Pool: "ns/p", Model: "sql-lora"}
	for range 20 {
		d := mustPick(t, r, req)
		if d.Endpoints[0] != "running:1" {
			t.Fatalf("picked %v, want running:1 first", d.Endpoints)
		}
		d.Done()
	}
	installPool(r, "ns/p", []*endpoint{free, full})
	for range 20 {
		d := mustPick(t, r, req)
		if d.Endpoints[0] != "free:1" {
			t.Fatalf("picked %v, want free:1 first", d.Endpoints)
		}
		d.Done()
	}
}

// TestPrefixAffinity: a repeated long prompt goes back to the endpoint that served it.
func TestPrefixAffinity(t *testing.T) {
	r, _ := newTestRouter(t, nil)
	var eps []*endpoint
	for i := range 8 {
		eps = append(eps, staticEndpoint(fmt.Sprintf("10.0.0.%d:8000", i), metricsState{waiting: 1, kvUsage: 0.3}))
	}
	installPool(r, "ns/p", eps)
	prompt := []byte(stringsRepeat("You are a helpful assistant. Answer with care. ", 200)) // ~9.4 KB
	first := mustPick(t, r, &Request{Pool: "ns/p", Model: "m", Prompt: prompt})
	first.Done()
	if first.PrefixHitBlocks != 0 || first.PrefixBlocks != len(prompt)/64 {
		t.Fatalf("first pick hit %d of %d blocks", first.PrefixHitBlocks, first.PrefixBlocks)
	}
	for range 20 {
		d := mustPick(t, r, &Request{Pool: "ns/p", Model: "m", Prompt: prompt})
		if d.Endpoints[0] != first.Endpoints[0] || d.PrefixHitBlocks != d.PrefixBlocks {
			t.Fatalf("repeat went to %s (hit %d/%d), want %s", d.Endpoints[0], d.PrefixHitBlocks, d.PrefixBlocks, first.Endpoints[0])
		}
		d.Done()
	}
	// A longer prompt sharing the prefix also follows it.
	longer := append(slices.Clip(prompt), stringsRepeat("Now a new question. ", 50)...)
	d := mustPick(t, r, &Request{Pool: "ns/p", Model: "m", Prompt: longer})
	d.Done()
	if d.Endpoints[0] != first.Endpoints[0] {
		t.Fatalf("shared-prefix prompt went to %s, want %s", d.Endpoints[0], first.Endpoints[0])
	}
}

// TestLoadedLosesToIdle: high queue and high KV use lose to an idle endpoint.
func TestLoadedLosesToIdle(t *testing.T) {
	r, _ := newTestRouter(t, nil)
	loaded := staticEndpoint("loaded:1", metricsState{waiting: 12, running: 30, kvUsage: 0.95})
	idle := staticEndpoint("idle:1", metricsState{waiting: 0, running: 0, kvUsage: 0.05})
	installPool(r, "ns/p", []*endpoint{loaded, idle})
	for range 50 {
		d := mustPick(t, r, &Request{Pool: "ns/p", Model: "m"})
		if !slices.Equal(d.Endpoints, []string{"idle:1", "loaded:1"}) {
			t.Fatalf("endpoints %v, want idle first, loaded as fallback", d.Endpoints)
		}
		if d.Total <= 0 || len(d.Scores) != len(DefaultSchedulerConfig().Scorers) {
			t.Fatalf("decision scores %+v total %v", d.Scores, d.Total)
		}
		d.Done()
	}
}

// TestInFlightSpreadsBurst: with lagging metrics (all equal), undone picks spread a burst.
func TestInFlightSpreadsBurst(t *testing.T) {
	r, _ := newTestRouter(t, nil)
	var eps []*endpoint
	for i := range 4 {
		eps = append(eps, staticEndpoint(fmt.Sprintf("e%d:1", i), metricsState{}))
	}
	installPool(r, "ns/p", eps)
	var ds []*Decision
	for range 8 {
		ds = append(ds, mustPick(t, r, &Request{Pool: "ns/p", Model: "m"}))
	}
	for _, e := range eps {
		if n := e.inflight.Load(); n != 2 {
			t.Fatalf("%s has %d in flight, want 2 each", e.spec.Address, n)
		}
	}
	var wg sync.WaitGroup
	for _, d := range ds {
		wg.Add(2)
		go func() { defer wg.Done(); d.Done() }()
		go func() { defer wg.Done(); d.Done() }() // Done is idempotent
	}
	wg.Wait()
	if st := r.PoolStats("ns/p"); st.InFlight != 0 {
		t.Fatalf("in flight after Done = %d", st.InFlight)
	}
}

func TestSaturationOnlyForSheddable(t *testing.T) {
	r, _ := newTestRouter(t, nil)
	qFull := staticEndpoint("q:1", metricsState{waiting: 5})
	kvFull := staticEndpoint("kv:1", metricsState{kvUsage: 0.85})
	installPool(r, "ns/p", []*endpoint{qFull, kvFull})
	if _, err := r.Pick(&Request{Pool: "ns/p", Model: "m", Priority: -1}); !errors.Is(err, ErrSaturated) {
		t.Fatalf("sheddable on saturated pool: err = %v, want ErrSaturated", err)
	}
	for _, prio := range []int{0, 5} {
		d, err := r.Pick(&Request{Pool: "ns/p", Model: "m", Priority: prio})
		if err != nil {
			t.Fatalf("priority %d: %v", prio, err)
		}
		d.Done()
	}
	installPool(r, "ns/p", []*endpoint{qFull, kvFull, staticEndpoint("ok:1", metricsState{waiting: 4, kvUsage: 0.79})})
	d, err := r.Pick(&Request{Pool: "ns/p", Model: "m", Priority: -1})
	if err != nil || d.Endpoints[0] != "ok:1" {
		t.Fatalf("one unsaturated endpoint: %v %v", d, err)
	}
	d.Done()
}

func TestSubsetHint(t *testing.T) {
	r, _ := newTestRouter(t, nil)
	var eps []*endpoint
	for i := range 6 {
		eps = append(eps, staticEndpoint(fmt.Sprintf("10.0.0.%d:8000", i), metricsState{}))
	}
	installPool(r, "ns/p", eps)
	subset := []string{"10.0.0.4:8000", "10.0.0.1:8000", "10.9.9.9:8000"}
	for range 30 {
		d := mustPick(t, r, &Request{Pool: "ns/p", Model: "m", Subset: subset})
		if len(d.Endpoints) != 2 {
			t.Fatalf("endpoints %v, want the 2 subset members", d.Endpoints)
		}
		for _, a := range d.Endpoints {
			if !slices.Contains(subset, a) {
				t.Fatalf("picked %s outside the subset", a)
			}
		}
		d.Done()
	}
	if _, err := r.Pick(&Request{Pool: "ns/p", Subset: []string{}}); !errors.Is(err, ErrEmptySubset) {
		t.Fatalf("empty subset: %v", err)
	}
	if _, err := r.Pick(&Request{Pool: "ns/p", Subset: []string{"1.2.3.4:5"}}); !errors.Is(err, ErrNoReadyEndpoint) {
		t.Fatalf("foreign subset: %v", err)
	}
}

func TestPickErrorsAndFallbacks(t *testing.T) {
	r, reg := newTestRouter(t, func(c *Config) { c.Fallbacks = 3 })
	if _, err := r.Pick(&Request{Pool: "nope/x"}); !errors.Is(err, ErrUnknownPool) {
		t.Fatalf("unknown pool: %v", err)
	}
	installPool(r, "ns/empty", nil)
	if _, err := r.Pick(&Request{Pool: "ns/empty"}); !errors.Is(err, ErrNoReadyEndpoint) {
		t.Fatalf("empty pool: %v", err)
	}
	var eps []*endpoint
	for i := range 5 {
		eps = append(eps, withModels(staticEndpoint(fmt.Sprintf("e%d:1", i), metricsState{waiting: float64(i)}), map[string]string{"m": ""}))
	}
	installPool(r, "ns/p", eps)
	d := mustPick(t, r, &Request{Pool: "ns/p", Model: "m"})
	d.Done()
	if !slices.Equal(d.Endpoints, []string{"e0:1", "e1:1", "e2:1", "e3:1"}) {
		t.Fatalf("endpoints %v, want the 4 shortest queues in order", d.Endpoints)
	}
	if _, err := r.Pick(&Request{Pool: "ns/p", Model: "other"}); !errors.Is(err, ErrNoReadyEndpoint) {
		t.Fatalf("model served nowhere: %v", err)
	}
	if r.ServesModel("ns/p", "other") || !r.ServesModel("ns/p", "m") {
		t.Fatal("ServesModel wrong for a known model list")
	}
	if v, _ := gaugeValue(t, reg, "infergw_router_picks_total", map[string]string{"pool": "ns/p", "result": "ok"}); v != 1 {
		t.Fatalf("picks_total ok = %v, want 1", v)
	}
	if v, _ := gaugeValue(t, reg, "infergw_router_picks_total", map[string]string{"pool": "ns/p", "result": "no_ready_endpoint"}); v != 1 {
		t.Fatalf("picks_total no_ready_endpoint = %v, want 1", v)
	}
}

func TestServesModelUnknownLists(t *testing.T) {
	r, _ := newTestRouter(t, nil)
	installPool(r, "ns/p", []*endpoint{staticEndpoint("a:1", metricsState{})})
	if !r.ServesModel("ns/p", "anything") {
		t.Fatal("ServesModel false without any known model list")
	}
	if !r.ServesModel("ns/unknown", "x") {
		t.Fatal("ServesModel false for unknown pool")
	}
}

func TestRandomPolicySpreads(t *testing.T) {
	sched, err := PolicyConfig("random")
	if err != nil {
		t.Fatal(err)
	}
	r, _ := newTestRouter(t, func(c *Config) { c.Scheduler = sched })
	loaded := staticEndpoint("loaded:1", metricsState{waiting: 50, kvUsage: 0.99})
	idle := staticEndpoint("idle:1", metricsState{})
	installPool(r, "ns/p", []*endpoint{loaded, idle})
	wins := map[string]int{}
	for range 200 {
		d := mustPick(t, r, &Request{Pool: "ns/p", Model: "m"})
		wins[d.Endpoints[0]]++
		d.Done()
	}
	if wins["loaded:1"] < 50 || wins["idle:1"] < 50 {
		t.Fatalf("random policy wins %v, want both near 100", wins)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Scheduler.Scorers = append(cfg.Scheduler.Scorers, PluginSpec{Type: "bogus", Weight: 1})
	if _, err := New(cfg, nil, nil); err == nil {
		t.Fatal("New accepted an unknown scorer")
	}
	cfg = DefaultConfig()
	cfg.Fallbacks = -1
	if _, err := New(cfg, nil, nil); err == nil {
		t.Fatal("New accepted negative fallbacks")
	}
	// Metrics that go stale between two scrapes would make every endpoint flap.
	cfg = DefaultConfig()
	cfg.ScrapeInterval, cfg.StalenessThreshold = 2*time.Second, 2*time.Second
	if _, err := New(cfg, nil, nil); err == nil || !strings.Contains(err.Error(), "staleness threshold") {
		t.Fatalf("New accepted a staleness threshold not above the scrape interval: %v", err)
	}
}

// TestPickDuringChurn runs Picks from several goroutines while SetPool adds and removes
// real endpoints (run with -race); every decision names an endpoint that was in the pool.
func TestPickDuringChurn(t *testing.T) {
	before := runtime.NumGoroutine()
	var srvs []*modelServer
	var all []string
	for range 4 {
		s := newModelServer(t, fastVLLM, "")
		srvs = append(srvs, s)
		all = append(all, s.addr())
	}
	r, _ := newTestRouter(t, nil)
	specs := func(from, to int) []EndpointSpec {
		var out []EndpointSpec
		for i := from; i < to; i++ {
			out = append(out, EndpointSpec{Name: fmt.Sprint("pod", i), Address: srvs[i].addr()})
		}
		return out
	}
	r.SetPool("ns/p", specs(0, 4))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var picks atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			prompt := []byte(stringsRepeat("churn prompt text ", 20))
			for {
				select {
				case <-stop:
					return
				default:
				}
				d, err := r.Pick(&Request{Pool: "ns/p", Model: "m", Prompt: prompt})
				if err != nil {
					t.Errorf("Pick: %v", err)
					return
				}
				for _, a := range d.Endpoints {
					if !slices.Contains(all, a) {
						t.Errorf("picked unknown endpoint %s", a)
					}
				}
				d.Done()
				picks.Add(1)
			}
		}()
	}
	for i := range 20 { // bounded churn
		r.SetPool("ns/p", specs(i%2, 2+i%3))
		_ = r.PoolStats("ns/p")
		_ = r.ServesModel("ns/p", "m")
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if picks.Load() == 0 {
		t.Fatal("no pick completed")
	}
	r.Close()
	for _, s := range srvs {
		s.srv.Close()
	}
	checkNoGoroutineLeak(t, before)
}
