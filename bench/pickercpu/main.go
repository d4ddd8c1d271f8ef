// Command pickercpu measures the endpoint picker's CPU per request behind a real Envoy.
//
// BenchmarkRequest (extproc) plays Envoy with a bare HTTP/2 client; this plays nothing. It
// runs the real parts as separate processes so each one's CPU can be read from /proc:
//
//	infergw sim --fleet N          the model servers (examples/local's four Pod addresses,
//	                               or --pods N of them in generated manifests)
//	infergw up --no-sims           control plane + picker in one process, Envoy as its child
//	infergw loadtest               the clients, open loop at a fixed rate
//
// At steady state the control plane is idle, so the up process's CPU is the picker's: its
// gRPC server, router, scrape loops and GC. The CPU of the idle stack (scrapes, health
// checks) is measured first and reported separately. CPU is the sum of every thread's
// /proc/PID/task/TID/schedstat run time (nanoseconds; Go keeps its threads). The same file
// counts the times each thread was scheduled in ("wakes" below): on a VM, waking a
// sleeping thread is much of what a request costs a process that is mostly idle.
//
// Usage: go run ./bench/pickercpu [flags]   (make bench-picker)
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

type config struct {
	bin          string
	manifests    string
	pods         int
	transports   []string
	rates        []float64
	duration     time.Duration
	warmup       time.Duration
	idle         time.Duration
	inputTokens  int
	outputTokens int
	stream       bool
	noUsage      bool
	policy       string
	simScale     float64
	out          string
	url          string // the gateway, as `infergw up` prints it
}

// result is one measured cell.
type result struct {
	Transport        string  `json:"transport"`
	Rate             float64 `json:"rate"`
	Requests         int64   `json:"requests"`
	Failed           int64   `json:"failed"`
	MeanBodyBytes    float64 `json:"mean_body_bytes"`
	PickerCPUPerReq  float64 `json:"picker_cpu_us_per_request"`
	IdleCPUPerReq    float64 `json:"idle_cpu_us_per_request"`
	PickerNetPerReq  float64 `json:"picker_cpu_us_per_request_minus_idle"`
	PickerWakesReq   float64 `json:"picker_wakes_per_request_minus_idle"`
	EnvoyWakesReq    float64 `json:"envoy_wakes_per_request"`
	EnvoyCPUPerReq   float64 `json:"envoy_cpu_us_per_request"`
	AchievedRate     float64 `json:"achieved_rate"`
	E2EP50Ms         float64 `json:"e2e_p50_ms"`
	IdleCPUMsPerSec  float64 `json:"idle_cpu_ms_per_s"`
	MeasuredSeconds  float64 `json:"measured_s"`
	PickerCPUSeconds float64 `json:"picker_cpu_s"`
}

func main() {
	var cfg config
	var transports, rates string
	flag.StringVar(&cfg.bin, "bin", "bin/infergw", "infergw binary (make build)")
	flag.StringVar(&cfg.manifests, "manifests", "examples/local", "manifests for `infergw up` (its Pods must be the sim fleet's addresses)")
	flag.IntVar(&cfg.pods, "pods", 4, "simulated pods: the manifests' pods.yaml is replaced by this many copies of its first Pod (127.0.0.2…)")
	flag.StringVar(&transports, "transports", "inline,grpc-go", "picker gRPC transports to compare")
	flag.StringVar(&rates, "rates", "200,800", `request rates (req/s), comma-separated; "" measures the idle stack only`)
	flag.DurationVar(&cfg.duration, "duration", 20*time.Second, "measured time per rate")
	flag.DurationVar(&cfg.warmup, "warmup", 3*time.Second, "unmeasured load before each measurement")
	flag.DurationVar(&cfg.idle, "idle", 5*time.Second, "idle time measured for the stack's background CPU")
	flag.IntVar(&cfg.inputTokens, "input-tokens", 800, "prompt words per request (800 makes a ~4 KB body)")
	flag.IntVar(&cfg.outputTokens, "output-tokens", 16, "tokens per response")
	flag.BoolVar(&cfg.stream, "stream", false, "streamed responses (Envoy then sends the picker one message per chunk)")
	flag.BoolVar(&cfg.noUsage, "no-usage", false, "streamed requests without stream_options.include_usage, as many clients send them (the picker then asks for usage itself and removes the usage chunk)")
	flag.StringVar(&cfg.policy, "policy", "default", "routing policy of `infergw up` (round-robin: no picker on the path, Envoy alone, the baseline the picker's share is measured against)")
	flag.Float64Var(&cfg.simScale, "sim-time-scale", 0.01, "the sims' time scale: 0.01 answers 100× faster than the modelled GPU (tokens then arrive in few large chunks); 1 streams each token as its own chunk, as a real server does")
	flag.StringVar(&cfg.out, "out", "bench/results/picker-cpu", "results file prefix (.md and .json)")
	flag.Parse()
	cfg.transports = strings.Split(transports, ",")
	for _, r := range strings.Split(rates, ",") {
		if strings.TrimSpace(r) == "" {
			continue // --rates "" measures the idle stack only
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(r), 64)
		if err != nil || v <= 0 {
			fmt.Fprintf(os.Stderr, "pickercpu: bad rate %q\n", r)
			os.Exit(2)
		}
		cfg.rates = append(cfg.rates, v)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		fmt.Fprintln(os.Stderr, "pickercpu:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config, log *slog.Logger) error {
	if cfg.pods < 1 || cfg.pods > 250 {
		return fmt.Errorf("--pods %d: want 1 to 250 (one loopback address each)", cfg.pods)
	}
	// Always copied: the sim fleet serves only the first Pod's model, so pods.yaml becomes
	// cfg.pods copies of it (examples/local's Qwen and embeddings pools keep no endpoint).
	dir, err := podManifests(cfg.manifests, cfg.pods)
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg.manifests = dir
	sims, err := startProcess(ctx, cfg.bin, "sim", "--fleet", strconv.Itoa(cfg.pods), "--addr", "127.0.0.1:8000",
		"--time-scale", strconv.FormatFloat(cfg.simScale, 'g', -1, 64), "--log-level", "warn")
	if err != nil {
		return err
	}
	defer sims.stop()
	var out results
	for _, tr := range cfg.transports {
		rs, idle, err := measureTransport(ctx, cfg, tr, log)
		if err != nil {
			return fmt.Errorf("transport %s: %w", tr, err)
		}
		out.Load = append(out.Load, rs...)
		out.Idle = append(out.Idle, idle)
	}
	return writeResults(cfg, out)
}

// podManifests copies the manifest directory src into a temporary one whose pods.yaml
// holds n copies of src's first Pod, named …-0…-(n-1) on 127.0.0.2…, the addresses
// `infergw sim --fleet n` listens on.
func podManifests(src string, n int) (string, error) {
	dir, err := os.MkdirTemp("", "pickercpu-manifests")
	if err != nil {
		return "", err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return "", err
	}
	var pod string
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return "", err
		}
		if e.Name() == "pods.yaml" {
			first, _, _ := strings.Cut(string(data), "\n---\n")
			if i := strings.Index(first, "apiVersion:"); i >= 0 {
				pod = first[i:]
			}
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), data, 0o644); err != nil {
			return "", err
		}
	}
	const name, ip = "vllm-llama3-8b-0", "127.0.0.2"
	if !strings.Contains(pod, name) || !strings.Contains(pod, ip) {
		return "", fmt.Errorf("%s/pods.yaml: no first Pod named %s on %s to copy", src, name, ip)
	}
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString("\n---\n")
		}
		p := strings.ReplaceAll(pod, name, fmt.Sprintf("vllm-llama3-8b-%d", i))
		b.WriteString(strings.ReplaceAll(p, ip, fmt.Sprintf("127.0.0.%d", 2+i)))
	}
	return dir, os.WriteFile(filepath.Join(dir, "pods.yaml"), []byte(b.String()), 0o644)
}

// results is what a run writes: the idle stack of each transport's run, then the cells.
type results struct {
	Idle []idleResult `json:"idle"`
	Load []result     `json:"load"`
}

// idleResult is the stack's background cost before any load: scrape loops, model list
// refreshes, health checks.
type idleResult struct {
	Transport   string  `json:"transport"`
	Seconds     float64 `json:"measured_s"`
	CPUMsPerSec float64 `json:"picker_cpu_ms_per_s"`
	WakesPerSec float64 `json:"picker_wakes_per_s"`
}

func measureTransport(ctx context.Context, cfg config, transport string, log *slog.Logger) ([]result, idleResult, error) {
	up, err := startProcess(ctx, cfg.bin, "up", "--no-sims", "--manifests", cfg.manifests,
		"--grpc-transport", transport, "--policy", cfg.policy, "--log-level", "warn")
	if err != nil {
		return nil, idleResult{}, err
	}
	defer up.stop()
	if _, err := up.waitForLine("infergw is up", 90*time.Second); err != nil {
		return nil, idleResult{}, err
	}
	gw, err := up.waitForLine("gateway ", 5*time.Second)
	if err != nil {
		return nil, idleResult{}, err
	}
	cfg.url = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(gw), "gateway"))
	envoyPID, err := childPID(up.cmd.Process.Pid)
	if err != nil {
		return nil, idleResult{}, err
	}
	log.Info("stack up", "transport", transport, "up_pid", up.cmd.Process.Pid, "envoy_pid", envoyPID)

	// Background CPU of the idle stack: scrape loops, model list refreshes, health checks.
	idle0, idleW0, err := processCPU(up.cmd.Process.Pid)
	if err != nil {
		return nil, idleResult{}, err
	}
	t0 := time.Now()
	select {
	case <-time.After(cfg.idle):
	case <-ctx.Done():
		return nil, idleResult{}, ctx.Err()
	}
	idle1, idleW1, err := processCPU(up.cmd.Process.Pid)
	if err != nil {
		return nil, idleResult{}, err
	}
	idleSecs := time.Since(t0).Seconds()
	idleRate := float64(idle1-idle0) / idleSecs // ns of CPU per second
	idleWakeRate := float64(idleW1-idleW0) / idleSecs
	idle := idleResult{Transport: transport, Seconds: idleSecs, CPUMsPerSec: idleRate / 1e6, WakesPerSec: idleWakeRate}
	log.Info("idle stack", "transport", transport, "cpu_ms_per_s", fmt.Sprintf("%.1f", idle.CPUMsPerSec),
		"wakes_per_s", fmt.Sprintf("%.0f", idle.WakesPerSec))

	var out []result
	for _, rate := range cfg.rates {
		if _, err := loadtest(ctx, cfg, rate, cfg.warmup); err != nil {
			return nil, idleResult{}, fmt.Errorf("warm-up at %.0f req/s: %w", rate, err)
		}
		sizes0, err := bodySizes()
		if err != nil {
			return nil, idleResult{}, err
		}
		p0, pw0, err := processCPU(up.cmd.Process.Pid)
		if err != nil {
			return nil, idleResult{}, err
		}
		e0, ew0, err := processCPU(envoyPID)
		if err != nil {
			return nil, idleResult{}, err
		}
		start := time.Now()
		sum, err := loadtest(ctx, cfg, rate, cfg.duration)
		if err != nil {
			return nil, idleResult{}, fmt.Errorf("load at %.0f req/s: %w", rate, err)
		}
		elapsed := time.Since(start)
		p1, pw1, err := processCPU(up.cmd.Process.Pid)
		if err != nil {
			return nil, idleResult{}, err
		}
		e1, ew1, err := processCPU(envoyPID)
		if err != nil {
			return nil, idleResult{}, err
		}
		sizes1, err := bodySizes()
		if err != nil {
			return nil, idleResult{}, err
		}
		n := float64(sum.Requests)
		if n == 0 {
			return nil, idleResult{}, fmt.Errorf("no request completed at %.0f req/s", rate)
		}
		r := result{
			Transport: transport, Rate: rate, Requests: sum.Requests, Failed: sum.Failed,
			PickerCPUPerReq:  float64(p1-p0) / 1e3 / n,
			IdleCPUPerReq:    idleRate * elapsed.Seconds() / 1e3 / n,
			EnvoyCPUPerReq:   float64(e1-e0) / 1e3 / n,
			PickerWakesReq:   (float64(pw1-pw0) - idleWakeRate*elapsed.Seconds()) / n,
			EnvoyWakesReq:    float64(ew1-ew0) / n,
			AchievedRate:     sum.RequestRate,
			E2EP50Ms:         sum.E2E.P50,
			IdleCPUMsPerSec:  idleRate / 1e6,
			MeasuredSeconds:  elapsed.Seconds(),
			PickerCPUSeconds: float64(p1-p0) / 1e9,
		}
		r.PickerNetPerReq = r.PickerCPUPerReq - r.IdleCPUPerReq
		if c := sizes1.count - sizes0.count; c > 0 {
			r.MeanBodyBytes = (sizes1.sum - sizes0.sum) / c
		}
		log.Info("measured", "transport", transport, "rate", rate, "requests", r.Requests, "failed", r.Failed,
			"picker_cpu_us_per_req", fmt.Sprintf("%.1f", r.PickerCPUPerReq),
			"minus_idle", fmt.Sprintf("%.1f", r.PickerNetPerReq),
			"envoy_cpu_us_per_req", fmt.Sprintf("%.1f", r.EnvoyCPUPerReq),
			"picker_wakes_per_req", fmt.Sprintf("%.2f", r.PickerWakesReq),
			"body_bytes", fmt.Sprintf("%.0f", r.MeanBodyBytes))
		out = append(out, r)
	}
	return out, idle, nil
}

// summary is the part of `infergw loadtest --summary-export` read here.
type summary struct {
	Requests    int64   `json:"requests"`
	Failed      int64   `json:"failed"`
	RequestRate float64 `json:"request_rate"`
	E2E         struct {
		P50 float64 `json:"p50"`
	} `json:"e2e_ms"`
}

func loadtest(ctx context.Context, cfg config, rate float64, d time.Duration) (*summary, error) {
	dir, err := os.MkdirTemp("", "pickercpu")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "summary.json")
	args := []string{"loadtest", "--url", cfg.url, "--model", "meta-llama/Llama-3.1-8B-Instruct",
		"--rate", strconv.FormatFloat(rate, 'f', -1, 64), "--duration", d.String(),
		"--input-tokens", strconv.Itoa(cfg.inputTokens), "--output-tokens", strconv.Itoa(cfg.outputTokens),
		"--grace", "10s", "-q", "--summary-export", file}
	if !cfg.stream {
		args = append(args, "--no-stream")
	}
	if cfg.noUsage {
		args = append(args, "--no-usage")
	}
	cmd := exec.CommandContext(ctx, cfg.bin, args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("loadtest: %w: %s", err, stderr.Bytes())
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var s summary
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("loadtest summary: %w", err)
	}
	if s.Failed > 0 {
		return nil, fmt.Errorf("%d of %d requests failed", s.Failed, s.Requests)
	}
	return &s, nil
}

type histogram struct{ count, sum float64 }

// bodySizes reads the picker's request-size histogram (sum over every series).
func bodySizes() (histogram, error) {
	resp, err := http.Get("http://127.0.0.1:9090/metrics")
	if err != nil {
		return histogram{}, fmt.Errorf("picker metrics: %w", err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return histogram{}, fmt.Errorf("picker metrics: %w", err)
	}
	var h histogram
	if f := fams["inference_objective_request_sizes"]; f != nil {
		for _, m := range f.GetMetric() {
			h.count += float64(m.GetHistogram().GetSampleCount())
			h.sum += m.GetHistogram().GetSampleSum()
		}
	}
	return h, nil
}

// processCPU is the run time of every thread of pid, in nanoseconds, and the number of
// times its threads were scheduled in.
func processCPU(pid int) (ns, wakes int64, err error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("threads of %d: %w", pid, err)
	}
	for _, t := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue // the thread just ended
		}
		fields := strings.Fields(string(data))
		if len(fields) < 3 {
			continue
		}
		run, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("schedstat of %d/%s: %w", pid, t.Name(), err)
		}
		slices, err := strconv.ParseInt(fields[2], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("schedstat of %d/%s: %w", pid, t.Name(), err)
		}
		ns += run
		wakes += slices
	}
	return ns, wakes, nil
}

// childPID finds the only child process of pid (Envoy under `infergw up`).
func childPID(pid int) (int, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	for _, t := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(data)); len(f) > 0 {
			return strconv.Atoi(f[0])
		}
	}
	return 0, fmt.Errorf("process %d has no child (no Envoy)", pid)
}

// process is a started infergw subcommand whose output is scanned for readiness.
type process struct {
	cmd   *exec.Cmd
	lines chan string
	done  chan error
}

func startProcess(ctx context.Context, bin string, args ...string) (*process, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s %s: %w", bin, args[0], err)
	}
	p := &process{cmd: cmd, lines: make(chan string, 64), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default: // nobody is waiting for lines any more
			}
		}
		p.done <- cmd.Wait()
	}()
	return p, nil
}

// waitForLine returns the first line of output containing substr.
func (p *process) waitForLine(substr string, timeout time.Duration) (string, error) {
	deadline := time.After(timeout)
	for {
		select {
		case l := <-p.lines:
			if strings.Contains(l, substr) {
				return l, nil
			}
		case err := <-p.done:
			return "", fmt.Errorf("%s exited before %q: %w", p.cmd.Args[1], substr, err)
		case <-deadline:
			return "", fmt.Errorf("%s did not print %q within %s", p.cmd.Args[1], substr, timeout)
		}
	}
}

// stop interrupts the process (infergw stops cleanly on SIGINT) and waits for it.
func (p *process) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt) // already gone: done is closed below anyway
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill() // an error means it is gone: done closes either way
		<-p.done
	}
}

func writeResults(cfg config, res results) error {
	if err := os.MkdirAll(filepath.Dir(cfg.out), 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(cfg.out+".json", append(data, '\n'), 0o644); err != nil {
		return err
	}
	var b strings.Builder
	mode := "non-streamed"
	if cfg.stream {
		mode = "streamed"
	}
	fmt.Fprintf(&b, "# Picker CPU per request behind Envoy\n\n")
	fmt.Fprintf(&b, "`%s` on %s: %d prompt words (mean body in the table), %d output tokens, %s responses; %s measured per rate after a %s warm-up.\n\n",
		strings.TrimSpace("go run ./bench/pickercpu "+strings.Join(os.Args[1:], " ")), time.Now().UTC().Format("2006-01-02"), cfg.inputTokens, cfg.outputTokens, mode, cfg.duration, cfg.warmup)
	b.WriteString("Idle stack (`infergw up --no-sims`: control plane and picker, 4 pods scraped every 50 ms), before any load:\n\n")
	b.WriteString("| transport | measured (s) | picker process CPU (ms/s) | wake-ups/s |\n|---|---:|---:|---:|\n")
	for _, r := range res.Idle {
		fmt.Fprintf(&b, "| %s | %.0f | %.1f | %.0f |\n", r.Transport, r.Seconds, r.CPUMsPerSec, r.WakesPerSec)
	}
	if len(res.Load) > 0 {
		b.WriteString("\n| transport | rate (req/s) | requests | mean body (B) | picker CPU µs/req | of which idle stack | picker minus idle | picker wakes/req (minus idle) | Envoy CPU µs/req | Envoy wakes/req | e2e p50 (ms) |\n")
		b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	}
	for _, r := range res.Load {
		fmt.Fprintf(&b, "| %s | %.0f | %d | %.0f | %.1f | %.1f | %.1f | %.2f | %.1f | %.2f | %.2f |\n", r.Transport, r.Rate, r.Requests,
			r.MeanBodyBytes, r.PickerCPUPerReq, r.IdleCPUPerReq, r.PickerNetPerReq, r.PickerWakesReq, r.EnvoyCPUPerReq, r.EnvoyWakesReq, r.E2EP50Ms)
	}
	if err := os.WriteFile(cfg.out+".md", []byte(b.String()), 0o644); err != nil {
		return err
	}
	fmt.Print(b.String())
	return nil
}
