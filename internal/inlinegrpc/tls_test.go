package inlinegrpc

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/peer"

	"github.com/infergw/infergw/internal/testpki"
)

// serverCert makes a server certificate for 127.0.0.1 from a new test CA, and a pool that
// trusts the CA.
func serverCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	ca := testpki.NewCA(t, "inlinegrpc test CA")
	certPEM, keyPEM := ca.Issue(t, "inlinegrpc test", []string{"127.0.0.1"}, x509.ExtKeyUsageServerAuth)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return cert, pool
}

func TestTLS(t *testing.T) {
	cert, pool := serverCert(t)
	// No NextProtos here: New must add h2 itself.
	ts := startServer(t, Options{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}})
	_, client := dial(t, ts.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))

	var p peer.Peer
	body := pattern(7, 200<<10) // several TLS records and flow-control windows
	resp, err := client.UnaryCall(testCtx(t), &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: body}}, grpc.Peer(&p))
	if err != nil {
		t.Fatalf("UnaryCall over TLS: %v", err)
	}
	if !bytes.Equal(resp.GetPayload().GetBody(), body) {
		t.Fatal("echo over TLS differs")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		t.Fatalf("peer auth info %T, want credentials.TLSInfo", p.AuthInfo)
	}
	if got := info.State.NegotiatedProtocol; got != "h2" {
		t.Errorf("ALPN negotiated %q, want h2", got)
	}
	if !info.State.HandshakeComplete {
		t.Error("TLS handshake not complete")
	}

	stream, err := client.FullDuplexCall(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		echo(t, stream, uint32(i))
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}

	// A client offering only protocols other than h2 cannot complete the handshake. (Go's
	// TLS server lets a lone "http/1.1" offer through with no protocol; the bad preface
	// then ends it, see TestRawBadPreface.)
	raw, err := tls.Dial("tcp", ts.addr, &tls.Config{RootCAs: pool, NextProtos: []string{"spdy/3"}})
	if err == nil {
		raw.Close()
		t.Error("TLS handshake offering only spdy/3 succeeded, want it refused")
	}
	// A cleartext HTTP/2 client is not served on a TLS server.
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc := newRawConn(t, c)
	if _, err := c.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := rc.nextOrErr(); err == nil {
		t.Error("a cleartext client got an HTTP/2 frame from a TLS server")
	}
}
