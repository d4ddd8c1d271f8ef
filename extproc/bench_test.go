package extproc

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// cpuTime is the process's user+system CPU time (children excluded).
func cpuTime(b *testing.B) time.Duration {
	d, err := processCPU()
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// ioSyscalls is this process's count of read and write system calls so far (Linux's
// /proc/self/io): a request's CPU is mostly its system calls, so the benchmark reports
// how many it made.
func ioSyscalls(b *testing.B) (reads, writes int64) {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Fatalf("read /proc/self/io: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		name, val, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(val, 10, 64)
		if err != nil {
			b.Fatalf("/proc/self/io line %q: %v", line, err)
		}
		switch name {
		case "syscr":
			reads = n
		case "syscw":
			writes = n
		}
	}
	return reads, writes
}

// threadWakes is how many times this process's threads have been scheduled in (the third
// field of each /proc/self/task/TID/schedstat): on this kind of VM, waking an idle thread
// is a large part of what a request costs, so the benchmark reports wakes per request.
func threadWakes(b *testing.B) int64 {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		b.Fatalf("threads: %v", err)
	}
	var n int64
	for _, t := range tasks {
		data, err := os.ReadFile("/proc/self/task/" + t.Name() + "/schedstat")
		if err != nil {
			continue // the thread just ended
		}
		f := strings.Fields(string(data))
		if len(f) < 3 {
			b.Fatalf("schedstat of thread %s: %q", t.Name(), data)
		}
		v, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			b.Fatalf("schedstat of thread %s: %v", t.Name(), err)
		}
		n += v
	}
	return n
}

// BenchmarkRequest drives one full exchange per iteration through a real gRPC stream on
// loopback: request headers, the body in chunks, the held headers answer and the body
// back, response headers and an SSE body with usage. The gRPC client that plays Envoy runs
// in a child process (see benchclient_test.go), so this process is the picker alone:
//
//   - server-cpu-µs/op: this process's CPU (getrusage) per request: picker, router, gRPC
//     server, GC, and the router's background scrapes of three local backends.
//   - client-cpu-µs/op: the child's CPU per request (the Envoy stand-in).
//   - total-cpu-µs/op: both.
//
// B/op and allocs/op count this process only, that is the server side; reads/op and
// writes/op its system calls, wakes/op how often its threads were scheduled in. conc is the number of streams in flight at once: 1 is one
// request at a time (every message wakes idle threads, the worst case per request); 8 and
// 64 are a busy picker, whose answers to several streams share reads and writes. Each case
// runs on both transports (Options.Transport).
func BenchmarkRequest(b *testing.B) {
	for _, tc := range []struct {
		size, chunks, conc int
	}{{4 << 10, 1, 1}, {4 << 10, 1, 8}, {4 << 10, 1, 64}, {200 << 10, 4, 1}, {200 << 10, 4, 8}} {
		for _, tr := range []Transport{TransportInline, TransportGRPCGo} {
			b.Run(fmt.Sprintf("transport=%s/body=%dKB/conc=%d", tr, tc.size>>10, tc.conc), func(b *testing.B) {
				benchmarkRequest(b, tr, tc.size, tc.chunks, tc.conc)
			})
		}
	}
}

func benchmarkRequest(b *testing.B, tr Transport, size, chunks, conc int) {
	h := newHarness(b, Options{Transport: tr})
	child := startBenchChild(b, h.conn.Target(), size, chunks, conc)
	b.ReportAllocs()
	b.SetBytes(int64(len(chatRequest("base", size))))
	b.ResetTimer()
	r0, w0 := ioSyscalls(b)
	k0 := threadWakes(b)
	c0 := cpuTime(b)
	clientCPU := child.run(b.N)
	server := cpuTime(b) - c0
	b.StopTimer()
	k1 := threadWakes(b)
	r1, w1 := ioSyscalls(b)
	n := float64(b.N)
	b.ReportMetric(float64(k1-k0)/n, "wakes/op")
	b.ReportMetric(float64(r1-r0)/n, "reads/op")
	b.ReportMetric(float64(w1-w0)/n, "writes/op")
	b.ReportMetric(float64(server.Nanoseconds())/1e3/n, "server-cpu-µs/op")
	b.ReportMetric(float64(clientCPU.Nanoseconds())/1e3/n, "client-cpu-µs/op")
	b.ReportMetric(float64((server+clientCPU).Nanoseconds())/1e3/n, "total-cpu-µs/op")
}

// benchChild is the Envoy-playing client process of BenchmarkRequest.
type benchChild struct {
	b      *testing.B
	stdin  io.WriteCloser
	lines  *bufio.Scanner
	stderr *bytes.Buffer
}

// startBenchChild re-executes the test binary as the client and waits until it has
// connected and warmed up.
func startBenchChild(b *testing.B, addr string, size, chunks, conc int) *benchChild {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envBenchClient+"="+addr,
		envBenchSize+"="+strconv.Itoa(size), envBenchChunks+"="+strconv.Itoa(chunks),
		envBenchConc+"="+strconv.Itoa(conc))
	c := &benchChild{b: b, stderr: &bytes.Buffer{}}
	cmd.Stderr = c.stderr
	var err error
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatalf("start bench client: %v", err)
	}
	b.Cleanup(func() {
		c.stdin.Close() // the child exits when its stdin closes
		if err := cmd.Wait(); err != nil {
			b.Errorf("bench client: %v: %s", err, c.stderr)
		}
	})
	c.lines = bufio.NewScanner(stdout)
	if line := c.line(); line != "ready" {
		b.Fatalf("bench client said %q, want ready", line)
	}
	return c
}

func (c *benchChild) line() string {
	if !c.lines.Scan() {
		c.b.Fatalf("bench client ended: %v: %s", c.lines.Err(), c.stderr)
	}
	return c.lines.Text()
}

// run has the child drive n requests and returns the child's CPU time for them.
func (c *benchChild) run(n int) time.Duration {
	if _, err := fmt.Fprintf(c.stdin, "run %d\n", n); err != nil {
		c.b.Fatal(err)
	}
	line := c.line()
	ns, err := strconv.ParseInt(strings.TrimPrefix(line, "done "), 10, 64)
	if err != nil || !strings.HasPrefix(line, "done ") {
		c.b.Fatalf("bench client said %q: %v", line, err)
	}
	return time.Duration(ns)
}

// BenchmarkExchange runs the same serialized messages as BenchmarkRequest straight through
// the exchange state machine, without gRPC: the picker's own cost (decode, parse, pick with
// the real router, mutations, response accounting).
func BenchmarkExchange(b *testing.B) {
	for _, tc := range []struct {
		size, chunks int
	}{{4 << 10, 1}, {200 << 10, 4}} {
		b.Run(fmt.Sprintf("body=%dKB", tc.size>>10), func(b *testing.B) {
			h := newHarness(b, Options{})
			body := chatRequest("base", tc.size)
			parts := splitN(body, tc.chunks)
			sse := []byte(sseResponse("base"))
			var msgs [][]byte
			for _, m := range append(append([]*extprocv3.ProcessingRequest{benchRequestHeaders(len(body))}, reqBodies(parts)...),
				benchResponseHeaders(), respBody(sse, true)) {
				raw, err := proto.Marshal(m)
				if err != nil {
					b.Fatal(err)
				}
				msgs = append(msgs, raw)
			}
			ctx := context.Background()
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			b.ResetTimer()
			c0 := cpuTime(b)
			for i := 0; i < b.N; i++ {
				x := h.srv.newExchange(ctx)
				n := 0
				for _, m := range msgs {
					out, err := x.handle(m)
					if err != nil {
						b.Fatal(err)
					}
					n += len(out)
				}
				if n < 4 {
					b.Fatalf("picker answered %d messages", n)
				}
				x.finish()
			}
			cpu := cpuTime(b) - c0
			b.StopTimer()
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}
