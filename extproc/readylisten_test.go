package extproc

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/infergw/infergw/discovery"
	"github.com/infergw/infergw/router"
)

// TestListenWhenReady: on both transports, the gRPC port refuses connections until the
// first snapshot is applied (while /readyz already answers 503), then serves; closing the
// listener before readiness ends Serve cleanly.
func TestListenWhenReady(t *testing.T) { forEachTransport(t, testListenWhenReady) }

func testListenWhenReady(t *testing.T, tr Transport) {
	reg := prometheus.NewRegistry()
	r, err := router.New(router.DefaultConfig(), nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	srv, err := NewServer(r, Options{Registerer: reg, Transport: tr}, nil)
	if err != nil {
		t.Fatal(err)
	}
	probe, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := probe.Addr().String()
	probe.Close()
	ml, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, srv.ListenWhenReady("tcp", addr), ml, nil, reg) }()

	// Not ready: the metrics port answers, the gRPC port refuses.
	resp, err := http.Get("http://" + ml.Addr().String() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("/readyz before the first snapshot = %d", resp.StatusCode)
	}
	for i := 0; i < 5; i++ {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Fatal("the gRPC port accepted a connection before the picker was ready")
		}
		time.Sleep(20 * time.Millisecond)
	}

	srv.ApplySnapshot(&discovery.Snapshot{Version: 1})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hctx, hcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer hcancel()
	// WaitForReady: the listener opens asynchronously, once Accept sees readiness.
	hr, err := healthpb.NewHealthClient(conn).Check(hctx, &healthpb.HealthCheckRequest{Service: HealthExtProc}, grpc.WaitForReady(true))
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("after the first snapshot: %v %v", hr.GetStatus(), err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return")
	}
}

// TestListenWhenReadyClosedBeforeReady: Close unblocks a pending Accept and nothing ever
// listens.
func TestListenWhenReadyClosedBeforeReady(t *testing.T) {
	r, err := router.New(router.DefaultConfig(), nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	srv, err := NewServer(r, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := srv.ListenWhenReady("tcp", "127.0.0.1:0")
	accepted := make(chan error, 1)
	go func() { _, err := l.Accept(); accepted <- err }()
	time.Sleep(20 * time.Millisecond)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-accepted:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still blocked after Close")
	}
	srv.ApplySnapshot(&discovery.Snapshot{Version: 1})
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close and readiness: %v", err)
	}
}
