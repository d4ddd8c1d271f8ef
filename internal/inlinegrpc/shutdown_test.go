package inlinegrpc

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// openBidi opens a FullDuplexCall and proves it works with one echo, so the server holds the
// stream before the test goes on.
func openBidi(t *testing.T, client testgrpc.TestServiceClient) testgrpc.TestService_FullDuplexCallClient {
	t.Helper()
	stream, err := client.FullDuplexCall(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	echo(t, stream, 0)
	return stream
}

func echo(t *testing.T, stream testgrpc.TestService_FullDuplexCallClient, seed uint32) {
	t.Helper()
	body := pattern(seed, 64)
	if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: body}}); err != nil {
		t.Fatalf("send: %v", err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("recv: %v", err)
	}
	if !bytes.Equal(resp.GetPayload().GetBody(), body) {
		t.Fatal("echo differs")
	}
}

// TestShutdownDrains: during Shutdown an open stream keeps working, new calls fail, and
// Shutdown returns when the stream ends.
func TestShutdownDrains(t *testing.T) {
	ts := startServer(t, Options{})
	_, client := dial(t, ts.addr)
	stream := openBidi(t, client)
	conns := serverConns(ts.srv)
	if len(conns) != 1 {
		t.Fatalf("server has %d connections, want 1", len(conns))
	}

	shutdown := make(chan error, 1)
	go func() { shutdown <- ts.srv.Shutdown(testCtx(t)) }()
	waitFor(t, "GOAWAY sent", func() bool {
		var sent bool
		withConnLock(conns[0], func() { sent = conns[0].goAwaySent })
		return sent
	})

	// The open stream still works after GOAWAY...
	for i := range 5 {
		echo(t, stream, uint32(i+1))
	}
	// ...and holds Shutdown. (A check that cannot fail falsely: an early return is a bug.)
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned %v while a stream was open", err)
	default:
	}

	// New calls fail: on this client (its connection is draining and the listener is
	// closed) as on a new one.
	if _, err := client.UnaryCall(testCtx(t), &testgrpc.SimpleRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("new call during Shutdown: %v, want Unavailable", err)
	}
	_, fresh := dial(t, ts.addr)
	if _, err := fresh.UnaryCall(testCtx(t), &testgrpc.SimpleRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("call from a new client during Shutdown: %v, want Unavailable", err)
	}

	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatalf("end of the draining stream: %v, want io.EOF (a clean OK status)", err)
	}
	select {
	case err := <-shutdown:
		if err != nil {
			t.Errorf("Shutdown: %v, want nil", err)
		}
	case <-timeAfterBound():
		t.Fatal("Shutdown did not return after the last stream ended")
	}
	if err := ts.waitServe(); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve: %v, want ErrServerClosed", err)
	}
	h := ts.svc.waitClosed(t) // the only stream that reached a handler
	if h.closeErr != nil {
		t.Errorf("drained stream's handler Close(%v), want nil", h.closeErr)
	}
	if n := connCount(ts.srv); n != 0 {
		t.Errorf("%d connections left after Shutdown", n)
	}
}

// TestShutdownExpiredContext: with a context already done, Shutdown closes what is open and
// reports the context's error.
func TestShutdownExpiredContext(t *testing.T) {
	ts := startServer(t, Options{})
	_, client := dial(t, ts.addr)
	stream := openBidi(t, client)

	ctx, cancel := context.WithCancel(testCtx(t))
	cancel()
	shutdown := make(chan error, 1)
	go func() { shutdown <- ts.srv.Shutdown(ctx) }()
	select {
	case err := <-shutdown:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Shutdown: %v, want context.Canceled", err)
		}
	case <-timeAfterBound():
		t.Fatal("Shutdown with a done context did not return")
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("Recv on a stream cut by Shutdown: %v, want Unavailable", err)
	}
	if h := ts.svc.waitClosed(t); h.closeErr == nil {
		t.Error("handler of a cut stream got Close(nil), want an error")
	}
	if n := connCount(ts.srv); n != 0 {
		t.Errorf("%d connections left after Shutdown", n)
	}
	if err := ts.waitServe(); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve: %v, want ErrServerClosed", err)
	}
}

// TestClose ends open streams at once with an error on both sides.
func TestClose(t *testing.T) {
	ts := startServer(t, Options{})
	_, client := dial(t, ts.addr)
	stream := openBidi(t, client)

	closeBounded(t, ts.srv)
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("Recv on a stream cut by Close: %v, want Unavailable", err)
	}
	h := ts.svc.waitClosed(t)
	if h.closeErr == nil {
		t.Error("handler of a cut stream got Close(nil), want an error")
	}
	if err := ts.waitServe(); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve: %v, want ErrServerClosed", err)
	}
	// Serve on a closed server refuses at once.
	lis := newChanListener()
	if err := ts.srv.Serve(lis); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve after Close: %v, want ErrServerClosed", err)
	}
	if !lis.isClosed() {
		t.Error("Serve after Close did not close its listener")
	}
	if n := h.closes.Load(); n != 1 {
		t.Errorf("handler Close called %d times, want 1", n)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	methods := newTestService().methods()
	cases := map[string]Options{
		"no methods":              {},
		"negative message limit":  {Methods: methods, MaxRecvMsgBytes: -1},
		"negative write timeout":  {Methods: methods, WriteTimeout: -1},
		"stream window too small": {Methods: methods, StreamWindow: initialWindow - 1},
		"conn window too small":   {Methods: methods, ConnWindow: 1000},
	}
	for name, opts := range cases {
		if _, err := New(opts); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
	if _, err := New(Options{Methods: methods}); err != nil {
		t.Errorf("defaults: %v", err)
	}
}
