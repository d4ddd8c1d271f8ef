package extproc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/infergw/infergw/discovery"
	"github.com/infergw/infergw/internal/testpki"
	"github.com/infergw/infergw/router"
)

// TestServeHealthReadinessAndPoolRemoval runs Serve on real listeners: gRPC health and
// /readyz report not ready until the first snapshot; a later snapshot without a pool
// removes it from the router; cancelling the context stops everything.
func TestServeHealthReadinessAndPoolRemoval(t *testing.T) {
	reg := prometheus.NewRegistry()
	r, err := router.New(router.DefaultConfig(), nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	srv, err := NewServer(r, Options{Registerer: reg}, nil)
	if err != nil {
		t.Fatal(err)
	}
	gl, _ := net.Listen("tcp", "127.0.0.1:0")
	ml, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, gl, ml, nil, reg) }()

	conn, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	check := func(service string) healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("health %q: %v", service, err)
		}
		return resp.GetStatus()
	}
	readyz := func() int {
		t.Helper()
		resp, err := http.Get("http://" + ml.Addr().String() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if check(HealthLiveness) != healthpb.HealthCheckResponse_SERVING ||
		check(HealthReadiness) != healthpb.HealthCheckResponse_NOT_SERVING ||
		check(HealthExtProc) != healthpb.HealthCheckResponse_NOT_SERVING || readyz() != 503 {
		t.Fatal("not-ready state wrong")
	}
	// Watch (server streaming) sees the readiness flip as it happens, and ends with the
	// server: Serve's shutdown sets every service NOT_SERVING before it closes.
	watch, err := hc.Watch(context.Background(), &healthpb.HealthCheckRequest{Service: HealthReadiness})
	if err != nil {
		t.Fatal(err)
	}
	watched := func() healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		resp, err := watch.Recv()
		if err != nil {
			t.Fatalf("health watch: %v", err)
		}
		return resp.GetStatus()
	}
	if got := watched(); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("watch first said %v", got)
	}
	srv.ApplySnapshot(&discovery.Snapshot{Version: 1, Pools: []*discovery.Pool{
		testPool("ns", "a", 8000, nil), testPool("ns", "b", 8000, nil)}})
	if got := watched(); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch after the snapshot said %v", got)
	}
	if check(HealthReadiness) != healthpb.HealthCheckResponse_SERVING ||
		check(HealthExtProc) != healthpb.HealthCheckResponse_SERVING || readyz() != 200 {
		t.Fatal("ready state wrong")
	}
	if got := r.Pools(); !slices.Equal(got, []string{"ns/a", "ns/b"}) {
		t.Fatalf("router pools %v", got)
	}
	srv.ApplySnapshot(&discovery.Snapshot{Version: 2, Pools: []*discovery.Pool{testPool("ns", "b", 8000, nil)}})
	if got := r.Pools(); !slices.Equal(got, []string{"ns/b"}) {
		t.Fatalf("pool not removed: %v", got)
	}
	cancel()
	if got := watched(); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("watch during shutdown said %v", got)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	if _, err := watch.Recv(); err == nil {
		t.Fatal("watch stream still open after Serve returned")
	}
}

// writeCert writes a server certificate for 127.0.0.1 named cn, from a new test CA, and
// its key to the files (the test reads which certificate is served, not whom it trusts).
func writeCert(t *testing.T, certFile, keyFile, cn string) {
	t.Helper()
	certPEM, keyPEM := testpki.NewCA(t, cn+" CA").Issue(t, cn, []string{"127.0.0.1"}, x509.ExtKeyUsageServerAuth)
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestTLSReload serves gRPC over TLS, rotates the certificate files and checks that a new
// connection sees the new certificate, and that a broken rotation keeps the old one.
func TestTLSReload(t *testing.T) { forEachTransport(t, testTLSReload) }

func testTLSReload(t *testing.T, tr Transport) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeCert(t, certFile, keyFile, "first")
	cfg, err := TLSConfig(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(noopRouter{}, Options{Transport: tr}, nil)
	if err != nil {
		t.Fatal(err)
	}
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	g, err := srv.NewGRPCServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	defer g.Close()

	peerCN := func() string {
		t.Helper()
		var cn string
		creds := credentials.NewTLS(&tls.Config{
			InsecureSkipVerify: true, // the test checks which certificate is served, not trust
			VerifyConnection: func(cs tls.ConnectionState) error {
				cn = cs.PeerCertificates[0].Subject.CommonName
				return nil
			},
		})
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: HealthLiveness}); err != nil {
			t.Fatalf("health over TLS: %v", err)
		}
		return cn
	}
	if cn := peerCN(); cn != "first" {
		t.Fatalf("served %q", cn)
	}
	time.Sleep(10 * time.Millisecond) // a distinct modification time
	writeCert(t, certFile, keyFile, "second")
	if cn := peerCN(); cn != "second" {
		t.Fatalf("after rotation served %q", cn)
	}
	if err := os.WriteFile(keyFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cn := peerCN(); cn != "second" {
		t.Fatalf("after a broken rotation served %q", cn)
	}
}

// noopRouter stands in where no pick happens (TLS test): a fake, since the test is about
// the transport, not routing.
type noopRouter struct{}

func (noopRouter) SetPool(string, []router.EndpointSpec)          {}
func (noopRouter) RemovePool(string)                              {}
func (noopRouter) Pick(*router.Request) (*router.Decision, error) { return nil, router.ErrUnknownPool }
func (noopRouter) ServesModel(string, string) bool                { return true }
