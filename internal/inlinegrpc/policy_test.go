package inlinegrpc

import (
	"testing"
	"time"

	"golang.org/x/net/http2"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// TestRawIdleConnectionClosed: a client that sends the preface and opens no stream gets
// GOAWAY (NO_ERROR) and a closed connection after IdleTimeout; one stream ending starts the
// timer again.
func TestRawIdleConnectionClosed(t *testing.T) {
	ts := startServer(t, Options{IdleTimeout: 200 * time.Millisecond})
	c := dialRaw(t, ts.addr)
	c.openCall(1, methodUnary)
	c.writeRequestMessage(1, &testgrpc.SimpleRequest{}, true)
	if r := c.readStream(1); grpcStatus(t, r) != 0 {
		t.Fatalf("call before idling: %+v", r)
	}
	c.expectGoAway(http2.ErrCodeNo)
}

// TestRawHeadersOnClosedStream: HEADERS on a stream that ended (or below the highest ID
// used) is a connection error PROTOCOL_ERROR (RFC 9113 §5.1.1), while HEADERS on a stream
// the server reset is ignored (frames in flight, §5.1).
func TestRawHeadersOnClosedStream(t *testing.T) {
	ts := startServer(t, Options{})
	c := dialRaw(t, ts.addr)
	// Stream 1: the server finishes it before the client ends (UNIMPLEMENTED) and resets it.
	c.openCall(1, "/no.Such/Method")
	if r := c.readStream(1); grpcStatus(t, r) != 12 {
		t.Fatalf("unknown method: %+v, want UNIMPLEMENTED", r)
	}
	c.writeHeaders(1, true, requestFields("POST", methodUnary, "application/grpc")...) // trailers in flight
	c.ping([8]byte{1})                                                                 // still open
	c.openCall(5, methodUnary)
	c.writeRequestMessage(5, &testgrpc.SimpleRequest{}, true)
	if r := c.readStream(5); grpcStatus(t, r) != 0 {
		t.Fatalf("call: %+v", r)
	}
	c.openCall(3, methodUnary)
	c.sendBarrier()
	c.expectGoAway(http2.ErrCodeProtocol)
}

// TestRawResetsAfterAnswersAllowed: Envoy resets each ext_proc stream once it has its
// answers, thousands a second on one connection; those resets must not trip the Rapid
// Reset limit, while resets of streams opened and never answered do.
func TestRawResetsAfterAnswersAllowed(t *testing.T) {
	ts := startServer(t, Options{})
	c := dialRaw(t, ts.addr)
	for i := uint32(0); i < resetBurst+500; i++ {
		id := 2*i + 1
		c.openCall(id, methodBidi)
		c.writeRequestMessage(id, &testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("x")}}, false)
		c.readUntil(func(e frameEvent) bool { return e.typ == http2.FrameData && e.stream == id })
		c.check(c.fr.WriteRSTStream(id, http2.ErrCodeCancel))
	}
	c.ping([8]byte{9}) // still served
	c2 := dialRaw(t, ts.addr)
	for i := uint32(0); i < resetBurst+500; i++ {
		c2.hbuf.Reset()
		for _, f := range requestFields("POST", methodBidi, "application/grpc") {
			_ = c2.henc.WriteField(f)
		}
		if c2.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 2*i + 1, BlockFragment: c2.hbuf.Bytes(), EndHeaders: true}) != nil ||
			c2.fr.WriteRSTStream(2*i+1, http2.ErrCodeCancel) != nil {
			break // closed by the server, as expected
		}
	}
	c2.expectGoAway(http2.ErrCodeEnhanceYourCalm)
}
