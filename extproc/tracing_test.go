package extproc

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// TestTracing: one span per request, a child of the incoming traceparent, with the pick as
// attributes, and the span's traceparent added to the request headers for the backend.
func TestTracing(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(t.Context())
	h := newHarness(t, Options{TracerProvider: tp})

	const parentTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	st := h.stream("")
	send(t, st, reqHeaders(protocol(duplex, duplex), false, ":path", "/v1/completions",
		HeaderTraceparent, "00-"+parentTrace+"-00f067aa0ba902b7-01"),
		reqBody([]byte(`{"model":"base","prompt":"secret prompt text"}`), true))
	r := recv(t, st)
	set := h.checkDestination(r, r.GetRequestHeaders().GetResponse())
	tpHeader := set[HeaderTraceparent]
	if !strings.HasPrefix(tpHeader, "00-"+parentTrace+"-") || strings.Contains(tpHeader, "00f067aa0ba902b7") {
		t.Fatalf("traceparent to the backend %q is not a child span of the incoming trace", tpHeader)
	}
	recvStreamedBody(t, st, true, true, 0)
	st.CloseSend()
	if _, err := st.Recv(); err == nil {
		t.Fatal("stream did not end")
	}
	waitFor(t, func() bool { return len(rec.Ended()) == 1 })
	span := rec.Ended()[0]
	if span.SpanContext().TraceID().String() != parentTrace || !strings.Contains(tpHeader, span.SpanContext().SpanID().String()) {
		t.Fatalf("span %v does not match the propagated header %q", span.SpanContext(), tpHeader)
	}
	attrs := map[string]string{}
	for _, kv := range span.Attributes() {
		attrs[string(kv.Key)] = kv.Value.String()
	}
	if attrs["infergw.destination"] != set[HeaderDestination] || attrs["infergw.pool"] != poolMain || attrs["infergw.model"] != "base" {
		t.Fatalf("span attributes %v", attrs)
	}
	for k, v := range attrs {
		if strings.Contains(v, "secret prompt") {
			t.Fatalf("prompt text in span attribute %s", k)
		}
	}
}

// TestNoPromptInLogs runs accepted and rejected requests with debug logging and checks the
// prompt text never appears in a log line.
func TestNoPromptInLogs(t *testing.T) {
	sw := &syncWriter{w: &bytes.Buffer{}}
	log := slog.New(slog.NewTextHandler(sw, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := newHarness(t, Options{}, log)
	for _, body := range []string{
		`{"model":"base","prompt":"SECRET-PROMPT-1"}`,
		`{"model":"unknown","prompt":"SECRET-PROMPT-2"}`,
		`{"model":"base","prompt":"SECRET-PROMPT-3"`,
	} {
		st := h.stream("")
		send(t, st, reqHeaders(protocol(duplex, duplex), false, ":path", "/v1/completions"), reqBody([]byte(body), true))
		recv(t, st)
		st.CloseSend()
	}
	waitFor(t, func() bool { return h.srv.ActiveStreams() == 0 })
	out := sw.String()
	if !strings.Contains(out, "request rejected") || !strings.Contains(out, "picked") {
		t.Fatalf("expected debug lines for the requests, got:\n%s", out)
	}
	if strings.Contains(out, "SECRET-PROMPT") {
		t.Fatalf("prompt text logged:\n%s", out)
	}
}

// syncWriter serialises writes from the stream goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}
