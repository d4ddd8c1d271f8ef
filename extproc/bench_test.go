package extproc

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// cpuTime is the process's user+system CPU time.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRequest drives one full exchange per iteration through a real gRPC stream on
// loopback: request headers, the body in chunks, the held headers answer and the body
// back, response headers and an SSE body with usage. cpu-µs/op is the whole process's
// CPU per request: picker, router, gRPC client and server (and the router's background
// scrapes of two local backends), so it overstates the picker's own cost a little.
func BenchmarkRequest(b *testing.B) {
	for _, tc := range []struct {
		size, chunks int
	}{{4 << 10, 1}, {200 << 10, 4}} {
		b.Run(fmt.Sprintf("body=%dKB", tc.size>>10), func(b *testing.B) {
			h := newHarness(b, Options{})
			body := chatRequest("base", tc.size)
			parts := splitN(body, tc.chunks)
			sse := []byte(sseResponse("base"))
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			b.ResetTimer()
			c0 := cpuTime(b)
			for i := 0; i < b.N; i++ {
				st := h.stream("")
				if err := st.Send(reqHeaders(protocol(duplex, duplex), false, ":method", "POST", ":path", "/v1/chat/completions")); err != nil {
					b.Fatal(err)
				}
				for j, p := range parts {
					if err := st.Send(reqBody(p, j == len(parts)-1)); err != nil {
						b.Fatal(err)
					}
				}
				r, err := st.Recv()
				if err != nil || r.GetRequestHeaders() == nil {
					b.Fatalf("headers answer: %v %v", r, err)
				}
				for got := 0; ; {
					r, err := st.Recv()
					if err != nil {
						b.Fatal(err)
					}
					sb := r.GetRequestBody().GetResponse().GetBodyMutation().GetStreamedResponse()
					got += len(sb.GetBody())
					if sb.GetEndOfStream() {
						if got != len(body) {
							b.Fatalf("got %d body bytes back", got)
						}
						break
					}
				}
				if err := st.Send(respHeaders(false, ":status", "200", "content-type", "text/event-stream")); err != nil {
					b.Fatal(err)
				}
				if _, err := st.Recv(); err != nil {
					b.Fatal(err)
				}
				if err := st.Send(respBody(sse, true)); err != nil {
					b.Fatal(err)
				}
				if _, err := st.Recv(); err != nil {
					b.Fatal(err)
				}
				if err := st.CloseSend(); err != nil {
					b.Fatal(err)
				}
				if _, err := st.Recv(); err == nil {
					b.Fatal("stream did not end")
				}
			}
			cpu := cpuTime(b) - c0
			b.StopTimer()
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

// BenchmarkExchange runs the same message sequence as BenchmarkRequest straight through
// the exchange state machine, without gRPC: the picker's own cost (parse, pick with the
// real router, mutations, response accounting).
func BenchmarkExchange(b *testing.B) {
	for _, tc := range []struct {
		size, chunks int
	}{{4 << 10, 1}, {200 << 10, 4}} {
		b.Run(fmt.Sprintf("body=%dKB", tc.size>>10), func(b *testing.B) {
			h := newHarness(b, Options{})
			body := chatRequest("base", tc.size)
			parts := splitN(body, tc.chunks)
			sse := []byte(sseResponse("base"))
			hdr := reqHeaders(protocol(duplex, duplex), false, ":method", "POST", ":path", "/v1/chat/completions")
			var msgs []*extprocv3.ProcessingRequest
			for j, p := range parts {
				msgs = append(msgs, reqBody(p, j == len(parts)-1))
			}
			rh, rb := respHeaders(false, ":status", "200", "content-type", "text/event-stream"), respBody(sse, true)
			ctx := context.Background()
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			b.ResetTimer()
			c0 := cpuTime(b)
			for i := 0; i < b.N; i++ {
				x := h.srv.newExchange(ctx)
				x.handle(hdr)
				n := 0
				for _, m := range msgs {
					n += len(x.handle(m))
				}
				if n < 2 {
					b.Fatalf("picker answered %d messages", n)
				}
				x.handle(rh)
				x.handle(rb)
				x.finish()
			}
			cpu := cpuTime(b) - c0
			b.StopTimer()
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}
