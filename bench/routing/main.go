// Command routing is the routing benchmark behind `make bench-routing`: it starts the local
// stack (control plane, picker, simulated vLLM pods, real Envoy) once per routing policy and
// workload, sends the same seeded open-loop load through Envoy, and writes a results table
// (Markdown, JSON) and an HTML report with plots. See bench/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/infergw/infergw/internal/envoyproc"
	"github.com/infergw/infergw/loadtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-routing:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("routing", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var out, wls, pols, envoyBin, logLevel string
	fs.BoolVar(&o.Quick, "quick", false, "smoke mode: 4 pods, 6 adapters, 5s+6s runs, round-robin and default only (< 2 minutes)")
	fs.IntVar(&o.Pods, "pods", 8, "simulated vLLM pods in the pool")
	fs.Float64Var(&o.TimeScale, "time-scale", 1, "sim time scale (0.5 = twice as fast as the modelled GPU); see README.md for why 1")
	fs.IntVar(&o.KVBlocks, "kv-blocks", 2048, "KV-cache blocks of --block-size tokens per pod")
	fs.IntVar(&o.BlockSize, "block-size", 16, "tokens per KV-cache block of each pod (vLLM's CPU build uses 128)")
	fs.IntVar(&o.Adapters, "adapters", 12, "LoRA adapters in the lora-mix workload (each pod holds 2 at once)")
	fs.Uint64Var(&o.Seed, "seed", 1, "seed of every request sequence and of the heavy-tail dataset")
	fs.IntVar(&o.Repeat, "repeat", 1, "rounds of every cell; round k sends the sequence of seed+k-1 to every policy, policies interleaved, "+
		"and the report adds each policy's pooled p90 TTFT and its ratio to the guess with bootstrap 95 % intervals over rounds and requests")
	fs.Float64Var(&o.RateFactor, "rate-factor", 1, "multiply every workload's offered rate")
	fs.DurationVar(&o.Duration, "duration", 0, "measured period per run (default 30s, 6s with --quick)")
	fs.DurationVar(&o.Warmup, "warmup", 0, "warm-up per run, excluded from the figures (default 10s, 5s with --quick)")
	fs.StringVar(&out, "out", "", "results directory (default bench/results; a temporary directory with --quick)")
	fs.StringVar(&wls, "workloads", "", "comma-separated workloads to run (default all: shared-prefix,mixed-lengths,lora-mix)")
	fs.StringVar(&pols, "policies", "", "comma-separated policies (default round-robin,random,least-queue,default; --quick: round-robin,default)")
	fs.StringVar(&envoyBin, "envoy", "", "Envoy binary (default $ENVOY_BIN, envoy on PATH, .venv/bin/envoy)")
	fs.StringVar(&logLevel, "log-level", "error", "log level of the stack: debug, info, warn, error")
	var peers bool
	var infergwBin string
	fs.BoolVar(&peers, "peers", false, "also run the peer routers (sglang-router and vllm-router, cache-aware policy; installed from PyPI into ~/.cache/infergw once) and envoy-bare (Envoy alone, static round-robin: the data plane's floor) on the same fleet and load")
	fs.StringVar(&infergwBin, "infergw", filepath.Join("bin", "infergw"), "the infergw binary that runs the routing layer (`make bench-routing` builds it)")
	fs.BoolVar(&o.KVPressure, "kv-pressure", false, "add the kv-pressure workload to the default set (it runs when named with --workloads too)")
	fs.StringVar(&o.Tokenizer, "tokenizer", "", "directory of a model's tokenizer.json for every sim (needed by --policies precise, which also gives it to the picker), e.g. kvprompt/testdata/tiny")
	var upFlags stringList
	fs.Var(&upFlags, "up-flag", "extra flag for infergw's `infergw up` (repeatable), e.g. --up-flag=--pprof-addr=127.0.0.1:6060 to profile a cell")
	var pickerFlags stringList
	fs.Var(&pickerFlags, "picker-flag", "extra flag for every picker replica run apart by the -xN policies (repeatable), e.g. --picker-flag=--kv-speculation-ttl=10s")
	var viewEvery time.Duration
	fs.DurationVar(&viewEvery, "sim-view", 0, "also sample every sim's /debug/engine this often (e.g. 20ms) for the per-pod view in results.json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.Quick && !flagSet(fs, "pods") {
		o.Pods = 4
	}
	if o.Quick && !flagSet(fs, "adapters") {
		// Still more adapters than one pod holds (2), but no more than the 4-pod fleet does.
		o.Adapters = 6
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	p, err := buildPlan(o)
	if err != nil {
		return err
	}
	if o.Quick && pols == "" {
		pols = "round-robin,default"
	}
	if p.Workloads, err = selectWorkloads(p.Workloads, p.DefaultWorkloads, wls); err != nil {
		return err
	}
	if p.Policies, err = selectPolicies(pols); err != nil {
		return err
	}
	if peers && pols == "" {
		p.Policies = append(p.Policies, peerPolicies...)
		p.Policies = append(p.Policies, envoyBare)
	}
	var peersVenv string
	if slices.ContainsFunc(p.Policies, func(n string) bool { return isPeer(n) && n != envoyBare }) {
		if peersVenv, err = ensurePeers(ctx, stderr); err != nil {
			return err
		}
	}
	if _, err := os.Stat(infergwBin); err != nil {
		return fmt.Errorf("--infergw: %w (build it with `make build`)", err)
	}
	if slices.ContainsFunc(p.Policies, func(n string) bool { s, _ := parsePolicy(n); return s.Base == "precise" }) && o.Tokenizer == "" {
		return fmt.Errorf("--policies precise needs --tokenizer (the sims and the picker must tokenize alike)")
	}
	if envoyBin == "" {
		// An absolute start: envoyproc.Find walks up with filepath.Dir, which never leaves ".".
		wd, err := os.Getwd()
		if err != nil {
			return fmt.Errorf("working directory: %w", err)
		}
		if envoyBin, err = envoyproc.Find(wd); err != nil {
			return err
		}
	}
	tmp, err := os.MkdirTemp("", "infergw-bench-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	if out == "" {
		out = filepath.Join("bench", "results")
		if o.Quick {
			// Kept after the run (unlike tmp) so that the smoke results can be read.
			if out, err = os.MkdirTemp("", "infergw-bench-quick-"); err != nil {
				return fmt.Errorf("results dir: %w", err)
			}
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("results dir: %w", err)
	}

	r := &runner{plan: p, envoyBin: envoyBin, infergw: infergwBin, peersVenv: peersVenv, logLevel: logLevel, upFlags: upFlags, pickerFlags: pickerFlags,
		tmp: tmp, progress: stderr, viewEvery: viewEvery,
		log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))}
	rep := &report{StartedAt: time.Now(), Command: "go run ./bench/routing " + strings.Join(args, " "),
		Statement: fairness, Plan: p}
	rep.Command = strings.TrimSpace(rep.Command)
	for _, wl := range p.Workloads {
		if err := r.prepare(wl); err != nil {
			return err
		}
	}
	for round := 1; round <= p.Repeat; round++ {
		for _, wl := range p.Workloads {
			if err := r.runWorkload(ctx, rep, out, wl, round); err != nil {
				return err
			}
		}
	}
	rep.Took = time.Since(rep.StartedAt).Round(time.Second).String()
	return writeOutputs(out, rep, stdout)
}

// runWorkload runs one round of every policy on one workload, printing progress.
func (r *runner) runWorkload(ctx context.Context, rep *report, out string, wl workloadSpec, round int) error {
	p, stderr := r.plan, r.progress
	for _, pol := range p.Policies {
		roundNote := ""
		if p.Repeat > 1 {
			roundNote = fmt.Sprintf(" (round %d of %d, seed %d)", round, p.Repeat, r.roundSeed(round))
		}
		fmt.Fprintf(stderr, "[%s] %s / %s%s: %.1f req/s (wall) for %s + %s warm-up …\n",
			time.Now().Format("15:04:05"), wl.Name, pol, roundNote, wl.ModelRate/p.TimeScale, wl.Duration, wl.Warmup)
		res, err := r.runCell(ctx, wl, pol, round)
		if err != nil {
			return err
		}
		s := res.Summary
		fmt.Fprintf(stderr, "    TTFT p50 %s p90 %s p99 %s ms, TPOT p50 %s ms, %.0f out tok/s, cached %.3f, failed %d/%d, routing layer %.2f CPU s per 1k requests (%s), machine %.0f%% busy\n",
			ms(s.TTFT.P50), ms(s.TTFT.P90), ms(s.TTFT.P99), ms(s.TPOT.P50), s.OutputTokensPerS, s.CachedTokenRatio,
			s.Failed, s.Requests, res.CPU.PerKRequests(s.Succeeded), byProcessText(res.CPU), 100*res.CPU.MachineBusy)
		if v := res.View; v != nil {
			fmt.Fprintf(stderr, "    sims: arrivals per pod %v, %.0f%% behind a prefill, %.0f prompt tokens ahead per arrival, sim-side TTFT mean %s ms; mean pending prefill tokens per pod %.0f\n",
				v.Arrivals, 100*v.BehindPrefill, v.TokensAhead, ms(1000*res.Sims.SimTTFTMean()), v.MeanPrefillToks)
		}
		if len(res.KVMetrics) > 0 {
			fmt.Fprintf(stderr, "    pickers: %s\n", kvMetricsText(res.KVMetrics))
		}
		rep.Results = append(rep.Results, res)
		if err := writeCellReport(out, res, p.Repeat); err != nil {
			return err
		}
	}
	return nil
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func selectWorkloads(all, defaults []workloadSpec, list string) ([]workloadSpec, error) {
	if list == "" {
		return defaults, nil
	}
	var out []workloadSpec
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		i := slices.IndexFunc(all, func(w workloadSpec) bool { return w.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("--workloads: unknown workload %q", name)
		}
		out = append(out, all[i])
	}
	return out, nil
}

func selectPolicies(list string) ([]string, error) {
	if list == "" {
		return policies, nil
	}
	var out []string
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if _, err := parsePolicy(name); err != nil && !isPeer(name) {
			return nil, fmt.Errorf("--policies: %w (want one of %s, optionally -xN and -restart)", err, strings.Join(slices.Concat(policies, extraPolicies, peerPolicies, []string{envoyBare}), ", "))
		}
		out = append(out, name)
	}
	return out, nil
}

// cellReportName is one cell's load-tester report file; rounds are numbered when repeated.
func cellReportName(res *runResult, repeat int) string {
	if repeat > 1 {
		return fmt.Sprintf("%s-%s-r%d.html", res.Workload, res.Policy, res.Round)
	}
	return res.Workload + "-" + res.Policy + ".html"
}

// writeCellReport writes the load tester's own HTML report of one cell.
func writeCellReport(dir string, res *runResult, repeat int) error {
	f, err := os.Create(filepath.Join(dir, cellReportName(res, repeat)))
	if err != nil {
		return fmt.Errorf("cell report: %w", err)
	}
	if err := loadtest.WriteHTML(f, res.Summary); err != nil {
		f.Close()
		return fmt.Errorf("cell report: %w", err)
	}
	return f.Close()
}

// writeOutputs writes results.md, results.json and index.html, and the table to stdout.
func writeOutputs(dir string, rep *report, stdout io.Writer) error {
	rep.Pooled = pooledFigures(rep)
	var md strings.Builder
	if err := writeMarkdown(&md, rep); err != nil {
		return err
	}
	write := func(name string, fn func(io.Writer) error) error {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		return errors.Join(fn(f), f.Close())
	}
	err := errors.Join(
		write("results.md", func(w io.Writer) error { _, err := io.WriteString(w, md.String()); return err }),
		write("results.json", func(w io.Writer) error { return writeJSON(w, rep) }),
		write("index.html", func(w io.Writer) error {
			return writeIndexHTML(w, rep, md.String(), func(res *runResult) string { return cellReportName(res, rep.Plan.Repeat) })
		}),
	)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s\nResults in %s (results.md, results.json, index.html).\n", md.String(), dir)
	return err
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, " ") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }
