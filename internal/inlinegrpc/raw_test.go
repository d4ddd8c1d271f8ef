package inlinegrpc

import (
	"bytes"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/proto"
)

// HTTP/2 conformance with a hand-driven client (rawConn): the frames a real gRPC client
// never sends, and the protocol details a real client would hide.

// TestRawBadPreface: something that is not HTTP/2 is hung up on without a reply.
func TestRawBadPreface(t *testing.T) {
	ts := startServer(t, Options{})
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := io.WriteString(nc, "GET / HTTP/1.1\r\nHost: example\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := nc.SetReadDeadline(time.Now().Add(boundedWait)); err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, nc) // nil at EOF
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("server did not close a connection with a bad preface")
	}
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read: %v", err)
	}
	if n != 0 {
		t.Errorf("server sent %d bytes to a non-HTTP/2 client, want none", n)
	}
	waitFor(t, "the connection to end", func() bool { return connCount(ts.srv) == 0 })
}

// TestRawSettings: the server advertises its limits, and acknowledges every SETTINGS.
func TestRawSettings(t *testing.T) {
	ts := startServer(t, Options{MaxConcurrentStreams: 7, StreamWindow: 1 << 20})
	c := dialRaw(t, ts.addr) // fails unless the first SETTINGS is acknowledged
	if got := c.serverSettings[http2.SettingMaxConcurrentStreams]; got != 7 {
		t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS %d, want 7", got)
	}
	if got := c.serverSettings[http2.SettingInitialWindowSize]; got != 1<<20 {
		t.Errorf("SETTINGS_INITIAL_WINDOW_SIZE %d, want %d", got, 1<<20)
	}
	c.check(c.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 20}))
	events := c.ping([8]byte{9})
	acked := false
	for _, e := range events {
		acked = acked || (e.typ == http2.FrameSettings && e.flags.Has(http2.FlagSettingsAck))
	}
	if !acked {
		t.Error("no SETTINGS ack before the PING ack")
	}
}

func TestRawPing(t *testing.T) {
	ts := startServer(t, Options{})
	c := dialRaw(t, ts.addr)
	data := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	c.check(c.fr.WritePing(false, data))
	for {
		e := c.next()
		if e.typ != http2.FramePing {
			continue
		}
		if !e.flags.Has(http2.FlagPingAck) || [8]byte(e.data) != data {
			t.Fatalf("PING answered with ack=%v data=%v, want ack with %v", e.flags.Has(http2.FlagPingAck), e.data, data)
		}
		return
	}
}

// TestRawConnectionErrors: frames that break the protocol end the connection with GOAWAY
// and the right code.
func TestRawConnectionErrors(t *testing.T) {
	ts := startServer(t, Options{})
	cases := []struct {
		name  string
		code  http2.ErrCode
		write func(c *rawConn)
	}{
		{"DATA on an idle stream", http2.ErrCodeProtocol, func(c *rawConn) {
			c.check(c.fr.WriteData(1, false, grpcMessage(0, nil)))
		}},
		{"even stream ID", http2.ErrCodeProtocol, func(c *rawConn) { c.openCall(2, methodUnary) }},
		{"WINDOW_UPDATE on an idle stream", http2.ErrCodeProtocol, func(c *rawConn) {
			c.check(c.fr.WriteWindowUpdate(5, 100))
		}},
		{"RST_STREAM on an idle stream", http2.ErrCodeProtocol, func(c *rawConn) {
			c.check(c.fr.WriteRSTStream(3, http2.ErrCodeCancel))
		}},
		{"PUSH_PROMISE", http2.ErrCodeProtocol, func(c *rawConn) {
			c.openCall(1, methodBidi)
			c.check(c.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: []byte{0x82}, EndHeaders: true}))
		}},
		{"connection window overflow", http2.ErrCodeFlowControl, func(c *rawConn) {
			c.check(c.fr.WriteWindowUpdate(0, 1<<31-1))
		}},
		{"SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1", http2.ErrCodeFlowControl, func(c *rawConn) {
			c.check(c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31}))
		}},
		{"SETTINGS_MAX_FRAME_SIZE too small", http2.ErrCodeProtocol, func(c *rawConn) {
			c.check(c.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 100}))
		}},
		{"HEADERS interrupted by another frame", http2.ErrCodeProtocol, func(c *rawConn) {
			c.check(c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x83}, EndHeaders: false}))
			c.check(c.fr.WritePing(false, [8]byte{}))
		}},
		// The next ones are the frame codec's own checks, which report no error detail.
		{"PING of 7 bytes", http2.ErrCodeFrameSize, func(c *rawConn) {
			c.check(c.fr.WriteRawFrame(http2.FramePing, 0, 0, make([]byte, 7)))
		}},
		{"PING on a stream", http2.ErrCodeProtocol, func(c *rawConn) {
			c.check(c.fr.WriteRawFrame(http2.FramePing, 0, 1, make([]byte, 8)))
		}},
		{"SETTINGS of 5 bytes", http2.ErrCodeFrameSize, func(c *rawConn) {
			c.check(c.fr.WriteRawFrame(http2.FrameSettings, 0, 0, make([]byte, 5)))
		}},
		{"SETTINGS on a stream", http2.ErrCodeProtocol, func(c *rawConn) {
			c.check(c.fr.WriteRawFrame(http2.FrameSettings, 0, 1, nil))
		}},
		{"WINDOW_UPDATE of 3 bytes", http2.ErrCodeFrameSize, func(c *rawConn) {
			c.check(c.fr.WriteRawFrame(http2.FrameWindowUpdate, 0, 0, make([]byte, 3)))
		}},
		{"RST_STREAM on stream 0", http2.ErrCodeProtocol, func(c *rawConn) {
			c.check(c.fr.WriteRawFrame(http2.FrameRSTStream, 0, 0, make([]byte, 4)))
		}},
		{"GOAWAY on a stream", http2.ErrCodeProtocol, func(c *rawConn) {
			c.check(c.fr.WriteRawFrame(http2.FrameGoAway, 0, 1, make([]byte, 8)))
		}},
		// A peer that never received SETTINGS_MAX_FRAME_SIZE may not send frames above
		// 16 KiB (and the server must not buffer frames of up to 16 MiB for it).
		{"DATA frame above 16 KiB", http2.ErrCodeFrameSize, func(c *rawConn) {
			c.openCall(1, methodBidi)
			c.check(c.fr.WriteData(1, false, make([]byte, defaultFrame+1)))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, ts.addr)
			tc.write(c)
			c.sendBarrier()
			c.expectGoAway(tc.code)
		})
	}
}

// TestRawClientReset: RST_STREAM from the client ends the stream and tells its handler, and
// the connection goes on.
func TestRawClientReset(t *testing.T) {
	ts := startServer(t, Options{})
	c := dialRaw(t, ts.addr)
	c.openCall(1, methodBidi)
	c.writeRequestMessage(1, &testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("x")}}, false)
	c.readUntil(func(e frameEvent) bool { return e.typ == http2.FrameData && e.stream == 1 })
	c.check(c.fr.WriteRSTStream(1, http2.ErrCodeCancel))

	h := ts.svc.waitClosed(t)
	var reset streamResetError
	if !errors.As(h.closeErr, &reset) || reset.code != http2.ErrCodeCancel {
		t.Fatalf("handler Close(%v), want a reset with CANCEL", h.closeErr)
	}
	// Frames the client had in flight for the reset stream are ignored, not an error.
	c.writeRequestMessage(1, &testgrpc.StreamingOutputCallRequest{}, false)
	c.openCall(3, methodUnary)
	c.writeRequestMessage(3, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("after")}}, true)
	r := c.readStream(3)
	if grpcStatus(t, r) != 0 {
		t.Fatalf("call after a reset: status %s", r.trailer("grpc-status"))
	}
	if n := h.closes.Load(); n != 1 {
		t.Errorf("handler Close called %d times, want 1", n)
	}
}

// TestRawNotGRPC: requests that are not gRPC get a plain HTTP status and no handler.
func TestRawNotGRPC(t *testing.T) {
	ts := startServer(t, Options{})
	cases := []struct {
		name, method, contentType, status string
	}{
		{"GET", "GET", "application/grpc", "405"},
		{"PUT", "PUT", "application/grpc", "405"},
		{"JSON", "POST", "application/json", "415"},
		{"grpc-web", "POST", "application/grpc-web", "415"},
		{"no content-type", "POST", "", "415"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, ts.addr)
			c.writeHeaders(1, true, requestFields(tc.method, methodUnary, tc.contentType)...)
			r := c.readStream(1)
			if len(r.headers) != 1 || r.rst != nil {
				t.Fatalf("got %d header blocks, reset %v; want one header block ending the stream", len(r.headers), r.rst)
			}
			if got := r.headers[0][0]; got.Name != ":status" || got.Value != tc.status {
				t.Errorf("first field %v, want :status %s", got, tc.status)
			}
		})
	}
	select {
	case h := <-ts.svc.closed:
		t.Errorf("a handler ran (kind %d) for a request that is not gRPC", h.kind)
	default:
	}
	// The accepted content types do reach the handler.
	for i, ct := range []string{"application/grpc+proto", "application/grpc;charset=utf-8"} {
		c := dialRaw(t, ts.addr)
		id := uint32(2*i + 1)
		c.writeHeaders(id, false, requestFields("POST", methodUnary, ct)...)
		c.writeRequestMessage(id, &testgrpc.SimpleRequest{}, true)
		if r := c.readStream(id); grpcStatus(t, r) != 0 {
			t.Errorf("content-type %q: grpc-status %d", ct, grpcStatus(t, r))
		}
	}
}

// TestRawBadMessages: message prefixes the server refuses end the call with a status.
func TestRawBadMessages(t *testing.T) {
	ts := startServer(t, Options{})
	cases := []struct {
		name   string
		data   []byte
		status int
	}{
		{"compressed flag", grpcMessage(1, []byte("gzipped?")), 12}, // UNIMPLEMENTED
		{"unknown flag", grpcMessage(2, []byte("x")), 13},           // INTERNAL
		{"stream ends inside a message", grpcMessage(0, make([]byte, 10))[:8], 13},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, ts.addr)
			c.openCall(1, methodUnary)
			c.check(c.fr.WriteData(1, true, tc.data))
			r := c.readStream(1)
			if len(r.data) != 0 {
				t.Errorf("got %d response bytes, want none", len(r.data))
			}
			if got := grpcStatus(t, r); got != tc.status {
				t.Errorf("grpc-status %d (%q), want %d", got, r.trailer("grpc-message"), tc.status)
			}
			if h := ts.svc.waitClosed(t); h.messages != 0 {
				t.Errorf("handler got %d messages, want 0", h.messages)
			}
		})
	}
}

// TestRawMessageReassembly: a message sent one byte per DATA frame is reassembled, and
// several messages in one DATA frame are all delivered.
func TestRawMessageReassembly(t *testing.T) {
	ts := startServer(t, Options{})
	c := dialRaw(t, ts.addr)
	c.openCall(1, methodBidi)
	bodies := [][]byte{pattern(1, 300), pattern(2, 0), pattern(3, 17), pattern(4, 1)}
	msg := func(i int) []byte {
		return grpcMessage(0, marshal(t, &testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: bodies[i]}}))
	}
	for _, b := range msg(0) {
		c.check(c.fr.WriteData(1, false, []byte{b}))
	}
	// Three more in one frame, the last one split across that frame and the next.
	coalesced := append(append(msg(1), msg(2)...), msg(3)...)
	c.check(c.fr.WriteData(1, false, coalesced[:len(coalesced)-3]))
	c.check(c.fr.WriteData(1, false, coalesced[len(coalesced)-3:]))
	c.check(c.fr.WriteData(1, true, nil))

	r := c.readStream(1)
	if grpcStatus(t, r) != 0 {
		t.Fatalf("grpc-status %s: %s", r.trailer("grpc-status"), r.trailer("grpc-message"))
	}
	msgs := splitMessages(t, r.data)
	if len(msgs) != len(bodies) {
		t.Fatalf("%d responses, want %d", len(msgs), len(bodies))
	}
	for i, m := range msgs {
		resp := &testgrpc.StreamingOutputCallResponse{}
		if err := proto.Unmarshal(m, resp); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(resp.GetPayload().GetBody(), bodies[i]) {
			t.Errorf("response %d differs from request %d", i, i)
		}
	}
}

// sumData adds up the DATA bytes of stream id among events, and reports whether the stream
// ended.
func sumData(events []frameEvent, id uint32) (n int, ended bool) {
	for _, e := range events {
		if e.stream != id {
			continue
		}
		if e.typ == http2.FrameData {
			n += len(e.data)
		}
		ended = ended || e.endStream()
	}
	return n, ended
}

// checkUnaryResponse checks that data is one SimpleResponse with pattern(size, size).
func checkUnaryResponse(t *testing.T, data []byte, size int) {
	t.Helper()
	msgs := splitMessages(t, data)
	if len(msgs) != 1 {
		t.Fatalf("%d response messages, want 1", len(msgs))
	}
	resp := &testgrpc.SimpleResponse{}
	if err := proto.Unmarshal(msgs[0], resp); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(resp.GetPayload().GetBody(), pattern(uint32(size), size)) {
		t.Fatal("response payload differs")
	}
}

// TestRawInitialWindowZero: a client that grants no stream window gets response headers but
// no DATA and no status, until it raises SETTINGS_INITIAL_WINDOW_SIZE.
func TestRawInitialWindowZero(t *testing.T) {
	ts := startServer(t, Options{})
	c := dialRaw(t, ts.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	c.openCall(1, methodUnary)
	c.writeRequestMessage(1, &testgrpc.SimpleRequest{ResponseSize: 1000}, true)
	before := c.ping([8]byte{1})
	if n, ended := sumData(before, 1); n != 0 || ended {
		t.Fatalf("with a zero window the server sent %d DATA bytes (stream ended: %v)", n, ended)
	}
	sawHeaders := false
	for _, e := range before {
		sawHeaders = sawHeaders || (e.typ == http2.FrameHeaders && e.stream == 1 && e.field(":status") == "200")
	}
	if !sawHeaders {
		t.Error("no response HEADERS before the window opened (HEADERS are not flow-controlled)")
	}

	c.check(c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: initialWindow}))
	r := c.readStream(1)
	if grpcStatus(t, r) != 0 {
		t.Fatalf("grpc-status %s", r.trailer("grpc-status"))
	}
	checkUnaryResponse(t, r.data, 1000)
}

// TestRawStreamWindowUpdate: the server sends exactly the stream window, then the rest after
// a stream WINDOW_UPDATE.
func TestRawStreamWindowUpdate(t *testing.T) {
	ts := startServer(t, Options{})
	c := dialRaw(t, ts.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
	c.openCall(1, methodUnary)
	c.writeRequestMessage(1, &testgrpc.SimpleRequest{ResponseSize: 1000}, true)
	events := c.ping([8]byte{2})
	if n, ended := sumData(events, 1); n != 10 || ended {
		t.Fatalf("stream window 10: server sent %d DATA bytes (ended %v), want exactly 10", n, ended)
	}
	var first []byte
	for _, e := range events {
		if e.typ == http2.FrameData && e.stream == 1 {
			first = append(first, e.data...)
		}
	}
	c.check(c.fr.WriteWindowUpdate(1, 5000))
	r := c.readStream(1)
	if grpcStatus(t, r) != 0 {
		t.Fatalf("grpc-status %s", r.trailer("grpc-status"))
	}
	checkUnaryResponse(t, append(first, r.data...), 1000)
}

// TestRawConnectionWindow: the connection window (65535 until the client raises it) caps
// the server's DATA even when the stream window is large.
func TestRawConnectionWindow(t *testing.T) {
	ts := startServer(t, Options{})
	c := dialRaw(t, ts.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	const size = 100000
	c.openCall(1, methodUnary)
	c.writeRequestMessage(1, &testgrpc.SimpleRequest{ResponseSize: size}, true)
	events := c.ping([8]byte{3})
	if n, ended := sumData(events, 1); n != initialWindow || ended {
		t.Fatalf("server sent %d DATA bytes (ended %v), want exactly the connection window %d", n, ended, initialWindow)
	}
	var first []byte
	for _, e := range events {
		if e.typ == http2.FrameData && e.stream == 1 {
			first = append(first, e.data...)
		}
	}
	c.check(c.fr.WriteWindowUpdate(0, 1<<20))
	r := c.readStream(1)
	if grpcStatus(t, r) != 0 {
		t.Fatalf("grpc-status %s", r.trailer("grpc-status"))
	}
	checkUnaryResponse(t, append(first, r.data...), size)
}

// TestRawInitialWindowRepeatedInOneFrame: when one SETTINGS frame changes
// SETTINGS_INITIAL_WINDOW_SIZE twice, open streams' windows follow the net change (here
// 65535 → 0 → 10, so an open stream may receive 10 bytes, not 65545).
func TestRawInitialWindowRepeatedInOneFrame(t *testing.T) {
	ts := startServer(t, Options{})
	c := dialRaw(t, ts.addr)
	c.openCall(1, methodBidi)
	c.check(c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10},
	))
	c.writeRequestMessage(1, &testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: pattern(1, 100)}}, false)
	events := c.ping([8]byte{4})
	if n, _ := sumData(events, 1); n != 10 {
		t.Fatalf("open stream received %d DATA bytes, want 10 (its window after the SETTINGS)", n)
	}
}

// TestRawHeaderTableSizeZero: a client that allows no HPACK dynamic table can still decode
// every response (the server must announce the table size change and not index fields).
func TestRawHeaderTableSizeZero(t *testing.T) {
	ts := startServer(t, Options{})
	c := dialRaw(t, ts.addr, http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0})
	// A decoder whose table holds nothing: once the server has indexed a field, its next
	// reference to the dynamic table fails to decode. (The server must start its next
	// header block with a table size update to 0; a decoder of 4096 bytes would hide a
	// server that does not.)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(0, nil)
	for i := range 3 {
		id := uint32(2*i + 1)
		c.openCall(id, methodUnary)
		c.writeRequestMessage(id, &testgrpc.SimpleRequest{ResponseSize: 10}, true)
		r := c.readStream(id)
		if grpcStatus(t, r) != 0 || r.headers[0][0].Value != "200" {
			t.Fatalf("call %d: headers %v", i, r.headers)
		}
	}
}

// TestRawMaxConcurrentStreams: a stream above the advertised limit is refused, and the
// ones within it are served.
func TestRawMaxConcurrentStreams(t *testing.T) {
	ts := startServer(t, Options{MaxConcurrentStreams: 1})
	c := dialRaw(t, ts.addr)
	c.openCall(1, methodBidi)
	c.openCall(3, methodBidi)
	r := c.readStream(3)
	if r.rst == nil || *r.rst != http2.ErrCodeRefusedStream {
		t.Fatalf("second stream: %+v, want RST_STREAM REFUSED_STREAM", r)
	}
	c.check(c.fr.WriteData(1, true, nil))
	if r := c.readStream(1); grpcStatus(t, r) != 0 {
		t.Fatalf("first stream: grpc-status %s", r.trailer("grpc-status"))
	}
}

// TestRawHeadersAfterEndStream: HEADERS on a stream the client already half-closed is a
// stream error (STREAM_CLOSED); the handler hears of the half-close once and then is
// closed with an error.
func TestRawHeadersAfterEndStream(t *testing.T) {
	ts := startServer(t, Options{})
	c := dialRaw(t, ts.addr)
	keep := hpack.HeaderField{Name: keepOpenHeader, Value: "1"}
	c.writeHeaders(1, true, requestFields("POST", methodBidi, "application/grpc", keep)...)
	c.writeHeaders(1, true, hpack.HeaderField{Name: "x-trailer", Value: "again"})
	var rst *frameEvent
	for _, e := range c.ping([8]byte{6}) {
		if e.typ == http2.FrameRSTStream && e.stream == 1 {
			rst = &e
		}
	}
	if rst == nil || rst.code != http2.ErrCodeStreamClosed {
		t.Fatalf("stream 1 reset: %+v, want RST_STREAM STREAM_CLOSED", rst)
	}
	h := ts.svc.waitClosed(t)
	if h.halfCloses != 1 || h.closeErr == nil {
		t.Errorf("handler saw %d half-closes and Close(%v); want 1 and an error", h.halfCloses, h.closeErr)
	}
}

// TestRawMessagesAfterFinishIgnored: once a call is finished (here by a refused message
// while the response still waits for window), later request bytes must not reach the
// handler: they may be the rest of the refused message.
func TestRawMessagesAfterFinishIgnored(t *testing.T) {
	ts := startServer(t, Options{})
	c := dialRaw(t, ts.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	c.openCall(1, methodBidi)
	c.writeRequestMessage(1, &testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("first")}}, false)
	c.check(c.fr.WriteData(1, false, grpcMessage(1, []byte("compressed"))))
	c.writeRequestMessage(1, &testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("after the refusal")}}, false)
	c.ping([8]byte{5})
	c.check(c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: initialWindow}))
	r := c.readStream(1)
	if got := grpcStatus(t, r); got != 12 {
		t.Fatalf("grpc-status %d, want 12 (UNIMPLEMENTED, compressed message)", got)
	}
	if msgs := splitMessages(t, r.data); len(msgs) != 1 {
		t.Errorf("%d responses, want 1 (to the message before the refusal)", len(msgs))
	}
	if h := ts.svc.waitClosed(t); h.messages != 1 {
		t.Errorf("handler got %d messages, want 1", h.messages)
	}
}

// TestRawShutdownGoAway: Shutdown drains in two phases: GOAWAY (NO_ERROR, last stream
// 2^31-1) and a PING; a stream opened before the client answers the PING is still served
// (it may have been in flight); after the answer a second GOAWAY names the last stream the
// client opened, later streams are refused, the open ones are served to their end, then
// the connection closes.
func TestRawShutdownGoAway(t *testing.T) {
	ts := startServer(t, Options{})
	c := dialRaw(t, ts.addr)
	c.openCall(1, methodBidi)
	c.writeRequestMessage(1, &testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("a")}}, false)
	c.readUntil(func(e frameEvent) bool { return e.typ == http2.FrameData && e.stream == 1 })

	shutdown := make(chan error, 1)
	go func() { shutdown <- ts.srv.Shutdown(testCtx(t)) }()
	events := c.readUntil(func(e frameEvent) bool { return e.typ == http2.FrameGoAway })
	if g := events[len(events)-1]; g.code != http2.ErrCodeNo || g.lastID != 1<<31-1 {
		t.Fatalf("first GOAWAY %v last stream %d, want NO_ERROR and 2^31-1", g.code, g.lastID)
	}
	events = c.readUntil(func(e frameEvent) bool { return e.typ == http2.FramePing && !e.flags.Has(http2.FlagPingAck) })
	drainData := [8]byte(events[len(events)-1].data)
	// A stream that was in flight when the first GOAWAY left the server.
	c.openCall(3, methodUnary)
	c.writeRequestMessage(3, &testgrpc.SimpleRequest{}, true)
	if r := c.readStream(3); r.rst != nil || grpcStatus(t, r) != 0 {
		t.Fatalf("stream opened before the PING's answer: %+v, want served", r)
	}
	c.check(c.fr.WritePing(true, drainData))
	events = c.readUntil(func(e frameEvent) bool { return e.typ == http2.FrameGoAway })
	if g := events[len(events)-1]; g.code != http2.ErrCodeNo || g.lastID != 3 {
		t.Fatalf("second GOAWAY %v last stream %d, want NO_ERROR and 3", g.code, g.lastID)
	}
	c.openCall(5, methodUnary)
	if r := c.readStream(5); r.rst == nil || *r.rst != http2.ErrCodeRefusedStream {
		t.Fatalf("stream opened after GOAWAY: %+v, want RST_STREAM REFUSED_STREAM", r)
	}
	c.writeRequestMessage(1, &testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("b")}}, true)
	r := c.readStream(1)
	if grpcStatus(t, r) != 0 || len(splitMessages(t, r.data)) != 1 {
		t.Fatalf("draining stream: status %s, %d bytes", r.trailer("grpc-status"), len(r.data))
	}
	c.expectClosed()
	select {
	case err := <-shutdown:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-timeAfterBound():
		t.Fatal("Shutdown did not return after the last stream")
	}
}
