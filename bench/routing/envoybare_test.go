package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/infergw/infergw/internal/envoytest"
)

// TestEnvoyBareBootstrapIsValid runs the real Envoy's config validation on the reference
// layer's bootstrap: a typo in the static YAML would otherwise only show as a cell that
// never gets ready.
func TestEnvoyBareBootstrapIsValid(t *testing.T) {
	bin := envoytest.Binary(t)
	yaml, err := envoyBareBootstrap(19001, 18080, []string{"127.0.0.2:8000", "127.0.0.3:8000"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`address: "127.0.0.2", port_value: 8000`, `address: "127.0.0.3", port_value: 8000`, "timeout: 0s", "ROUND_ROBIN"} {
		if !strings.Contains(yaml, want) {
			t.Fatalf("bootstrap lacks %q:\n%s", want, yaml)
		}
	}
	path := filepath.Join(t.TempDir(), "bare.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "--mode", "validate", "-c", path, "--disable-hot-restart", "--log-level", "error").CombinedOutput()
	if err != nil {
		t.Fatalf("envoy --mode validate: %v\n%s", err, out)
	}
	if _, err := envoyBareBootstrap(1, 2, []string{"no-port"}); err == nil {
		t.Fatal("a worker without a port was accepted")
	}
}
