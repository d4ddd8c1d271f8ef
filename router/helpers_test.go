package router

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// modelServer is a real HTTP server on 127.0.0.1 serving /metrics and /v1/models with
// contents the test changes at will; it can be made to fail.
type modelServer struct {
	srv *httptest.Server

	mu      sync.Mutex
	metrics string
	models  string
	fail    bool // answer 500 to everything
	hang    bool // never answer (until the client gives up)
	scrapes int  // GET /metrics served
}

func (ms *modelServer) scrapeCount() int {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.scrapes
}

func newModelServer(t testing.TB, metrics, models string) *modelServer {
	t.Helper()
	ms := &modelServer{metrics: metrics, models: models}
	ms.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ms.mu.Lock()
		metrics, models, fail, hang := ms.metrics, ms.models, ms.fail, ms.hang
		ms.mu.Unlock()
		if hang {
			<-r.Context().Done()
			return
		}
		if fail {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		switch r.URL.Path {
		case "/metrics":
			ms.mu.Lock()
			ms.scrapes++
			ms.mu.Unlock()
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			_, _ = io.WriteString(w, metrics)
		case "/v1/models":
			if models == "" {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, models)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(ms.srv.Close)
	return ms
}

func (ms *modelServer) addr() string { return strings.TrimPrefix(ms.srv.URL, "http://") }

func (ms *modelServer) setFail(fail bool) {
	ms.mu.Lock()
	ms.fail = fail
	ms.mu.Unlock()
}

func (ms *modelServer) setHang(hang bool) {
	ms.mu.Lock()
	ms.hang = hang
	ms.mu.Unlock()
}

// logBuffer collects log output for assertions (and still shows it in the test log).
type logBuffer struct {
	t  testing.TB
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.b.Write(p)
	l.mu.Unlock()
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (l *logBuffer) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), substr)
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newTestRouter creates a router with fast scrapes and a private registry.
func newTestRouter(t testing.TB, mutate func(*Config)) (*Router, *prometheus.Registry) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.ScrapeInterval = 10 * time.Millisecond
	cfg.ScrapeTimeout = 200 * time.Millisecond
	cfg.StalenessThreshold = 300 * time.Millisecond
	if mutate != nil {
		mutate(&cfg)
	}
	reg := prometheus.NewRegistry()
	r, err := New(cfg, testLogger(t), reg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(r.Close)
	return r, reg
}

// installPool puts endpoints with fixed metrics into the router without scrape loops:
// for scheduler tests and benchmarks that must not depend on the network or timing.
func installPool(r *Router, name string, eps []*endpoint) {
	v := &poolView{endpoints: eps, byAddr: make(map[string]int, len(eps))}
	p := &pool{name: name, counters: r.metrics.poolCounters(name), ejection: &poolEjections{size: len(eps)}}
	for i, e := range eps {
		e.pool = name
		v.byAddr[e.spec.Address] = i
		if e.out == nil {
			e.out = r.newOutlier(e, p.ejection)
		}
	}
	p.view.Store(v)
	r.mu.Lock()
	r.storePools(*r.pools.Load(), name, p)
	r.mu.Unlock()
}

// staticEndpoint builds an endpoint with the given metrics, scraped now.
func staticEndpoint(addr string, m metricsState) *endpoint {
	done := make(chan struct{})
	close(done) // no scrape loop
	e := &endpoint{spec: EndpointSpec{Name: "pod-" + addr, Address: addr}, prefix: newPrefixLRU(DefaultPrefixLRUCapacity), cancel: func() {}, done: done}
	if m.scrapedAt.IsZero() {
		m.scrapedAt = time.Now().Add(time.Hour) // stays fresh for the whole test
	}
	e.metrics.Store(&m)
	e.prefixSpan.Store(int64(testScheduler(DefaultSchedulerConfig()).span(&m)))
	return e
}

func withModels(e *endpoint, models map[string]string) *endpoint {
	ms := modelSet(models)
	e.models.Store(&ms)
	return e
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkNoGoroutineLeak fails when goroutines started by the test are still running.
func checkNoGoroutineLeak(t *testing.T, before int) {
	t.Helper()
	eventually(t, 3*time.Second, "goroutines to exit", func() bool {
		return runtime.NumGoroutine() <= before
	})
}

func gaugeValue(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue series
				}
			}
			return value(m), true
		}
	}
	return 0, false
}

// testScheduler builds a scheduler with the built-in plugins; the config must be valid.
func testScheduler(cfg SchedulerConfig) *scheduler {
	s, err := NewRegistry().newScheduler(cfg)
	if err != nil {
		panic(err)
	}
	return s
}
