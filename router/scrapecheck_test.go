package router

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

const saneVLLM = "vllm:num_requests_waiting 1\nvllm:num_requests_running 2\nvllm:kv_cache_usage_perc 0.25\n"

// TestScrapeRejectsNonsenseValues: a real server whose load metrics parse but cannot be
// true fails the scrape; the endpoint is stale (not idle), the transition is logged once
// however many scrapes fail, and a sane exposition brings it back with one "fresh" line.
func TestScrapeRejectsNonsenseValues(t *testing.T) {
	for _, tc := range []struct{ name, text string }{
		{"NaN queue", "vllm:num_requests_waiting NaN\nvllm:kv_cache_usage_perc 0.1\n"},
		{"+Inf running", "vllm:num_requests_running +Inf\nvllm:kv_cache_usage_perc 0.1\n"},
		{"-Inf queue", "vllm:num_requests_waiting -Inf\n"},
		{"negative queue", "vllm:num_requests_waiting -3\nvllm:kv_cache_usage_perc 0.1\n"},
		{"negative running on one model", "vllm:num_requests_running{model_name=\"a\"} 4\nvllm:num_requests_running{model_name=\"b\"} -1\n"},
		{"KV above 1", "vllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 1.7\n"},
		{"KV negative", "vllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc -0.01\n"},
		{"KV NaN legacy name", "vllm:num_requests_waiting 0\nvllm:gpu_cache_usage_perc NaN\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newModelServer(t, tc.text, "")
			logs := &logBuffer{t: t}
			cfg := DefaultConfig()
			cfg.ScrapeInterval, cfg.ScrapeTimeout, cfg.StalenessThreshold = 10*time.Millisecond, 200*time.Millisecond, 300*time.Millisecond
			reg := prometheus.NewRegistry()
			r, err := New(cfg, slog.New(slog.NewTextHandler(logs, nil)), reg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(r.Close)
			r.SetPool("ns/p", []EndpointSpec{{Name: "a", Address: srv.addr()}})
			// Ten failed scrapes at least, so that a log line per scrape would show.
			eventually(t, 5*time.Second, "ten failed scrapes", func() bool {
				v, ok := gaugeValue(t, reg, "infergw_router_scrape_errors_total", map[string]string{"endpoint": srv.addr()})
				return ok && v >= 10
			})
			if st := r.PoolStats("ns/p"); st.Ready != 0 || st.Failed != 1 {
				t.Fatalf("stats = %+v, want the endpoint failed, none ready", st)
			}
			if v, _ := gaugeValue(t, reg, "infergw_router_endpoint_stale", map[string]string{"endpoint": srv.addr()}); v != 1 {
				t.Fatalf("stale gauge = %v, want 1", v)
			}
			if n := logs.count("endpoint metrics stale"); n != 1 {
				t.Fatalf("stale transition logged %d times, want once", n)
			}
			srv.mu.Lock()
			srv.metrics = saneVLLM
			srv.mu.Unlock()
			eventually(t, 5*time.Second, "endpoint fresh again", func() bool { return r.PoolStats("ns/p").Ready == 1 })
			if m := r.lookup("ns/p").view.Load().endpoints[0].metrics.Load(); m.waiting != 1 || m.running != 2 || m.kvUsage != 0.25 {
				t.Fatalf("metrics after recovery = %+v", m)
			}
			if n := logs.count("endpoint metrics fresh"); n != 1 {
				t.Fatalf("fresh transition logged %d times, want once", n)
			}
		})
	}
}

// TestScrapeSizeLimits: an exposition over the series cap (40,000 series of a family the
// router does not even read) or over the byte cap fails the scrape; the same server within
// the caps is fresh.
func TestScrapeSizeLimits(t *testing.T) {
	var many strings.Builder
	many.WriteString(saneVLLM)
	for i := range 40000 {
		fmt.Fprintf(&many, "junk_series{i=\"%d\"} 1\n", i)
	}
	padded := saneVLLM + "# " + strings.Repeat("x", 100<<10) + "\n"
	for _, tc := range []struct {
		name   string
		text   string
		mutate func(*Config)
		ok     bool
	}{
		{"40000 series over the default cap", many.String(), nil, false},
		{"40000 series under a raised cap", many.String(), func(c *Config) { c.MaxScrapeSeries = 50000 }, true},
		{"100 KB over a 64 KB cap", padded, func(c *Config) { c.MaxScrapeBytes = 64 << 10 }, false},
		{"100 KB under the default cap", padded, nil, true},
		{"exactly at the series cap", saneVLLM, func(c *Config) { c.MaxScrapeSeries = 3 }, true},
		{"one over the series cap", saneVLLM, func(c *Config) { c.MaxScrapeSeries = 2 }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newModelServer(t, tc.text, "")
			r, reg := newTestRouter(t, tc.mutate)
			r.SetPool("ns/p", []EndpointSpec{{Name: "a", Address: srv.addr()}})
			if tc.ok {
				eventually(t, 5*time.Second, "endpoint ready", func() bool { return r.PoolStats("ns/p").Ready == 1 })
				return
			}
			eventually(t, 5*time.Second, "three failed scrapes", func() bool {
				v, ok := gaugeValue(t, reg, "infergw_router_scrape_errors_total", map[string]string{"endpoint": srv.addr()})
				return ok && v >= 3
			})
			if st := r.PoolStats("ns/p"); st.Ready != 0 || st.Failed != 1 {
				t.Fatalf("stats = %+v, want the endpoint failed", st)
			}
			if r.lookup("ns/p").view.Load().endpoints[0].metrics.Load() != nil {
				t.Fatal("an over-limit scrape stored metrics")
			}
		})
	}
}

func TestCountSeries(t *testing.T) {
	text := []byte("# HELP a x\n# TYPE a gauge\na 1\n\n  \na{x=\"1\"} 2\n   b 3")
	if n, over := countSeries(text, 3); n != 3 || over {
		t.Fatalf("countSeries = %d, %v; want 3, false", n, over)
	}
	if n, over := countSeries(text, 2); n != 3 || !over {
		t.Fatalf("countSeries limit 2 = %d, %v; want 3, true", n, over)
	}
	if n, over := countSeries(nil, 0); n != 0 || over {
		t.Fatalf("empty: %d, %v", n, over)
	}
}

func TestRouterRejectsNegativeScrapeLimits(t *testing.T) {
	for _, mutate := range []func(*Config){
		func(c *Config) { c.MaxScrapeBytes = -1 },
		func(c *Config) { c.MaxScrapeSeries = -1 },
	} {
		cfg := DefaultConfig()
		mutate(&cfg)
		if _, err := New(cfg, nil, prometheus.NewRegistry()); err == nil {
			t.Errorf("New accepted %+v", cfg)
		}
	}
}

// FuzzCheckEngineMetrics: whatever parses, an exposition that passes the check yields
// metrics in range with nothing clamped.
func FuzzCheckEngineMetrics(f *testing.F) {
	f.Add([]byte(saneVLLM), uint8(0))
	f.Add([]byte("vllm:num_requests_waiting NaN\n"), uint8(0))
	f.Add([]byte("sglang:token_usage 1.5\n"), uint8(1))
	f.Add([]byte("trtllm_num_requests_waiting -1e300\n"), uint8(2))
	f.Fuzz(func(t *testing.T, text []byte, e uint8) {
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(strings.NewReader(string(text)))
		if err != nil {
			return
		}
		eng := engine(e % 3)
		if checkEngineMetrics(eng, fams) != nil {
			return
		}
		var m metricsState
		if !extractMetrics(eng, fams, &m) {
			return
		}
		waiting, _, kv := engineFamilies(eng, fams)
		if m.kvUsage != maxValue(kv) || (sumValues(waiting) < 1e12 && m.waiting != sumValues(waiting)) {
			t.Fatalf("checked metrics were changed on extraction: %+v", m)
		}
	})
}

func BenchmarkCountSeries(b *testing.B) {
	text := []byte(readTestdata(b, "vllm.txt"))
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		if _, over := countSeries(text, DefaultMaxScrapeSeries); over {
			b.Fatal("over")
		}
	}
}
