package main

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// pickerSet is a cell's picker replicas, each an `infergw picker` process of its own on
// 127.0.0.1 (the picker Service's EndpointSlices name their ports, so Envoy balances
// ext_proc streams over them), reading the cell's manifests as the control plane does.
type pickerSet struct {
	mu    sync.Mutex
	procs []*pickerProc
}

type pickerProc struct {
	args    []string
	bin     string
	metrics string // host:port of /readyz
	cmd     *exec.Cmd
	out     *tailBuffer
	done    chan struct{}
}

// pickerSetSpec says how to run the replicas.
type pickerSetSpec struct {
	infergw   string
	manifests string
	ports     []int // gRPC port of each replica
	logLevel  string
	// kvPodPort > 0: precise routing, every replica dialling every pod's KV-event
	// publisher at this port (vLLM's "tcp://*:PORT"), with the model's tokenizer.
	kvPodPort    int
	kvReplayPort int // > 0: the pods' replay endpoint port
	tokenizer    string
	extra        []string // --picker-flag: appended to every replica's flags
}

func startPickers(ctx context.Context, s pickerSetSpec) (*pickerSet, error) {
	set := &pickerSet{}
	for _, port := range s.ports {
		mport, err := freePort("127.0.0.1")
		if err != nil {
			set.stop()
			return nil, err
		}
		p := &pickerProc{bin: s.infergw, metrics: "127.0.0.1:" + strconv.Itoa(mport),
			args: []string{"picker", "--manifests", s.manifests, "--log-level", s.logLevel,
				"--grpc-addr", "127.0.0.1:" + strconv.Itoa(port), "--metrics-addr", "127.0.0.1:" + strconv.Itoa(mport)}}
		if s.kvPodPort > 0 {
			p.args = append(p.args, "--kv-events-pod-port", strconv.Itoa(s.kvPodPort), "--kv-tokenizer", s.tokenizer)
			if s.kvReplayPort > 0 {
				p.args = append(p.args, "--kv-events-replay-port", strconv.Itoa(s.kvReplayPort))
			}
		}
		p.args = append(p.args, s.extra...)
		set.procs = append(set.procs, p)
		if err := p.start(ctx); err != nil {
			set.stop()
			return nil, err
		}
	}
	return set, nil
}

func (p *pickerProc) start(ctx context.Context) error {
	p.cmd = exec.Command(p.bin, p.args...)
	p.out = &tailBuffer{max: 32 << 10}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("picker: %w", err)
	}
	p.done = make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	return p.waitReady(ctx, 60*time.Second)
}

// waitReady polls the replica's /readyz (ready once it has applied the manifests).
func (p *pickerProc) waitReady(ctx context.Context, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("picker exited before it was ready; its last output:\n%s", p.out.String())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.metrics+"/readyz", nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	return fmt.Errorf("picker not ready within %s; its last output:\n%s", timeout, p.out.String())
}

// stopProc ends one replica's process group: SIGTERM (its graceful shutdown, as a rolling
// restart does), SIGKILL after 10 s.
func (p *pickerProc) stopProc() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	pgid := -p.cmd.Process.Pid
	_ = syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(pgid, syscall.SIGKILL)
		<-p.done
	}
	_ = syscall.Kill(pgid, syscall.SIGKILL)
}

// restart restarts replica i as a Kubernetes rollout does: the replica leaves the picker
// Service's endpoints (setPorts without it; Envoy stops sending it streams), gets SIGTERM
// (its graceful drain), starts again with the same arguments (an empty index and an empty
// approximate cache, as after any restart), and rejoins the endpoints once ready. It
// returns how long the replica was out of the endpoints.
func (s *pickerSet) restart(ctx context.Context, i int, setPorts func(without int) error, settle time.Duration) (time.Duration, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.procs[i]
	t0 := time.Now()
	if err := setPorts(i); err != nil {
		return 0, err
	}
	// The control plane's debounce and Envoy's update, as kube-proxy's and the endpoints
	// controller's lag before a terminating Pod's SIGTERM in a cluster.
	time.Sleep(settle)
	p.stopProc()
	if err := p.start(ctx); err != nil {
		return time.Since(t0), err
	}
	err := setPorts(-1)
	return time.Since(t0), err
}

func (s *pickerSet) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.procs {
		p.stopProc()
	}
}

// metricsAddrs are the replicas' /metrics addresses.
func (s *pickerSet) metricsAddrs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.procs))
	for _, p := range s.procs {
		out = append(out, p.metrics)
	}
	return out
}
