package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// truthServerEnv makes the test binary run the ground-truth server as a child process (see
// TestMain): the load tester's CPU is then its process's alone.
const truthServerEnv = "LOADTEST_TRUTH_SERVER"

// truthFirstDelay is how long the ground-truth server waits before the first content chunk.
const truthFirstDelay = 20 * time.Millisecond

// serveTruthChild serves streamed responses whose first content chunk is written
// truthFirstDelay after the request arrived, and, when the parent closes stdin, prints one
// line per request: its id, and the nanoseconds from arrival to just before that write.
func serveTruthChild() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var mu sync.Mutex
	truth := map[int64]time.Duration{}
	var next int64
	role := []byte(`data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}` + "\n\n")
	chunk := []byte(`data: {"choices":[{"index":0,"delta":{"content":"tok"}}]}` + "\n\n")
	tail := []byte(`data: {"choices":[],"usage":{"prompt_tokens":8,"completion_tokens":4}}` + "\n\ndata: [DONE]\n\n")
	srv := &fasthttp.Server{Concurrency: 1 << 16, Handler: func(ctx *fasthttp.RequestCtx) {
		recv := ctx.Time() // when the server began reading the request
		mu.Lock()
		next++
		id := next
		mu.Unlock()
		ctx.SetContentType("text/event-stream")
		ctx.Response.Header.Set("x-truth-id", strconv.FormatInt(id, 10))
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			_, _ = w.Write(role)
			_ = w.Flush()
			time.Sleep(time.Until(recv.Add(truthFirstDelay)))
			first := time.Now()
			_, _ = w.Write(chunk)
			_ = w.Flush()
			mu.Lock()
			truth[id] = first.Sub(recv)
			mu.Unlock()
			for i := 0; i < 3; i++ {
				_, _ = w.Write(chunk)
				_ = w.Flush()
			}
			_, _ = w.Write(tail)
			_ = w.Flush()
		})
	}}
	go func() { _ = srv.Serve(ln) }()
	fmt.Println("http://" + ln.Addr().String())
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = srv.Shutdown()
	mu.Lock()
	defer mu.Unlock()
	for id, d := range truth {
		fmt.Printf("%d %d\n", id, d.Nanoseconds())
	}
	return 0
}

// BenchmarkAccuracy measures the load tester against a ground-truth server in its own
// process at 10, 100 and 500 req/s: the TTFT error (the client's TTFT minus the server's
// arrival-to-first-write time for the same request; network and client overhead, so never
// below zero by much) and the client process's CPU per 1,000 requests.
//
//	go test -run '^$' -bench Accuracy -benchtime 1x ./loadtest/
func BenchmarkAccuracy(b *testing.B) {
	for _, tc := range []struct {
		rate float64
		dur  time.Duration
	}{{10, 10 * time.Second}, {100, 5 * time.Second}, {500, 4 * time.Second}} {
		b.Run(fmt.Sprintf("rate=%g", tc.rate), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				errs, cpuPer1k := accuracyRun(b, tc.rate, tc.dur)
				b.ReportMetric(errs[len(errs)/2], "ttft-err-p50-ms")
				b.ReportMetric(errs[len(errs)*99/100], "ttft-err-p99-ms")
				b.ReportMetric(errs[0], "ttft-err-min-ms")
				b.ReportMetric(cpuPer1k, "cpu-ms/1k-req")
			}
		})
	}
}

func accuracyRun(b *testing.B, rate float64, dur time.Duration) (sortedErrs []float64, cpuMsPer1k float64) {
	url, rd, finish := startChild(b, truthServerEnv+"=1")
	var log bytes.Buffer
	cfg := Config{URL: url, Models: []WeightedModel{{Name: "m", Weight: 1}}, Rate: rate, Duration: dur,
		Warmup: time.Second, EndpointHeader: "x-truth-id", RequestLog: &log,
		Workload: WorkloadConfig{Input: LengthDist{Kind: "fixed", Mean: 16}, Output: LengthDist{Kind: "fixed", Mean: 4}}}
	before := cpuTime(b)
	s, err := Run(context.Background(), cfg, nil)
	cpu := cpuTime(b) - before
	if err != nil {
		b.Fatal(err)
	}
	finish() // the server prints its records and exits
	truth := map[string]float64{}
	sc := bufio.NewScanner(rd)
	for sc.Scan() {
		id, ns, ok := strings.Cut(sc.Text(), " ")
		if v, err := strconv.ParseInt(ns, 10, 64); ok && err == nil {
			truth[id] = float64(v) / 1e6
		}
	}
	if s.Failed > 0 {
		b.Fatalf("%d failed requests: %v", s.Failed, s.ErrorsByStatus)
	}
	for _, r := range readNDJSON(b, log.Bytes()) {
		if t, ok := truth[r.Endpoint]; ok && !r.Warmup {
			sortedErrs = append(sortedErrs, r.TTFTMs-t)
		}
	}
	if len(sortedErrs) == 0 || int64(len(sortedErrs)) < s.Requests {
		b.Fatalf("matched %d of %d requests with the server's records", len(sortedErrs), s.Requests)
	}
	slices.Sort(sortedErrs)
	// CPU covers warm-up requests too: divide by every request the client made.
	return sortedErrs, float64(cpu.Milliseconds()) / float64(s.Requests+s.WarmupRequests) * 1000
}

func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
