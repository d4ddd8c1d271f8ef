package inlinegrpc

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/proto"
)

// fuzzIOBound caps each fuzz input's I/O. The server reads whatever is written at once and
// never waits for anything but input, so an input that hits it has hung the connection.
const fuzzIOBound = 5 * time.Second

// fuzzBarrier is the PING that closes every seed; when the input still ends with it on a
// frame boundary, the server must answer it (or have hung up) before the input is done.
var fuzzBarrier = [8]byte{'f', 'u', 'z', 'z', 'e', 'n', 'd', '!'}

// FuzzConn feeds arbitrary bytes after the client preface into one server connection and
// checks that it neither panics nor hangs: it answers or hangs up, its goroutine ends once
// the client has gone, and every handler it started was closed exactly once.
func FuzzConn(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		svc := newTestService()
		srv, err := New(Options{Methods: svc.methods(), MaxRecvMsgBytes: 64 << 10, MaxConcurrentStreams: 16})
		if err != nil {
			t.Fatal(err)
		}
		lis := newChanListener()
		served := make(chan error, 1)
		go func() { served <- srv.Serve(lis) }()
		defer func() {
			srv.Close()
			if err := <-served; !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve: %v", err)
			}
		}()

		client, server := net.Pipe()
		lis.conns <- server
		if err := client.SetDeadline(time.Now().Add(fuzzIOBound)); err != nil {
			t.Fatal(err)
		}
		// Drain the server's output (net.Pipe has no buffer: an unread pipe would stall
		// the server), watching for the barrier's ack.
		acked := make(chan struct{})
		drained := make(chan error, 1)
		go func() { drained <- drainFrames(client, acked) }()

		_, err = client.Write(append([]byte(http2.ClientPreface), input...))
		if isTimeout(err) {
			t.Fatal("server stopped reading input without closing the connection")
		}
		if endsWithBarrier(input) {
			// Everything before the barrier is complete frames, so the server must either
			// answer it or end the connection.
			select {
			case <-acked:
			case err := <-drained:
				if isTimeout(err) {
					t.Fatal("server neither answered the final PING nor closed the connection")
				}
				drained <- err
			}
		}
		client.Close()
		if err := <-drained; isTimeout(err) {
			t.Fatal("server output did not end after the client closed")
		}
		deadline := time.Now().Add(fuzzIOBound)
		for connCount(srv) != 0 {
			if time.Now().After(deadline) {
				t.Fatal("connection goroutine still running after the client closed")
			}
			time.Sleep(time.Millisecond)
		}
		// Every stream that got a handler ended, and told it exactly once.
		if started, closes := svc.started.Load(), svc.closes.Load(); started != closes {
			t.Fatalf("%d handlers started, %d Close calls", started, closes)
		}
	})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// drainFrames reads the server's frames until the connection ends, closing acked when the
// barrier PING comes back. Once the output stops parsing as frames it reads raw bytes.
func drainFrames(r io.Reader, acked chan struct{}) error {
	fr := http2.NewFramer(io.Discard, r)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.SetMaxReadFrameSize(1<<24 - 1)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				continue
			}
			_, err2 := io.Copy(io.Discard, r)
			if isTimeout(err) || isTimeout(err2) {
				return errors.Join(err, err2)
			}
			return nil
		}
		if p, ok := f.(*http2.PingFrame); ok && p.IsAck() && p.Data == fuzzBarrier && acked != nil {
			close(acked)
			acked = nil
		}
	}
}

// endsWithBarrier reports whether input parses as whole frames ending with the barrier PING.
func endsWithBarrier(input []byte) bool {
	const barrierLen = 9 + 8
	if len(input) < barrierLen {
		return false
	}
	for off := 0; ; {
		if off == len(input)-barrierLen {
			b := input[off:]
			return b[0] == 0 && b[1] == 0 && b[2] == 8 && b[3] == byte(http2.FramePing) && b[4] == 0 &&
				b[5]|b[6]|b[7]|b[8] == 0 && [8]byte(b[9:]) == fuzzBarrier
		}
		if len(input)-off < 9 {
			return false
		}
		off += 9 + (int(input[off])<<16 | int(input[off+1])<<8 | int(input[off+2]))
		if off > len(input)-barrierLen {
			return false
		}
	}
}

// fuzzSeeds are valid conversations built with the frame codec, each ending with the
// barrier PING.
func fuzzSeeds(tb testing.TB) [][]byte {
	var seeds [][]byte
	build := func(write func(fr *http2.Framer, enc *hpack.Encoder, hbuf *bytes.Buffer)) {
		var out, hbuf bytes.Buffer
		fr := http2.NewFramer(&out, nil)
		enc := hpack.NewEncoder(&hbuf)
		if err := fr.WriteSettings(); err != nil {
			tb.Fatal(err)
		}
		write(fr, enc, &hbuf)
		if err := fr.WritePing(false, fuzzBarrier); err != nil {
			tb.Fatal(err)
		}
		seeds = append(seeds, out.Bytes())
	}
	headers := func(fr *http2.Framer, enc *hpack.Encoder, hbuf *bytes.Buffer, id uint32, path string, end bool) {
		hbuf.Reset()
		for _, f := range requestFields("POST", path, "application/grpc") {
			_ = enc.WriteField(f)
		}
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndStream: end, EndHeaders: true})
	}
	msg := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			tb.Fatal(err)
		}
		return grpcMessage(0, b)
	}

	// A unary call.
	build(func(fr *http2.Framer, enc *hpack.Encoder, hbuf *bytes.Buffer) {
		_ = fr.WriteSettingsAck()
		headers(fr, enc, hbuf, 1, methodUnary, false)
		_ = fr.WriteData(1, true, msg(&testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("hello")}}))
	})
	// A bidi stream with two messages, one split across frames, a window update and a
	// client reset.
	build(func(fr *http2.Framer, enc *hpack.Encoder, hbuf *bytes.Buffer) {
		headers(fr, enc, hbuf, 1, methodBidi, false)
		m := msg(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("split me")}})
		_ = fr.WriteData(1, false, m[:3])
		_ = fr.WriteData(1, false, m[3:])
		_ = fr.WriteWindowUpdate(0, 1000)
		_ = fr.WriteWindowUpdate(1, 1000)
		_ = fr.WriteData(1, false, msg(&testgrpc.StreamingOutputCallRequest{}))
		_ = fr.WriteRSTStream(1, http2.ErrCodeCancel)
	})
	// Zero window, a server-streaming call that must wait, then the window opens; padded
	// DATA; a status request; an unknown method; GOAWAY.
	build(func(fr *http2.Framer, enc *hpack.Encoder, hbuf *bytes.Buffer) {
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}, http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0})
		headers(fr, enc, hbuf, 1, methodServerStream, false)
		_ = fr.WriteDataPadded(1, true, msg(&testgrpc.StreamingOutputCallRequest{
			ResponseParameters: []*testgrpc.ResponseParameters{{Size: 10}, {Size: 20000}},
		}), make([]byte, 7))
		headers(fr, enc, hbuf, 3, methodUnary, false)
		_ = fr.WriteData(3, true, msg(&testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: 3, Message: "bad\n%"}}))
		headers(fr, enc, hbuf, 5, "/no.Such/Method", true)
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
		_ = fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	})
	// HEADERS split into CONTINUATION frames, PRIORITY, a compressed message.
	build(func(fr *http2.Framer, enc *hpack.Encoder, hbuf *bytes.Buffer) {
		hbuf.Reset()
		for _, f := range requestFields("POST", methodBidi, "application/grpc", hpack.HeaderField{Name: "x-meta", Value: "v"}) {
			_ = enc.WriteField(f)
		}
		block := hbuf.Bytes()
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:4]})
		_ = fr.WriteContinuation(1, false, block[4:10])
		_ = fr.WriteContinuation(1, true, block[10:])
		_ = fr.WritePriority(1, http2.PriorityParam{StreamDep: 0, Weight: 10})
		_ = fr.WriteData(1, false, grpcMessage(1, []byte("zz")))
		_ = fr.WritePing(false, [8]byte{1})
	})
	return seeds
}

// TestFuzzSeedsAreWellFormed keeps the barrier logic honest: every seed ends with it.
func TestFuzzSeedsAreWellFormed(t *testing.T) {
	for i, s := range fuzzSeeds(t) {
		if !endsWithBarrier(s) {
			t.Errorf("seed %d does not parse as frames ending with the barrier PING", i)
		}
	}
	if endsWithBarrier(append(fuzzSeeds(t)[0], 0)) {
		t.Error("a trailing byte after the barrier was not noticed")
	}
}
