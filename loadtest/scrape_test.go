package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// metricsServer serves a vLLM-style exposition that changes on every scrape: KV use and
// the queue grow, and the prefix counters advance by 5 hits in 20 lookups (a 25 % hit
// rate), except that the counters restart from zero on the fourth scrape (a server
// restart). With big, it serves an exposition over the size bound.
func metricsServer(t *testing.T, big bool) (string, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := n.Add(1)
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		if big {
			body := strings.Repeat("# padding line for the size bound\n", maxScrapeBytes/30)
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			_, _ = io.WriteString(w, body)
			return
		}
		k := i
		if i >= 4 {
			k = i - 3 // restarted
		}
		fmt.Fprintf(w, "# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{engine=\"0\"} %g\n", math.Min(1, 0.1*float64(i)))
		fmt.Fprintf(w, "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{engine=\"0\"} %d\n", i)
		fmt.Fprintf(w, "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{engine=\"0\"} 2\n")
		fmt.Fprintf(w, "# TYPE vllm:prefix_cache_hits_total counter\nvllm:prefix_cache_hits_total{engine=\"0\"} %d\n", 5*k)
		fmt.Fprintf(w, "# TYPE vllm:prefix_cache_queries_total counter\nvllm:prefix_cache_queries_total{engine=\"0\"} %d\n", 20*k)
	})}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return "http://" + ln.Addr().String() + "/metrics", &n
}

func TestScrapeDuringRun(t *testing.T) {
	ts := startTimingServer(t, "known")
	murl, _ := metricsServer(t, false)
	bigURL, _ := metricsServer(t, true)
	cfg := testConfig(ts.url)
	cfg.Rate, cfg.Duration = 20, 1200*time.Millisecond
	cfg.Scrape, cfg.ScrapeInterval = []string{murl, bigURL, "http://127.0.0.1:1/metrics"}, 200*time.Millisecond
	s, err := Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Scrapes) != 3 {
		t.Fatalf("%d scrape series", len(s.Scrapes))
	}
	good := s.Scrapes[0]
	if len(good.Points) < 5 || good.Errors != 0 {
		t.Fatalf("%d points, %d errors (%s)", len(good.Points), good.Errors, good.LastError)
	}
	for i, p := range good.Points {
		n := float64(i + 1)
		if float64(p.KVUsage) != math.Min(1, 0.1*n) || float64(p.Waiting) != n || float64(p.Running) != 2 {
			t.Errorf("point %d: kv %v waiting %v running %v", i, p.KVUsage, p.Waiting, p.Running)
		}
		hr := float64(p.PrefixHitRate)
		switch {
		case i == 0 || i == 3: // no previous scrape; the counters restarted
			if !math.IsNaN(hr) {
				t.Errorf("point %d: hit rate %v, want none", i, hr)
			}
		case hr != 0.25:
			t.Errorf("point %d: hit rate %v, want 0.25", i, hr)
		}
		if i > 0 && p.T <= good.Points[i-1].T {
			t.Errorf("point %d not after the previous one", i)
		}
	}
	for i, want := range []string{"larger than", "connect"} {
		sr := s.Scrapes[i+1]
		if len(sr.Points) != 0 || sr.Errors == 0 || !strings.Contains(sr.LastError, want) {
			t.Errorf("%s: %d points, %d errors, last %q; want only errors about %q", sr.URL, len(sr.Points), sr.Errors, sr.LastError, want)
		}
	}
	var out strings.Builder
	if err := WriteText(&out, s); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "SERVER "+murl) || !strings.Contains(out.String(), "prefix_hit_rate.........: mean 25.0%") {
		t.Errorf("text summary lacks the server's view:\n%s", out.String())
	}
	var page strings.Builder
	if err := WriteHTML(&page, s); err != nil {
		t.Fatal(err)
	}
	// Three charts (KV use, queue, hit rate), each with one line per URL.
	if n := strings.Count(page.String(), `class="server"`); n != 9 {
		t.Errorf("%d server lines in the report, want 9", n)
	}
	// The summary's JSON round-trips, with missing values as null.
	var js strings.Builder
	if err := WriteJSON(&js, s); err != nil {
		t.Fatal(err)
	}
	var back Summary
	if err := json.Unmarshal([]byte(js.String()), &back); err != nil {
		t.Fatal(err)
	}
	bp := back.Scrapes[0].Points
	if len(bp) != len(good.Points) || !math.IsNaN(float64(bp[0].PrefixHitRate)) || float64(bp[1].PrefixHitRate) != 0.25 {
		t.Errorf("scrapes after a JSON round trip: %+v", bp)
	}
}

func TestScrapeConfigErrors(t *testing.T) {
	cfg := testConfig("http://127.0.0.1:1")
	cfg.Scrape = []string{"127.0.0.1:9090/metrics"}
	if _, err := Run(context.Background(), cfg, nil); err == nil || !strings.Contains(err.Error(), "scrape url") {
		t.Errorf("scrape URL without a scheme: %v", err)
	}
	cfg.Scrape = make([]string, maxScrapeURLs+1)
	if _, err := Run(context.Background(), cfg, nil); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Errorf("too many scrape URLs: %v", err)
	}
}

// TestScrapeBoundWithoutContentLength: a streamed (chunked) exposition over the bound fails
// the scrape after reading the bound plus one byte, whatever the server sends.
func TestScrapeBoundWithoutContentLength(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var written atomic.Int64
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		line := []byte("# an endless exposition\n")
		for i := 0; i < 1<<20 && r.Context().Err() == nil; i++ { // bounded: 24 MiB at most
			n, err := w.Write(line)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	})}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	sc, err := newScraper([]string{"http://" + ln.Addr().String() + "/metrics"}, time.Second, 10*time.Second, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	sc.maxBytes = 64 << 10
	parser := expfmt.NewTextParser(model.UTF8Validation)
	var buf bytes.Buffer
	sc.scrapeOne(context.Background(), 0, &parser, &buf)
	res := sc.results()[0]
	if res.Errors != 1 || !strings.Contains(res.LastError, "larger than 65536 bytes") || len(res.Points) != 0 {
		t.Errorf("errors %d (%q), %d points; want the size bound's error", res.Errors, res.LastError, len(res.Points))
	}
	if buf.Cap() > 1<<20 {
		t.Errorf("the scrape buffer grew to %d bytes for a 64 KiB bound", buf.Cap())
	}
}
