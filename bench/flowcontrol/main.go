// Command flowcontrol is `make bench-flowcontrol`: the flow-control benchmark of issue 19.
// Eight simulated pods behind a real Envoy and the picker, the same seed in every cell:
//
//   - noisy neighbour: tenant A offers 3× the fleet's capacity with long prompts, tenant B
//     10 %; B alone, B alone beside one spinning process per CPU (the control: what CPU
//     contention alone does to B), then both without flow control, with it (token-weighted
//     fairness, every other setting the default) and with it but without the demand
//     reservation. B alone, the control and the flow-control-on cell run -noisy-duration
//     (75 s: ~100 B requests, so that B's p90 is not one of its three slowest);
//   - priority: a critical flow at 30 % of capacity under a batch flood at 2×; critical
//     alone, then both without flow control, with it, and with it without the reservation;
//   - late binding: bursts at 1.5× capacity between lulls at 0.5×, without and with.
//
// Every cell reports per tenant requests offered / served / rejected / failed (which add
// up), TTFT percentiles with the sample count and the p90's bootstrap interval, the
// gateway's own flow-control outcomes (enqueued = dispatched + rejected + cancelled), each
// tenant's wait in the gateway's queue, the places the reservation held idle, the pick
// time, and the CPU the load used with the load average. Results go to
// bench/results/flowcontrol.{md,json}.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/infergw/infergw/flowcontrol"
	"github.com/infergw/infergw/internal/envoyproc"
	"github.com/infergw/infergw/loadtest"
	"github.com/infergw/infergw/router"
	"github.com/infergw/infergw/sim"
	"github.com/infergw/infergw/stack"
)

const (
	baseModel = "meta-llama/Llama-3.1-8B-Instruct"
	pool      = "bench/fc-pool"
)

// plan is the benchmark's fixed shape; flags change only its length.
type plan struct {
	Pods       int     `json:"pods"`
	MaxNumSeqs int     `json:"max_num_seqs"`
	TimeScale  float64 `json:"sim_time_scale"`
	Output     int     `json:"output_tokens"`
	ShortIn    int     `json:"short_prompt_tokens"`
	LongIn     int     `json:"long_prompt_tokens"`
	// Nominal is the fleet's capacity by the sim's cost model; Capacity the one measured at
	// the start of the run (a closed loop holding every sequence slot busy), which the
	// offered rates are fractions of: on a shared machine the sims run slower than modelled.
	Nominal  float64       `json:"nominal_capacity_req_per_s"`
	Capacity float64       `json:"capacity_req_per_s"`
	Duration time.Duration `json:"duration"`
	// NoisyDuration is the measured period of the noisy scenario's B-alone, control and
	// flow-control-on cells (the contrast cells run Duration).
	NoisyDuration time.Duration `json:"noisy_duration"`
	Warmup        time.Duration `json:"warmup"`
	Seed          uint64        `json:"seed"`
	SLOTTFT       time.Duration `json:"slo_ttft"`
	FlowConfig    flowcontrol.Config
}

// cell is one run of the benchmark.
type cell struct {
	Scenario string           `json:"scenario"`
	Name     string           `json:"name"`
	Flow     bool             `json:"flow_control"`
	Tenants  []tenantResult   `json:"tenants"`
	Gateway  *gatewayCounts   `json:"gateway_flow_control,omitempty"`
	Sum      tenantResult     `json:"total"`
	Loads    []loadtest.Stage `json:"stages,omitempty"`
	Elapsed  float64          `json:"elapsed_s"`
	// Measured is the cell's measured period (the noisy scenario's main cells run longer).
	Measured time.Duration `json:"measured"`
	// CPU is what the load used; PickUs the mean time of the router's Pick per request.
	CPU    cpuUse  `json:"cpu"`
	PickUs float64 `json:"pick_mean_us"`
}

type tenantResult struct {
	Name      string  `json:"name"`
	Rate      float64 `json:"offered_rate"`
	Offered   int64   `json:"offered"`
	Served    int64   `json:"served"`
	Rejected  int64   `json:"rejected"`
	Failed    int64   `json:"failed_other"`
	Cancelled int64   `json:"cancelled"` // interrupted or dropped by the client side
	TTFTP50   float64 `json:"ttft_p50_ms"`
	TTFTP90   float64 `json:"ttft_p90_ms"`
	TTFTP99   float64 `json:"ttft_p99_ms"`
	// TTFTN is the number of TTFT samples; TTFTP90CI the bootstrap 95 % interval of the
	// p90 (nil below 20 samples).
	TTFTN     int64        `json:"ttft_n"`
	TTFTP90CI *loadtest.CI `json:"ttft_p90_ci95_ms,omitempty"`
	// GatewayWait is the tenant's flow's queue wait in the picker (flow control on).
	GatewayWait *waitStats `json:"gateway_queue_wait,omitempty"`
	Goodput     float64    `json:"goodput_per_s"`
	Through     float64    `json:"completions_per_s"`
	OutTokS     float64    `json:"output_tokens_per_s"`
	// Errors counts the failures by class (http_429, http_503, timeout, transport, ...).
	Errors map[string]int64 `json:"errors,omitempty"`
	// Pods is where its TTFT went inside the pods (nil: no trace).
	Pods *podTrace `json:"pods,omitempty"`
}

func (t tenantResult) addsUp() bool {
	return t.Offered == t.Served+t.Rejected+t.Failed+t.Cancelled
}

type gatewayCounts struct {
	// QueueWaitMs is the mean time dispatched requests spent queued, per priority band
	// (from inference_extension_flow_control_request_queue_duration_seconds).
	QueueWaitMs map[string]float64 `json:"queue_wait_mean_ms_by_priority,omitempty"`
	Enqueued    int64              `json:"enqueued"`
	Dispatched  int64              `json:"dispatched"`
	Rejected    int64              `json:"rejected"`
	Cancelled   int64              `json:"cancelled"`
	Queued      int                `json:"queued_at_end"`
	Balanced    bool               `json:"balanced"`
	// HeldPlaces is the mean number of places the demand reservation kept free while
	// requests waited, over the load's wall time (Counts.HeldPlaceSeconds).
	HeldPlaces float64 `json:"reserved_idle_places_mean"`
}

func main() {
	if len(os.Args) == 2 && os.Args[1] == hogChildFlag {
		spin()
	}
	var (
		out      = flag.String("out", "bench/results", "directory for flowcontrol.md and flowcontrol.json")
		duration = flag.Duration("duration", 30*time.Second, "measured period of each cell (30 s: ~40 requests of the 10 % tenant)")
		noisyDur = flag.Duration("noisy-duration", 75*time.Second, "measured period of the noisy scenario's B-alone, CPU-hog control and flow-control-on cells: "+
			"B at 10 % of capacity sends ~1.3 req/s, so 75 s gives ~100 samples and its p90 is the 10th largest, not the 3rd")
		warmup   = flag.Duration("warmup", 2*time.Second, "warm-up of each cell")
		seed     = flag.Uint64("seed", 1, "load tester seed (the same in every cell)")
		only     = flag.String("only", "", "run only the scenarios listed (comma-separated: noisy,priority,late)")
		verbose  = flag.Bool("v", false, "log the stack")
		quantile = flag.Float64("demand-quantile", 0, "flow control's demandQuantile in the cells with it on (0 = the default, 0.95)")
	)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *out, *duration, *noisyDur, *warmup, *seed, *only, *verbose, *quantile); err != nil {
		fmt.Fprintln(os.Stderr, "bench-flowcontrol:", err)
		os.Exit(1)
	}
}

func newPlan(duration, warmup time.Duration, seed uint64) plan {
	p := plan{Pods: 8, MaxNumSeqs: 2, TimeScale: 1, Output: 192, ShortIn: 64, LongIn: 1024,
		Duration: duration, Warmup: warmup, Seed: seed, SLOTTFT: 2 * time.Second}
	// A request of the short shape takes about Output decode steps of the sim's step time
	// (5 ms overhead + 0.1 ms per running sequence) plus its prefill; a pod runs MaxNumSeqs
	// at once. Capacity is the fleet's requests per second for the short shape.
	cfg := sim.DefaultConfig()
	step := cfg.StepOverhead + time.Duration(p.MaxNumSeqs)*cfg.DecodePerSeq
	service := time.Duration(p.Output)*step + time.Duration(p.ShortIn)*cfg.PrefillPerToken
	p.Nominal = float64(p.Pods*p.MaxNumSeqs) / (service.Seconds() * p.TimeScale)
	p.Capacity = p.Nominal
	p.FlowConfig = flowcontrol.Config{
		Enabled:    true,
		RequestTTL: 4 * time.Second,
		RetryAfter: time.Second,
		Fairness:   flowcontrol.FairnessTokenWeighted,
		// Everything else is the feature's default: the detector learns each pod's batch
		// size from its metrics (no pod is given more than it runs at once), and the demand
		// reservation keeps the room that higher bands and light tenants recently needed.
	}
	return p
}

func run(ctx context.Context, outDir string, duration, noisyDur, warmup time.Duration, seed uint64, only string, verbose bool, quantile float64) error {
	envoyBin, err := envoyproc.Find(".")
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "bench-flowcontrol-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	log := slog.New(slog.DiscardHandler)
	if verbose {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	p := newPlan(duration, warmup, seed)
	p.NoisyDuration = noisyDur
	p.FlowConfig.DemandQuantile = quantile
	b := &bench{plan: p, envoyBin: envoyBin, tmp: tmp, log: log}
	measured, err := b.calibrate(ctx)
	if err != nil {
		return err
	}
	p.Capacity = measured
	b.plan = p
	want := func(s string) bool { return only == "" || strings.Contains(","+only+",", ","+s+",") }
	start := time.Now()
	loadavg := readLoadavg()
	fmt.Fprintf(os.Stderr, "bench-flowcontrol: %d pods × %d seqs, capacity %.1f req/s measured (%.1f nominal) for the short shape; load average at start %s\n",
		p.Pods, p.MaxNumSeqs, p.Capacity, p.Nominal, loadavg)

	var cells []cell
	add := func(c *cell, err error) error {
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "  %-9s %-22s done in %.0f s\n", c.Scenario, c.Name, c.Elapsed)
		cells = append(cells, *c)
		return nil
	}
	c := p.Capacity
	on := &p.FlowConfig
	// The contrast: the same flow control without the demand reservation.
	noRes := p.FlowConfig
	noRes.Reservation = flowcontrol.ReservationNone
	if want("noisy") {
		a := loadtest.Tenant{Name: "A (noisy)", Rate: 3 * c, FairnessID: "tenant-a",
			Input: &loadtest.LengthDist{Kind: "fixed", Mean: float64(p.LongIn)}}
		bt := loadtest.Tenant{Name: "B (quiet)", Rate: 0.1 * c, FairnessID: "tenant-b"}
		long := cellOpts{dur: p.NoisyDuration}
		if err := add(b.tenantsCell(ctx, "noisy", "B alone", nil, long, bt)); err != nil {
			return err
		}
		// The control: B alone beside one spinning process per CPU, to see what CPU
		// contention alone (no flood through the gateway) does to B's TTFT.
		hog := cellOpts{dur: p.NoisyDuration, hogs: runtime.NumCPU()}
		if err := add(b.tenantsCell(ctx, "noisy", fmt.Sprintf("B alone, %d CPU hogs", hog.hogs), nil, hog, bt)); err != nil {
			return err
		}
		if err := add(b.tenantsCell(ctx, "noisy", "A+B, flow control off", nil, cellOpts{}, a, bt)); err != nil {
			return err
		}
		if err := add(b.tenantsCell(ctx, "noisy", "A+B, flow control on", on, long, a, bt)); err != nil {
			return err
		}
		if err := add(b.tenantsCell(ctx, "noisy", "A+B, on, reservation none", &noRes, cellOpts{}, a, bt)); err != nil {
			return err
		}
	}
	if want("priority") {
		crit := loadtest.Tenant{Name: "critical", Rate: 0.3 * c, Objective: "critical"}
		batch := loadtest.Tenant{Name: "batch", Rate: 2 * c, Objective: "batch"}
		if err := add(b.tenantsCell(ctx, "priority", "critical alone", nil, cellOpts{}, crit)); err != nil {
			return err
		}
		if err := add(b.tenantsCell(ctx, "priority", "critical+batch, off", nil, cellOpts{}, crit, batch)); err != nil {
			return err
		}
		if err := add(b.tenantsCell(ctx, "priority", "critical+batch, on", on, cellOpts{}, crit, batch)); err != nil {
			return err
		}
		if err := add(b.tenantsCell(ctx, "priority", "critical+batch, on, reservation none", &noRes, cellOpts{}, crit, batch)); err != nil {
			return err
		}
	}
	if want("late") {
		if err := add(b.burstCell(ctx, "bursts, flow control off", nil)); err != nil {
			return err
		}
		if err := add(b.burstCell(ctx, "bursts, flow control on", on)); err != nil {
			return err
		}
	}
	rep := report{Plan: p, Cells: cells, StartedAt: start.UTC(), WallS: time.Since(start).Seconds(),
		LoadavgStart: loadavg, LoadavgEnd: readLoadavg(), CPUs: runtime.NumCPU(),
		Command: "make bench-flowcontrol" + argsSuffix()}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(outDir, "flowcontrol.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	md := rep.markdown()
	if err := os.WriteFile(filepath.Join(outDir, "flowcontrol.md"), []byte(md), 0o644); err != nil {
		return err
	}
	fmt.Print(md)
	for _, c := range cells {
		for _, t := range c.Tenants {
			if !t.addsUp() {
				return fmt.Errorf("%s/%s tenant %s: offered %d ≠ served + rejected + failed + cancelled", c.Scenario, c.Name, t.Name, t.Offered)
			}
		}
		if c.Gateway != nil && !c.Gateway.Balanced {
			return fmt.Errorf("%s/%s: the gateway's flow-control outcomes do not add up: %+v", c.Scenario, c.Name, *c.Gateway)
		}
	}
	return nil
}

func argsSuffix() string {
	if len(os.Args) <= 1 {
		return ""
	}
	return " BENCH_FC_ARGS='" + strings.Join(os.Args[1:], " ") + "'"
}

func readLoadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

type bench struct {
	plan     plan
	envoyBin string
	tmp      string
	log      *slog.Logger
	n        int
	// metricsAddr serves the current cell's /metrics; layout is where its pods listen.
	metricsAddr string
	layout      layout
}

// startStack starts a fresh stack (cold state, the same sims) with flow control on or off
// (nil). The ports are chosen free a moment before Envoy binds them, and other programs on
// this shared machine take ports too: a start that fails is retried twice on new ports.
func (b *bench) startStack(ctx context.Context, fc *flowcontrol.Config) (*stack.Stack, error) {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var st *stack.Stack
		if st, err = b.startStackOnce(ctx, fc); err == nil {
			return st, nil
		}
		fmt.Fprintf(os.Stderr, "bench-flowcontrol: start attempt %d: %v\n", attempt+1, err)
	}
	return nil, err
}

func (b *bench) startStackOnce(ctx context.Context, fc *flowcontrol.Config) (*stack.Stack, error) {
	b.n++
	dir := filepath.Join(b.tmp, fmt.Sprint("cell-", b.n))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	l, err := newLayout(b.plan.Pods)
	if err != nil {
		return nil, err
	}
	if err := l.write(dir); err != nil {
		return nil, err
	}
	b.layout = l
	cfg := stack.DefaultConfig()
	cfg.ManifestDir = dir
	cfg.Sim.TimeScale = b.plan.TimeScale
	cfg.Sim.MaxNumSeqs = b.plan.MaxNumSeqs
	cfg.Sim.LoRAAdapters = nil
	cfg.EnvoyBinary = b.envoyBin
	cfg.EnvoyOutput = io.Discard
	cfg.EnvoyLogLevel = "error"
	cfg.ReadyTimeout = 90 * time.Second
	for _, addr := range []*string{&cfg.XDSAddr, &cfg.EnvoyAdminAddr, &cfg.MetricsAddr} {
		port, err := freePort("127.0.0.1")
		if err != nil {
			return nil, err
		}
		*addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	}
	cfg.Translate.ListenerAddress = "127.0.0.1"
	sc := router.DefaultSchedulerConfig()
	if fc != nil {
		sc.FlowControl.Default = *fc
	}
	cfg.Router.Scheduler = sc
	st, err := stack.Start(ctx, cfg, b.log)
	if err != nil {
		return nil, fmt.Errorf("start stack: %w", err)
	}
	b.metricsAddr = cfg.MetricsAddr
	return st, nil
}

func (b *bench) loadConfig(url string) loadtest.Config {
	return b.loadConfigFor(url, b.plan.Duration)
}

func (b *bench) loadConfigFor(url string, measured time.Duration) loadtest.Config {
	p := b.plan
	return loadtest.Config{
		URL:       url,
		Models:    []loadtest.WeightedModel{{Name: baseModel, Weight: 1}},
		IgnoreEOS: true,
		Arrival:   "poisson",
		Warmup:    p.Warmup,
		Duration:  measured,
		Workload: loadtest.WorkloadConfig{
			Input:  loadtest.LengthDist{Kind: "fixed", Mean: float64(p.ShortIn)},
			Output: loadtest.LengthDist{Kind: "fixed", Mean: float64(p.Output)},
		},
		Seed:        p.Seed,
		Timeout:     60 * time.Second,
		GracePeriod: 60 * time.Second,
		SLO:         loadtest.SLO{TTFT: p.SLOTTFT},
		// The open loop keeps its schedule; a flood past this many in flight is dropped and
		// counted (a cancelled offer), which bounds the load tester on a small machine.
		MaxInFlight: 2000,
	}
}

// cellOpts are a cell's deviations from the plan: a longer measured period, CPU hogs.
type cellOpts struct {
	dur  time.Duration // 0 = the plan's Duration
	hogs int
}

func (b *bench) tenantsCell(ctx context.Context, scenario, name string, fc *flowcontrol.Config, o cellOpts, tenants ...loadtest.Tenant) (*cell, error) {
	t0 := time.Now()
	flow := fc != nil
	st, err := b.startStack(ctx, fc)
	if err != nil {
		return nil, fmt.Errorf("%s/%s: %w", scenario, name, err)
	}
	defer st.Close()
	if o.hogs > 0 {
		stopHogs, err := startHogs(o.hogs)
		if err != nil {
			return nil, fmt.Errorf("%s/%s: %w", scenario, name, err)
		}
		defer stopHogs()
	}
	measured := cmp.Or(o.dur, b.plan.Duration)
	before, _ := st.Picker.FlowCounts(pool)
	meter := startCPUMeter(st.Envoy.Pid())
	ts, err := loadtest.RunTenants(ctx, b.loadConfigFor(st.GatewayURL(), measured), tenants, b.log)
	if err != nil {
		return nil, fmt.Errorf("%s/%s: %w", scenario, name, err)
	}
	c := &cell{Scenario: scenario, Name: name, Flow: flow, Measured: measured, CPU: meter.stop()}
	c.CPU.Hogs = o.hogs
	mfs, err := b.scrapePicker(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench-flowcontrol: %s/%s: %v\n", scenario, name, err)
	}
	traces := b.podTraces(ctx)
	for _, t := range ts.Tenants {
		tr := tenantOf(t.Tenant.Name, t.Tenant.Rate, t.Summary, t.Rejected, t.OtherFailed, t.Interrupted+t.Dropped)
		class := t.Tenant.FairnessID
		if class == "" {
			class = t.Tenant.Objective
		}
		tr.Pods = summarizeTraces(traces[class])
		if flow {
			tr.GatewayWait = flowWait(mfs, objectivePriority(t.Tenant.Objective), t.Tenant.FairnessID)
		}
		c.Tenants = append(c.Tenants, tr)
	}
	c.Sum = total(c.Tenants)
	c.Gateway = gatewayOf(st, before, flow, c.CPU.WallS)
	c.PickUs = meanPickUs(mfs)
	if c.Gateway != nil {
		c.Gateway.QueueWaitMs = queueWaitsByPriority(mfs)
	}
	c.Elapsed = time.Since(t0).Seconds()
	return c, nil
}

// burstCell: one flow alternating 3 s at 1.5× capacity and 3 s at 0.5×.
func (b *bench) burstCell(ctx context.Context, name string, fc *flowcontrol.Config) (*cell, error) {
	t0 := time.Now()
	flow := fc != nil
	st, err := b.startStack(ctx, fc)
	if err != nil {
		return nil, fmt.Errorf("late/%s: %w", name, err)
	}
	defer st.Close()
	before, _ := st.Picker.FlowCounts(pool)
	cfg := b.loadConfig(st.GatewayURL())
	c := b.plan.Capacity
	hi, lo := 1.5*c, 0.5*c
	cfg.Rate = hi
	var stages []loadtest.Stage
	for total := time.Duration(0); total < b.plan.Duration; total += 6 * time.Second {
		stages = append(stages,
			loadtest.Stage{Duration: time.Millisecond, Target: hi}, loadtest.Stage{Duration: 3 * time.Second, Target: hi},
			loadtest.Stage{Duration: time.Millisecond, Target: lo}, loadtest.Stage{Duration: 3 * time.Second, Target: lo})
	}
	cfg.Stages = stages
	cfg.Warmup = 0 // the stages are the whole schedule
	meter := startCPUMeter(st.Envoy.Pid())
	s, err := loadtest.Run(ctx, cfg, b.log)
	if err != nil {
		return nil, fmt.Errorf("late/%s: %w", name, err)
	}
	use := meter.stop()
	mfs, err := b.scrapePicker(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench-flowcontrol: late/%s: %v\n", name, err)
	}
	rej, other := int64(0), int64(0)
	for class, n := range s.ErrorsByStatus {
		if class == "http_429" || class == "http_503" {
			rej += n
		} else {
			other += n
		}
	}
	cl := &cell{Scenario: "late", Name: name, Flow: flow, Loads: stages, Measured: b.plan.Duration, CPU: use, PickUs: meanPickUs(mfs),
		Tenants: []tenantResult{tenantOf("bursty", c, s, rej, other, s.Interrupted+s.Schedule.Dropped)}}
	cl.Tenants[0].Pods = summarizeTraces(b.podTraces(ctx)[""])
	cl.Sum = total(cl.Tenants)
	cl.Gateway = gatewayOf(st, before, flow, use.WallS)
	if cl.Gateway != nil {
		cl.Gateway.QueueWaitMs = queueWaitsByPriority(mfs)
		cl.Tenants[0].GatewayWait = flowWait(mfs, 0, "")
	}
	cl.Elapsed = time.Since(t0).Seconds()
	return cl, nil
}

func tenantOf(name string, rate float64, s *loadtest.Summary, rejected, other, cancelled int64) tenantResult {
	t := tenantResult{Name: name, Rate: rate, Served: s.Succeeded, Rejected: rejected, Failed: other, Cancelled: cancelled,
		TTFTP50: s.TTFT.P50, TTFTP90: s.TTFT.P90, TTFTP99: s.TTFT.P99, Through: s.CompletionRate, OutTokS: s.OutputTokensPerS,
		Errors: s.ErrorsByStatus, TTFTN: s.TTFT.Count}
	if s.TTFTCI != nil {
		ci := s.TTFTCI.P90
		t.TTFTP90CI = &ci
	}
	t.Offered = s.Requests + s.Interrupted + s.Schedule.Dropped
	if s.Goodput != nil {
		t.Goodput = s.Goodput.Rate
	}
	return t
}

func total(ts []tenantResult) tenantResult {
	var sum tenantResult
	sum.Name = "total"
	for _, t := range ts {
		sum.Rate += t.Rate
		sum.Offered += t.Offered
		sum.Served += t.Served
		sum.Rejected += t.Rejected
		sum.Failed += t.Failed
		sum.Cancelled += t.Cancelled
		sum.Goodput += t.Goodput
		sum.Through += t.Through
		sum.OutTokS += t.OutTokS
	}
	return sum
}

func gatewayOf(st *stack.Stack, before flowcontrol.Counts, flow bool, wallS float64) *gatewayCounts {
	if !flow {
		return nil
	}
	after, ok := st.Picker.FlowCounts(pool)
	if !ok {
		return &gatewayCounts{}
	}
	g := &gatewayCounts{
		Enqueued:   after.Enqueued - before.Enqueued,
		Dispatched: after.Outcomes[flowcontrol.Dispatched] - before.Outcomes[flowcontrol.Dispatched],
		Rejected:   after.Rejected() - before.Rejected(),
		Cancelled:  after.Outcomes[flowcontrol.EvictedContextCancelled] - before.Outcomes[flowcontrol.EvictedContextCancelled],
		Queued:     after.Queued,
	}
	g.Balanced = g.Enqueued == g.Dispatched+g.Rejected+g.Cancelled+int64(g.Queued)
	if wallS > 0 {
		g.HeldPlaces = (after.HeldPlaceSeconds - before.HeldPlaceSeconds) / wallS
	}
	return g
}

func freePort(host string) (int, error) {
	lis, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port on %s: %w", host, err)
	}
	defer lis.Close()
	return lis.Addr().(*net.TCPAddr).Port, nil
}

var errNoPort = errors.New("no port free on every pod address")

// calibrate measures the fleet's capacity now: a closed loop of exactly as many users as the
// fleet has sequence slots, through the gateway without flow control, for a few seconds.
func (b *bench) calibrate(ctx context.Context) (float64, error) {
	st, err := b.startStack(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("calibrate: %w", err)
	}
	defer st.Close()
	cfg := b.loadConfig(st.GatewayURL())
	cfg.Arrival, cfg.Rate = "", 0
	cfg.VUs = b.plan.Pods * b.plan.MaxNumSeqs
	cfg.Warmup, cfg.Duration = 2*time.Second, 6*time.Second
	s, err := loadtest.Run(ctx, cfg, b.log)
	if err != nil {
		return 0, fmt.Errorf("calibrate: %w", err)
	}
	if s.Succeeded == 0 || s.DurationS <= 0 {
		return 0, errors.New("calibrate: no request succeeded")
	}
	return float64(s.Succeeded) / s.DurationS, nil
}
