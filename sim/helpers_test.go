package sim

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// startSim starts a sim on 127.0.0.1:0 and stops it (checking that no goroutine is left)
// when the test ends.
func startSim(t *testing.T, adjust func(c *Config)) *Server {
	t.Helper()
	before := runtime.NumGoroutine()
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Name = "test-sim"
	cfg.TimeScale = 0.01
	if adjust != nil {
		adjust(&cfg)
	}
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		http.DefaultClient.CloseIdleConnections()
		waitGoroutines(t, before)
	})
	return s
}

// waitGoroutines fails when the goroutine count does not come back to at most want.
func waitGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Errorf("goroutines: %d > %d after close\n%s", runtime.NumGoroutine(), want, buf[:n])
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func post(t *testing.T, url string, body any) *http.Response {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	return resp
}

// streamResult is what a client saw of one SSE response.
type streamResult struct {
	start       time.Time
	firstToken  time.Duration // TTFT: time until the first chunk with content
	arrivals    []time.Duration
	chunks      []map[string]any
	text        string
	usage       map[string]any
	done        bool
	finish      string
	instance    string
	contentType string
}

func (r *streamResult) cachedTokens() int {
	if r.usage == nil {
		return -1
	}
	details, _ := r.usage["prompt_tokens_details"].(map[string]any)
	n, _ := details["cached_tokens"].(float64)
	return int(n)
}

// stream sends a streaming request and records when each event arrived.
func stream(t *testing.T, s *Server, path string, body map[string]any) *streamResult {
	t.Helper()
	body["stream"] = true
	if _, ok := body["stream_options"]; !ok {
		body["stream_options"] = map[string]any{"include_usage": true}
	}
	res := &streamResult{start: time.Now(), firstToken: -1}
	resp := post(t, "http://"+s.Addr()+path, body)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	res.instance = resp.Header.Get("x-sim-instance")
	res.contentType = resp.Header.Get("Content-Type")
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("unexpected SSE line %q", line)
		}
		if data == "[DONE]" {
			res.done = true
			continue
		}
		var chunk map[string]any
		if err := json.Unmarshal([]byte(data), &chunk); err != nil {
			t.Fatalf("chunk %q: %v", data, err)
		}
		res.chunks = append(res.chunks, chunk)
		if u, ok := chunk["usage"].(map[string]any); ok {
			res.usage = u
		}
		choices, _ := chunk["choices"].([]any)
		if len(choices) == 0 {
			continue
		}
		choice, _ := choices[0].(map[string]any)
		if fr, ok := choice["finish_reason"].(string); ok {
			res.finish = fr
		}
		text, ok := choice["text"].(string)
		if delta, isChat := choice["delta"].(map[string]any); isChat {
			if _, roleChunk := delta["role"]; roleChunk {
				continue // the first chunk: the role and an empty content, no token
			}
			text, ok = delta["content"].(string)
		}
		if !ok {
			continue
		}
		now := time.Since(res.start)
		if res.firstToken < 0 {
			res.firstToken = now
		}
		res.arrivals = append(res.arrivals, now)
		res.text += text
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read stream: %v", err)
	}
	return res
}

// scrape parses the sim's /metrics with the Prometheus text parser.
func scrape(t *testing.T, s *Server) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + s.Addr() + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse metrics: %v", err)
	}
	return fams
}

// metricValue returns the value of the only (or the label-matching) series of a family:
// gauge/counter value, or a histogram's sample count.
func metricValue(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	fam, ok := fams[name]
	if !ok {
		t.Fatalf("metric %s missing", name)
	}
	for _, m := range fam.GetMetric() {
		if !hasLabels(m, labels...) {
			continue
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("metric %s has no series with labels %v", name, labels)
	return 0
}

func hasLabels(m *dto.Metric, kv ...string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == kv[i] && lp.GetValue() == kv[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// words builds a deterministic prompt of n words.
func words(n int, seed string) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "%s%d ", seed, i)
	}
	return b.String()
}
