package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/infergw/infergw/internal/wirescan"
)

// fastServerEnv makes the test binary run startFastServer's server as a child process (see
// TestMain), so that the load generator's process and scheduler are measured alone.
const fastServerEnv = "LOADTEST_FAST_SERVER_TOKENS"

func TestMain(m *testing.M) {
	if os.Getenv(truthServerEnv) != "" {
		os.Exit(serveTruthChild())
	}
	if v := os.Getenv(fastServerEnv); v != "" {
		tokens, err := strconv.Atoi(v)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bad", fastServerEnv, v)
			os.Exit(2)
		}
		os.Exit(serveFastChild(tokens))
	}
	os.Exit(m.Run())
}

// startFastChild starts the fast server in a child process and returns its URL.
func startFastChild(tb testing.TB, tokens int) string {
	tb.Helper()
	url, _, _ := startChild(tb, fastServerEnv+"="+strconv.Itoa(tokens))
	return url
}

// startChild runs this test binary as the server process that env selects (see TestMain)
// and returns the URL it prints first, the rest of its stdout, and finish, which closes its
// stdin: the server's signal to print its records, if any, and exit. The process is waited
// for at cleanup.
func startChild(tb testing.TB, env string) (url string, stdout *bufio.Reader, finish func()) {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	finish = func() { _ = stdin.Close() }
	tb.Cleanup(func() { finish(); _ = cmd.Wait() })
	stdout = bufio.NewReader(out)
	line, err := stdout.ReadString('\n')
	if err != nil {
		tb.Fatalf("child server (%s) did not start: %v", env, err)
	}
	return strings.TrimSpace(line), stdout, finish
}

// serveFastChild serves until the parent closes stdin.
func serveFastChild(tokens int) int {
	var url string
	stop := make(chan struct{})
	tb := &childTB{cleanup: func(f func()) { go func() { <-stop; f() }() }}
	url = startFastServerOn(tb, tokens)
	fmt.Println(url)
	_, _ = io.Copy(io.Discard, os.Stdin)
	close(stop)
	return 0
}

// childTB is the little of testing.TB that startFastServerOn needs, outside a test.
type childTB struct{ cleanup func(func()) }

func (c *childTB) Helper()           {}
func (c *childTB) Cleanup(f func())  { c.cleanup(f) }
func (c *childTB) Fatal(args ...any) { fmt.Fprintln(os.Stderr, args...); os.Exit(1) }

type serverTB interface {
	Helper()
	Cleanup(func())
	Fatal(args ...any)
}

// startFastServer is a fasthttp server on 127.0.0.1 that streams tokens SSE chunks (each
// flushed on its own), a usage chunk and [DONE], with no delay: the fastest possible
// backend, so that the benchmark measures the load generator.
func startFastServer(tb testing.TB, tokens int) string {
	tb.Helper()
	return startFastServerOn(tb, tokens)
}

func startFastServerOn(tb serverTB, tokens int) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	chunk := []byte(`data: {"choices":[{"index":0,"delta":{"content":"tok"}}]}` + "\n\n")
	role := []byte(`data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}` + "\n\n")
	tail := []byte(`data: {"choices":[],"usage":{"prompt_tokens":8,"completion_tokens":` + strconv.Itoa(tokens) + `}}` + "\n\ndata: [DONE]\n\n")
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/event-stream")
		ctx.Response.Header.Set("x-sim-instance", "fast")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			_, _ = w.Write(role)
			for i := 0; i < tokens; i++ {
				_, _ = w.Write(chunk)
				_ = w.Flush()
			}
			_, _ = w.Write(tail)
			_ = w.Flush()
		})
	}, Concurrency: 1 << 16}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	tb.Cleanup(func() { _ = srv.Shutdown(); <-done })
	return "http://" + ln.Addr().String()
}

// BenchmarkOpenLoopStreaming drives LOADTEST_BENCH_RATE (default 5000) streamed requests/s
// of 16 tokens for LOADTEST_BENCH_DURATION (default 3s) per iteration, and reports the
// achieved request rate and the schedule lag p99. Run it with -benchtime 1x:
//
//	go test -run '^$' -bench 'OpenLoopStreaming|ScheduleFloor' -benchtime 1x ./loadtest/
func BenchmarkOpenLoopStreaming(b *testing.B) {
	rate := 5000.0
	if v, err := strconv.ParseFloat(os.Getenv("LOADTEST_BENCH_RATE"), 64); err == nil && v > 0 {
		rate = v
	}
	dur := 3 * time.Second
	if v, err := time.ParseDuration(os.Getenv("LOADTEST_BENCH_DURATION")); err == nil && v > 0 {
		dur = v
	}
	// The server runs in its own process: in-process, it would compete with the load
	// generator for the same two Ps and the figure would not be the generator's alone.
	url := startFastChild(b, 16)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		cfg := Config{URL: url, Models: []WeightedModel{{Name: "m", Weight: 1}}, Rate: rate, Duration: dur,
			Warmup: 500 * time.Millisecond, MaxInFlight: 2000,
			Workload: WorkloadConfig{Input: LengthDist{Kind: "fixed", Mean: 16}, Output: LengthDist{Kind: "fixed", Mean: 16}}}
		s, err := Run(context.Background(), cfg, nil)
		if err != nil {
			b.Fatal(err)
		}
		if s.Failed > 0 {
			b.Fatalf("%d failed requests: %v", s.Failed, s.ErrorsByStatus)
		}
		b.ReportMetric(s.RequestRate, "req/s")
		b.ReportMetric(s.Schedule.Lag.P99, "lag-p99-ms")
		b.ReportMetric(s.Schedule.Lag.P50, "lag-p50-ms")
		b.ReportMetric(float64(s.Schedule.Dropped), "dropped")
		b.ReportMetric(float64(s.Schedule.Late), "late")
		b.ReportMetric(s.TTFT.P50, "ttft-p50-ms")
		b.ReportMetric(s.OutputTokensPerS, "out-tok/s")
	}
}

// BenchmarkClientRequest is one streamed 16-token request through the real client.
func BenchmarkClientRequest(b *testing.B) {
	url := startFastServer(b, 16)
	cfg, err := Config{URL: url, Models: []WeightedModel{{Name: "m", Weight: 1}}}.withDefaults()
	if err != nil {
		b.Fatal(err)
	}
	cl, err := newClient(&cfg)
	if err != nil {
		b.Fatal(err)
	}
	req := Request{Model: "m", Messages: []Message{{Role: "user", Content: "hello there"}}, MaxTokens: 16}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var res Result
		for pb.Next() {
			res = Result{itl: res.itl[:0]}
			cl.do(context.Background(), &req, &res)
			if res.Error != "" || res.OutputTokens != 16 {
				b.Fatalf("result %+v", res)
			}
		}
	})
}

// BenchmarkParseStream is the per-response parsing work: SSE framing plus chunk decoding of
// a 16-token stream, with the scanner the client uses and, for comparison, encoding/json.
func BenchmarkParseStream(b *testing.B) {
	var buf bytes.Buffer
	buf.WriteString(`data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}` + "\n\n")
	for i := 0; i < 16; i++ {
		fmt.Fprintf(&buf, `data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"tok%d"}}]}`+"\n\n", i)
	}
	buf.WriteString(`data: {"choices":[],"usage":{"prompt_tokens":8,"completion_tokens":16}}` + "\n\ndata: [DONE]\n\n")
	stream := buf.Bytes()
	var ref streamChunk
	for name, parse := range map[string]func([]byte) error{
		"scanner":       func(d []byte) error { _, err := scanChunk(d); return err },
		"encoding-json": func(d []byte) error { _, err := parseChunk(d, &ref); return err },
	} {
		b.Run(name, func(b *testing.B) {
			sse := wirescan.NewSSEReader(bytes.NewReader(nil), 0)
			rd := bytes.NewReader(stream)
			b.ReportAllocs()
			b.SetBytes(int64(len(stream)))
			for i := 0; i < b.N; i++ {
				rd.Reset(stream)
				sse.Reset(rd)
				for {
					ev, err := sse.Next()
					if err != nil || string(ev.Data) == "[DONE]" {
						break
					}
					if err := parse(ev.Data); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// BenchmarkAppendBody encodes a 512-word chat request.
func BenchmarkAppendBody(b *testing.B) {
	g, err := newGenerator(WorkloadConfig{Input: LengthDist{Mean: 512}, Output: LengthDist{Mean: 64}}, []WeightedModel{{"m", 1}}, 1)
	if err != nil {
		b.Fatal(err)
	}
	req := g.Next()
	cfg := &Config{API: "chat", IgnoreEOS: true}
	var buf []byte
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf = appendBody(buf[:0], cfg, &req)
	}
}

// BenchmarkScheduleFloor is the control for BenchmarkOpenLoopStreaming: the same absolute
// 5,000/s schedule with a goroutine started per arrival, but no request. Its lag p99 is what
// the machine (OS and Go scheduler) allows at best; on a loaded shared machine it shows that
// the load generator's lag comes from CPU starvation, not from the request path.
func BenchmarkScheduleFloor(b *testing.B) {
	for i := 0; i < b.N; i++ {
		h := newHist()
		var mu sync.Mutex
		var wg sync.WaitGroup
		a := newArrivals("constant", 0, newTestRand(1), levelProfile{start: 5000}, 0)
		start := time.Now()
		timer := time.NewTimer(time.Hour)
		for {
			off, _ := a.next()
			if off >= 3*time.Second {
				break
			}
			due := start.Add(off)
			if d := time.Until(due); d > 0 {
				timer.Reset(d)
				<-timer.C
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				lag := time.Since(due)
				mu.Lock()
				recordMs(h, ms(lag), 1)
				mu.Unlock()
			}()
		}
		wg.Wait()
		l := latencyOf(h)
		b.ReportMetric(l.P50, "lag-p50-ms")
		b.ReportMetric(l.P99, "lag-p99-ms")
		b.ReportMetric(l.Max, "lag-max-ms")
	}
}
