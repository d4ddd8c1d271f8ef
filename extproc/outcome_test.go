package extproc

import (
	"errors"
	"io"
	"strings"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// TestResponseOutcomesReachTheRouter: the response side reports each request's outcome to
// the router's outlier ejection: a 5xx counts against the endpoint Envoy names in
// x-infergw-upstream, and a stream that ends with no response headers counts against the
// primary.
func TestResponseOutcomesReachTheRouter(t *testing.T) { forEachTransport(t, testResponseOutcomes) }

func testResponseOutcomes(t *testing.T, tr Transport) {
	h := newHarness(t, Options{Transport: tr})
	failures := func(ep string) float64 {
		v, _, _ := metricValue(h.scrape(), "infergw_router_endpoint_failures_total", map[string]string{"endpoint": ep})
		return v
	}
	pick := func() (extprocv3.ExternalProcessor_ProcessClient, string) {
		body := chatRequest("base", 100)
		st := h.stream("")
		send(t, st, reqHeaders(protocol(duplex, duplex), false, ":path", "/v1/chat/completions"))
		send(t, st, reqBody(body, true))
		r := recv(t, st)
		dest := setHeaders(r.GetRequestHeaders().GetResponse().GetHeaderMutation())[HeaderDestination]
		if dest == "" {
			t.Fatalf("no destination in %v", r)
		}
		recvStreamedBody(t, st, true, true, len(body))
		primary, _, _ := strings.Cut(dest, ",")
		return st, primary
	}
	end := func(st extprocv3.ExternalProcessor_ProcessClient) {
		if err := st.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("want EOF, got %v", err)
		}
	}

	st, primary := pick()
	send(t, st, respHeaders(true, ":status", "503", HeaderUpstream, primary))
	if r := recv(t, st); r.GetResponseHeaders() == nil {
		t.Fatalf("want response headers answer, got %T", r.GetResponse())
	}
	end(st)
	waitFor(t, func() bool { return failures(primary) == 1 })

	st, primary2 := pick()
	before := failures(primary2)
	end(st) // no response at all
	waitFor(t, func() bool { return failures(primary2) == before+1 })

	st, primary3 := pick()
	before = failures(primary3)
	send(t, st, respHeaders(true, ":status", "200", HeaderUpstream, primary3))
	recv(t, st)
	end(st)
	waitFor(t, func() bool { return h.router.PoolStats(poolMain).InFlight == 0 }) // released: outcome recorded
	if failures(primary3) != before {
		t.Fatalf("a 200 counted as a failure")
	}
}
