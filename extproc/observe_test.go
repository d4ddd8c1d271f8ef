package extproc

import (
	"errors"
	"io"
	"strconv"
	"testing"
	"time"

	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// These tests play Envoy with both ext_proc filters of a pool route that has the response
// observer (xds/observer.go): the picker's stream (BUFFERED request, STREAMED response, as
// the control plane configures it) and the observer's stream, in every order the two can
// interleave. The real-Envoy test is test/e2e/observer_test.go.

const streamed = extprocfilterv3.ProcessingMode_STREAMED

// pickObserved sends a streamed chat request on a picker stream of an observed route and
// returns the stream and the exchange id the picker set on the request ("" if none).
func (h *harness) pickObserved(t *testing.T, body []byte) (extprocv3.ExternalProcessor_ProcessClient, string) {
	t.Helper()
	st := h.streamWith(MetadataObserved, "1")
	send(t, st, reqHeaders(protocol(buffered, streamed), false, ":method", "POST", ":path", "/v1/chat/completions",
		"content-type", "application/json", "content-length", strconv.Itoa(len(body)), HeaderExchange, "client-forged"))
	if r := recv(t, st); r.GetRequestHeaders() == nil {
		t.Fatalf("want the request headers answer, got %T", r.GetResponse())
	}
	send(t, st, reqBody(body, true))
	r := recv(t, st)
	common := r.GetRequestBody().GetResponse()
	set := h.checkDestination(r, common)
	id := set[HeaderExchange]
	if id == "" && !contains(common.GetHeaderMutation().GetRemoveHeaders(), HeaderExchange) {
		t.Fatalf("no exchange id set and a client's %s not removed: %v", HeaderExchange, common.GetHeaderMutation())
	}
	return st, id
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// responseHeadersAnswer sends the response headers on the picker stream and returns the
// answer's mode override (nil when the picker keeps the body).
func responseHeadersAnswer(t *testing.T, st extprocv3.ExternalProcessor_ProcessClient) *extprocfilterv3.ProcessingMode {
	t.Helper()
	send(t, st, respHeaders(false, ":status", "200", "content-type", "text/event-stream"))
	r := recv(t, st)
	if r.GetResponseHeaders() == nil {
		t.Fatalf("want the response headers answer, got %T", r.GetResponse())
	}
	return r.GetModeOverride()
}

// observe sends what the observer filter sends for one response: request headers with the
// id, response headers, the SSE body in parts (the last with end of stream).
func observeMsgs(id string, sse string) []*extprocv3.ProcessingRequest {
	msgs := []*extprocv3.ProcessingRequest{
		reqHeaders(nil, false, ":method", "POST", ":path", "/v1/chat/completions", HeaderExchange, id),
		respHeaders(false, ":status", "200", "content-type", "text/event-stream"),
	}
	parts := splitN([]byte(sse), 3)
	for i, p := range parts {
		msgs = append(msgs, respBody(p, i == len(parts)-1))
	}
	return msgs
}

// outputTokens is the count and sum of the output-token histogram of the main pool's base
// model, once the running gauge is back to want running.
func (h *harness) accounted(t *testing.T, wantCount float64) {
	t.Helper()
	labels := map[string]string{"model_name": "base", "target_model_name": "base", "pool": poolMain}
	waitFor(t, func() bool {
		n, _, _ := metricValue(h.scrape(), "inference_objective_output_tokens", labels)
		return n >= wantCount
	})
	fams := h.scrape()
	if n, sum, _ := metricValue(fams, "inference_objective_output_tokens", labels); n != wantCount || sum != 2*wantCount {
		t.Fatalf("output tokens: %v observations, sum %v; want %v and %v (each response once)", n, sum, wantCount, 2*wantCount)
	}
	if n, _, _ := metricValue(fams, "inference_objective_request_ttft_seconds", labels); n != wantCount {
		t.Fatalf("TTFT observations %v, want %v", n, wantCount)
	}
	waitFor(t, func() bool {
		v, _, _ := metricValue(h.scrape(), "inference_objective_running_requests", map[string]string{"model_name": "base"})
		return v == 0
	})
}

// TestObserverTakesTheBody: the observer attaches, the picker hands the response over at
// its headers (mode_override: response body NONE), and the observer's record of the body
// is the request's accounting, recorded once — whichever stream is ahead.
func TestObserverTakesTheBody(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr Transport) {
		for _, order := range []string{"observer-first", "picker-first", "interleaved"} {
			t.Run(order, func(t *testing.T) {
				h := newHarness(t, Options{Transport: tr})
				st, id := h.pickObserved(t, chatRequest("base", 200))
				if id == "" || id == "client-forged" {
					t.Fatalf("exchange id %q: want one the picker made", id)
				}
				obs := h.streamWith(MetadataObserver, "1")
				msgs := observeMsgs(id, sseResponse("base"))
				var mode *extprocfilterv3.ProcessingMode
				switch order {
				case "observer-first": // the whole body observed before the picker's decision
					send(t, obs, msgs...)
					time.Sleep(50 * time.Millisecond)
					mode = responseHeadersAnswer(t, st)
				case "picker-first":
					send(t, obs, msgs[0])
					time.Sleep(50 * time.Millisecond) // the observer is attached
					mode = responseHeadersAnswer(t, st)
					send(t, obs, msgs[1:]...)
				case "interleaved":
					send(t, obs, msgs[:3]...)
					time.Sleep(50 * time.Millisecond)
					mode = responseHeadersAnswer(t, st)
					send(t, obs, msgs[3:]...)
				}
				if mode.GetResponseBodyMode() != extprocfilterv3.ProcessingMode_NONE {
					t.Fatalf("mode override %v: want the response body turned off", mode)
				}
				h.accounted(t, 1)
				// Envoy closes both streams afterwards; nothing more is recorded.
				_ = obs.CloseSend()
				_ = st.CloseSend()
				time.Sleep(50 * time.Millisecond)
				h.accounted(t, 1)
				if v, _, _ := metricValue(h.scrape(), "infergw_picker_response_observer_streams_total", map[string]string{"outcome": "observed"}); v != 1 {
					t.Fatalf("observed outcome %v, want 1", v)
				}
				if n := h.srv.handoffs.len(); n != 0 {
					t.Fatalf("%d handoffs left open", n)
				}
			})
		}
	})
}

// TestObserverAbsentPickerKeepsTheBody: no observer stream came (filter off, or its
// stream went to another picker replica): the picker processes the body as before.
func TestObserverAbsentPickerKeepsTheBody(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr Transport) {
		h := newHarness(t, Options{Transport: tr})
		st, _ := h.pickObserved(t, chatRequest("base", 200))
		if mode := responseHeadersAnswer(t, st); mode != nil {
			t.Fatalf("mode override %v without an observer", mode)
		}
		parts := splitN([]byte(sseResponse("base")), 3)
		for i, p := range parts {
			send(t, st, respBody(p, i == len(parts)-1))
			if r := recv(t, st); r.GetResponseBody() == nil {
				t.Fatalf("want a body answer, got %T", r.GetResponse())
			}
		}
		h.accounted(t, 1)
		if n := h.srv.handoffs.len(); n != 0 {
			t.Fatalf("%d handoffs left open", n)
		}
	})
}

// TestObserverCutBeforeTheEnd: the observer's stream breaks mid-response. Before the
// picker's decision, the picker keeps the body (all of it still reaches the picker's
// filter); after it, what was observed is recorded when the stream ends, once, and the
// pick is released.
func TestObserverCutBeforeTheEnd(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr Transport) {
		t.Run("before-decision", func(t *testing.T) {
			h := newHarness(t, Options{Transport: tr})
			st, id := h.pickObserved(t, chatRequest("base", 200))
			obs := h.streamWith(MetadataObserver, "1")
			send(t, obs, observeMsgs(id, sseResponse("base"))[:3]...)
			_ = obs.CloseSend()
			waitFor(t, func() bool { return observerStreamEnded(h, id) })
			if mode := responseHeadersAnswer(t, st); mode != nil {
				t.Fatalf("mode override %v after the observer was cut", mode)
			}
			send(t, st, respBody([]byte(sseResponse("base")), true))
			if r := recv(t, st); r.GetResponseBody() == nil {
				t.Fatalf("want a body answer, got %T", r.GetResponse())
			}
			h.accounted(t, 1)
		})
		t.Run("after-decision", func(t *testing.T) {
			h := newHarness(t, Options{Transport: tr})
			st, id := h.pickObserved(t, chatRequest("base", 200))
			obs := h.streamWith(MetadataObserver, "1")
			msgs := observeMsgs(id, sseResponse("base"))
			send(t, obs, msgs[0])
			time.Sleep(50 * time.Millisecond)
			if mode := responseHeadersAnswer(t, st); mode.GetResponseBodyMode() != extprocfilterv3.ProcessingMode_NONE {
				t.Fatalf("mode override %v: want the body handed over", mode)
			}
			send(t, obs, msgs[1:3]...) // the first part only, which holds no usage
			_ = obs.CloseSend()
			labels := map[string]string{"model_name": "base", "target_model_name": "base", "pool": poolMain}
			waitFor(t, func() bool {
				n, _, _ := metricValue(h.scrape(), "inference_objective_request_duration_seconds", labels)
				return n == 1
			})
			waitFor(t, func() bool {
				v, _, _ := metricValue(h.scrape(), "inference_objective_running_requests", map[string]string{"model_name": "base"})
				return v == 0
			})
			if n := h.srv.handoffs.len(); n != 0 {
				t.Fatalf("%d handoffs left open", n)
			}
		})
	})
}

// observerStreamEnded reports whether the handoff of id has seen its observer's stream end (or
// is gone).
func observerStreamEnded(h *harness, id string) bool {
	h.srv.handoffs.mu.Lock()
	defer h.srv.handoffs.mu.Unlock()
	for _, ho := range h.srv.handoffs.m {
		if ho.key == id {
			ho.mu.Lock()
			defer ho.mu.Unlock()
			return ho.observer == observerEnded
		}
	}
	return true
}

// TestObserverWithoutItsRequestIsClosed: an observer stream whose id is not an open
// request of this picker (forged, another replica's, or one already observed) is ended by
// the picker at once, and counted.
func TestObserverWithoutItsRequestIsClosed(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr Transport) {
		h := newHarness(t, Options{Transport: tr})
		_, id := h.pickObserved(t, chatRequest("base", 200))
		first := h.streamWith(MetadataObserver, "1")
		send(t, first, observeMsgs(id, "")[0])
		for _, bad := range []string{"", "client-forged", "00000000000000000000000000000001", id} {
			obs := h.streamWith(MetadataObserver, "1")
			send(t, obs, observeMsgs(bad, "")[0])
			if _, err := obs.Recv(); !errors.Is(err, io.EOF) {
				t.Fatalf("observer with id %q: want the picker to end the stream cleanly, got %v", bad, err)
			}
		}
		if v, _, _ := metricValue(h.scrape(), "infergw_picker_response_observer_streams_total", map[string]string{"outcome": "unmatched"}); v != 4 {
			t.Fatalf("unmatched observers %v, want 4", v)
		}
	})
}

// TestObserverNotOfferedForChangedResponses: a response the picker changes (here: the
// usage chunk it asked for is removed) gets no exchange id; the picker keeps its body.
func TestObserverNotOfferedForChangedResponses(t *testing.T) {
	h := newHarness(t, Options{})
	body := []byte(`{"model":"base","messages":[{"role":"user","content":"hi"}],"stream":true}`)
	st, id := h.pickObserved(t, body)
	if id != "" {
		t.Fatalf("exchange id %q offered for a response the picker rewrites", id)
	}
	if mode := responseHeadersAnswer(t, st); mode != nil {
		t.Fatalf("mode override %v for a response the picker rewrites", mode)
	}
}

// TestHandoffTableIsBounded: past its bound the table opens nothing (those requests keep
// their body in the picker), and ids of one table never open another's handoffs.
func TestHandoffTableIsBounded(t *testing.T) {
	a, b := newHandoffTable(2), newHandoffTable(2)
	h1, h2 := a.open(), a.open()
	if h1 == nil || h2 == nil || h1.key == h2.key {
		t.Fatalf("open: %v %v", h1, h2)
	}
	if h3 := a.open(); h3 != nil {
		t.Fatalf("a third handoff opened past the bound of 2")
	}
	if b.attach(h1.key) != nil {
		t.Fatal("another table attached this table's id")
	}
	if a.attach(h1.key) != h1 || a.attach(h1.key) != nil {
		t.Fatal("an id attaches exactly one observer")
	}
	h1.abandon()
	if a.open() == nil {
		t.Fatal("a closed handoff did not free its place")
	}
}
