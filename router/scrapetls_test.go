package router

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/infergw/infergw/internal/testpki"
)

// tlsMetricsServer serves a vLLM exposition over HTTPS at /custom/metrics on its own port,
// only to requests bearing the token; it counts the requests it refused.
func tlsMetricsServer(t *testing.T, exposition, token string) (port int, ca *x509.CertPool, refused *atomic.Int64) {
	port, ca, _, refused = tlsMetricsServerPEM(t, exposition, token)
	return port, ca, refused
}

// tlsMetricsServerPEM is tlsMetricsServer, also returning its CA as PEM.
func tlsMetricsServerPEM(t *testing.T, exposition, token string) (port int, ca *x509.CertPool, caPEM []byte, refused *atomic.Int64) {
	t.Helper()
	pki := testpki.NewCA(t, "metrics-ca")
	certPEM, keyPEM := pki.Issue(t, "model-server", []string{"127.0.0.1"}, x509.ExtKeyUsageServerAuth)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	refused = &atomic.Int64{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/custom/metrics" || r.Header.Get("Authorization") != "Bearer "+token {
			refused.Add(1)
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = io.WriteString(w, exposition)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, p, _ := net.SplitHostPort(srv.Listener.Addr().String())
	port, _ = strconv.Atoi(p)
	ca = x509.NewCertPool()
	ca.AppendCertsFromPEM(pki.PEM)
	return port, ca, pki.PEM, refused
}

// TestScrapeHTTPSMetricsEndpoint: metrics on another port and path, over HTTPS with a CA and
// a bearer token (GIE's --model-server-metrics-* settings), while /v1/models is still read
// from the serving port. A wrong CA or a missing token fails the scrape: no metrics, the
// endpoint stale.
func TestScrapeHTTPSMetricsEndpoint(t *testing.T) {
	exposition := readTestdata(t, "vllm.txt")
	serving := newModelServer(t, "", vllmModels) // plain HTTP: the model list only
	port, ca, refused := tlsMetricsServer(t, exposition, "s3cret")
	_, otherCA, _ := tlsMetricsServer(t, exposition, "s3cret") // a CA that did not sign the server

	for _, tc := range []struct {
		name    string
		metrics MetricsEndpoint
		ok      bool
	}{
		{"https with CA and token", MetricsEndpoint{Scheme: "https", Path: "/custom/metrics", Port: port, TLS: &tls.Config{RootCAs: ca, MinVersion: tls.VersionTLS12}, BearerToken: "s3cret"}, true},
		{"wrong CA", MetricsEndpoint{Scheme: "https", Path: "/custom/metrics", Port: port, TLS: &tls.Config{RootCAs: otherCA, MinVersion: tls.VersionTLS12}, BearerToken: "s3cret"}, false},
		{"no token", MetricsEndpoint{Scheme: "https", Path: "/custom/metrics", Port: port, TLS: &tls.Config{RootCAs: ca, MinVersion: tls.VersionTLS12}}, false},
		{"plain http to a TLS port", MetricsEndpoint{Path: "/custom/metrics", Port: port, BearerToken: "s3cret"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refusedBefore := refused.Load()
			r, reg := newTestRouter(t, func(c *Config) { c.Metrics = tc.metrics })
			r.SetPool("ns/p", []EndpointSpec{{Name: "pod-a", Address: serving.addr()}})
			e := r.lookup("ns/p").view.Load().endpoints[0]
			// The model list comes from the serving port in every case.
			eventually(t, 3*time.Second, "model list from the serving port", func() bool { return e.models.Load() != nil })
			if tc.ok {
				eventually(t, 3*time.Second, "metrics over https", func() bool { return e.metrics.Load() != nil })
				if m := e.metrics.Load(); m.waiting != 3 || m.running != 7 {
					t.Errorf("waiting/running %v/%v, want 3/7", m.waiting, m.running)
				}
				if serving.scrapeCount() != 0 {
					t.Errorf("the serving port was scraped %d times", serving.scrapeCount())
				}
				return
			}
			eventually(t, 3*time.Second, "scrape errors", func() bool {
				v, ok := gaugeValue(t, reg, "infergw_router_scrape_errors_total", map[string]string{"pool": "ns/p", "endpoint": serving.addr()})
				return ok && v >= 2
			})
			if m := e.metrics.Load(); m != nil {
				t.Errorf("metrics read despite the failure: %+v", m)
			}
			if tc.metrics.BearerToken == "" && refused.Load() == refusedBefore {
				t.Error("the server refused nothing: the request without a token did not reach it")
			}
		})
	}
}

func TestMetricsEndpointValidation(t *testing.T) {
	for name, m := range map[string]MetricsEndpoint{
		"scheme":      {Scheme: "ftp"},
		"path":        {Path: "metrics"},
		"path query":  {Path: "/metrics?x=1"},
		"port":        {Port: 70000},
		"token CRLF":  {BearerToken: "a\r\nX-Injected: 1"},
		"tls on http": {TLS: &tls.Config{MinVersion: tls.VersionTLS12}},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Metrics = m
			if _, err := New(cfg, testLogger(t), nil); err == nil {
				t.Errorf("%+v accepted", m)
			}
		})
	}
}

// TestScrapePerPoolMetricsSettings: one router, two pools. The pool whose endpoints carry
// their own settings (InferencePool annotations in the picker) is scraped over HTTPS on
// another port and path with its CA file and token file; the other pool keeps the router's
// plain default on the serving port. Changing a pool's settings replaces its endpoints'
// scrape loops (a wrong token now fails), and an unreadable file fails the scrapes.
func TestScrapePerPoolMetricsSettings(t *testing.T) {
	exposition := readTestdata(t, "vllm.txt")
	servingA := newModelServer(t, "", vllmModels) // pool a: metrics elsewhere, over TLS
	servingB := newModelServer(t, exposition, vllmModels)
	port, _, caPEM, refused := tlsMetricsServerPEM(t, exposition, "s3cret")
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caFile, tokenFile, wrongToken := write("ca.pem", string(caPEM)), write("token", "s3cret\n"), write("wrong", "guess")
	secure := &PoolMetrics{Scheme: "https", Path: "/custom/metrics", Port: port, CAFile: caFile, BearerTokenFile: tokenFile}

	r, reg := newTestRouter(t, nil)
	r.SetPool("ns/a", []EndpointSpec{{Name: "pod-a", Address: servingA.addr(), Metrics: secure}})
	r.SetPool("ns/b", []EndpointSpec{{Name: "pod-b", Address: servingB.addr()}})
	ea := r.lookup("ns/a").view.Load().endpoints[0]
	eb := r.lookup("ns/b").view.Load().endpoints[0]
	eventually(t, 3*time.Second, "pool a's metrics over https", func() bool { return ea.metrics.Load() != nil })
	eventually(t, 3*time.Second, "pool b's metrics over plain http", func() bool { return eb.metrics.Load() != nil })
	if m := ea.metrics.Load(); m.waiting != 3 || m.running != 7 {
		t.Errorf("pool a waiting/running %v/%v, want 3/7", m.waiting, m.running)
	}
	if servingA.scrapeCount() != 0 || servingB.scrapeCount() == 0 {
		t.Errorf("serving ports scraped: a %d times (want 0), b %d (want > 0)", servingA.scrapeCount(), servingB.scrapeCount())
	}

	// Same settings in a new value: the endpoint (and its metrics) is kept.
	same := *secure
	r.SetPool("ns/a", []EndpointSpec{{Name: "pod-a", Address: servingA.addr(), Metrics: &same}})
	if r.lookup("ns/a").view.Load().endpoints[0] != ea {
		t.Fatal("unchanged settings replaced the endpoint")
	}

	errorsOf := func(addr, pool string) float64 {
		v, _ := gaugeValue(t, reg, "infergw_router_scrape_errors_total", map[string]string{"pool": pool, "endpoint": addr})
		return v
	}
	for _, tc := range []struct {
		name    string
		metrics PoolMetrics
	}{
		{"wrong token file", PoolMetrics{Scheme: "https", Path: "/custom/metrics", Port: port, CAFile: caFile, BearerTokenFile: wrongToken}},
		{"missing CA file", PoolMetrics{Scheme: "https", Path: "/custom/metrics", Port: port, CAFile: filepath.Join(dir, "nope.pem"), BearerTokenFile: tokenFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refusedBefore := refused.Load()
			r.SetPool("ns/a", []EndpointSpec{{Name: "pod-a", Address: servingA.addr(), Metrics: &tc.metrics}})
			e := r.lookup("ns/a").view.Load().endpoints[0]
			if e == ea {
				t.Fatal("changed settings kept the old endpoint")
			}
			before := errorsOf(servingA.addr(), "ns/a")
			eventually(t, 3*time.Second, "scrape errors", func() bool { return errorsOf(servingA.addr(), "ns/a") >= before+2 })
			if e.metrics.Load() != nil {
				t.Error("metrics read despite the bad settings")
			}
			if tc.metrics.BearerTokenFile == wrongToken && refused.Load() == refusedBefore {
				t.Error("the server refused nothing: the wrong token did not reach it")
			}
		})
	}
}
