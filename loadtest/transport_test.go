package loadtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/infergw/infergw/internal/testpki"
)

// protoServer is a real net/http server on 127.0.0.1 replaying the known script, speaking
// the protocols given (HTTP/1.1, h2c, or TLS with the ALPN protocols in tlsConf).
func protoServer(t *testing.T, script string, protocols func(*http.Protocols), tlsConf *tls.Config) string {
	t.Helper()
	chunks, status := scripts[script]()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var p http.Protocols
	protocols(&p)
	srv := &http.Server{Handler: &scriptServer{script: chunks, status: status, truth: map[string]serverTruth{}},
		ReadHeaderTimeout: 5 * time.Second, Protocols: &p, TLSConfig: tlsConf}
	done := make(chan struct{})
	scheme := "http"
	if tlsConf != nil {
		scheme = "https"
		go func() { defer close(done); _ = srv.ServeTLS(ln, "", "") }()
	} else {
		go func() { defer close(done); _ = srv.Serve(ln) }()
	}
	t.Cleanup(func() { srv.Close(); <-done })
	return scheme + "://" + ln.Addr().String()
}

// pki writes a CA, a server certificate for 127.0.0.1 and a client certificate into a
// temporary directory and returns the server's TLS config (asking for client certificates
// when mtls) and the file names.
type pkiFiles struct{ ca, clientCert, clientKey string }

func testPKI(t *testing.T, mtls bool, alpn ...string) (*tls.Config, pkiFiles) {
	t.Helper()
	ca := testpki.NewCA(t, "loadtest-test-ca")
	srvCert, srvKey := ca.Issue(t, "server", []string{"127.0.0.1"}, x509.ExtKeyUsageServerAuth)
	cliCert, cliKey := ca.Issue(t, "client", []string{"client"}, x509.ExtKeyUsageClientAuth)
	dir := t.TempDir()
	f := pkiFiles{ca: filepath.Join(dir, "ca.pem"), clientCert: filepath.Join(dir, "client.pem"), clientKey: filepath.Join(dir, "client.key")}
	for name, b := range map[string][]byte{f.ca: ca.PEM, f.clientCert: cliCert, f.clientKey: cliKey} {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pair, err := tls.X509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{pair}, NextProtos: alpn, MinVersion: tls.VersionTLS12}
	if mtls {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(ca.PEM)
		tc.ClientAuth, tc.ClientCAs = tls.RequireAndVerifyClientCert, pool
	}
	return tc, f
}

func runTransport(t *testing.T, url string, mod func(*Config)) *Summary {
	t.Helper()
	cfg := testConfig(url)
	cfg.Requests, cfg.VUs, cfg.Timeout = 6, 2, 10*time.Second
	mod(&cfg)
	s, err := Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// wantServed checks that every request succeeded over the protocol, with the known
// script's first content chunk (sent 40 ms after the request) measured as TTFT.
func wantServed(t *testing.T, s *Summary, proto string) {
	t.Helper()
	if s.Requests != 6 || s.Failed != 0 {
		t.Fatalf("requests %d failed %d (%v), want 6 and 0", s.Requests, s.Failed, s.ErrorsByStatus)
	}
	if len(s.Protocols) != 1 || s.Protocols[proto] != 6 {
		t.Errorf("protocols %v, want all 6 over %s", s.Protocols, proto)
	}
	if s.TTFT.Count != 6 || s.TTFT.Min < 40 || s.OutputTokens != 6*7 {
		t.Errorf("ttft count %d min %.1f ms, output tokens %d; want 6, >= 40 ms, 42", s.TTFT.Count, s.TTFT.Min, s.OutputTokens)
	}
	var out strings.Builder
	if err := WriteText(&out, s); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "protocol: "+proto+" (6 responses)") {
		t.Errorf("summary does not show the protocol:\n%s", out.String())
	}
}

func TestHTTP2Cleartext(t *testing.T) {
	both := func(p *http.Protocols) { p.SetHTTP1(true); p.SetUnencryptedHTTP2(true) }
	url := protoServer(t, "known", both, nil)
	wantServed(t, runTransport(t, url, func(c *Config) {}), "HTTP/1.1")
	wantServed(t, runTransport(t, url, func(c *Config) { c.HTTP2 = true }), "HTTP/2.0")
}

func TestTLSAndHTTP2OverTLS(t *testing.T) {
	tlsProtos := func(p *http.Protocols) { p.SetHTTP1(true); p.SetHTTP2(true) }
	srvTLS, files := testPKI(t, false, "h2", "http/1.1")
	url := protoServer(t, "known", tlsProtos, srvTLS)
	withCA := func(c *Config) { c.TLS.CAFile = files.ca }

	wantServed(t, runTransport(t, url, withCA), "HTTP/1.1")
	wantServed(t, runTransport(t, url, func(c *Config) { withCA(c); c.HTTP2 = true }), "HTTP/2.0")
	wantServed(t, runTransport(t, url, func(c *Config) { c.TLS.InsecureSkipVerify = true; c.HTTP2 = true }), "HTTP/2.0")

	// Without the CA the server's certificate is not trusted: every request fails, on both clients.
	for _, h2 := range []bool{false, true} {
		s := runTransport(t, url, func(c *Config) { c.HTTP2 = h2 })
		if s.Failed != s.Requests || s.ErrorsByStatus["transport"] != s.Requests || s.Requests == 0 {
			t.Errorf("http2=%v without the CA: %d of %d failed (%v), want all as transport errors", h2, s.Failed, s.Requests, s.ErrorsByStatus)
		}
	}

	// A server that offers only HTTP/1.1 by ALPN: --http2 reports what was used.
	h1TLS, files1 := testPKI(t, false, "http/1.1")
	url1 := protoServer(t, "known", func(p *http.Protocols) { p.SetHTTP1(true) }, h1TLS)
	wantServed(t, runTransport(t, url1, func(c *Config) { c.TLS.CAFile = files1.ca; c.HTTP2 = true }), "HTTP/1.1")
}

func TestClientCertificate(t *testing.T) {
	srvTLS, files := testPKI(t, true, "h2", "http/1.1")
	url := protoServer(t, "known", func(p *http.Protocols) { p.SetHTTP1(true); p.SetHTTP2(true) }, srvTLS)
	for _, h2 := range []bool{false, true} {
		s := runTransport(t, url, func(c *Config) { c.TLS.CAFile = files.ca; c.HTTP2 = h2 })
		if s.Failed != s.Requests || s.Requests == 0 {
			t.Errorf("http2=%v without a client certificate: %d of %d failed, want all", h2, s.Failed, s.Requests)
		}
		proto := map[bool]string{false: "HTTP/1.1", true: "HTTP/2.0"}[h2]
		wantServed(t, runTransport(t, url, func(c *Config) {
			c.TLS = TLSOptions{CAFile: files.ca, CertFile: files.clientCert, KeyFile: files.clientKey}
			c.HTTP2 = h2
		}), proto)
	}
}

func TestTLSOptionErrors(t *testing.T) {
	_, files := testPKI(t, false)
	for name, tc := range map[string]struct {
		url  string
		opts TLSOptions
		want string
	}{
		"options on http":     {"http://127.0.0.1:1", TLSOptions{CAFile: files.ca}, "need an https URL"},
		"cert without key":    {"https://127.0.0.1:1", TLSOptions{CertFile: files.clientCert}, "both a cert file and a key file"},
		"missing CA file":     {"https://127.0.0.1:1", TLSOptions{CAFile: filepath.Join(t.TempDir(), "nope.pem")}, "CA file"},
		"CA file without PEM": {"https://127.0.0.1:1", TLSOptions{CAFile: files.clientKey}, "no PEM certificate"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(tc.url)
			cfg.Requests, cfg.TLS = 1, tc.opts
			_, err := Run(context.Background(), cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestHTTP2CancelStopsPromptly cancels an HTTP/2 run with requests in flight: the shared
// connection is closed, every reader returns, and no goroutine is left behind.
func TestHTTP2CancelStopsPromptly(t *testing.T) {
	url := protoServer(t, "slow", func(p *http.Protocols) { p.SetUnencryptedHTTP2(true) }, nil)
	before := runtime.NumGoroutine()
	cfg := testConfig(url)
	cfg.Rate, cfg.Duration, cfg.HTTP2 = 50, 10*time.Second, true
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(500*time.Millisecond, cancel)
	start := time.Now()
	s, err := Run(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("cancelled run took %v", took)
	}
	if s.Interrupted == 0 || s.Requests == 0 {
		t.Errorf("interrupted %d requests %d: want some of each (200 ms requests at 50/s over 500 ms)", s.Interrupted, s.Requests)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+2 {
		t.Errorf("goroutines: %d before, %d after", before, n)
	}
}
