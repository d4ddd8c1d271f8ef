package envoyproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// envoyOrSkip returns the real Envoy binary. CI installs it, so there a missing binary fails
// the test instead of skipping it.
func envoyOrSkip(t *testing.T) string {
	t.Helper()
	bin, err := Find(".")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must provide Envoy: %v", err)
		}
		t.Skip(err)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestStartReadyStop(t *testing.T) {
	bin := envoyOrSkip(t)
	admin := freeAddr(t)
	host, port, _ := net.SplitHostPort(admin)
	bootstrap := fmt.Sprintf(`admin:
  address: {socket_address: {address: %s, port_value: %s}}
static_resources: {}
`, host, port)
	p, err := Start(Config{Binary: bin, Bootstrap: []byte(bootstrap), AdminAddr: admin}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + admin + "/server_info")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(body) == 0 {
		t.Fatalf("server_info: %d %q", resp.StatusCode, body)
	}
	pid := p.Pid()
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("envoy pid %d still exists after Stop (kill 0: %v)", pid, err)
	}
	if err := p.Stop(time.Second); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

func TestWaitReadyReportsEarlyExit(t *testing.T) {
	bin := envoyOrSkip(t)
	p, err := Start(Config{Binary: bin, Bootstrap: []byte("not: [valid"), AdminAddr: freeAddr(t)}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.WaitReady(ctx); err == nil || ctx.Err() != nil {
		t.Fatalf("want an early-exit error, got %v (ctx %v)", err, ctx.Err())
	}
}

func TestFindHonoursEnvoyBin(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "envoy-custom")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ENVOY_BIN", fake)
	got, err := Find(dir)
	if err != nil || got != fake {
		t.Fatalf("Find = %q, %v; want %q", got, err, fake)
	}
	t.Setenv("ENVOY_BIN", filepath.Join(dir, "missing"))
	if _, err := Find(dir); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing $ENVOY_BIN: got %v, want ErrNotFound", err)
	}
}

// Find walks up from a relative directory to the nearest .venv/bin/envoy, and ends (with
// ErrNotFound) at the root when there is none: "." has itself as parent, so a walk that
// is not made absolute first would never end.
func TestFindWalksUpToVenv(t *testing.T) {
	t.Setenv("ENVOY_BIN", "")
	t.Setenv("PATH", t.TempDir()) // no envoy on PATH
	root := t.TempDir()
	deep := filepath.Join(root, "a", "b")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(deep)
	done := make(chan struct{})
	var err error
	go func() { _, err = Find("."); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Find(\".\") did not return without an envoy anywhere")
	}
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("no envoy anywhere: got %v, want ErrNotFound", err)
	}

	venv := filepath.Join(root, ".venv", "bin")
	if err := os.MkdirAll(venv, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(venv, "envoy"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := Find(".")
	if err != nil || got != filepath.Join(venv, "envoy") {
		t.Fatalf("Find(\".\") = %q, %v; want the .venv two levels up", got, err)
	}
}
