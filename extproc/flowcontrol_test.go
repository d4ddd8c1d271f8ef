package extproc

import (
	"context"
	"errors"
	"io"
	"runtime"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/metadata"

	"github.com/infergw/infergw/flowcontrol"
	"github.com/infergw/infergw/router"
)

// flowHarness has flow control on for every pool; pool "hot" starts saturated (its pod
// reports 100 waiting, over the queue-depth threshold of 5).
func flowHarness(t *testing.T, tr Transport) *harness {
	return newHarnessWith(t, Options{Transport: tr}, func(c *router.Config) {
		c.Scheduler = router.DefaultSchedulerConfig()
		c.Scheduler.FlowControl.Default = flowcontrol.Config{Enabled: true, RequestTTL: 20 * time.Second}
	})
}

// flowCounts returns the pool's flow-control totals (zero until its first request made
// the controller).
func (h *harness) flowCounts(t *testing.T, pool string) flowcontrol.Counts {
	t.Helper()
	c, _ := h.srv.FlowCounts(pool)
	return c
}

// closeAndDrain half-closes a stream and reads it to its end (the server finishes it), so
// that the client's stream goroutine ends.
func closeAndDrain(t *testing.T, st extprocv3.ExternalProcessor_ProcessClient) {
	t.Helper()
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("stream end: %v, want EOF", err)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A request to a saturated pool is held (no answer, the stream open) and answered when a
// scrape shows room: the pick is made then, on both transports; the held trailers answer
// follows the pick. A second held request whose client goes away leaves the queue at once.
// Nothing leaks.
func TestFlowControlHoldsStreamUntilRoom(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr Transport) {
		h := flowHarness(t, tr)
		// One request first, to pool main (room: dispatched inside Enqueue), so that the
		// gRPC connection and its goroutines exist before the count is taken.
		warm := h.stream(poolMain)
		send(t, warm, reqHeaders(protocol(duplex, duplex), true, ":path", "/v1/models"))
		if r := recv(t, warm); r.GetRequestHeaders() == nil {
			t.Fatalf("warm-up: got %T", r.GetResponse())
		}
		closeAndDrain(t, warm)
		waitUntil(t, "the warm-up stream's end", func() bool { return h.srv.ActiveStreams() == 0 })
		before := runtime.NumGoroutine()
		body := []byte(`{"model":"base","prompt":"held"}`)
		st := h.stream(poolHot)
		send(t, st, reqHeaders(protocol(duplex, duplex), false, ":path", "/v1/completions", HeaderFairnessID, "tenant-a"),
			reqBody(body, false), &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestTrailers{
				RequestTrailers: &extprocv3.HttpTrailers{}}})
		waitUntil(t, "the request queued", func() bool { return h.flowCounts(t, poolHot).Queued == 1 })

		h.hot[0].waiting.Store(0) // the next scrape shows room and wakes the dispatcher
		r := recv(t, st)
		hr := r.GetRequestHeaders()
		if hr == nil {
			t.Fatalf("want the held headers answer, got %T", r.GetResponse())
		}
		if dest := setHeaders(hr.GetResponse().GetHeaderMutation())[HeaderDestination]; dest != h.hot[0].addr() {
			t.Fatalf("destination %q, want %s", dest, h.hot[0].addr())
		}
		recvStreamedBody(t, st, true, false, len(body))
		if r := recv(t, st); r.GetRequestTrailers() == nil {
			t.Fatalf("want the trailers answer after the pick, got %T", r.GetResponse())
		}
		c := h.flowCounts(t, poolHot)
		if c.Outcomes[flowcontrol.Dispatched] != 1 || c.Queued != 0 || c.InFlight != 1 {
			t.Fatalf("counts after dispatch %+v", c)
		}
		closeAndDrain(t, st)
		waitUntil(t, "the stream's end to release its place", func() bool { return h.flowCounts(t, poolHot).InFlight == 0 })

		// A client that goes away while queued.
		h.hot[0].waiting.Store(100)
		waitUntil(t, "the pool saturated again", func() bool {
			return h.router.PoolStats(poolHot).AvgQueueDepth >= 100
		})
		cctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), MetadataPools, poolHot))
		st2, err := h.client.Process(cctx)
		if err != nil {
			t.Fatal(err)
		}
		send(t, st2, reqHeaders(protocol(duplex, duplex), false, ":path", "/v1/completions"), reqBody(body, true))
		waitUntil(t, "the second request queued", func() bool { return h.flowCounts(t, poolHot).Queued == 1 })
		cancel()
		waitUntil(t, "the cancelled request to leave the queue", func() bool {
			c := h.flowCounts(t, poolHot)
			return c.Queued == 0 && c.Outcomes[flowcontrol.EvictedContextCancelled] == 1
		})
		if c := h.flowCounts(t, poolHot); !c.Balanced() || c.Outcomes[flowcontrol.Dispatched] != 1 {
			t.Fatalf("counts %+v", c)
		}
		// The controller's dispatcher is the one goroutine meant to outlive the streams (it
		// was created by the first request): stopping flow control ends it too.
		h.srv.StopFlowControl()
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Fatalf("%d goroutines, %d before the requests:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// Flow control off (the default config): no controller exists and a request to the
// saturated pool is picked at once, as before.
func TestFlowControlOffPicksAtOnce(t *testing.T) {
	h := newHarness(t, Options{})
	if _, ok := h.srv.FlowCounts(poolHot); ok {
		t.Fatal("a flow controller exists with flow control off")
	}
	st := h.stream(poolHot)
	send(t, st, reqHeaders(protocol(duplex, duplex), false, ":path", "/v1/completions"),
		reqBody([]byte(`{"model":"base","prompt":"now"}`), true))
	if r := recv(t, st); r.GetRequestHeaders() == nil {
		t.Fatalf("want the headers answer at once, got %T", r.GetResponse())
	}
	if _, ok := h.srv.FlowCounts(poolHot); ok {
		t.Fatal("a flow controller was created with flow control off")
	}
}

// x-slo-ttft-ms gives flow control's EDF its deadline: a positive whole number of
// milliseconds up to a day; anything else (and no header) is no target.
func TestSLOHeader(t *testing.T) {
	for v, want := range map[string]time.Duration{
		"250": 250 * time.Millisecond, "1": time.Millisecond, "86400000": 24 * time.Hour,
		"0": 0, "-5": 0, "1.5": 0, "abc": 0, "": 0, "86400001": 0, "99999999999999999999": 0,
	} {
		var h requestHeaders
		h.read([]wireHeader{{key: []byte(HeaderSLOTTFT), value: []byte(v)}})
		if h.sloTTFT != want {
			t.Errorf("x-slo-ttft-ms %q: %v, want %v", v, h.sloTTFT, want)
		}
	}
	h := requestHeaders{sloTTFT: time.Second}
	h.read(nil)
	if h.sloTTFT != 0 {
		t.Error("a reused header set keeps the previous request's target")
	}
}
