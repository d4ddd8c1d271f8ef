package inlinegrpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// These tests drive the server with grpc-go's real client over TCP on 127.0.0.1.

func TestUnaryCall(t *testing.T) {
	ts := startServer(t, Options{})
	_, client := dial(t, ts.addr)
	ctx := metadata.AppendToOutgoingContext(testCtx(t), "x-test-user", "alice")
	resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("hello")}})
	if err != nil {
		t.Fatalf("UnaryCall: %v", err)
	}
	if got := string(resp.GetPayload().GetBody()); got != "hello" {
		t.Errorf("payload %q, want %q", got, "hello")
	}
	if resp.GetUsername() != "alice" {
		t.Errorf("Stream.Header(x-test-user) = %q, want alice", resp.GetUsername())
	}
	if resp.GetServerId() != methodUnary {
		t.Errorf("Stream.Method() = %q, want %q", resp.GetServerId(), methodUnary)
	}
	h := ts.svc.waitClosed(t)
	if h.closeErr != nil || h.messages != 1 || h.halfCloses != 1 {
		t.Errorf("handler saw messages=%d halfCloses=%d closeErr=%v, want 1, 1, nil", h.messages, h.halfCloses, h.closeErr)
	}
}

// TestBidiManyMessages pipelines many messages each way on one stream: the client sends
// them all without waiting, so the server reads batches of frames and answers each batch
// with one write.
func TestBidiManyMessages(t *testing.T) {
	ts := startServer(t, Options{})
	_, client := dial(t, ts.addr)
	const n = 1000
	stream, err := client.FullDuplexCall(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	sendErr := make(chan error, 1)
	go func() {
		for i := range n {
			body := pattern(uint32(i), i%300)
			if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: body}}); err != nil {
				sendErr <- fmt.Errorf("send %d: %w", i, err)
				return
			}
		}
		sendErr <- stream.CloseSend()
	}()
	for i := range n {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("recv %d: %v", i, err)
		}
		if want := pattern(uint32(i), i%300); !bytes.Equal(resp.GetPayload().GetBody(), want) {
			t.Fatalf("message %d: got %d bytes, want the %d sent", i, len(resp.GetPayload().GetBody()), len(want))
		}
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatalf("after the last message: %v, want io.EOF", err)
	}
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
	if h := ts.svc.waitClosed(t); h.messages != n || h.closeErr != nil {
		t.Errorf("handler saw %d messages, closeErr %v; want %d, nil", h.messages, h.closeErr, n)
	}
}

// TestPayloadSizes moves messages from empty to 3 MiB both ways. 16 KiB+ crosses HTTP/2's
// 16 KiB frame size; 200 KiB and 3 MiB exceed 64 KiB windows, so a sender has to stop and
// resume on WINDOW_UPDATE. "default" uses grpc-go's default client (64 KiB initial windows,
// grown by BDP estimation) against the server's default windows. "smallWindows" pins the
// client's windows at 64 KiB (which turns BDP off) so the server's send side stops on every
// window, and gives the server the smallest legal receive windows, so grpc-go's send side
// waits for the server's WINDOW_UPDATEs.
func TestPayloadSizes(t *testing.T) {
	sizes := []int{0, 1, 16 << 10, 200 << 10, 3 << 20}
	configs := []struct {
		name string
		opts Options
		dial []grpc.DialOption
	}{
		{name: "default"},
		{
			name: "smallWindows",
			opts: Options{StreamWindow: initialWindow, ConnWindow: initialWindow},
			dial: []grpc.DialOption{grpc.WithInitialWindowSize(initialWindow), grpc.WithInitialConnWindowSize(initialWindow)},
		},
	}
	for _, cfg := range configs {
		t.Run(cfg.name, func(t *testing.T) {
			ts := startServer(t, cfg.opts)
			_, client := dial(t, ts.addr, cfg.dial...)
			for _, size := range sizes {
				t.Run("unary/"+sizeName(size), func(t *testing.T) {
					body := pattern(uint32(size), size)
					resp, err := client.UnaryCall(testCtx(t), &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: body}})
					if err != nil {
						t.Fatalf("UnaryCall: %v", err)
					}
					if !bytes.Equal(resp.GetPayload().GetBody(), body) {
						t.Fatalf("echo of %d bytes came back as %d different bytes", size, len(resp.GetPayload().GetBody()))
					}
				})
				t.Run("bidi/"+sizeName(size), func(t *testing.T) {
					stream, err := client.FullDuplexCall(testCtx(t))
					if err != nil {
						t.Fatal(err)
					}
					for i := range 3 {
						body := pattern(uint32(size+i), size)
						if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: body}}); err != nil {
							t.Fatalf("send %d: %v", i, err)
						}
						resp, err := stream.Recv()
						if err != nil {
							t.Fatalf("recv %d: %v", i, err)
						}
						if !bytes.Equal(resp.GetPayload().GetBody(), body) {
							t.Fatalf("message %d: echo differs", i)
						}
					}
					if err := stream.CloseSend(); err != nil {
						t.Fatal(err)
					}
					if _, err := stream.Recv(); err != io.EOF {
						t.Fatalf("end of stream: %v, want io.EOF", err)
					}
				})
			}
			// One request, every size in one response stream: the server queues what the
			// window refuses, and its status (sent on the client's half-close) must wait
			// behind that queue.
			t.Run("serverStreaming", func(t *testing.T) {
				req := &testgrpc.StreamingOutputCallRequest{}
				for _, size := range sizes {
					req.ResponseParameters = append(req.ResponseParameters, &testgrpc.ResponseParameters{Size: int32(size)})
				}
				stream, err := client.StreamingOutputCall(testCtx(t), req)
				if err != nil {
					t.Fatal(err)
				}
				for i, size := range sizes {
					resp, err := stream.Recv()
					if err != nil {
						t.Fatalf("recv %d: %v", i, err)
					}
					if !bytes.Equal(resp.GetPayload().GetBody(), pattern(uint32(i), size)) {
						t.Fatalf("response %d (%d bytes): content differs", i, size)
					}
				}
				if _, err := stream.Recv(); err != io.EOF {
					t.Fatalf("end of stream: %v, want io.EOF", err)
				}
			})
			if n := ts.accepts.Load(); n != 1 {
				t.Errorf("server accepted %d connections, want 1", n)
			}
		})
	}
}

// TestConcurrentStreams runs 100 bidi streams at once on one connection; every message's
// content is unique to its stream and position, so crossed streams are detected.
func TestConcurrentStreams(t *testing.T) {
	ts := startServer(t, Options{})
	_, client := dial(t, ts.addr)
	const streams, messages = 100, 20
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	start := make(chan struct{})
	ctx := testCtx(t)
	for s := range streams {
		wg.Go(func() {
			<-start
			stream, err := client.FullDuplexCall(ctx)
			if err != nil {
				errs <- fmt.Errorf("stream %d: %w", s, err)
				return
			}
			for m := range messages {
				size := (s*131 + m*977) % 5000
				if m == messages/2 {
					size = 70 << 10 // one message per stream above a 64 KiB window
				}
				body := pattern(uint32(s*messages+m), size)
				if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: body}}); err != nil {
					errs <- fmt.Errorf("stream %d send %d: %w", s, m, err)
					return
				}
				resp, err := stream.Recv()
				if err != nil {
					errs <- fmt.Errorf("stream %d recv %d: %w", s, m, err)
					return
				}
				if !bytes.Equal(resp.GetPayload().GetBody(), body) {
					errs <- fmt.Errorf("stream %d message %d: content of another message", s, m)
					return
				}
			}
			if err := stream.CloseSend(); err != nil {
				errs <- err
				return
			}
			if _, err := stream.Recv(); err != io.EOF {
				errs <- fmt.Errorf("stream %d end: %v, want io.EOF", s, err)
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := ts.accepts.Load(); n != 1 {
		t.Errorf("server accepted %d connections, want 1 for all streams", n)
	}
}

func TestUnknownMethod(t *testing.T) {
	ts := startServer(t, Options{})
	_, client := dial(t, ts.addr)
	_, err := client.UnimplementedCall(testCtx(t), &testgrpc.Empty{})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("UnimplementedCall: %v, want code Unimplemented", err)
	}
	// The connection still serves known methods.
	if _, err := client.UnaryCall(testCtx(t), &testgrpc.SimpleRequest{}); err != nil {
		t.Fatalf("UnaryCall after an unknown method: %v", err)
	}
}

// TestMessageTooLarge: a request above MaxRecvMsgBytes fails that call alone; the same
// connection serves the next one.
func TestMessageTooLarge(t *testing.T) {
	const limit = 1024
	ts := startServer(t, Options{MaxRecvMsgBytes: limit})
	_, client := dial(t, ts.addr)
	// 100 KiB spans several DATA frames: the server must skip the rest of the message.
	big := &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: pattern(1, 100<<10)}}
	_, err := client.UnaryCall(testCtx(t), big)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("oversized UnaryCall: %v, want ResourceExhausted", err)
	}
	h := ts.svc.waitClosed(t)
	if h.messages != 0 {
		t.Errorf("handler got %d messages of an oversized request, want 0", h.messages)
	}
	stream, err := client.FullDuplexCall(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: pattern(2, 2*limit)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("oversized stream message: %v, want ResourceExhausted", err)
	}
	small := &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: pattern(3, limit/2)}}
	resp, err := client.UnaryCall(testCtx(t), small)
	if err != nil {
		t.Fatalf("UnaryCall after the oversized ones: %v", err)
	}
	if !bytes.Equal(resp.GetPayload().GetBody(), small.GetPayload().GetBody()) {
		t.Fatal("echo differs")
	}
	if n := ts.accepts.Load(); n != 1 {
		t.Errorf("server accepted %d connections, want the first one reused", n)
	}
}

// TestStatusRoundTrip: the code and message a handler finishes with reach grpc-go's client
// unchanged, including bytes that grpc-message must percent-encode. The message is sent
// both as a trailers-only answer (unary, nothing sent before) and as trailers after a
// response message (bidi).
func TestStatusRoundTrip(t *testing.T) {
	ts := startServer(t, Options{})
	_, client := dial(t, ts.addr)
	cases := []struct {
		code codes.Code
		msg  string
	}{
		{codes.NotFound, "plain ascii message"},
		{codes.FailedPrecondition, "ünïcödé — 模型 🚀"},
		{codes.Aborted, "100% done, %41 is not A, %%, %zz, trailing %"},
		{codes.DataLoss, "line one\nline two\r\n\ttabbed\x7f"},
		{codes.Unauthenticated, "über 50%\nnext"},
		{codes.Internal, ""},
	}
	for _, c := range cases {
		t.Run(c.code.String(), func(t *testing.T) {
			rs := &testgrpc.EchoStatus{Code: int32(c.code), Message: c.msg}
			_, err := client.UnaryCall(testCtx(t), &testgrpc.SimpleRequest{ResponseStatus: rs})
			checkStatus(t, "unary", err, c.code, c.msg)

			stream, err := client.FullDuplexCall(testCtx(t))
			if err != nil {
				t.Fatal(err)
			}
			if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("x")}}); err != nil {
				t.Fatal(err)
			}
			if _, err := stream.Recv(); err != nil {
				t.Fatal(err)
			}
			if err := stream.Send(&testgrpc.StreamingOutputCallRequest{ResponseStatus: rs}); err != nil {
				t.Fatal(err)
			}
			_, err = stream.Recv()
			checkStatus(t, "bidi", err, c.code, c.msg)
		})
	}
}

func checkStatus(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("%s: %v is not a gRPC status", what, err)
	}
	if st.Code() != code || st.Message() != msg {
		t.Errorf("%s: got %v %q, want %v %q", what, st.Code(), st.Message(), code, msg)
	}
}

// TestClientCancel: a client cancelling mid-stream (RST_STREAM CANCEL) ends the handler
// with an error, once, and leaves no goroutine behind on either side.
func TestClientCancel(t *testing.T) {
	before := runtime.NumGoroutine()
	ts := startServer(t, Options{})
	cc, client := dial(t, ts.addr)
	// Warm up: the connection and its goroutines exist before the baseline below.
	if _, err := client.UnaryCall(testCtx(t), &testgrpc.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	ts.svc.waitClosed(t)
	idle := runtime.NumGoroutine()

	var handlers []*testHandler
	for i := range 20 {
		ctx, cancel := context.WithCancel(testCtx(t))
		stream, err := client.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		body := pattern(uint32(i), 100)
		if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: body}}); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		cancel()
		if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
			t.Fatalf("Recv after cancel: %v, want Canceled", err)
		}
		h := ts.svc.waitClosed(t)
		var reset streamResetError
		if !errors.As(h.closeErr, &reset) {
			t.Fatalf("handler Close(%v), want a stream-reset error", h.closeErr)
		}
		handlers = append(handlers, h)
	}
	// A stream costs the server no goroutine; the client's per-stream ones end on cancel.
	waitGoroutines(t, idle)

	// Closing everything would call Close again on any stream the server still held.
	cc.Close()
	closeBounded(t, ts.srv)
	for i, h := range handlers {
		if n := h.closes.Load(); n != 1 {
			t.Errorf("stream %d: handler Close called %d times, want 1", i, n)
		}
	}
	if err := ts.waitServe(); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve: %v, want ErrServerClosed", err)
	}
	waitGoroutines(t, before)
}
