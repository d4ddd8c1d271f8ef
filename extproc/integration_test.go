package extproc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/structpb"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

const (
	duplex   = extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED
	buffered = extprocfilterv3.ProcessingMode_BUFFERED
)

func chatRequest(model string, promptBytes int) []byte {
	prompt := strings.Repeat("The quick brown fox jumps over the lazy dog. ", promptBytes/45+1)[:promptBytes]
	return fmt.Appendf(nil, `{"model":%q,"messages":[{"role":"user","content":%q}],"stream":true,"stream_options":{"include_usage":true}}`, model, prompt)
}

func sseResponse(model string) string {
	return fmt.Sprintf("data: {\"id\":\"x\",\"model\":%q,\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n", model) +
		fmt.Sprintf("data: {\"id\":\"x\",\"model\":%q,\"choices\":[{\"delta\":{\"content\":\" there\"}}]}\n\n", model) +
		fmt.Sprintf("data: {\"id\":\"x\",\"model\":%q,\"choices\":[],\"usage\":{\"prompt_tokens\":40,\"completion_tokens\":2,\"prompt_tokens_details\":{\"cached_tokens\":16}}}\n\n", model) +
		"data: [DONE]\n\n"
}

func splitN(b []byte, n int) [][]byte {
	var out [][]byte
	size := (len(b) + n - 1) / n
	for len(b) > 0 {
		k := min(size, len(b))
		out = append(out, b[:k])
		b = b[k:]
	}
	return out
}

func lbMetadata(t testing.TB, r *extprocv3.ProcessingResponse) string {
	t.Helper()
	v := r.GetDynamicMetadata().GetFields()[NamespaceLB].GetStructValue().GetFields()[KeyDestination]
	if v == nil {
		t.Fatalf("no %s/%s dynamic metadata in %v", NamespaceLB, KeyDestination, r.GetDynamicMetadata())
	}
	return v.GetStringValue()
}

func (h *harness) mainAddrs() map[string]bool {
	return map[string]bool{h.main[0].addr(): true, h.main[1].addr(): true}
}

// checkDestination asserts the header and metadata agree and name main-pool endpoints.
func (h *harness) checkDestination(r *extprocv3.ProcessingResponse, common *extprocv3.CommonResponse) map[string]string {
	h.t.Helper()
	set := setHeaders(common.GetHeaderMutation())
	dest := set[HeaderDestination]
	if dest == "" || dest != lbMetadata(h.t, r) {
		h.t.Fatalf("destination header %q and metadata %q differ", dest, lbMetadata(h.t, r))
	}
	for _, ep := range strings.Split(dest, ",") {
		if !h.mainAddrs()[ep] {
			h.t.Fatalf("destination %q is not a main-pool endpoint", dest)
		}
	}
	if !common.GetClearRouteCache() {
		h.t.Fatal("clear_route_cache not set")
	}
	if len(set[HeaderRequestID]) != 36 {
		h.t.Fatalf("x-request-id not generated: %q", set[HeaderRequestID])
	}
	return set
}

// TestFullDuplexStreamed replays Envoy's FULL_DUPLEX_STREAMED sequence: headers, several
// body chunks, end of stream; then response headers and an SSE body split mid-event.
func TestFullDuplexStreamed(t *testing.T) { forEachTransport(t, testFullDuplexStreamed) }

func testFullDuplexStreamed(t *testing.T, tr Transport) {
	h := newHarness(t, Options{Transport: tr})
	body := chatRequest("base", 150_000)
	st := h.stream("")
	send(t, st, reqHeaders(protocol(duplex, duplex), false, ":method", "POST", ":path", "/v1/chat/completions", "content-type", "application/json"))
	chunks := splitN(body, 4)
	for i, c := range chunks {
		send(t, st, reqBody(c, i == len(chunks)-1))
	}
	r := recv(t, st)
	hr := r.GetRequestHeaders()
	if hr == nil {
		t.Fatalf("first answer is %T, want the held request headers response", r.GetResponse())
	}
	set := h.checkDestination(r, hr.GetResponse())
	if _, ok := set[HeaderContentLength]; ok {
		t.Fatal("content-length set although the body did not change")
	}
	got := recvStreamedBody(t, st, true, true, 0)
	if !bytes.Equal(got, body) {
		t.Fatalf("body returned differs: %d bytes vs %d", len(got), len(body))
	}

	sse := sseResponse("base")
	send(t, st, respHeaders(false, ":status", "200", "content-type", "text/event-stream"))
	if r := recv(t, st); r.GetResponseHeaders() == nil {
		t.Fatalf("want response headers answer, got %T", r.GetResponse())
	}
	parts := splitN([]byte(sse), 3) // boundaries fall inside events
	for i, p := range parts {
		send(t, st, respBody(p, i == len(parts)-1))
	}
	gotResp := recvStreamedBody(t, st, false, true, 0)
	if string(gotResp) != sse {
		t.Fatalf("response changed:\n%q", gotResp)
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}

	labels := map[string]string{"model_name": "base", "target_model_name": "base", "pool": poolMain}
	waitFor(t, func() bool {
		_, _, ok := metricValue(h.scrape(), "inference_objective_input_tokens", labels)
		return ok
	})
	fams := h.scrape()
	if v, _, _ := metricValue(fams, "inference_objective_request_total", labels); v != 1 {
		t.Fatalf("request_total = %v", v)
	}
	if n, sum, _ := metricValue(fams, "inference_objective_input_tokens", labels); n != 1 || sum != 40 {
		t.Fatalf("input tokens count %v sum %v", n, sum)
	}
	if n, sum, _ := metricValue(fams, "inference_objective_output_tokens", labels); n != 1 || sum != 2 {
		t.Fatalf("output tokens count %v sum %v", n, sum)
	}
	if n, sum, _ := metricValue(fams, "inference_objective_prompt_cached_tokens", labels); n != 1 || sum != 16 {
		t.Fatalf("cached tokens count %v sum %v", n, sum)
	}
	for _, name := range []string{"inference_objective_request_duration_seconds", "inference_objective_request_ttft_seconds",
		"inference_objective_normalized_time_per_output_token_seconds", "inference_objective_request_sizes"} {
		if n, _, _ := metricValue(fams, name, labels); n != 1 {
			t.Fatalf("%s count = %v", name, n)
		}
	}
	if v, _, ok := metricValue(fams, "inference_objective_running_requests", map[string]string{"model_name": "base"}); !ok || v != 0 {
		t.Fatalf("running requests = %v (found %v), want 0 after completion", v, ok)
	}
	if n, _, _ := metricValue(fams, "inference_extension_scheduler_e2e_duration_seconds", nil); n != 1 {
		t.Fatalf("scheduler e2e count = %v", n)
	}
	if v, _, _ := metricValue(fams, "inference_pool_ready_pods", map[string]string{"name": poolMain}); v != 2 {
		t.Fatalf("ready pods = %v", v)
	}
	if v, _, _ := metricValue(fams, "inference_pool_average_kv_cache_utilization", map[string]string{"name": poolMain}); v != 0.25 {
		t.Fatalf("average kv = %v", v)
	}
	if v, _, _ := metricValue(fams, "infergw_pool_inflight_requests", map[string]string{"name": poolMain}); v != 0 {
		t.Fatalf("in-flight after completion = %v", v)
	}
}

// TestFullDuplexTrailers: the body ends with trailers instead of end_of_stream.
func TestFullDuplexTrailers(t *testing.T) { forEachTransport(t, testFullDuplexTrailers) }

func testFullDuplexTrailers(t *testing.T, tr Transport) {
	h := newHarness(t, Options{Transport: tr})
	body := chatRequest("base", 1000)
	st := h.stream("")
	send(t, st, reqHeaders(protocol(duplex, duplex), false, ":path", "/v1/chat/completions"))
	for _, c := range splitN(body, 2) {
		send(t, st, reqBody(c, false))
	}
	send(t, st, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestTrailers{
		RequestTrailers: &extprocv3.HttpTrailers{Trailers: hdrs("x-t", "1")}}})
	r := recv(t, st)
	h.checkDestination(r, r.GetRequestHeaders().GetResponse())
	got := recvStreamedBody(t, st, true, false, len(body))
	if !bytes.Equal(got, body) {
		t.Fatal("body differs")
	}
	if r := recv(t, st); r.GetRequestTrailers() == nil {
		t.Fatalf("want trailers answer, got %T", r.GetResponse())
	}

	// A gRPC-style response: its body ends with trailers, not end_of_stream. The body is
	// passed on, the trailers are answered, and the usage is counted.
	send(t, st, respHeaders(false, ":status", "200", "content-type", "application/json"))
	if r := recv(t, st); r.GetResponseHeaders() == nil {
		t.Fatalf("want response headers answer, got %T", r.GetResponse())
	}
	resp := `{"model":"base","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}`
	send(t, st, respBody([]byte(resp), false))
	if got := recvStreamedBody(t, st, false, false, len(resp)); string(got) != resp {
		t.Fatalf("response body changed: %q", got)
	}
	send(t, st, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseTrailers{
		ResponseTrailers: &extprocv3.HttpTrailers{Trailers: hdrs("grpc-status", "0")}}})
	if r := recv(t, st); r.GetResponseTrailers() == nil {
		t.Fatalf("want response trailers answer, got %T", r.GetResponse())
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if r, err := st.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("want the stream to end with OK after the client's close, got %v, %v", r, err)
	}
	waitFor(t, func() bool {
		n, sum, _ := metricValue(h.scrape(), "inference_objective_output_tokens",
			map[string]string{"model_name": "base", "target_model_name": "base", "pool": poolMain})
		return n == 1 && sum == 2
	})
}

// TestBufferedRewrite: BUFFERED mode answers the headers at once, then carries the pick,
// the rewritten body and the corrected content-length on the body response; the JSON
// response's model is written back.
func TestBufferedRewrite(t *testing.T) { forEachTransport(t, testBufferedRewrite) }

func testBufferedRewrite(t *testing.T, tr Transport) {
	h := newHarness(t, Options{Transport: tr})
	body := []byte(`{"model":"friendly","prompt":"say friendly things","max_tokens":3}`)
	st := h.stream("")
	send(t, st, reqHeaders(protocol(buffered, buffered), false, ":path", "/v1/completions",
		"content-length", strconv.Itoa(len(body)), HeaderPool, "spoofed/pool"))
	r := recv(t, st)
	if r.GetRequestHeaders() == nil || r.GetRequestHeaders().GetResponse().GetHeaderMutation() != nil {
		t.Fatalf("BUFFERED headers answer should be a plain CONTINUE, got %v", r)
	}
	send(t, st, reqBody(body, true))
	r = recv(t, st)
	common := r.GetRequestBody().GetResponse()
	set := h.checkDestination(r, common)
	newBody := common.GetBodyMutation().GetBody()
	var sent struct{ Model, Prompt string }
	if err := json.Unmarshal(newBody, &sent); err != nil || sent.Model != "lora-a" || sent.Prompt != "say friendly things" {
		t.Fatalf("rewritten body %s (%v)", newBody, err)
	}
	if set[HeaderContentLength] != strconv.Itoa(len(newBody)) {
		t.Fatalf("content-length %q, body %d bytes", set[HeaderContentLength], len(newBody))
	}
	if rm := common.GetHeaderMutation().GetRemoveHeaders(); len(rm) != 1 || rm[0] != HeaderPool {
		t.Fatalf("client-sent %s not removed: %v", HeaderPool, rm)
	}

	resp := `{"id":"c","object":"text_completion","model":"lora-a","choices":[{"text":"hi"}],"usage":{"prompt_tokens":4,"completion_tokens":1}}`
	send(t, st, respHeaders(false, ":status", "200", "content-type", "application/json", "content-length", strconv.Itoa(len(resp))))
	r = recv(t, st)
	if rm := r.GetResponseHeaders().GetResponse().GetHeaderMutation().GetRemoveHeaders(); len(rm) != 1 || rm[0] != HeaderContentLength {
		t.Fatalf("response content-length not removed for the rewrite: %v", r)
	}
	send(t, st, respBody([]byte(resp), true))
	r = recv(t, st)
	var back struct{ Model string }
	if err := json.Unmarshal(r.GetResponseBody().GetResponse().GetBodyMutation().GetBody(), &back); err != nil || back.Model != "friendly" {
		t.Fatalf("response model not written back: %v %v", r, err)
	}
	st.CloseSend()
	waitFor(t, func() bool {
		v, _, _ := metricValue(h.scrape(), "inference_objective_output_tokens",
			map[string]string{"model_name": "friendly", "target_model_name": "lora-a"})
		return v == 1
	})
}

// TestHeaderOnly: a bodiless request (GET /v1/models) is picked at the headers, without a
// model or prompt, and keeps the client's x-request-id.
func TestHeaderOnly(t *testing.T) { forEachTransport(t, testHeaderOnly) }

func testHeaderOnly(t *testing.T, tr Transport) {
	h := newHarness(t, Options{Transport: tr})
	st := h.stream("")
	send(t, st, reqHeaders(protocol(duplex, duplex), true, ":method", "GET", ":path", "/v1/models", HeaderRequestID, "given-id"))
	r := recv(t, st)
	if ir := r.GetImmediateResponse(); ir != nil {
		t.Fatalf("header-only request rejected: %d %s", ir.GetStatus().GetCode(), ir.GetBody())
	}
	set := setHeaders(r.GetRequestHeaders().GetResponse().GetHeaderMutation())
	if !h.mainAddrs()[strings.Split(set[HeaderDestination], ",")[0]] || set[HeaderRequestID] != "given-id" {
		t.Fatalf("header-only pick: %v", set)
	}
}

// TestPoolsMetadataAndSubset: a route with several pools gets one chosen by weight and
// announced in x-infergw-pool; the subset hint restricts the pick.
func TestPoolsMetadataAndSubset(t *testing.T) { forEachTransport(t, testPoolsMetadataAndSubset) }

func testPoolsMetadataAndSubset(t *testing.T, tr Transport) {
	h := newHarness(t, Options{Transport: tr})
	for i := 0; i < 3; i++ {
		st := h.stream(poolMain + "=1," + poolHot + "=0")
		send(t, st, reqHeaders(protocol(duplex, duplex), false, ":path", "/v1/completions"),
			reqBody([]byte(`{"model":"base","prompt":"x"}`), true))
		r := recv(t, st)
		set := h.checkDestination(r, r.GetRequestHeaders().GetResponse())
		if set[HeaderPool] != poolMain {
			t.Fatalf("%s = %q, want %s", HeaderPool, set[HeaderPool], poolMain)
		}
	}

	want := h.main[1].addr()
	hint := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		NamespaceSubset: {Fields: map[string]*structpb.Value{KeySubset: structpb.NewListValue(&structpb.ListValue{
			Values: []*structpb.Value{structpb.NewStringValue(want)}})}},
	}}
	for i := 0; i < 5; i++ {
		st := h.stream("")
		m := reqHeaders(protocol(duplex, duplex), false, ":path", "/v1/completions")
		m.MetadataContext = hint
		send(t, st, m, reqBody([]byte(`{"model":"base","prompt":"x"}`), true))
		r := recv(t, st)
		if got := lbMetadata(t, r); got != want {
			t.Fatalf("subset hint ignored: picked %q, want %q", got, want)
		}
	}
}

// TestErrorTable covers every error row: status, valid JSON body, content-type, and the
// next request on a new stream served normally.
func TestErrorTable(t *testing.T) { forEachTransport(t, testErrorTable) }

func testErrorTable(t *testing.T, tr Transport) {
	h := newHarness(t, Options{MaxBodyBytes: 64 << 10, Transport: tr})
	emptyHint := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		NamespaceSubset: {Fields: map[string]*structpb.Value{KeySubset: structpb.NewListValue(&structpb.ListValue{})}},
	}}
	cases := []struct {
		name   string
		pools  string
		extra  []string
		md     *corev3.Metadata
		bodies [][]byte
		status int
		code   string
	}{
		{"bad json", "", nil, nil, [][]byte{[]byte(`{"model":"base",`)}, 400, "invalid_json"},
		{"no model", "", nil, nil, [][]byte{[]byte(`{"prompt":"<script>\"x\"</script>\u2028"}`)}, 400, "missing_model"},
		{"unknown model", "", nil, nil, [][]byte{[]byte(`{"model":"gpt-\"9\"\n","prompt":"x"}`)}, 404, "model_not_found"},
		{"oversize body", "", nil, nil, splitN(chatRequest("base", 100<<10), 3), 413, "request_too_large"},
		{"no ready endpoint", poolEmpty, nil, nil, [][]byte{[]byte(`{"model":"base","prompt":"x"}`)}, 503, "no_ready_endpoint"},
		{"shed under saturation", poolHot, []string{HeaderObjective, "batch"}, nil, [][]byte{[]byte(`{"model":"base","prompt":"x"}`)}, 429, "rate_limit_exceeded"},
		{"empty subset", "", nil, emptyHint, [][]byte{[]byte(`{"model":"base","prompt":"x"}`)}, 503, "no_ready_endpoint"},
		{"empty model", "", nil, nil, [][]byte{[]byte(`{"model":"","prompt":"x"}`)}, 400, "missing_model"},
		// No bodies: the request headers end the stream (a POST with content-length: 0).
		{"POST without a body", "", []string{":method", "POST"}, nil, nil, 400, "missing_body"},
		{"POST with an empty body", "", []string{":method", "POST"}, nil, [][]byte{{}}, 400, "missing_body"},
		// 50 KB of model name must not come back in full (reflection).
		{"huge unknown model", "", nil, nil, [][]byte{[]byte(`{"model":"` + strings.Repeat("m", 50<<10) + `","prompt":"x"}`)}, 404, "model_not_found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := h.stream(c.pools)
			m := reqHeaders(protocol(duplex, duplex), len(c.bodies) == 0, append([]string{":path", "/v1/completions"}, c.extra...)...)
			m.MetadataContext = c.md
			send(t, st, m)
			for i, b := range c.bodies {
				send(t, st, reqBody(b, i == len(c.bodies)-1))
			}
			r := recv(t, st)
			ir := r.GetImmediateResponse()
			if ir == nil {
				t.Fatalf("want ImmediateResponse, got %T", r.GetResponse())
			}
			if int(ir.GetStatus().GetCode()) != c.status {
				t.Fatalf("status %d, want %d", ir.GetStatus().GetCode(), c.status)
			}
			if ct := setHeaders(ir.GetHeaders())[HeaderContentType]; ct != "application/json" {
				t.Fatalf("content-type %q", ct)
			}
			var eb struct {
				Error struct {
					Message, Type, Code string
					Param               *string
				}
			}
			if err := json.Unmarshal(ir.GetBody(), &eb); err != nil {
				t.Fatalf("error body is not JSON: %v: %s", err, ir.GetBody())
			}
			if eb.Error.Code != c.code || eb.Error.Message == "" || eb.Error.Type == "" {
				t.Fatalf("error body %s", ir.GetBody())
			}
			// Client input is echoed at most maxEchoBytes (plus the fixed wording).
			if len(eb.Error.Message) > maxEchoBytes+200 {
				t.Fatalf("error message of %d bytes echoes too much of the request", len(eb.Error.Message))
			}
			st.CloseSend()

			// The next request is served normally.
			st2 := h.stream("")
			send(t, st2, reqHeaders(protocol(duplex, duplex), false, ":path", "/v1/completions"),
				reqBody([]byte(`{"model":"base","prompt":"fine"}`), true))
			r2 := recv(t, st2)
			h.checkDestination(r2, r2.GetRequestHeaders().GetResponse())
			st2.CloseSend()
		})
	}
	fams := h.scrape()
	for _, c := range cases {
		if _, _, ok := metricValue(fams, "inference_objective_request_error_total", map[string]string{"error_code": strconv.Itoa(c.status)}); !ok {
			t.Errorf("no error metric for %d", c.status)
		}
	}
	// A model name the pool does not serve is the client's free text: it labels nothing
	// (the 404 counts under an empty model), while a served model keeps its name (429).
	if _, _, ok := metricValue(fams, "inference_objective_request_error_total", map[string]string{"error_code": "404", "model_name": ""}); !ok {
		t.Error("the 404 is not counted under an empty model name")
	}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if strings.Contains(l.GetValue(), "gpt-") {
					t.Errorf("%s has a series labelled with the unknown model: %v", f.GetName(), m.GetLabel())
				}
			}
		}
	}
	if _, _, ok := metricValue(fams, "inference_objective_request_error_total", map[string]string{"error_code": "429", "model_name": "base"}); !ok {
		t.Error("the 429 of a served model lost its model name")
	}
	// A priority-0 request to the saturated pool is not shed.
	st := h.stream(poolHot)
	send(t, st, reqHeaders(protocol(duplex, duplex), false, ":path", "/v1/completions"),
		reqBody([]byte(`{"model":"base","prompt":"x"}`), true))
	if r := recv(t, st); lbMetadata(t, r) != h.hot[0].addr() {
		t.Fatalf("non-sheddable request to the hot pool: %v", r)
	}
}

// TestReleaseOnDisconnect: a stream that ends after the pick (client gone) releases the
// in-flight count, and no stream goroutine stays behind.
func TestReleaseOnDisconnect(t *testing.T) { forEachTransport(t, testReleaseOnDisconnect) }

func testReleaseOnDisconnect(t *testing.T, tr Transport) {
	h := newHarness(t, Options{Transport: tr})
	openStreams := func() float64 {
		v, _, _ := metricValue(h.scrape(), "infergw_picker_open_streams", nil)
		return v
	}
	// The open-streams gauge counts a stream from its first message to its end.
	held := h.stream("")
	send(t, held, reqHeaders(protocol(duplex, duplex), false, ":path", "/v1/completions"))
	waitFor(t, func() bool { return openStreams() == 1 })
	if err := held.CloseSend(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		st := h.stream("")
		send(t, st, reqHeaders(protocol(duplex, duplex), false, ":path", "/v1/completions"),
			reqBody([]byte(`{"model":"base","prompt":"x"}`), true))
		recv(t, st)
		recvStreamedBody(t, st, true, true, 0)
		st.CloseSend() // Envoy resets the stream when the client disconnects
	}
	waitFor(t, func() bool { return h.router.PoolStats(poolMain).InFlight == 0 })
	waitFor(t, func() bool { return h.srv.ActiveStreams() == 0 })
	waitFor(t, func() bool { return openStreams() == 0 })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
