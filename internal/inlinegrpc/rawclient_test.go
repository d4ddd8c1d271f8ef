package inlinegrpc

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"
)

// rawConn is a hand-driven HTTP/2 client: the tests below write exactly the frames they
// mean, valid or not, which no real gRPC client would send.
type rawConn struct {
	t    testing.TB
	nc   net.Conn
	fr   *http2.Framer
	henc *hpack.Encoder
	hbuf bytes.Buffer

	serverSettings map[http2.SettingID]uint32
}

// frameEvent is a copy of a frame read, safe to keep after the next read.
type frameEvent struct {
	typ    http2.FrameType
	stream uint32
	flags  http2.Flags
	data   []byte              // DATA payload, PING data, GOAWAY debug data
	fields []hpack.HeaderField // HEADERS (with CONTINUATIONs)
	code   http2.ErrCode       // RST_STREAM, GOAWAY
	lastID uint32              // GOAWAY
}

func (e frameEvent) endStream() bool {
	return (e.typ == http2.FrameData && e.flags.Has(http2.FlagDataEndStream)) ||
		(e.typ == http2.FrameHeaders && e.flags.Has(http2.FlagHeadersEndStream))
}

func (e frameEvent) field(name string) string {
	for _, f := range e.fields {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

// dialRaw connects, sends the preface and settings, and completes the SETTINGS exchange.
func dialRaw(t testing.TB, addr string, settings ...http2.Setting) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	c := newRawConn(t, nc)
	if _, err := io.WriteString(nc, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	c.check(c.fr.WriteSettings(settings...))
	// The server's SETTINGS comes first (its preface), then the ack of ours.
	gotSettings, gotAck := false, false
	for !gotSettings || !gotAck {
		e := c.next()
		switch {
		case e.typ == http2.FrameSettings && e.flags.Has(http2.FlagSettingsAck):
			if !gotSettings {
				t.Fatal("SETTINGS ack before the server's own SETTINGS")
			}
			gotAck = true
		case e.typ == http2.FrameSettings:
			gotSettings = true
			c.check(c.fr.WriteSettingsAck())
		case e.typ == http2.FrameWindowUpdate && e.stream == 0:
			// the server raising its connection window
		default:
			t.Fatalf("unexpected %v frame during the handshake", e.typ)
		}
	}
	return c
}

func newRawConn(t testing.TB, nc net.Conn) *rawConn {
	c := &rawConn{t: t, nc: nc, serverSettings: map[http2.SettingID]uint32{}}
	c.fr = http2.NewFramer(nc, nc)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	return c
}

func (c *rawConn) check(err error) {
	c.t.Helper()
	if err != nil {
		c.t.Fatalf("raw client write: %v", err)
	}
}

// nextOrErr reads one frame, waiting at most boundedWait.
func (c *rawConn) nextOrErr() (frameEvent, error) {
	if err := c.nc.SetReadDeadline(time.Now().Add(boundedWait)); err != nil {
		return frameEvent{}, err
	}
	f, err := c.fr.ReadFrame()
	if err != nil {
		return frameEvent{}, err
	}
	e := frameEvent{typ: f.Header().Type, stream: f.Header().StreamID, flags: f.Header().Flags}
	switch f := f.(type) {
	case *http2.DataFrame:
		e.data = bytes.Clone(f.Data())
	case *http2.MetaHeadersFrame:
		e.fields = append([]hpack.HeaderField(nil), f.Fields...)
	case *http2.PingFrame:
		e.data = f.Data[:]
	case *http2.RSTStreamFrame:
		e.code = f.ErrCode
	case *http2.GoAwayFrame:
		e.code, e.lastID, e.data = f.ErrCode, f.LastStreamID, bytes.Clone(f.DebugData())
	case *http2.SettingsFrame:
		if !f.IsAck() {
			_ = f.ForeachSetting(func(s http2.Setting) error {
				c.serverSettings[s.ID] = s.Val
				return nil
			})
		}
	}
	return e, nil
}

func (c *rawConn) next() frameEvent {
	c.t.Helper()
	e, err := c.nextOrErr()
	if err != nil {
		c.t.Fatalf("reading a frame from the server: %v", err)
	}
	return e
}

// readUntil reads frames until stop accepts one, and returns all of them.
func (c *rawConn) readUntil(stop func(frameEvent) bool) []frameEvent {
	c.t.Helper()
	var out []frameEvent
	for {
		e := c.next()
		out = append(out, e)
		if stop(e) {
			return out
		}
	}
}

// barrierPing is the PING payload expectGoAway watches for.
var barrierPing = [8]byte{'b', 'a', 'r', 'r', 'i', 'e', 'r', '!'}

// sendBarrier writes a PING after a frame that must end the connection. A server that
// handles the bad frame as a connection error never answers it; one that does not answers
// it, and expectGoAway fails at once instead of waiting for a timeout. The write error is
// ignored: the server may have closed already.
func (c *rawConn) sendBarrier() {
	_ = c.fr.WritePing(false, barrierPing)
}

// expectGoAway reads until GOAWAY, checks its code, then expects the server to close.
func (c *rawConn) expectGoAway(code http2.ErrCode) {
	c.t.Helper()
	for {
		e, err := c.nextOrErr()
		if err != nil {
			c.t.Fatalf("connection ended (%v) without GOAWAY", err)
		}
		if e.typ == http2.FramePing && [8]byte(e.data) == barrierPing {
			c.t.Fatal("server went on (answered the PING sent after the bad frame): no connection error")
		}
		if e.typ != http2.FrameGoAway {
			continue
		}
		if e.code != code {
			c.t.Fatalf("GOAWAY %v (%q), want %v", e.code, e.data, code)
		}
		break
	}
	c.expectClosed()
}

// expectClosed reads until the server closes the connection; a read timeout fails.
func (c *rawConn) expectClosed() {
	c.t.Helper()
	for {
		_, err := c.nextOrErr()
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.t.Fatal("server did not close the connection")
		}
		if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			c.t.Fatalf("connection ended with %v, want EOF or reset", err)
		}
		return
	}
}

// ping writes a PING and reads until its ack. The server handles frames in order and in
// one goroutine, so when the ack arrives, everything it was going to write in answer to
// the frames sent before the PING has arrived too: a barrier, not a timer.
func (c *rawConn) ping(data [8]byte) []frameEvent {
	c.t.Helper()
	c.check(c.fr.WritePing(false, data))
	return c.readUntil(func(e frameEvent) bool {
		return e.typ == http2.FramePing && e.flags.Has(http2.FlagPingAck) && [8]byte(e.data) == data
	})
}

func (c *rawConn) writeHeaders(id uint32, endStream bool, fields ...hpack.HeaderField) {
	c.t.Helper()
	c.hbuf.Reset()
	for _, f := range fields {
		c.check(c.henc.WriteField(f))
	}
	c.check(c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndStream: endStream, EndHeaders: true}))
}

// requestFields are the headers of a gRPC call; extra ones are appended.
func requestFields(method, path, contentType string, extra ...hpack.HeaderField) []hpack.HeaderField {
	return append([]hpack.HeaderField{
		{Name: ":method", Value: method},
		{Name: ":scheme", Value: "http"},
		{Name: ":path", Value: path},
		{Name: ":authority", Value: "test"},
		{Name: "content-type", Value: contentType},
		{Name: "te", Value: "trailers"},
	}, extra...)
}

func (c *rawConn) openCall(id uint32, path string, extra ...hpack.HeaderField) {
	c.t.Helper()
	c.writeHeaders(id, false, requestFields("POST", path, "application/grpc", extra...)...)
}

// grpcMessage is one length-prefixed gRPC message.
func grpcMessage(flag byte, payload []byte) []byte {
	out := []byte{flag, byte(len(payload) >> 24), byte(len(payload) >> 16), byte(len(payload) >> 8), byte(len(payload))}
	return append(out, payload...)
}

func marshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// splitMessages parses a stream of length-prefixed messages.
func splitMessages(t testing.TB, data []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(data) > 0 {
		if len(data) < 5 || data[0] != 0 {
			t.Fatalf("bad message prefix in %x", data[:min(len(data), 5)])
		}
		n := int(data[1])<<24 | int(data[2])<<16 | int(data[3])<<8 | int(data[4])
		if len(data) < 5+n {
			t.Fatalf("message of %d bytes cut at %d", n, len(data)-5)
		}
		out = append(out, data[5:5+n])
		data = data[5+n:]
	}
	return out
}

// streamResult gathers what the server sent on one stream.
type streamResult struct {
	headers [][]hpack.HeaderField
	data    []byte
	rst     *http2.ErrCode
}

func (r streamResult) trailer(name string) string {
	if len(r.headers) == 0 {
		return ""
	}
	for _, f := range r.headers[len(r.headers)-1] {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

// readStream reads until stream id ends (END_STREAM or RST_STREAM), answering PINGs.
func (c *rawConn) readStream(id uint32) streamResult {
	c.t.Helper()
	var r streamResult
	for {
		e := c.next()
		if e.typ == http2.FrameGoAway {
			c.t.Fatalf("GOAWAY %v (%q) while reading stream %d", e.code, e.data, id)
		}
		if e.stream != id {
			continue
		}
		switch e.typ {
		case http2.FrameHeaders:
			r.headers = append(r.headers, e.fields)
		case http2.FrameData:
			r.data = append(r.data, e.data...)
		case http2.FrameRSTStream:
			code := e.code
			r.rst = &code
			return r
		}
		if e.endStream() {
			return r
		}
	}
}

func (c *rawConn) writeRequestMessage(id uint32, m proto.Message, endStream bool) {
	c.t.Helper()
	c.check(c.fr.WriteData(id, endStream, grpcMessage(0, marshal(c.t, m))))
}

func grpcStatus(t testing.TB, r streamResult) int {
	t.Helper()
	s := r.trailer("grpc-status")
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("grpc-status %q in %v", s, r.headers)
	}
	return n
}
