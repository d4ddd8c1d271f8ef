package inlinegrpc

import (
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// TestRawMalformedHeaderBlocks: a request header block HTTP/2 forbids resets that stream
// (PROTOCOL_ERROR) without reaching a handler, and the connection goes on serving.
func TestRawMalformedHeaderBlocks(t *testing.T) {
	ts := startServer(t, Options{})
	field := func(n, v string) hpack.HeaderField { return hpack.HeaderField{Name: n, Value: v} }
	ok := requestFields("POST", methodUnary, "application/grpc")
	cases := map[string][]hpack.HeaderField{
		"pseudo after regular": append([]hpack.HeaderField{field("content-type", "application/grpc")}, ok...),
		"repeated pseudo":      append(append([]hpack.HeaderField{}, ok...)[:1], append([]hpack.HeaderField{field(":method", "POST")}, ok[1:]...)...),
		"unknown pseudo":       append([]hpack.HeaderField{field(":status", "200")}, ok...),
		"upper-case name":      append(append([]hpack.HeaderField{}, ok...), field("X-Upper", "1")),
		"control in value":     append(append([]hpack.HeaderField{}, ok...), field("x-bad", "a\x00b")),
		"connection field":     append(append([]hpack.HeaderField{}, ok...), field("connection", "keep-alive")),
		"te not trailers":      append(append([]hpack.HeaderField{}, ok[:5]...), field("te", "gzip")),
	}
	c := dialRaw(t, ts.addr)
	id := uint32(1)
	for name, fields := range cases {
		c.writeHeaders(id, true, fields...)
		r := c.readStream(id)
		if r.rst == nil || *r.rst != http2.ErrCodeProtocol {
			t.Errorf("%s: got %v, want RST_STREAM PROTOCOL_ERROR", name, r)
		}
		id += 2
	}
	select {
	case h := <-ts.svc.closed:
		t.Errorf("a handler ran (kind %d) for a malformed request", h.kind)
	default:
	}
	// The same connection still serves a well-formed call.
	c.openCall(id, methodUnary)
	c.writeRequestMessage(id, &testgrpc.SimpleRequest{}, true)
	if r := c.readStream(id); grpcStatus(t, r) != 0 {
		t.Fatalf("well-formed call after the malformed ones: grpc-status %d", grpcStatus(t, r))
	}
}

// TestRawHeaderListTooLarge: a header list above SETTINGS_MAX_HEADER_LIST_SIZE is refused
// with ENHANCE_YOUR_CALM, and the HPACK state stays in step (the next call decodes).
func TestRawHeaderListTooLarge(t *testing.T) {
	ts := startServer(t, Options{})
	c := dialRaw(t, ts.addr)
	big := strings.Repeat("v", 100<<10)
	var extra []hpack.HeaderField
	for i := 0; len(extra)*len(big) <= maxHeaderList; i++ {
		extra = append(extra, hpack.HeaderField{Name: "x-big-" + string(rune('a'+i)), Value: big})
	}
	fields := requestFields("POST", methodUnary, "application/grpc", extra...)
	c.hbuf.Reset()
	for _, f := range fields {
		c.check(c.henc.WriteField(f))
	}
	// The block is far above the frame size: HEADERS plus CONTINUATION frames.
	block := c.hbuf.Bytes()
	c.check(c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:16000], EndStream: true}))
	for rest := block[16000:]; len(rest) > 0; {
		n := min(len(rest), 16000)
		c.check(c.fr.WriteContinuation(1, n == len(rest), rest[:n]))
		rest = rest[n:]
	}
	if r := c.readStream(1); r.rst == nil || *r.rst != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("oversized header list: got %v, want RST_STREAM ENHANCE_YOUR_CALM", r)
	}
	c.openCall(3, methodUnary)
	c.writeRequestMessage(3, &testgrpc.SimpleRequest{}, true)
	if r := c.readStream(3); grpcStatus(t, r) != 0 {
		t.Fatalf("call after the oversized one: grpc-status %d", grpcStatus(t, r))
	}
}

// TestRawPseudoHeaderInTrailers: client trailers may not carry pseudo-headers.
func TestRawPseudoHeaderInTrailers(t *testing.T) {
	ts := startServer(t, Options{})
	c := dialRaw(t, ts.addr)
	c.openCall(1, methodUnary)
	c.writeRequestMessage(1, &testgrpc.SimpleRequest{}, false)
	c.writeHeaders(1, true, hpack.HeaderField{Name: ":path", Value: "/x"})
	if r := c.readStream(1); r.rst == nil || *r.rst != http2.ErrCodeProtocol {
		t.Fatalf("pseudo-header in trailers: got %v, want RST_STREAM PROTOCOL_ERROR", r)
	}
}
