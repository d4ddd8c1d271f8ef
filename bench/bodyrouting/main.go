// Command bodyrouting measures what body-based routing costs per request behind a real
// Envoy: the same stack, pods and load twice, once with a plain pool route (every request
// to the Llama pool) and once with examples/local's model route (X-Gateway-Model-Name
// matches: a body-routing route, the model route table, the headers, the re-match). The
// difference is the feature's price.
//
// Each variant runs as separate processes, as bench/pickercpu does, so that each one's
// CPU comes from /proc (the sum of every thread's schedstat run time):
//
//	infergw sim --fleet 4      the model servers, on 127.0.0.20… (not the default
//	                           127.0.0.2…, so a gateway already running is no obstacle)
//	infergw up --no-sims       control plane + picker, Envoy as its child
//	infergw loadtest           the clients, open loop at a fixed rate, no streaming
//
// Every port is a free one. Variants alternate (plain, model, plain, model, …) so that a
// shared machine's drift hits both alike.
//
// Usage: go run ./bench/bodyrouting [flags]   (make bench-body-routing)
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/infergw/infergw/loadtest"
)

type config struct {
	bin, examples, plainRoute, out string
	rate                           float64
	duration, warmup, idle         time.Duration
	rounds, inputTokens            int
}

// cell is one measured run of one variant.
type cell struct {
	Variant      string  `json:"variant"`
	Round        int     `json:"round"`
	Requests     int64   `json:"requests"`
	Failed       int64   `json:"failed"`
	AchievedRate float64 `json:"achieved_rate"`
	// CPU per request with the idle stack's CPU (scrapes, health checks) over the same
	// time subtracted.
	PickerCPUPerRq float64 `json:"picker_cpu_us_per_request_minus_idle"`
	EnvoyCPUPerRq  float64 `json:"envoy_cpu_us_per_request_minus_idle"`
	E2EP50Ms       float64 `json:"e2e_p50_ms"`
	E2EP99Ms       float64 `json:"e2e_p99_ms"`
}

const (
	fleetFirstIP = "127.0.0.20"
	fleetSize    = 4
	model        = "meta-llama/Llama-3.1-8B-Instruct"
)

func main() {
	var cfg config
	flag.StringVar(&cfg.bin, "bin", "bin/infergw", "infergw binary (make build)")
	flag.StringVar(&cfg.examples, "examples", "examples/local", "manifests; their httproute.yaml is the model-routed variant")
	flag.StringVar(&cfg.plainRoute, "plain-route", "bench/bodyrouting/plain-route.yaml", "the plain variant's HTTPRoute")
	flag.Float64Var(&cfg.rate, "rate", 200, "request rate (req/s)")
	flag.DurationVar(&cfg.duration, "duration", 20*time.Second, "measured time per run")
	flag.DurationVar(&cfg.warmup, "warmup", 3*time.Second, "unmeasured load before each run")
	flag.DurationVar(&cfg.idle, "idle", 5*time.Second, "idle time measured before each run (its CPU rate is subtracted)")
	flag.IntVar(&cfg.rounds, "rounds", 3, "runs of each variant, alternating")
	flag.IntVar(&cfg.inputTokens, "input-tokens", 800, "prompt words per request (800 makes a ~4 KB body)")
	flag.StringVar(&cfg.out, "out", "bench/results/body-routing", "results file prefix (.md and .json)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bodyrouting:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config) error {
	if cfg.rounds < 1 || cfg.rate <= 0 {
		return errors.New("want --rounds ≥ 1 and --rate > 0")
	}
	ips := make([]string, fleetSize)
	for i := range ips {
		ips[i] = fmt.Sprintf("127.0.0.%d", 20+i)
	}
	simPort, err := freePortOnAll(ips)
	if err != nil {
		return err
	}
	sims := exec.CommandContext(ctx, cfg.bin, "sim", "--fleet", strconv.Itoa(fleetSize), "--fleet-first-ip", fleetFirstIP,
		"--addr", fmt.Sprintf("127.0.0.1:%d", simPort), "--time-scale", "0.01", "--log-level", "warn")
	sims.Stdout, sims.Stderr = io.Discard, os.Stderr
	if err := sims.Start(); err != nil {
		return fmt.Errorf("start sims: %w", err)
	}
	defer stopProcess(sims)

	var cells []cell
	for round := 1; round <= cfg.rounds; round++ {
		for _, variant := range []string{"plain", "model"} {
			c, err := measure(ctx, cfg, variant, round, ips, simPort)
			if err != nil {
				return fmt.Errorf("%s round %d: %w", variant, round, err)
			}
			fmt.Fprintf(os.Stderr, "%-5s round %d: %d requests (%d failed), picker %.1f µs/req, envoy %.1f µs/req, e2e p50 %.2f ms p99 %.2f ms\n",
				variant, round, c.Requests, c.Failed, c.PickerCPUPerRq, c.EnvoyCPUPerRq, c.E2EP50Ms, c.E2EP99Ms)
			cells = append(cells, c)
		}
	}
	return write(cfg, cells)
}

// measure runs one variant: manifests, stack, warm-up, measured load, stack down.
func measure(ctx context.Context, cfg config, variant string, round int, ips []string, simPort int) (cell, error) {
	gwPort, err := freePort()
	if err != nil {
		return cell{}, err
	}
	pickerPort, err := freePort()
	if err != nil {
		return cell{}, err
	}
	dir, err := manifests(cfg, variant, ips, gwPort, pickerPort, simPort)
	if err != nil {
		return cell{}, err
	}
	defer os.RemoveAll(dir)
	var addrs [3]string
	for i := range addrs {
		p, err := freePort()
		if err != nil {
			return cell{}, err
		}
		addrs[i] = fmt.Sprintf("127.0.0.1:%d", p)
	}
	up := exec.CommandContext(ctx, cfg.bin, "up", "--no-sims", "--manifests", dir, "--log-level", "warn",
		"--xds-addr", addrs[0], "--envoy-admin-addr", addrs[1], "--metrics-addr", addrs[2])
	out, err := up.StdoutPipe()
	if err != nil {
		return cell{}, err
	}
	up.Stderr = io.Discard
	if err := up.Start(); err != nil {
		return cell{}, fmt.Errorf("start up: %w", err)
	}
	defer stopProcess(up)
	if err := waitForLine(out, "infergw is up", 90*time.Second); err != nil {
		return cell{}, err
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	envoy, err := childPID(up.Process.Pid)
	if err != nil {
		return cell{}, err
	}
	url := fmt.Sprintf("http://127.0.0.1:%d", gwPort)
	pIdle, eIdle, err := idleRates(ctx, up.Process.Pid, envoy, cfg.idle)
	if err != nil {
		return cell{}, err
	}
	if _, err := load(ctx, cfg, url, cfg.warmup); err != nil {
		return cell{}, fmt.Errorf("warm-up: %w", err)
	}
	p0, err := processCPU(up.Process.Pid)
	if err != nil {
		return cell{}, err
	}
	e0, err := processCPU(envoy)
	if err != nil {
		return cell{}, err
	}
	start := time.Now()
	s, err := load(ctx, cfg, url, cfg.duration)
	if err != nil {
		return cell{}, err
	}
	elapsed := time.Since(start).Seconds()
	p1, err := processCPU(up.Process.Pid)
	if err != nil {
		return cell{}, err
	}
	e1, err := processCPU(envoy)
	if err != nil {
		return cell{}, err
	}
	if s.Requests == 0 {
		return cell{}, errors.New("no request completed")
	}
	n := float64(s.Requests)
	return cell{
		Variant: variant, Round: round, Requests: s.Requests, Failed: s.Failed, AchievedRate: s.RequestRate,
		PickerCPUPerRq: (float64(p1-p0) - pIdle*elapsed) / 1e3 / n, EnvoyCPUPerRq: (float64(e1-e0) - eIdle*elapsed) / 1e3 / n,
		E2EP50Ms: s.E2E.P50, E2EP99Ms: s.E2E.P99,
	}, nil
}

// manifests copies the examples with free ports, fleetSize Llama pods on the fleet's
// addresses (the other pools keep no endpoint) and, for the plain variant, the plain route.
func manifests(cfg config, variant string, ips []string, gwPort, pickerPort, simPort int) (string, error) {
	dir, err := os.MkdirTemp("", "bodyrouting-manifests")
	if err != nil {
		return "", err
	}
	ports := strings.NewReplacer("port: 8080", fmt.Sprintf("port: %d", gwPort), "9002", strconv.Itoa(pickerPort),
		"number: 8000", fmt.Sprintf("number: %d", simPort))
	entries, err := os.ReadDir(cfg.examples)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".yaml") || e.Name() == "pods.yaml" {
			continue
		}
		src := filepath.Join(cfg.examples, e.Name())
		if e.Name() == "httproute.yaml" && variant == "plain" {
			src = cfg.plainRoute
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), []byte(ports.Replace(string(data))), 0o600); err != nil {
			return "", err
		}
	}
	var pods strings.Builder
	for i, ip := range ips {
		fmt.Fprintf(&pods, `---
apiVersion: v1
kind: Pod
metadata:
  name: vllm-llama3-8b-%d
  namespace: default
  labels: {app: vllm-llama3-8b, inference.networking.k8s.io/engine-type: vllm}
spec:
  containers: [{name: vllm, image: vllm/vllm-openai}]
status:
  podIP: %s
  conditions: [{type: Ready, status: "True"}]
`, i, ip)
	}
	return dir, os.WriteFile(filepath.Join(dir, "pods.yaml"), []byte(pods.String()), 0o600)
}

func load(ctx context.Context, cfg config, url string, d time.Duration) (*loadtest.Summary, error) {
	dir, err := os.MkdirTemp("", "bodyrouting-load")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "summary.json")
	cmd := exec.CommandContext(ctx, cfg.bin, "loadtest", "--url", url, "--model", model,
		"--rate", strconv.FormatFloat(cfg.rate, 'f', -1, 64), "--duration", d.String(),
		"--input-tokens", strconv.Itoa(cfg.inputTokens), "--output-tokens", "16", "--no-stream",
		"--grace", "10s", "-q", "--summary-export", file)
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("loadtest: %w: %s", err, stderr.String())
	}
	ns, err := loadtest.ReadSummary(file)
	if err != nil {
		return nil, err
	}
	s := ns.Summary
	if s == nil {
		return nil, errors.New("loadtest wrote no summary")
	}
	if s.Failed > 0 {
		return nil, fmt.Errorf("%d of %d requests failed", s.Failed, s.Requests)
	}
	return s, nil
}

// idleRates measures the CPU (ns per second) of the idle picker process and Envoy.
func idleRates(ctx context.Context, picker, envoy int, d time.Duration) (float64, float64, error) {
	p0, err := processCPU(picker)
	if err != nil {
		return 0, 0, err
	}
	e0, err := processCPU(envoy)
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	select {
	case <-time.After(d):
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
	p1, err := processCPU(picker)
	if err != nil {
		return 0, 0, err
	}
	e1, err := processCPU(envoy)
	if err != nil {
		return 0, 0, err
	}
	secs := time.Since(start).Seconds()
	return float64(p1-p0) / secs, float64(e1-e0) / secs, nil
}

func waitForLine(r io.Reader, substr string, timeout time.Duration) error {
	found := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if strings.Contains(sc.Text(), substr) {
				found <- nil
				return
			}
		}
		found <- fmt.Errorf("output ended before %q", substr)
	}()
	select {
	case err := <-found:
		return err
	case <-time.After(timeout):
		return fmt.Errorf("no %q within %s", substr, timeout)
	}
}

// processCPU sums the run time (ns) of every thread of pid from /proc/PID/task/*/schedstat.
func processCPU(pid int) (int64, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil {
		return 0, fmt.Errorf("threads of %d: %w", pid, err)
	}
	if len(tasks) == 0 {
		return 0, fmt.Errorf("process %d has no threads (gone?)", pid)
	}
	var total int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // a thread that just ended
		}
		f := strings.Fields(string(b))
		if len(f) < 1 {
			continue
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", t, err)
		}
		total += ns
	}
	return total, nil
}

// childPID is the single child process of pid (Envoy under `infergw up`).
func childPID(pid int) (int, error) {
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(s); err == nil {
				return n, nil
			}
		}
	}
	return 0, fmt.Errorf("no child process of %d (Envoy)", pid)
}

func stopProcess(cmd *exec.Cmd) {
	if cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func freePortOnAll(ips []string) (int, error) {
	for attempt := 0; attempt < 50; attempt++ {
		l, err := net.Listen("tcp", net.JoinHostPort(ips[0], "0"))
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		ok := true
		for _, ip := range ips[1:] {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return port, nil
		}
	}
	return 0, errors.New("no port free on every sim address")
}

// write saves the cells as JSON and a Markdown table with each variant's median.
func write(cfg config, cells []cell) error {
	if err := os.MkdirAll(filepath.Dir(cfg.out), 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(cells, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(cfg.out+".json", append(js, '\n'), 0o600); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Body-based routing cost (`go run ./bench/bodyrouting --rate %g --duration %s --rounds %d`): "+
		"%d Llama sims, ~%d-word non-streamed chat requests, Envoy + `infergw up --no-sims`.\n\n",
		cfg.rate, cfg.duration, cfg.rounds, fleetSize, cfg.inputTokens)
	b.WriteString("| variant | round | requests | picker CPU µs/req (− idle) | Envoy CPU µs/req (− idle) | e2e p50 ms | e2e p99 ms |\n|---|---|---|---|---|---|---|\n")
	for _, c := range cells {
		fmt.Fprintf(&b, "| %s | %d | %d | %.1f | %.1f | %.2f | %.2f |\n", c.Variant, c.Round, c.Requests, c.PickerCPUPerRq, c.EnvoyCPUPerRq, c.E2EP50Ms, c.E2EP99Ms)
	}
	med := func(variant string, f func(cell) float64) float64 {
		var v []float64
		for _, c := range cells {
			if c.Variant == variant {
				v = append(v, f(c))
			}
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	b.WriteString("\n| median | picker CPU µs/req | Envoy CPU µs/req | e2e p50 ms |\n|---|---|---|---|\n")
	for _, v := range []string{"plain", "model"} {
		fmt.Fprintf(&b, "| %s | %.1f | %.1f | %.2f |\n", v,
			med(v, func(c cell) float64 { return c.PickerCPUPerRq }), med(v, func(c cell) float64 { return c.EnvoyCPUPerRq }),
			med(v, func(c cell) float64 { return c.E2EP50Ms }))
	}
	fmt.Fprintf(&b, "| model − plain | %+.1f | %+.1f | %+.2f |\n",
		med("model", func(c cell) float64 { return c.PickerCPUPerRq })-med("plain", func(c cell) float64 { return c.PickerCPUPerRq }),
		med("model", func(c cell) float64 { return c.EnvoyCPUPerRq })-med("plain", func(c cell) float64 { return c.EnvoyCPUPerRq }),
		med("model", func(c cell) float64 { return c.E2EP50Ms })-med("plain", func(c cell) float64 { return c.E2EP50Ms }))
	fmt.Print(b.String())
	return os.WriteFile(cfg.out+".md", []byte(b.String()), 0o600)
}
