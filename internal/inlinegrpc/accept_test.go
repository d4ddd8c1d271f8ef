package inlinegrpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// flakyListener fails its first Accept calls with err, then accepts for real. Exhausting
// the process's descriptors for real would starve the test binary itself, so the error
// is injected; the connections after it are real.
type flakyListener struct {
	net.Listener
	failures int
	err      error
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.failures > 0 {
		l.failures--
		return nil, l.err
	}
	return l.Listener.Accept()
}

// TestServeSurvivesTemporaryAcceptErrors: out of descriptors (EMFILE) is waited out, not a
// reason to stop serving; a listener error that does not pass ends Serve with it.
func TestServeSurvivesTemporaryAcceptErrors(t *testing.T) {
	svc := newTestService()
	srv, err := New(Options{Methods: svc.methods()})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: fmt.Errorf("accept4: %w", syscall.EMFILE)}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(&flakyListener{Listener: lis, failures: 3, err: emfile}) }()
	defer func() {
		srv.Close()
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	}()
	_, client := dial(t, lis.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
		t.Fatalf("call after EMFILE from Accept: %v", err)
	}

	srv2, err := New(Options{Methods: svc.methods()})
	if err != nil {
		t.Fatal(err)
	}
	lis2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	broken := errors.New("listener broke")
	if err := srv2.Serve(&flakyListener{Listener: lis2, failures: 1, err: broken}); !errors.Is(err, broken) {
		t.Fatalf("Serve on a broken listener returned %v, want the listener's error", err)
	}
}
