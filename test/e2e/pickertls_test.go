package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/infergw/infergw/extproc"
	"github.com/infergw/infergw/internal/testpki"
	"github.com/infergw/infergw/stack"
	"github.com/infergw/infergw/xds"
)

// TestPickerOverTLS: Envoy reaches the picker over TLS, verifying its certificate against
// the CA and negotiating h2, on either gRPC transport; requests are picked and land on the
// endpoint Envoy reports.
func TestPickerOverTLS(t *testing.T) {
	for _, tr := range []extproc.Transport{extproc.TransportInline, extproc.TransportGRPCGo} {
		t.Run(string(tr), func(t *testing.T) {
			ca := testpki.NewCA(t, "e2e picker CA")
			certPEM, keyPEM := ca.Issue(t, "picker", []string{"picker.test"}, x509.ExtKeyUsageServerAuth)
			pair, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var protocols []string // ALPN result of each handshake the picker completed
			serverTLS := &tls.Config{
				Certificates: []tls.Certificate{pair},
				MinVersion:   tls.VersionTLS12,
				NextProtos:   []string{"h2"},
				VerifyConnection: func(cs tls.ConnectionState) error {
					mu.Lock()
					defer mu.Unlock()
					protocols = append(protocols, cs.NegotiatedProtocol)
					return nil
				},
			}
			caFile := filepath.Join(t.TempDir(), "ca.crt")
			if err := os.WriteFile(caFile, ca.PEM, 0o600); err != nil {
				t.Fatal(err)
			}
			w := onePool(t, 2)
			gw := startGateway(t, w, func(c *stack.Config) {
				c.Picker.Transport = tr
				c.PickerTLS = serverTLS
				c.Translate.PickerTLS = xds.PickerTLS{CAFile: caFile, SNI: "picker.test"}
			})
			for i := 0; i < 5; i++ {
				r := chat(t, gw.url, baseModel, fmt.Sprintf("hello over TLS %d", i), nil)
				if r.Status != 200 {
					t.Fatalf("request %d: status %d: %s", i, r.Status, r.Body)
				}
				if got, want := hostOf(t, r.Upstream), w.simIP(r.Instance); got != want {
					t.Fatalf("Envoy's upstream %s is not the sim that answered (%s at %s)", r.Upstream, r.Instance, want)
				}
			}
			if body := getText(t, "http://"+gw.metrics+"/metrics"); !strings.Contains(body, "inference_objective_request_total{") {
				t.Fatal("the picker counted no request: Envoy did not route through it")
			}
			mu.Lock()
			defer mu.Unlock()
			if len(protocols) == 0 {
				t.Fatal("no TLS handshake reached the picker")
			}
			for _, p := range protocols {
				if p != "h2" {
					t.Fatalf("a handshake negotiated %q, want h2", p)
				}
			}
		})
	}
}
