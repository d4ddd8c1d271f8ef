package main

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/infergw/infergw/internal/testpki"
	"github.com/infergw/infergw/router"
)

func TestModelServerMetricsFlags(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "metrics-ca")
	caFile, tokenFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "token")
	if err := os.WriteFile(caFile, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte("  tok-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := router.DefaultConfig()
	fl := pflag.NewFlagSet("t", pflag.ContinueOnError)
	registerRouterFlags(fl, &cfg)
	err := fl.Parse([]string{"--model-server-metrics-scheme", "https", "--model-server-metrics-path", "/m",
		"--model-server-metrics-port", "9400", "--model-server-metrics-ca-file", caFile,
		"--model-server-metrics-https-insecure-skip-verify", "--model-server-metrics-bearer-token-file", tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	m := cfg.Metrics
	if m.Scheme != "https" || m.Path != "/m" || m.Port != 9400 || m.BearerToken != "tok-123" || m.TLS == nil ||
		!m.TLS.InsecureSkipVerify || m.TLS.RootCAs == nil || !m.TLS.RootCAs.Equal(poolOf(ca.PEM)) {
		t.Errorf("metrics endpoint %+v", m)
	}

	for name, args := range map[string][]string{
		"missing CA file": {"--model-server-metrics-ca-file", filepath.Join(dir, "nope")},
		"CA without PEM":  {"--model-server-metrics-ca-file", tokenFile},
		"empty token":     {"--model-server-metrics-bearer-token-file", os.DevNull},
	} {
		fl := pflag.NewFlagSet("t", pflag.ContinueOnError)
		c := router.DefaultConfig()
		registerRouterFlags(fl, &c)
		if err := fl.Parse(args); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// A CA for plain-HTTP metrics is refused by the router, naming the scheme.
	_, err = run(t, "picker", "--manifests", t.TempDir(), "--model-server-metrics-ca-file", caFile)
	if err == nil || !strings.Contains(err.Error(), "https scheme") {
		t.Errorf("CA with http metrics: %v", err)
	}
}

func poolOf(pem []byte) *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(pem)
	return p
}
