package xds

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	corev1 "k8s.io/api/core/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	infv1 "github.com/infergw/infergw/api/v1"
	"github.com/infergw/infergw/discovery"
	"github.com/infergw/infergw/internal/testpki"
)

func writeTestFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// tlsPicker is a testPicker served over TLS on 127.0.0.1; it records what each completed
// handshake negotiated.
type tlsPicker struct {
	*testPicker
	port int32

	mu          sync.Mutex
	serverNames []string // SNI of each handshake
	protocols   []string // ALPN result of each handshake
	clientCNs   []string // common name of the client certificate, "" without one
}

// startTLSPicker serves the picker with certPEM/keyPEM. With clientCA set, it requires a
// client certificate signed by it.
func startTLSPicker(t *testing.T, certPEM, keyPEM []byte, clientCA *testpki.CA) *tlsPicker {
	t.Helper()
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	p := &tlsPicker{testPicker: &testPicker{}}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		VerifyConnection: func(cs tls.ConnectionState) error {
			cn := ""
			if len(cs.PeerCertificates) > 0 {
				cn = cs.PeerCertificates[0].Subject.CommonName
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			p.serverNames = append(p.serverNames, cs.ServerName)
			p.protocols = append(p.protocols, cs.NegotiatedProtocol)
			p.clientCNs = append(p.clientCNs, cn)
			return nil
		},
	}
	if clientCA != nil {
		pool := x509.NewCertPool()
		pool.AddCert(clientCA.Cert)
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	extprocsvc.RegisterExternalProcessorServer(g, p.testPicker)
	servePickerHealth(g)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	p.port = int32(lis.Addr().(*net.TCPAddr).Port)
	return p
}

func (p *tlsPicker) streams() int {
	p.testPicker.mu.Lock()
	defer p.testPicker.mu.Unlock()
	return len(p.testPicker.pools)
}

// envoyStat reads one counter from Envoy's admin /stats.
func (e *envoyProc) envoyStat(t *testing.T, name string) int {
	t.Helper()
	resp, err := http.Get("http://" + e.admin + "/stats?filter=" + name + "$")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+": "); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatalf("stat %s: %q", name, line)
			}
			return n
		}
	}
	return -1
}

// TestRealEnvoyPickerTLS: with PickerTLS, Envoy reaches a TLS picker (server certificate from
// the trusted CA for the Service's DNS name, client certificate required) and sends the
// request to the endpoint the picker chose. A picker whose certificate another CA signed, or
// whose certificate names another host, never gets a stream: its FailClose route answers 503.
func TestRealEnvoyPickerTLS(t *testing.T) {
	bin := envoyBinary(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	dir := t.TempDir()
	trusted := testpki.NewCA(t, "infergw test CA")
	other := testpki.NewCA(t, "someone else's CA")
	goodCert, goodKey := trusted.Issue(t, "epp", []string{"epp.default.svc"}, x509.ExtKeyUsageServerAuth)
	good := startTLSPicker(t, goodCert, goodKey, trusted)
	otherCert, otherKey := other.Issue(t, "epp-other-ca", []string{"epp-other-ca.default.svc"}, x509.ExtKeyUsageServerAuth)
	wrongCA := startTLSPicker(t, otherCert, otherKey, nil)
	nameCert, nameKey := trusted.Issue(t, "elsewhere", []string{"elsewhere.default.svc"}, x509.ExtKeyUsageServerAuth)
	wrongName := startTLSPicker(t, nameCert, nameKey, nil)
	clientCert, clientKey := trusted.Issue(t, "infergw-envoy", nil, x509.ExtKeyUsageClientAuth)
	pickerTLS := PickerTLS{
		CAFile:   writeTestFile(t, dir, "ca.crt", trusted.PEM),
		CertFile: writeTestFile(t, dir, "tls.crt", clientCert),
		KeyFile:  writeTestFile(t, dir, "tls.key", clientKey),
	}

	port := backends(t, "127.0.0.2", "127.0.0.3")
	listenPort := freePort(t, "127.0.0.1")
	snap := &discovery.Snapshot{
		Version:  1,
		Gateways: []*gwapiv1.Gateway{gateway("infergw", listenPort, "")},
		HTTPRoutes: []*gwapiv1.HTTPRoute{httpRoute("llm", "infergw",
			gwapiv1.HTTPRouteRule{Matches: prefix("/good"), BackendRefs: []gwapiv1.HTTPBackendRef{poolRef("good", 1)}},
			gwapiv1.HTTPRouteRule{Matches: prefix("/wrong-ca"), BackendRefs: []gwapiv1.HTTPBackendRef{poolRef("wrong-ca", 1)}},
			gwapiv1.HTTPRouteRule{Matches: prefix("/wrong-name"), BackendRefs: []gwapiv1.HTTPBackendRef{poolRef("wrong-name", 1)}},
		)},
		Pools: []*discovery.Pool{
			pool("good", "epp", good.port, infv1.EndpointPickerFailClose, port, 2, 2),
			pool("wrong-ca", "epp-other-ca", wrongCA.port, infv1.EndpointPickerFailClose, port, 2, 2),
			pool("wrong-name", "epp-wrong-name", wrongName.port, infv1.EndpointPickerFailClose, port, 2, 2),
		},
		Services: []*corev1.Service{
			service("epp", "127.0.0.1", good.port),
			service("epp-other-ca", "127.0.0.1", wrongCA.port),
			service("epp-wrong-name", "127.0.0.1", wrongName.port),
		},
	}
	_, env := serveToEnvoy(ctx, t, bin, Options{ListenerAddress: "127.0.0.1", PickerTLS: pickerTLS}, snap, listenPort)

	client := &http.Client{Timeout: 5 * time.Second}
	post := func(path, endpoint, pool string) (int, string, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+env.listen+path, strings.NewReader(`{"model":"m","prompt":"hi"}`))
		req.Header.Set("x-test-endpoint", endpoint)
		req.Header.Set("x-test-pool", pool)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("x-sim-instance"), string(body)
	}

	for _, ip := range []string{"127.0.0.3", "127.0.0.2", "127.0.0.3"} {
		want := fmt.Sprintf("%s:%d", ip, port)
		if status, instance, body := post("/good/v1/completions", want, "default/good"); status != 200 || instance != want {
			t.Fatalf("TLS picker chose %s: status %d, instance %q, body %q", want, status, instance, body)
		}
	}
	good.mu.Lock()
	for i, sni := range good.serverNames {
		if sni != "epp.default.svc" || good.protocols[i] != "h2" || good.clientCNs[i] != "infergw-envoy" {
			t.Errorf("handshake %d: SNI %q, ALPN %q, client certificate %q; want epp.default.svc, h2, infergw-envoy",
				i, sni, good.protocols[i], good.clientCNs[i])
		}
	}
	if len(good.serverNames) == 0 {
		t.Error("the TLS picker saw no completed handshake")
	}
	good.mu.Unlock()
	// Three requests, one picker stream each: this test's picker tags no request for the
	// response observer, so Envoy skips the observer (observer.go).
	if n := good.streams(); n != 3 {
		t.Errorf("TLS picker served %d streams, want 3", n)
	}

	for _, c := range []struct {
		path, pool, service string
		picker              *tlsPicker
		stat                string
	}{
		{"/wrong-ca/v1/completions", "default/wrong-ca", "epp-other-ca", wrongCA, "ssl.fail_verify_error"},
		{"/wrong-name/v1/completions", "default/wrong-name", "epp-wrong-name", wrongName, "ssl.fail_verify_san"},
	} {
		status, instance, body := post(c.path, fmt.Sprintf("127.0.0.2:%d", port), c.pool)
		if status != 503 || instance != "" || !strings.Contains(body, `"endpoint picker unavailable"`) {
			t.Errorf("%s: status %d, instance %q, body %q; want the FailClose 503", c.path, status, instance, body)
		}
		if n := c.picker.streams(); n != 0 {
			t.Errorf("%s: the untrusted picker served %d streams", c.path, n)
		}
		// The failure is the certificate check, not something else on the way.
		stat := fmt.Sprintf("cluster.%s.%s", statName(pickerClusterName(ns, c.service, c.picker.port)), c.stat)
		if n := env.envoyStat(t, stat); n < 1 {
			t.Errorf("%s: %s = %d, want >= 1", c.path, stat, n)
		}
	}
}
