package sim

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkStreamedRequests measures how many streamed requests of 16 output tokens one sim
// serves per second over loopback with the model cost made negligible (time scale 1e-6), so
// that the figure is the HTTP/SSE and engine-loop overhead. Concurrent clients: 32 x GOMAXPROCS.
func BenchmarkStreamedRequests(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.TimeScale = 1e-6
	s, err := New(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024}}
	defer client.CloseIdleConnections()
	url := "http://" + s.Addr() + "/v1/chat/completions"
	body := `{"model":"` + cfg.Model + `","messages":[{"role":"user","content":"Write a haiku about gateways."}],` +
		`"max_tokens":16,"ignore_eos":true,"stream":true,"stream_options":{"include_usage":true}}`
	var failures atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(32)
	cpuBefore := processCPU()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		buf := bytes.NewBuffer(make([]byte, 0, 8<<10))
		for pb.Next() {
			resp, err := client.Post(url, "application/json", strings.NewReader(body))
			if err != nil {
				failures.Add(1)
				continue
			}
			buf.Reset()
			_, err = io.Copy(buf, resp.Body)
			resp.Body.Close()
			// 1 role chunk + 16 content chunks + usage + [DONE]
			if err != nil || resp.StatusCode != 200 || bytes.Count(buf.Bytes(), []byte("data: ")) != 19 ||
				!bytes.HasSuffix(buf.Bytes(), []byte("data: [DONE]\n\n")) {
				failures.Add(1)
			}
		}
	})
	elapsed := time.Since(start)
	cpu := processCPU() - cpuBefore
	if n := failures.Load(); n > 0 {
		b.Fatalf("%d of %d requests failed", n, b.N)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(b.N*16)/elapsed.Seconds(), "tokens/s")
	// On a shared machine wall-clock req/s depends on what else runs; requests per CPU-second
	// of this process (sim AND client together, so a lower bound for the sim alone) does not.
	b.ReportMetric(float64(b.N)/cpu.Seconds(), "req/cpu-s")
}

// processCPU is the user+system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
