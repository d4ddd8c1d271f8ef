package xds

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/infergw/infergw/internal/testpki"
)

// TestRealEnvoyHTTPSListener: an HTTPS Gateway listener whose certificate is a TLS Secret is
// served by real Envoy with that certificate (the client verifies it against the CA), and
// routes as the HTTP listener would; a rotated Secret is served after the next update.
func TestRealEnvoyHTTPSListener(t *testing.T) {
	bin := envoyBinary(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ca := testpki.NewCA(t, "infergw gateway test CA")
	secret := func(cn string) *corev1.Secret {
		cert, key := ca.Issue(t, cn, []string{"api.example.com"}, x509.ExtKeyUsageServerAuth)
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "api-cert"}, Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{corev1.TLSCertKey: cert, corev1.TLSPrivateKeyKey: key}}
	}

	port := backends(t, "127.0.0.2")
	listenPort := freePort(t, "127.0.0.1")
	snap := serviceBackend()
	gw := snap.Gateways[0]
	gw.Spec.Listeners[0] = gwapiv1.Listener{
		Name: "https", Port: listenPort, Protocol: gwapiv1.HTTPSProtocolType, Hostname: ptr(gwapiv1.Hostname("api.example.com")),
		TLS: &gwapiv1.ListenerTLSConfig{CertificateRefs: []gwapiv1.SecretObjectReference{{Name: "api-cert"}}},
	}
	snap.Services = []*corev1.Service{service("web", "127.0.0.2", port)}
	snap.HTTPRoutes = snap.HTTPRoutes[:1]
	snap.HTTPRoutes[0].Spec.Rules = []gwapiv1.HTTPRouteRule{{BackendRefs: []gwapiv1.HTTPBackendRef{serviceRef("web", port)}}}
	snap.Secrets = []*corev1.Secret{secret("first")}

	srv, env := serveToEnvoy(ctx, t, bin, Options{ListenerAddress: "127.0.0.1"}, snap, listenPort)

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.PEM)
	get := func() (string, string, error) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "api.example.com", MinVersion: tls.VersionTLS12},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, env.listen)
			}}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://api.example.com/x")
		if err != nil {
			return "", "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.TLS.PeerCertificates[0].Subject.CommonName, string(b), nil
	}
	cn, body, err := get()
	if err != nil || cn != "first" || !strings.Contains(body, "hello from 127.0.0.2") {
		t.Fatalf("HTTPS: cn %q body %q err %v", cn, body, err)
	}

	// Rotation: the Secret's new certificate is served after the update.
	snap.Version = 2
	snap.Secrets = []*corev1.Secret{secret("second")}
	if _, err = srv.Update(ctx, snap); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		cn, _, err = get()
		if err == nil && cn == "second" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rotated certificate not served: cn %q err %v", cn, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
