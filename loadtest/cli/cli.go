// Package cli is the `infergw loadtest` command: it parses flags into a loadtest.Config,
// runs it and writes the requested outputs.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/infergw/infergw/loadtest"
)

type flags struct {
	url, api, apiKey, endpointHeader        string
	noStream, noUsage, ignoreEOS, quiet     bool
	headers, models, stages, thresholds     []string
	tenants                                 []string
	outs                                    []string
	vus, requests, maxInFlight              int
	rate, gammaShape                        float64
	arrival, sweep, slo                     string
	duration, warmup, lateAfter, timeout    time.Duration
	grace                                   time.Duration
	workload, input, output, sharegpt       string
	groups, prefix, suffix, sessions, turns int
	seed                                    uint64
	summaryExport, report, logLevel         string
	http2                                   bool
	tls                                     loadtest.TLSOptions
	trace, traceFormat                      string
	dataset                                 loadtest.DatasetConfig
	timeScale                               float64
	scrape                                  []string
	tokenizer                               string
	scrapeInterval                          time.Duration
}

// NewCommand returns the `loadtest` cobra command.
func NewCommand() *cobra.Command {
	f := &flags{}
	cmd := &cobra.Command{
		Use:   "loadtest --url URL --model NAME [--rate R | --vus N] [flags]",
		Short: "k6-style load tester for OpenAI-compatible endpoints (TTFT, ITL, TPOT, throughput)",
		Long:  longHelp,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Read here, not as the flag default, so that --help never prints the key.
			if !cmd.Flags().Changed("api-key") {
				f.apiKey = os.Getenv("OPENAI_API_KEY")
			}
			if cmd.Flags().Changed("dataset") && !cmd.Flags().Changed("workload") {
				f.workload = "dataset"
			}
			if cmd.Flags().Changed("trace") && !cmd.Flags().Changed("workload") {
				f.workload = "trace"
			}
			if cmd.Flags().Changed("sharegpt") && !cmd.Flags().Changed("workload") {
				f.workload = "sharegpt"
			}
			return run(cmd.Context(), f, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.AddCommand(newCompareCommand())
	fl := cmd.Flags()
	fl.StringVar(&f.url, "url", "", "server base URL, e.g. http://127.0.0.1:8080 (required)")
	fl.StringArrayVar(&f.models, "model", nil, "model name; repeat or comma-separate for a mix, NAME=WEIGHT for weights (required)")
	fl.StringVar(&f.api, "api", "chat", "chat (/v1/chat/completions), completions (/v1/completions) or embeddings (/v1/embeddings, not streamed)")
	fl.BoolVar(&f.noStream, "no-stream", false, "send stream:false (no TTFT/ITL/TPOT)")
	fl.BoolVar(&f.noUsage, "no-usage", false, "do not request stream_options.include_usage")
	fl.BoolVar(&f.ignoreEOS, "ignore-eos", true, "send ignore_eos so output length equals max_tokens")
	fl.StringVar(&f.apiKey, "api-key", "", "API key sent as Authorization: Bearer (default: $OPENAI_API_KEY)")
	fl.StringArrayVarP(&f.headers, "header", "H", nil, "extra request header 'Name: value' (repeatable)")
	fl.StringVar(&f.endpointHeader, "endpoint-header", "x-infergw-upstream", "response header naming the serving endpoint (falls back to x-sim-instance)")
	fl.IntVar(&f.vus, "vus", 0, "closed loop: number of virtual users (default 1 when neither --vus nor --rate)")
	fl.Float64Var(&f.rate, "rate", 0, "open loop: requests per second")
	fl.StringVar(&f.arrival, "arrival", "constant", "open-loop arrivals: constant, poisson or gamma")
	fl.Float64Var(&f.gammaShape, "gamma-shape", 0.5, "gamma arrival shape k (burstier below 1)")
	fl.StringArrayVar(&f.stages, "stage", nil, "ramp stage DURATION:TARGET, e.g. 30s:10 (repeatable)")
	fl.StringVar(&f.sweep, "sweep", "", "rates to sweep: R1,R2,… or START:STOP:STEP")
	fl.DurationVar(&f.duration, "duration", 0, "measured duration (default 30s unless --requests)")
	fl.IntVar(&f.requests, "requests", 0, "stop after this many measured requests")
	fl.DurationVar(&f.warmup, "warmup", 0, "warm-up before the measured period, excluded from results")
	fl.IntVar(&f.maxInFlight, "max-inflight", 10000, "open loop: concurrent requests before starts are dropped")
	fl.DurationVar(&f.lateAfter, "late-after", 10*time.Millisecond, "open loop: schedule lag above which a start counts as late")
	fl.DurationVar(&f.timeout, "timeout", 120*time.Second, "per-request read timeout")
	fl.StringArrayVar(&f.scrape, "scrape", nil, "Prometheus /metrics URL to poll during the run (the gateway's or a model server's; repeatable): KV use, queue, prefix-cache hit rate over time in the summary and report")
	fl.DurationVar(&f.scrapeInterval, "scrape-interval", time.Second, "interval between --scrape polls")
	fl.BoolVar(&f.http2, "http2", false, "HTTP/2: by ALPN on https URLs, h2c (prior knowledge) on http URLs; the summary shows the protocol used")
	fl.StringVar(&f.tls.CAFile, "cacert", "", "https: PEM CA bundle to verify the server with (replaces the system roots)")
	fl.BoolVarP(&f.tls.InsecureSkipVerify, "insecure", "k", false, "https: accept any server certificate")
	fl.StringVar(&f.tls.CertFile, "cert", "", "https: PEM client certificate (with --key)")
	fl.StringVar(&f.tls.KeyFile, "key", "", "https: PEM client key (with --cert)")
	fl.StringVar(&f.tls.ServerName, "tls-server-name", "", "https: name to verify in the server's certificate (default: the URL's host)")
	fl.DurationVar(&f.grace, "grace", 30*time.Second, "time in-flight requests may finish after the end")
	fl.StringVar(&f.workload, "workload", "synthetic", "synthetic, shared-prefix, multi-turn, sharegpt, dataset or trace")
	fl.StringVar(&f.input, "input-tokens", "128", "prompt length: N, uniform:MIN:MAX or normal:MEAN:SD")
	fl.StringVar(&f.output, "output-tokens", "128", "output length (max_tokens): N, uniform:MIN:MAX or normal:MEAN:SD")
	fl.IntVar(&f.groups, "groups", 8, "shared-prefix: number of prefix groups")
	fl.IntVar(&f.prefix, "prefix-tokens", 512, "shared-prefix: tokens of each group's prefix")
	fl.IntVar(&f.suffix, "suffix-tokens", 32, "shared-prefix: tokens of each request's unique suffix")
	fl.IntVar(&f.sessions, "sessions", 16, "multi-turn: concurrent conversations")
	fl.IntVar(&f.turns, "turns", 5, "multi-turn: turns per conversation")
	fl.StringVar(&f.sharegpt, "sharegpt", "", "ShareGPT-format JSON file (implies --workload sharegpt)")
	fl.StringVar(&f.tokenizer, "tokenizer", "", "Hugging Face tokenizer.json (or a directory holding one): generated prompts are then exact counts of the model's tokens; without it a word stands in for a token")
	fl.StringVar(&f.dataset.File, "dataset", "", "prompts or chat messages from a local JSONL, JSON (array) or Parquet file (implies --workload dataset)")
	fl.StringVar(&f.dataset.Format, "dataset-format", "", "dataset format: jsonl, json or parquet (default: by extension)")
	fl.StringVar(&f.dataset.PromptColumn, "prompt-column", "", "dataset column holding a prompt or chat messages (default: messages, prompt, text, question, input or instruction)")
	fl.StringVar(&f.dataset.OutputColumn, "output-column", "", "dataset column holding each record's output length (default: --output-tokens)")
	fl.StringVar(&f.trace, "trace", "", "replay a trace: each request at its own timestamp with its lengths and shared prefixes (implies --workload trace; Mooncake JSONL or Azure CSV)")
	fl.StringVar(&f.traceFormat, "trace-format", "", "trace format: mooncake or azure (default: by extension, .jsonl or .csv)")
	fl.Float64Var(&f.timeScale, "time-scale", 0, "trace replay speed: 2 plays the trace twice as fast (default 1)")
	fl.Uint64Var(&f.seed, "seed", 1, "random seed; the same seed gives the same request sequence")
	fl.StringVar(&f.slo, "slo", "", "goodput SLO, e.g. ttft=500ms,tpot=50ms[,e2e=10s]")
	fl.StringArrayVar(&f.tenants, "tenant", nil, "a tenant of a multi-tenant run (repeatable): name=A,rate=R[,fairness=ID][,objective=NAME][,input=DIST][,output=DIST][,header=K:V]; each is an open loop at its own rate; the report has one row per tenant")
	fl.StringArrayVar(&f.thresholds, "threshold", nil, "pass/fail criterion, e.g. 'ttft_p95<500ms' (repeatable; exit 99 on failure)")
	fl.StringArrayVar(&f.outs, "out", nil, "per-request output json=FILE (NDJSON) or csv=FILE (repeatable)")
	fl.StringVar(&f.summaryExport, "summary-export", "", "write the summary as JSON to FILE")
	fl.StringVar(&f.report, "report", "", "write a self-contained HTML report to FILE")
	fl.BoolVarP(&f.quiet, "quiet", "q", false, "no live progress line")
	fl.StringVar(&f.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	return cmd
}

// buildConfig turns flags into a Config and the threshold list.
func buildConfig(f *flags) (loadtest.Config, []loadtest.Threshold, error) {
	var cfg loadtest.Config
	if f.url == "" {
		return cfg, nil, errors.New("--url is required")
	}
	models, err := loadtest.ParseModels(f.models)
	if err != nil {
		return cfg, nil, err
	}
	cfg = loadtest.Config{URL: f.url, API: f.api, NoStream: f.noStream, NoUsage: f.noUsage, IgnoreEOS: f.ignoreEOS,
		APIKey: f.apiKey, Models: models, EndpointHeader: f.endpointHeader, VUs: f.vus, Rate: f.rate,
		Arrival: f.arrival, GammaShape: f.gammaShape, Duration: f.duration, Requests: f.requests, Warmup: f.warmup,
		MaxInFlight: f.maxInFlight, LateAfter: f.lateAfter, Timeout: f.timeout, GracePeriod: f.grace, Seed: f.seed,
		HTTP2: f.http2, TLS: f.tls, Scrape: f.scrape, ScrapeInterval: f.scrapeInterval}
	for _, h := range f.headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(name) == "" {
			return cfg, nil, fmt.Errorf("header %q: want 'Name: value'", h)
		}
		cfg.Headers = append(cfg.Headers, loadtest.Header{Name: strings.TrimSpace(name), Value: strings.TrimSpace(value)})
	}
	for _, s := range f.stages {
		st, err := loadtest.ParseStage(s)
		if err != nil {
			return cfg, nil, err
		}
		cfg.Stages = append(cfg.Stages, st)
	}
	in, err := loadtest.ParseLengthDist(f.input)
	if err != nil {
		return cfg, nil, fmt.Errorf("--input-tokens: %w", err)
	}
	out, err := loadtest.ParseLengthDist(f.output)
	if err != nil {
		return cfg, nil, fmt.Errorf("--output-tokens: %w", err)
	}
	cfg.Workload = loadtest.WorkloadConfig{Kind: f.workload, Input: in, Output: out, Groups: f.groups,
		PrefixTokens: f.prefix, SuffixTokens: f.suffix, Sessions: f.sessions, Turns: f.turns, ShareGPTFile: f.sharegpt,
		TraceFile: f.trace, TraceFormat: f.traceFormat, TimeScale: f.timeScale, Dataset: f.dataset,
		Tokenizer: f.tokenizer}
	if f.slo != "" {
		if cfg.SLO, err = loadtest.ParseSLO(f.slo); err != nil {
			return cfg, nil, err
		}
	}
	var ths []loadtest.Threshold
	for _, t := range f.thresholds {
		th, err := loadtest.ParseThreshold(t)
		if err != nil {
			return cfg, nil, err
		}
		ths = append(ths, th)
	}
	return cfg, ths, nil
}

func run(ctx context.Context, f *flags, stdout, stderr io.Writer) (retErr error) {
	cfg, ths, err := buildConfig(f)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	var rates []float64
	if f.sweep != "" {
		if rates, err = loadtest.ParseSweep(f.sweep); err != nil {
			return err
		}
	}
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			if err := c.Close(); err != nil && retErr == nil {
				retErr = fmt.Errorf("close output: %w", err)
			}
		}
	}()
	for _, o := range f.outs {
		kind, path, ok := strings.Cut(o, "=")
		if !ok || path == "" || (kind != "json" && kind != "csv") {
			return fmt.Errorf("--out %q: want json=FILE or csv=FILE", o)
		}
		file, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("--out: %w", err)
		}
		closers = append(closers, file)
		if kind == "json" {
			cfg.RequestLog = file
		} else {
			cfg.RequestCSV = file
		}
	}
	if len(f.tenants) > 0 {
		return runTenants(ctx, f, cfg, stdout, log)
	}
	if !f.quiet && isTerminal(stderr) {
		cfg.Progress = stderr
	}
	var s *loadtest.Summary
	if len(rates) > 0 {
		s, err = loadtest.RunSweep(ctx, cfg, rates, log)
	} else {
		s, err = loadtest.Run(ctx, cfg, log)
	}
	if s == nil {
		return err
	}
	if err != nil { // an output failed: still show what was measured
		fmt.Fprintln(stderr, "loadtest:", err)
	}
	thErr := loadtest.CheckThresholds(s, ths)
	if werr := loadtest.WriteText(stdout, s); werr != nil {
		return werr
	}
	if f.summaryExport != "" {
		if werr := writeFile(f.summaryExport, s, loadtest.WriteJSON); werr != nil {
			return werr
		}
	}
	if f.report != "" {
		if werr := writeFile(f.report, s, loadtest.WriteHTML); werr != nil {
			return werr
		}
	}
	if thErr != nil {
		return thErr // returned unwrapped: main reads its ExitCode (99)
	}
	if err == nil && ctx.Err() != nil {
		return interruptedError{}
	}
	return err
}

// interruptedError makes a run stopped by Ctrl-C exit 130 (after its summary), so that a
// script cannot mistake a partial run for a complete one.
type interruptedError struct{}

func (interruptedError) Error() string {
	return "interrupted: the summary covers the requests finished before the stop"
}
func (interruptedError) ExitCode() int { return 130 }

func writeFile(path string, s *loadtest.Summary, write func(io.Writer, *loadtest.Summary) error) error {
	file, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := write(file, s); err != nil {
		file.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := file.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	return nil
}

// isTerminal reports whether w is a character device (a TTY), without extra dependencies.
func isTerminal(w io.Writer) bool {
	file, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := file.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// runTenants runs a multi-tenant load (--tenant): the text report to stdout, JSON with
// --summary-export, HTML with --report.
func runTenants(ctx context.Context, f *flags, cfg loadtest.Config, stdout io.Writer, log *slog.Logger) error {
	if len(f.thresholds) > 0 || f.sweep != "" || len(f.outs) > 0 {
		return errors.New("--tenant does not combine with --threshold, --sweep or --out")
	}
	tenants := make([]loadtest.Tenant, 0, len(f.tenants))
	for _, v := range f.tenants {
		t, err := loadtest.ParseTenant(v)
		if err != nil {
			return fmt.Errorf("--tenant: %w", err)
		}
		tenants = append(tenants, t)
	}
	cfg.Rate = 0 // each tenant has its own
	ts, err := loadtest.RunTenants(ctx, cfg, tenants, log)
	if err != nil {
		return err
	}
	if err := loadtest.WriteTenantsText(stdout, ts); err != nil {
		return err
	}
	for _, out := range []struct {
		path  string
		write func(io.Writer, *loadtest.TenantsSummary) error
	}{{f.summaryExport, loadtest.WriteTenantsJSON}, {f.report, loadtest.WriteTenantsHTML}} {
		if out.path == "" {
			continue
		}
		file, err := os.Create(out.path)
		if err != nil {
			return err
		}
		werr := out.write(file, ts)
		if cerr := file.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return werr
		}
	}
	if ctx.Err() != nil {
		return interruptedError{}
	}
	return nil
}
