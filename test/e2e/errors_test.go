package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/infergw/infergw/stack"
)

// openAIError is the error schema every error answer must have, whoever wrote it.
type openAIError struct {
	Error struct {
		Message string          `json:"message"`
		Type    string          `json:"type"`
		Param   json.RawMessage `json:"param"`
		Code    json.RawMessage `json:"code"`
	} `json:"error"`
}

// checkOpenAIError asserts status, a JSON content type and an OpenAI-style body whose code
// is wantCode (a JSON value: `"not_found"`).
func checkOpenAIError(t *testing.T, what string, status int, ctype string, body []byte, wantStatus int, wantCode string) openAIError {
	t.Helper()
	var e openAIError
	if status != wantStatus || !strings.HasPrefix(ctype, "application/json") {
		t.Fatalf("%s: status %d content-type %q body %q; want %d JSON", what, status, ctype, body, wantStatus)
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Message == "" || e.Error.Type == "" || e.Error.Param == nil {
		t.Fatalf("%s: body is not an OpenAI-style error (%v): %s", what, err, body)
	}
	if string(e.Error.Code) != wantCode {
		t.Fatalf("%s: code %s, want %s (body %s)", what, e.Error.Code, wantCode, body)
	}
	return e
}

// rawExchange writes req on a new TCP connection to the gateway and reads one response.
func rawExchange(t *testing.T, gatewayURL, req string) (*http.Response, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(gatewayURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response to %q: %v", req[:min(len(req), 40)], err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// TestErrorsAreOpenAIJSON: every error a client can get, from the picker or from Envoy
// itself (no route, HTTP/1.0, a stalled request body, an upstream that resets, a route
// timeout), is an OpenAI-style JSON error; the picker's own bodies pass through the local
// reply mappers untouched; empty bodies and empty model names never reach a pod; and a
// huge unknown model name is not echoed back in full.
func TestErrorsAreOpenAIJSON(t *testing.T) {
	ips := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"}
	w := newWorld(t, ips)
	w.Pools = []pool{{Name: "llm", App: "llm"}, {Name: "hung", App: "hung"}, {Name: "reset", App: "reset"}}
	w.Pods = []pod{{Name: "llm-0", IP: ips[0], App: "llm"}, {Name: "llm-1", IP: ips[1], App: "llm"},
		{Name: "hung-0", IP: ips[2], App: "hung"}, {Name: "reset-0", IP: ips[3], App: "reset"}}
	w.Routes = `  rules:
    - matches: [{path: {type: PathPrefix, value: /v1}}]
      backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: llm}]
    - matches: [{path: {type: PathPrefix, value: /hung}}]
      timeouts: {request: 1s}
      backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: hung}]
    - matches: [{path: {type: PathPrefix, value: /reset}}]
      backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: reset}]`
	startBrokenPod(t, fmt.Sprintf("%s:%d", ips[2], w.TargetPort), podHangs)
	startBrokenPod(t, fmt.Sprintf("%s:%d", ips[3], w.TargetPort), podResets)
	gw := startGateway(t, w, func(c *stack.Config) {
		c.Translate.StreamIdleTimeout = 2 * time.Second
		// No first-byte retries here: the hung pool must show the route timeout.
		c.Translate.NumRetries = -1
	})
	chatBody := `{"model":"` + baseModel + `","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}`

	// The picker's own answers keep their bodies.
	r := post(t, gw.url+"/v1/chat/completions", nil, nil)
	checkOpenAIError(t, "empty body", r.Status, r.Header.Get("content-type"), r.Body, 400, `"missing_body"`)
	r = post(t, gw.url+"/v1/chat/completions", []byte(`{"model":"","messages":[]}`), nil)
	checkOpenAIError(t, `"model": ""`, r.Status, r.Header.Get("content-type"), r.Body, 400, `"missing_model"`)
	huge := strings.Repeat("x", 100<<10)
	r = post(t, gw.url+"/v1/chat/completions", []byte(`{"model":"`+huge+`","messages":[]}`), nil)
	e := checkOpenAIError(t, "huge unknown model", r.Status, r.Header.Get("content-type"), r.Body, 404, `"model_not_found"`)
	if len(e.Error.Message) > 600 || len(r.Body) > 1000 {
		t.Fatalf("a 100 KB model name came back in a %d-byte body", len(r.Body))
	}
	for _, res := range []result{r} {
		if res.Instance != "" {
			t.Fatalf("a rejected request reached sim %s", res.Instance)
		}
	}

	// Envoy's own local replies.
	r = post(t, gw.url+"/nowhere", []byte(chatBody), nil)
	checkOpenAIError(t, "no route", r.Status, r.Header.Get("content-type"), r.Body, 404, `"not_found"`)

	resp, body := rawExchange(t, gw.url, "GET /v1/models HTTP/1.0\r\nHost: x\r\n\r\n")
	checkOpenAIError(t, "HTTP/1.0", resp.StatusCode, resp.Header.Get("content-type"), body, 426, `"upgrade_required"`)

	// A body that never completes: the stream idle timeout answers 408.
	resp, body = rawExchange(t, gw.url, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\":")
	checkOpenAIError(t, "stalled body", resp.StatusCode, resp.Header.Get("content-type"), body, 408, `"request_timeout"`)

	r = post(t, gw.url+"/reset/v1/chat/completions", []byte(chatBody), nil)
	e = checkOpenAIError(t, "upstream reset", r.Status, r.Header.Get("content-type"), r.Body, 503, `"upstream_unavailable"`)
	if !strings.Contains(e.Error.Message, "reset") {
		t.Errorf("upstream reset: message %q does not carry Envoy's reason", e.Error.Message)
	}

	r = post(t, gw.url+"/hung/v1/chat/completions", []byte(chatBody), nil)
	checkOpenAIError(t, "route timeout", r.Status, r.Header.Get("content-type"), r.Body, 504, `"upstream_timeout"`)

	// Bodies are buffered by Envoy on pool routes (so that a picker crash cannot cut a
	// streaming response): a 2 MiB body still reaches a pod (which may refuse the prompt as
	// too long, but not 413), one over the 16 MiB limit is Envoy's JSON 413.
	// (The 2 MiB are a field nobody reads, so that neither the picker's prefix hashing nor
	// the sim's prefill makes the request slow under the race detector.)
	big := []byte(`{"model":"` + baseModel + `","max_tokens":1,"messages":[{"role":"user","content":"hi"}],"padding":"` + strings.Repeat("a", 2<<20) + `"}`)
	if r = post(t, gw.url+"/v1/chat/completions", big, nil); r.Status != 200 || r.Instance == "" {
		t.Fatalf("2 MiB body: status %d from %q: %.200s", r.Status, r.Instance, r.Body)
	}
	huge413 := []byte(`{"model":"` + baseModel + `","messages":[{"role":"user","content":"` + strings.Repeat("a", 17<<20) + `"}]}`)
	r = post(t, gw.url+"/v1/chat/completions", huge413, nil)
	checkOpenAIError(t, "17 MiB body", r.Status, r.Header.Get("content-type"), r.Body, 413, `"request_too_large"`)

	// A normal request still works and reaches a sim.
	if r = chat(t, gw.url, baseModel, "hello", nil); r.Status != 200 || r.Instance == "" {
		t.Fatalf("normal request: %d %s", r.Status, r.Body)
	}
}
