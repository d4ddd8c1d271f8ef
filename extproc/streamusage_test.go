package extproc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// TestStreamUsageAdded: a streamed chat request that does not ask for usage goes upstream
// with stream_options.include_usage (so the picker can count its tokens), and the usage
// chunk that comes back is read and removed: the client gets the stream it asked for.
func TestStreamUsageAdded(t *testing.T) { forEachTransport(t, testStreamUsageAdded) }

func testStreamUsageAdded(t *testing.T, tr Transport) {
	h := newHarness(t, Options{Transport: tr})
	body := fmt.Appendf(nil, `{"model":"base","messages":[{"role":"user","content":"hi"}],"stream":true}`)
	st := h.stream("")
	send(t, st, reqHeaders(protocol(duplex, duplex), false, ":method", "POST", ":path", "/v1/chat/completions",
		"content-type", "application/json", "content-length", strconv.Itoa(len(body))))
	send(t, st, reqBody(body, true))
	r := recv(t, st)
	set := h.checkDestination(r, r.GetRequestHeaders().GetResponse())
	upstream := recvStreamedBody(t, st, true, true, 0)
	var sent struct {
		Stream        bool `json:"stream"`
		StreamOptions struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if err := json.Unmarshal(upstream, &sent); err != nil || !sent.Stream || !sent.StreamOptions.IncludeUsage {
		t.Fatalf("upstream body %s does not ask for usage (%v)", upstream, err)
	}
	if set[HeaderContentLength] != strconv.Itoa(len(upstream)) {
		t.Fatalf("content-length %q for a %d-byte upstream body", set[HeaderContentLength], len(upstream))
	}

	sse := sseResponse("base") // ends with the usage-only chunk, then [DONE]
	send(t, st, respHeaders(false, ":status", "200", "content-type", "text/event-stream"))
	if r := recv(t, st); r.GetResponseHeaders() == nil {
		t.Fatalf("want response headers answer, got %T", r.GetResponse())
	}
	parts := splitN([]byte(sse), 5)
	for i, p := range parts {
		send(t, st, respBody(p, i == len(parts)-1))
	}
	got := recvStreamedBody(t, st, false, true, 0)
	usageChunk := sse[strings.Index(sse, `data: {"id":"x","model":"base","choices":[],`):strings.Index(sse, "data: [DONE]")]
	if want := strings.Replace(sse, usageChunk, "", 1); string(got) != want {
		t.Fatalf("client got\n%q\nwant\n%q", got, want)
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"model_name": "base", "target_model_name": "base", "pool": poolMain}
	waitFor(t, func() bool {
		_, _, ok := metricValue(h.scrape(), "inference_objective_output_tokens", labels)
		return ok
	})
	if n, sum, _ := metricValue(h.scrape(), "inference_objective_output_tokens", labels); n != 1 || sum != 2 {
		t.Fatalf("output tokens count %v sum %v, want the removed chunk's usage counted", n, sum)
	}
}

// TestStreamUsageClientAsked: a client that asks for usage gets the request and the
// usage chunk unchanged.
func TestStreamUsageClientAsked(t *testing.T) {
	h := newHarness(t, Options{})
	body := chatRequest("base", 100) // asks with include_usage
	st := h.stream("")
	send(t, st, reqHeaders(protocol(duplex, duplex), false, ":method", "POST", ":path", "/v1/chat/completions"))
	send(t, st, reqBody(body, true))
	r := recv(t, st)
	h.checkDestination(r, r.GetRequestHeaders().GetResponse())
	if got := recvStreamedBody(t, st, true, true, 0); !bytes.Equal(got, body) {
		t.Fatalf("body changed: %s", got)
	}
	sse := sseResponse("base")
	send(t, st, respHeaders(false, ":status", "200", "content-type", "text/event-stream"))
	recv(t, st)
	send(t, st, respBody([]byte(sse), true))
	if got := recvStreamedBody(t, st, false, true, 0); string(got) != sse {
		t.Fatalf("stream changed:\n%q", got)
	}
}

// TestStreamUsageDisabled: with NoStreamUsage the body passes unchanged.
func TestStreamUsageDisabled(t *testing.T) {
	h := newHarness(t, Options{NoStreamUsage: true})
	body := []byte(`{"model":"base","prompt":"hi","stream":true}`)
	st := h.stream("")
	send(t, st, reqHeaders(protocol(duplex, duplex), false, ":method", "POST", ":path", "/v1/completions"))
	send(t, st, reqBody(body, true))
	r := recv(t, st)
	h.checkDestination(r, r.GetRequestHeaders().GetResponse())
	if got := recvStreamedBody(t, st, true, true, 0); !bytes.Equal(got, body) {
		t.Fatalf("body changed with NoStreamUsage: %s", got)
	}
}

// TestModelsListNotCounted: GET /v1/models is routed but counts in no per-model request
// or latency metric.
func TestModelsListNotCounted(t *testing.T) {
	h := newHarness(t, Options{})
	st := h.stream("")
	send(t, st, reqHeaders(protocol(duplex, duplex), true, ":method", "GET", ":path", "/v1/models"))
	r := recv(t, st)
	h.checkDestination(r, r.GetRequestHeaders().GetResponse())
	send(t, st, respHeaders(false, ":status", "200", "content-type", "application/json"))
	recv(t, st)
	send(t, st, respBody([]byte(`{"object":"list","data":[{"id":"base"}]}`), true))
	recvStreamedBody(t, st, false, true, 0)
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		v, _, _ := metricValue(h.scrape(), "infergw_pool_inflight_requests", map[string]string{"name": poolMain})
		return v == 0
	})
	fams := h.scrape()
	for _, name := range []string{"inference_objective_request_total", "inference_objective_request_ttft_seconds",
		"inference_objective_request_duration_seconds"} {
		if _, sum, found := metricValue(fams, name, nil); found {
			t.Errorf("%s has a series (sum %v) after a GET /v1/models", name, sum)
		}
	}
}
