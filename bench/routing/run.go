package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/infergw/infergw/loadtest"
	"github.com/infergw/infergw/sim"
)

// runResult is one (workload, policy) cell of the benchmark.
type runResult struct {
	Workload string `json:"workload"`
	Policy   string `json:"policy"`
	// Round is the cell's round (1-based; see plan.Repeat) and Seed its request sequence's.
	Round    int               `json:"round"`
	Seed     uint64            `json:"seed"`
	WallRate float64           `json:"offered_rate_per_wall_s"`
	Summary  *loadtest.Summary `json:"summary"`
	CPU      CPUUsage          `json:"cpu"`
	Sims     fleetCounters     `json:"sims"`
	View     *fleetView        `json:"sim_view,omitempty"`
	Recipe   string            `json:"loadtest_command"`
	// Pickers is the number of picker replicas run apart (0: in the up process; their
	// CPU is then not in CPU, which covers up's tree: control plane and Envoy).
	Pickers int `json:"picker_replicas,omitempty"`
	// Restart: when replica 0 was restarted (seconds into the measured window) and how
	// long it was down; RestartErr if the restart failed.
	RestartAt   float64 `json:"restart_at_s,omitempty"`
	RestartDown float64 `json:"restart_down_s,omitempty"`
	RestartErr  string  `json:"restart_error,omitempty"`
	// KVMetrics are the pickers' precise-prefix series at the end of the cell, summed over
	// replicas (a restarted replica's counters start again at its restart).
	KVMetrics map[string]float64 `json:"kv_metrics,omitempty"`
	// ttft are the successful requests' TTFTs in ms (the load tester's reservoir, which
	// holds every request of a cell this size), for the pooled figures across rounds.
	ttft []float64
}

// runner runs cells one after another, each on a fresh routing layer and fresh sims.
type runner struct {
	plan      plan
	envoyBin  string
	infergw   string   // the infergw binary that runs the routing layer of infergw's cells
	peersVenv string   // where the peer routers are installed ("" without --peers)
	logLevel  string   // the routing layer's log level
	upFlags   []string // extra flags for infergw's `infergw up`
	// pickerFlags are extra flags for the picker replicas run apart (-xN policies).
	pickerFlags []string
	tmp         string
	log         *slog.Logger // for the sims (quiet)
	progress    io.Writer
	// viewEvery samples every sim's /debug/engine this often during a cell (0 = only at
	// the start and end).
	viewEvery time.Duration
}

// layout picks free ports and writes a fresh manifest directory for one cell.
func (r *runner) layout(cell string, replicas int) (string, fleetLayout, error) {
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
	for range replicas {
		p, err := freePort("127.0.0.1")
		if err != nil {
			return "", l, err
		}
		l.ReplicaPorts = append(l.ReplicaPorts, p)
	}
	dir := filepath.Join(r.tmp, cell)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", l, fmt.Errorf("manifests dir: %w", err)
	}
	return dir, l, writeManifests(dir, l)
}

// roundSeed is the request sequence's seed in a round (1-based).
func (r *runner) roundSeed(round int) uint64 { return r.plan.Seed + uint64(max(round, 1)-1) }

func (r *runner) loadConfig(wl workloadSpec, url string, round int) loadtest.Config {
	cfg := loadtest.Config{
		URL:         url,
		Models:      wl.Models,
		IgnoreEOS:   true,
		Rate:        wl.ModelRate / r.plan.TimeScale,
		Arrival:     r.plan.Arrival,
		Warmup:      wl.Warmup,
		Duration:    wl.Duration,
		Workload:    wl.Workload,
		Seed:        r.roundSeed(round),
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

// runCell starts fresh sims (cold caches) and a fresh routing layer, runs the workload and
// stops both.
func (r *runner) runCell(ctx context.Context, wl workloadSpec, policy string, round int) (res *runResult, err error) {
	cell := wl.Name + "-" + policy
	ps, err := parsePolicy(policy)
	if isPeer(policy) {
		ps, err = policySpec{Base: policy}, nil
	}
	if err != nil {
		return nil, err
	}
	dir, l, err := r.layout(cell, ps.Pickers)
	if err != nil {
		return nil, err
	}
	simCfg := r.plan.Sim
	var kvBind string
	var kvPodPort, kvReplayPort int
	switch {
	case ps.Base == "precise" && ps.Pickers > 0:
		// Every replica must hear every pod: the sims bind (vLLM's "tcp://*:PORT", each
		// on its own address) and every replica dials all of them.
		hosts := make([]string, l.Pods)
		for i := range hosts {
			hosts[i] = l.podIP(i)
		}
		if kvPodPort, err = freePortOnAll(hosts); err != nil {
			return nil, err
		}
		// vLLM's replay endpoint too: a restarted replica asks for the publishers'
		// buffered batches instead of starting from an empty index.
		if kvReplayPort, err = freePortOnAll(hosts); err != nil {
			return nil, err
		}
		simCfg.KVEvents = sim.KVEventsConfig{Enable: true, Publisher: "zmq", Endpoint: "tcp://*:" + strconv.Itoa(kvPodPort),
			ReplayEndpoint: "tcp://*:" + strconv.Itoa(kvReplayPort)}
	case ps.Base == "precise":
		// The sims publish their KV events to the picker's subscriber (vLLM's default:
		// the publisher connects, the subscriber binds), and tokenize as the picker does.
		port, err := freePort("127.0.0.1")
		if err != nil {
			return nil, err
		}
		kvBind = "tcp://127.0.0.1:" + strconv.Itoa(port)
		simCfg.KVEvents = sim.KVEventsConfig{Enable: true, Publisher: "zmq", Endpoint: kvBind}
	}
	fleet, err := sim.StartFleet(sim.FleetConfig{N: l.Pods, FirstIP: l.podIP(0), Port: l.TargetPort, Base: simCfg}, r.log)
	if err != nil {
		return nil, fmt.Errorf("%s: sims: %w", cell, err)
	}
	defer func() {
		if cerr := fleet.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("%s: stop sims: %w", cell, cerr)
		}
	}()
	addrs := make([]string, 0, l.Pods)
	for _, s := range fleet.Servers() {
		addrs = append(addrs, s.Addr())
	}
	var pickers *pickerSet
	if ps.Pickers > 0 {
		if pickers, err = startPickers(ctx, pickerSetSpec{infergw: r.infergw, manifests: dir, ports: l.ReplicaPorts,
			logLevel: r.logLevel, kvPodPort: kvPodPort, kvReplayPort: kvReplayPort, tokenizer: simCfg.Tokenizer, extra: r.pickerFlags}); err != nil {
			return nil, fmt.Errorf("%s: pickers: %w", cell, err)
		}
		defer pickers.stop()
	}
	oraclePort := 0
	if ps.Base == "oracle" || ps.Shadow {
		oraclePort = l.TargetPort
	}
	layer, err := startLayer(ctx, layerSpec{policy: ps.Base, infergw: r.infergw, envoy: r.envoyBin, manifests: dir,
		gateway: l.GatewayPort, workers: addrs, model: baseModel, peersVenv: r.peersVenv, logLevel: r.logLevel,
		kvBind: kvBind, tokenizer: simCfg.Tokenizer, externalPicker: ps.Pickers > 0, oraclePort: oraclePort, upFlags: r.upFlags})
	if err != nil {
		return nil, fmt.Errorf("%s: routing layer: %w", cell, err)
	}
	defer func() {
		if cerr := layer.stop(); cerr != nil && err == nil {
			err = fmt.Errorf("%s: stop routing layer: %w", cell, cerr)
		}
	}()
	lcfg := r.loadConfig(wl, layer.url, round)
	simsBefore, _ := scrapeFleet(ctx, addrs)
	views, verr := startViewSampler(ctx, addrs, r.viewEvery)
	// The routing layer's CPU is read when the warm-up ends and when the run ends: the
	// measured period's requests, plus the tail of the warm-up's still in flight (and
	// minus the measured period's own tail after the grace period, which is rare).
	meter := startCPUMeter(layer.pid(), lcfg.Warmup)
	var restart struct {
		at, down time.Duration
		err      error
		done     chan struct{}
	}
	if ps.Restart {
		restart.at = lcfg.Warmup + lcfg.Duration/2
		restart.done = make(chan struct{})
		timer := time.AfterFunc(restart.at, func() {
			defer close(restart.done)
			setPorts := func(without int) error {
				ports := slices.Clone(l.ReplicaPorts)
				if without >= 0 {
					ports = slices.Delete(ports, without, without+1)
				}
				return writeReplicaSlices(dir, l.Namespace, ports)
			}
			restart.down, restart.err = pickers.restart(ctx, 0, setPorts, time.Second)
		})
		defer timer.Stop()
	}
	sum, err := loadtest.Run(ctx, lcfg, r.log)
	if err != nil {
		return nil, fmt.Errorf("%s: load test: %w", cell, err)
	}
	layerCPU, cpuErr := meter.finish()
	var kvMetrics map[string]float64
	if ps.Base == "precise" {
		addrs := []string{layer.metrics}
		if pickers != nil {
			addrs = pickers.metricsAddrs()
		}
		kvMetrics = scrapeKVMetrics(ctx, addrs)
	}
	var view *fleetView
	if verr == nil {
		if fv, err := views.finish(ctx); err == nil {
			view = &fv
		}
	}
	simsAfter, serr := scrapeFleet(ctx, addrs)
	res = &runResult{Workload: wl.Name, Policy: policy, Round: round, Seed: lcfg.Seed, WallRate: lcfg.Rate, Summary: sum,
		CPU: layerCPU, Recipe: recipe(lcfg), View: view, Pickers: ps.Pickers, KVMetrics: kvMetrics}
	if ps.Restart {
		<-restart.done
		res.RestartAt, res.RestartDown = (restart.at - lcfg.Warmup).Seconds(), restart.down.Seconds()
		if restart.err != nil {
			res.RestartErr = restart.err.Error()
		}
	}
	if cpuErr != nil {
		res.CPU.Err = cpuErr.Error()
	}
	if serr == nil {
		res.Sims = simsAfter.minus(simsBefore)
	}
	for _, smp := range sum.Samples {
		if smp.OK {
			res.ttft = append(res.ttft, smp.TTFT)
		}
	}
	return res, nil
}
