package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The routing layer of a cell runs as its own process tree, the way it runs in production,
// so that its CPU can be measured apart from the sims and the load tester (which share the
// benchmark's process): `infergw up --no-sims` (control plane + picker, Envoy as its child)
// for infergw's policies, the peer router's own process for the peers.

// peerPolicies are the peer routers the benchmark can run next to infergw (with --peers),
// each with its cache-aware policy, the one it recommends for prefix reuse.
var peerPolicies = []string{"sglang-router", "vllm-router"}

func isPeer(policy string) bool {
	if policy == envoyBare {
		return true
	}
	for _, p := range peerPolicies {
		if p == policy {
			return true
		}
	}
	return false
}

// layerProcess is a running routing layer.
type layerProcess struct {
	name    string
	metrics string // host:port of infergw's /metrics ("" for a peer)
	cmd     *exec.Cmd
	url     string
	out     *tailBuffer
	done    chan struct{}
	err     error // set before done is closed
}

// layerSpec says how to start one cell's routing layer.
type layerSpec struct {
	policy    string
	infergw   string // bin/infergw
	envoy     string
	manifests string
	gateway   int // the port clients use
	workers   []string
	model     string
	peersVenv string
	logLevel  string
	kvBind    string // precise: where the picker binds its KV-event subscriber
	tokenizer string // precise: the model's tokenizer directory
	// externalPicker: the pickers run apart (pickerSet); up runs control plane and Envoy.
	externalPicker bool
	oraclePort     int      // oracle: the sims' port, asked at every pick
	upFlags        []string // extra flags for `infergw up` (--up-flag)
}

func startLayer(ctx context.Context, s layerSpec) (*layerProcess, error) {
	var args []string
	var bin, metricsAddr string
	switch s.policy {
	case envoyBare:
		bin = s.envoy
		var err error
		if args, err = envoyBareArgs(s); err != nil {
			return nil, err
		}
	case "sglang-router", "vllm-router":
		bin = s.peersVenv + "/bin/" + s.policy
		prom, err := freePort("127.0.0.1")
		if err != nil {
			return nil, err
		}
		args = []string{"--host", "127.0.0.1", "--port", strconv.Itoa(s.gateway),
			"--policy", "cache_aware", "--prometheus-host", "127.0.0.1", "--prometheus-port", strconv.Itoa(prom),
			"--log-level", "error", "--worker-urls"}
		if s.policy == "sglang-router" {
			args = append([]string{"launch"}, args...)
		}
		for _, w := range s.workers {
			args = append(args, "http://"+w)
		}
	default:
		bin = s.infergw
		ports := make([]int, 3)
		for i := range ports {
			p, err := freePort("127.0.0.1")
			if err != nil {
				return nil, err
			}
			ports[i] = p
		}
		policy := s.policy
		if s.externalPicker || policy == "oracle" {
			// The picker's scorer set is the replicas' (or the oracle flag's) business.
			policy = "default"
		}
		args = []string{"up", "--no-sims", "--manifests", s.manifests, "--policy", policy,
			"--model", s.model, "--envoy", s.envoy, "--log-level", s.logLevel,
			"--xds-addr", "127.0.0.1:" + strconv.Itoa(ports[0]),
			"--envoy-admin-addr", "127.0.0.1:" + strconv.Itoa(ports[1]),
			"--metrics-addr", "127.0.0.1:" + strconv.Itoa(ports[2])}
		metricsAddr = "127.0.0.1:" + strconv.Itoa(ports[2])
		if s.kvBind != "" {
			args = append(args, "--kv-events-bind", s.kvBind, "--kv-tokenizer", s.tokenizer)
		}
		if s.externalPicker {
			args = append(args, "--external-picker")
		}
		if s.oraclePort > 0 {
			args = append(args, "--kv-oracle-port", strconv.Itoa(s.oraclePort))
		}
		args = append(args, s.upFlags...)
	}
	cmd := exec.Command(bin, args...)
	out := &tailBuffer{max: 64 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group: stopping the layer stops everything it started (Envoy, the
	// peer router's workers) even if the root does not forward the signal.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: start %s: %w", s.policy, bin, err)
	}
	p := &layerProcess{name: s.policy, cmd: cmd, out: out, done: make(chan struct{}), metrics: metricsAddr,
		url: "http://127.0.0.1:" + strconv.Itoa(s.gateway)}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := p.waitReady(ctx, s.model, 120*time.Second); err != nil {
		return nil, errors.Join(err, p.stop())
	}
	return p, nil
}

// waitReady sends a chat completion until one succeeds: the layer is ready when it routes.
func (p *layerProcess) waitReady(ctx context.Context, model string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	body := []byte(`{"model":"` + model + `","messages":[{"role":"user","content":"ready?"}],"max_tokens":2}`)
	client := &http.Client{Timeout: 5 * time.Second}
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready (%w); its last output:\n%s", p.name, p.err, p.out.String())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url+"/v1/chat/completions", bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("content-type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			last = err.Error()
			continue
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return nil
		}
		last = fmt.Sprintf("%d %s", resp.StatusCode, b)
	}
	return fmt.Errorf("%s not ready within %s (last answer: %s); its last output:\n%s", p.name, timeout, last, p.out.String())
}

func (p *layerProcess) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM to the layer's process group, then SIGKILL after 10 s.
func (p *layerProcess) stop() error {
	pgid := -p.cmd.Process.Pid
	_ = syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(pgid, syscall.SIGKILL)
		<-p.done
	}
	// Stragglers of the group (a child that ignored SIGTERM) must not outlive the cell.
	_ = syscall.Kill(pgid, syscall.SIGKILL)
	return nil
}

// tailBuffer keeps the last max bytes written: a layer's log for an error message, bounded
// however much it writes.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}

// peerVersions pins the peer routers the benchmark installs from PyPI.
var peerVersions = map[string]string{"sglang-router": "0.3.2", "vllm-router": "0.1.17"}

// ensurePeers installs the peer routers into a venv cached under ~/.cache/infergw (once
// per machine; a marker file records a complete install) and returns the venv directory.
func ensurePeers(ctx context.Context, progress io.Writer) (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("peers: cache dir: %w", err)
	}
	venv := cache + "/infergw/peers-venv-sglang-" + peerVersions["sglang-router"] + "-vllm-" + peerVersions["vllm-router"]
	marker := venv + "/.infergw-complete"
	if _, err := os.Stat(marker); err == nil {
		return venv, nil
	}
	fmt.Fprintf(progress, "peers: installing sglang-router %s and vllm-router %s from PyPI into %s (once per machine, ~1 minute)\n",
		peerVersions["sglang-router"], peerVersions["vllm-router"], venv)
	if err := os.RemoveAll(venv); err != nil {
		return "", fmt.Errorf("peers: %w", err)
	}
	steps := [][]string{
		{"python3", "-m", "venv", venv},
		{venv + "/bin/python", "-m", "pip", "install", "-q", "--disable-pip-version-check",
			"sglang-router==" + peerVersions["sglang-router"], "vllm-router==" + peerVersions["vllm-router"]},
	}
	for _, st := range steps {
		cmd := exec.CommandContext(ctx, st[0], st[1:]...)
		cmd.Stdout, cmd.Stderr = progress, progress
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("peers: %s: %w", strings.Join(st, " "), err)
		}
	}
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		return "", fmt.Errorf("peers: %w", err)
	}
	return venv, nil
}
