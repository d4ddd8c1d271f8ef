package inlinegrpc

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/peer"
)

// selfSignedCert makes a certificate for 127.0.0.1 and a pool that trusts it.
func selfSignedCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "inlinegrpc test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

func TestTLS(t *testing.T) {
	cert, pool := selfSignedCert(t)
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
