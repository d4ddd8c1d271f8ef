package xds

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

func TestUpdateVersionsOnlyGoUpAndBadInputKeepsLastGood(t *testing.T) {
	srv, err := NewServer(ServerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	select {
	case <-srv.Ready():
		t.Fatal("ready before the first snapshot")
	default:
	}
	if _, err := srv.Update(ctx, onePool()); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Update(ctx, twoPoolsWeighted()); err != nil {
		t.Fatal(err)
	}
	if v := srv.Version(); v != 2 {
		t.Fatalf("version = %d, want 2", v)
	}
	<-srv.Ready()
	// A nil snapshot (or any untranslatable one) fails and changes nothing.
	if _, err := srv.Update(ctx, nil); err == nil {
		t.Fatal("Update(nil): no error")
	}
	if v := srv.Version(); v != 2 {
		t.Fatalf("version after a failed update = %d, want 2", v)
	}
	if len(srv.Current().Clusters) != 3 {
		t.Errorf("current resources changed after a failed update")
	}
}

// adsClient is a real gRPC ADS client that behaves like Envoy: it requests a type, and ACKs
// or NACKs each response.
type adsClient struct {
	t      *testing.T
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	recv   chan *discoveryv3.DiscoveryResponse
}

func newADSClient(t *testing.T, ctx context.Context, conn *grpc.ClientConn) *adsClient {
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &adsClient{t: t, stream: stream, recv: make(chan *discoveryv3.DiscoveryResponse, 16)}
	go func() {
		defer close(c.recv)
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			c.recv <- resp
		}
	}()
	return c
}

func (c *adsClient) send(req *discoveryv3.DiscoveryRequest) {
	c.t.Helper()
	req.Node = &corev3.Node{Id: "fake-envoy"}
	if err := c.stream.Send(req); err != nil {
		c.t.Fatal(err)
	}
}

func (c *adsClient) next(timeout time.Duration) *discoveryv3.DiscoveryResponse {
	select {
	case r := <-c.recv:
		return r
	case <-time.After(timeout):
		return nil
	}
}

func TestADSOverMutualTLSCountsNACKsWithoutResending(t *testing.T) {
	dir := t.TempDir()
	ca := writeTestPKI(t, dir)
	reg := prometheus.NewRegistry()
	srv, err := NewServer(ServerOptions{Registerer: reg, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := srv.Update(ctx, onePool()); err != nil {
		t.Fatal(err)
	}
	tlsOpt, err := ServerTLS(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"), filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	goroutines := runtime.NumGoroutine()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis, tlsOpt) }()

	// Without a client certificate the handshake fails.
	plainTLS := credentials.NewTLS(&tls.Config{RootCAs: ca, ServerName: "127.0.0.1"})
	if conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(plainTLS)); err == nil {
		cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
		s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(cctx)
		if err == nil {
			_ = s.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.ClusterType})
			if _, err = s.Recv(); err == nil {
				t.Error("ADS answered a client without a certificate")
			}
		}
		ccancel()
		conn.Close()
	}

	clientCert, err := tls.LoadX509KeyPair(filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	creds := credentials.NewTLS(&tls.Config{RootCAs: ca, ServerName: "127.0.0.1", Certificates: []tls.Certificate{clientCert}})
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sctx, scancel := context.WithCancel(ctx)
	c := newADSClient(t, sctx, conn)
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.ClusterType})
	resp := c.next(5 * time.Second)
	if resp == nil || resp.GetVersionInfo() != "1" || len(resp.GetResources()) != 2 {
		t.Fatalf("first response = %v", resp)
	}
	var names []string
	for _, a := range resp.GetResources() {
		var cl clusterv3.Cluster
		if err := a.UnmarshalTo(&cl); err != nil {
			t.Fatal(err)
		}
		names = append(names, cl.GetName())
	}
	sort.Strings(names)
	if strings.Join(names, ",") != "picker/default/llama-epp/9002,pool/default/llama" {
		t.Fatalf("clusters = %v", names)
	}

	// NACK version 1: counted once, logged, and not answered with the same version again.
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: resp.GetNonce(),
		ErrorDetail: &statuspb.Status{Code: 3, Message: "simulated rejection"}})
	if again := c.next(700 * time.Millisecond); again != nil {
		t.Fatalf("server resent after a NACK: version %s", again.GetVersionInfo())
	}
	if n := metricValue(t, reg, "infergw_xds_nacks_total", "type_url", resource.ClusterType); n != 1 {
		t.Errorf("nacks = %v, want 1", n)
	}
	if n := metricValue(t, reg, "infergw_xds_connected_proxies"); n != 1 {
		t.Errorf("connected proxies = %v, want 1", n)
	}
	// The next version reaches the client.
	if _, err := srv.Update(ctx, twoPoolsWeighted()); err != nil {
		t.Fatal(err)
	}
	resp = c.next(5 * time.Second)
	if resp == nil || resp.GetVersionInfo() != "2" || len(resp.GetResources()) != 3 {
		t.Fatalf("response after update = %v", resp)
	}
	if n := metricValue(t, reg, "infergw_xds_pushes_total", "type_url", resource.ClusterType); n != 2 {
		t.Errorf("pushes = %v, want 2", n)
	}

	scancel()
	deadline := time.Now().Add(5 * time.Second)
	for metricValue(t, reg, "infergw_xds_connected_proxies") != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := metricValue(t, reg, "infergw_xds_connected_proxies"); n != 0 {
		t.Errorf("connected proxies after the client left = %v", n)
	}
	conn.Close()
	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	// Serve's goroutines end with it.
	deadline = time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > goroutines+2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > goroutines+2 {
		t.Errorf("goroutines: %d before Serve, %d after it returned", goroutines, n)
	}
}

func TestServeWithoutTLSAndBootstrapPointsAtIt(t *testing.T) {
	srv, err := NewServer(ServerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := srv.Update(ctx, serviceBackend()); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ctx, lis)
	boot, err := BootstrapProto(BootstrapOptions{XDSAddr: lis.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	sa := boot.GetStaticResources().GetClusters()[0].GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	conn, err := grpc.NewClient(net.JoinHostPort(sa.GetAddress(), itoa32(sa.GetPortValue())), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := newADSClient(t, ctx, conn)
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.ListenerType})
	if resp := c.next(5 * time.Second); resp == nil || len(resp.GetResources()) != 1 {
		t.Fatalf("listener response = %v", resp)
	}
}

func TestBootstrapOptions(t *testing.T) {
	if _, err := Bootstrap(BootstrapOptions{XDSAddr: "no-port"}); err == nil {
		t.Error("address without port: no error")
	}
	if _, err := Bootstrap(BootstrapOptions{XDSAddr: "cp:18000", CertFile: "c.pem"}); err == nil {
		t.Error("certificate without key: no error")
	}
	b, err := BootstrapProto(BootstrapOptions{XDSAddr: "infergw-cp.infergw.svc:18000", CAFile: "/etc/ca.pem", NodeID: "gw-1"})
	if err != nil {
		t.Fatal(err)
	}
	cl := b.GetStaticResources().GetClusters()[0]
	if cl.GetType() != clusterv3.Cluster_STRICT_DNS || cl.GetTransportSocket() == nil || b.GetNode().GetId() != "gw-1" {
		t.Errorf("DNS + TLS bootstrap: type %v, transport socket %v, node %v", cl.GetType(), cl.GetTransportSocket(), b.GetNode())
	}
	y, err := Bootstrap(BootstrapOptions{XDSAddr: "127.0.0.1:18000"})
	if err != nil || !strings.Contains(string(y), "ads_config") {
		t.Errorf("bootstrap yaml: %v\n%s", err, y)
	}
}

func itoa32(v uint32) string { return big.NewInt(int64(v)).String() }

// writeTestPKI writes a CA, a server certificate for 127.0.0.1 and a client certificate.
func writeTestPKI(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", caDER)
	for i, name := range []string{"server", "client"} {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalECPrivateKey(key)
		writePEM(t, filepath.Join(dir, name+".pem"), "CERTIFICATE", der)
		writePEM(t, filepath.Join(dir, name+"-key.pem"), "EC PRIVATE KEY", keyDER)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return pool
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
