// Package envoytest runs a real Envoy for tests: it finds the binary and starts a process
// on a bootstrap that lives until the test ends. The tests of several packages (xds, the
// Kubernetes source, the end-to-end suite, the routing benchmark) drive a real Envoy; this
// is their one copy of how to find and start it.
package envoytest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/infergw/infergw/internal/envoyproc"
)

// Binary returns the real Envoy ($ENVOY_BIN, envoy on PATH, the repository's .venv). CI
// installs it (.ci/run), so there a missing binary fails the test instead of skipping it.
func Binary(t testing.TB) string {
	t.Helper()
	bin, err := envoyproc.Find(".")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must provide Envoy: %v", err)
		}
		t.Skip(err)
	}
	return bin
}

// Process is an Envoy started by Run.
type Process struct {
	// Log is Envoy's log file; its tail is logged when the test fails.
	Log string
	// Exited is closed when the process exits (killed when the test ends).
	Exited <-chan struct{}
}

// Run starts Envoy on a bootstrap (YAML) with one worker and a dynamic base id (so tests
// run side by side), and kills it when the test ends.
func Run(t testing.TB, bin string, bootstrap []byte) *Process {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "bootstrap.yaml")
	if err := os.WriteFile(path, bootstrap, 0o600); err != nil {
		t.Fatal(err)
	}
	logf := filepath.Join(dir, "envoy.log")
	cmd := exec.Command(bin, "-c", path, "--use-dynamic-base-id", "-l", "info", "--log-path", logf, "--concurrency", "1") //nolint:gosec,noctx // the Envoy the test found; the test's cleanup kills it
	if err := cmd.Start(); err != nil {
		t.Fatalf("start envoy: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			if b, err := os.ReadFile(logf); err == nil {
				t.Logf("envoy log:\n%s", LastLines(string(b), 60))
			}
		}
	})
	return &Process{Log: logf, Exited: exited}
}

// LastLines is the last n lines of s.
func LastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
