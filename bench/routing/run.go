package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/infergw/infergw/kvroute"
	"github.com/infergw/infergw/loadtest"
	"github.com/infergw/infergw/router"
	"github.com/infergw/infergw/stack"
)

// runResult is one (workload, policy) cell of the benchmark.
type runResult struct {
	Workload string            `json:"workload"`
	Policy   string            `json:"policy"`
	WallRate float64           `json:"offered_rate_per_wall_s"`
	Summary  *loadtest.Summary `json:"summary"`
	CPU      CPUUsage          `json:"cpu"`
	Sims     fleetCounters     `json:"sims"`
	View     *fleetView        `json:"sim_view,omitempty"`
	Recipe   string            `json:"loadtest_command"`
}

// runner runs cells one after another, each on a fresh stack.
type runner struct {
	plan     plan
	envoyBin string
	tmp      string
	log      *slog.Logger // for the stack (quiet)
	progress io.Writer
	// viewEvery samples every sim's /debug/engine this often during a cell (0 = only at
	// the start and end).
	viewEvery time.Duration
}

// stackConfig is the stack of one cell: the policy changes only the picker's scheduler, or
// (round-robin) turns the picker off so Envoy's round robin chooses.
func (r *runner) stackConfig(manifests string, policy string) (stack.Config, error) {
	cfg := stack.DefaultConfig()
	cfg.ManifestDir = manifests
	cfg.Sim = r.plan.Sim
	cfg.EnvoyBinary = r.envoyBin
	cfg.EnvoyOutput = io.Discard
	cfg.EnvoyLogLevel = "error"
	cfg.ReadyTimeout = 60 * time.Second
	ports := make([]int, 3)
	for i := range ports {
		p, err := freePort("127.0.0.1")
		if err != nil {
			return cfg, err
		}
		ports[i] = p
	}
	cfg.XDSAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	cfg.EnvoyAdminAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	cfg.MetricsAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2]))
	cfg.Translate.ListenerAddress = "127.0.0.1"
	switch policy {
	case "round-robin":
		cfg.Translate.DisablePicker = true
	case "precise":
		// The sims publish their KV events to the picker, which scores with them.
		ref := new(kvroute.Ref)
		plugins := router.NewRegistry()
		if err := kvroute.Register(plugins, ref); err != nil {
			return cfg, err
		}
		sc, err := router.PolicyConfig(policy)
		if err != nil {
			return cfg, err
		}
		cfg.Router.Scheduler, cfg.Router.Plugins = sc, plugins
		cfg.KVEvents = &kvroute.Options{Bind: "tcp://127.0.0.1:0", Tokenizers: map[string]string{"": r.plan.Sim.Tokenizer}}
		cfg.KVSource = ref
	default:
		sc, err := router.PolicyConfig(policy)
		if err != nil {
			return cfg, err
		}
		cfg.Router.Scheduler = sc
	}
	return cfg, nil
}

// layout picks free ports and writes a fresh manifest directory for one cell.
func (r *runner) layout(cell string) (string, fleetLayout, error) {
	l := fleetLayout{Namespace: "bench", Pool: "bench-pool", Pods: r.plan.Pods,
		FirstPodIP: net.IPv4(127, 0, 0, 2), Model: baseModel}
	hosts := make([]string, l.Pods)
	for i := range hosts {
		hosts[i] = l.podIP(i)
	}
	var err error
	if l.TargetPort, err = freePortOnAll(hosts); err != nil {
		return "", l, err
	}
	if l.GatewayPort, err = freePort("127.0.0.1"); err != nil {
		return "", l, err
	}
	if l.PickerPort, err = freePort("127.0.0.1"); err != nil {
		return "", l, err
	}
	dir := filepath.Join(r.tmp, cell)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", l, fmt.Errorf("manifests dir: %w", err)
	}
	return dir, l, writeManifests(dir, l)
}

func (r *runner) loadConfig(wl workloadSpec, url string) loadtest.Config {
	cfg := loadtest.Config{
		URL:         url,
		Models:      wl.Models,
		IgnoreEOS:   true,
		Rate:        wl.ModelRate / r.plan.TimeScale,
		Arrival:     r.plan.Arrival,
		Warmup:      wl.Warmup,
		Duration:    wl.Duration,
		Workload:    wl.Workload,
		Seed:        r.plan.Seed,
		Timeout:     300 * time.Second,
		GracePeriod: 120 * time.Second,
	}
	if wl.HeavyTail != nil {
		cfg.Workload.ShareGPTFile = filepath.Join(r.tmp, wl.Name+".sharegpt.json")
	}
	if r.plan.Sim.Tokenizer != "" {
		// Prompts in the sims' model's own tokens, so that lengths mean what they say.
		cfg.Workload.Tokenizer = r.plan.Sim.Tokenizer
	}
	return cfg
}

// prepare writes per-workload inputs (the heavy-tail dataset) once, shared by every policy.
func (r *runner) prepare(wl workloadSpec) error {
	if wl.HeavyTail == nil {
		return nil
	}
	return writeHeavyTailDataset(filepath.Join(r.tmp, wl.Name+".sharegpt.json"), *wl.HeavyTail, r.plan.Seed)
}

// runCell starts a fresh stack (cold caches, same sims), runs the workload and stops it.
func (r *runner) runCell(ctx context.Context, wl workloadSpec, policy string) (res *runResult, err error) {
	cell := wl.Name + "-" + policy
	dir, _, err := r.layout(cell)
	if err != nil {
		return nil, err
	}
	scfg, err := r.stackConfig(dir, policy)
	if err != nil {
		return nil, err
	}
	st, err := stack.Start(ctx, scfg, r.log)
	if err != nil {
		return nil, fmt.Errorf("%s: start stack: %w", cell, err)
	}
	defer func() {
		if cerr := st.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("%s: stop stack: %w", cell, cerr)
		}
	}()
	lcfg := r.loadConfig(wl, st.GatewayURL())
	before := takeCPUSample(st.Envoy.Pid())
	simsBefore, _ := scrapeFleet(ctx, st.SimAddrs())
	views, verr := startViewSampler(ctx, st.SimAddrs(), r.viewEvery)
	sum, err := loadtest.Run(ctx, lcfg, r.log)
	if err != nil {
		return nil, fmt.Errorf("%s: load test: %w", cell, err)
	}
	var view *fleetView
	if verr == nil {
		if fv, err := views.finish(ctx); err == nil {
			view = &fv
		}
	}
	after := takeCPUSample(st.Envoy.Pid())
	simsAfter, serr := scrapeFleet(ctx, st.SimAddrs())
	res = &runResult{Workload: wl.Name, Policy: policy, WallRate: lcfg.Rate, Summary: sum,
		CPU: cpuBetween(before, after, runtime.NumCPU()), Recipe: recipe(lcfg), View: view}
	if serr == nil {
		res.Sims = simsAfter.minus(simsBefore)
	}
	return res, nil
}
