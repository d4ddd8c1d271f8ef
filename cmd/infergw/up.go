package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/infergw/infergw/extproc"
	"github.com/infergw/infergw/internal/pprofserve"
	"github.com/infergw/infergw/kvroute"
	"github.com/infergw/infergw/router"
	"github.com/infergw/infergw/stack"
)

type upFlags struct {
	cfg             stack.Config
	adapters        string
	noSims          bool
	schedulerConfig string
	envoyLog        bool
	policy          string
	kv              kvFlags
	oraclePort      int
	externalPicker  bool
	logLevel        string
	pprofAddr       string
	noObserver      bool
}

func newUpCmd() *cobra.Command {
	f := &upFlags{cfg: stack.DefaultConfig()}
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run the whole gateway locally: control plane, picker, simulated vLLM pods and Envoy",
		Long: `up runs, in one process, the xDS control plane and the endpoint picker reading a directory of
manifests (default examples/local: a Gateway, an HTTPRoute that routes by the body's model,
three InferencePools (two chat models and an embeddings model), objectives, a model rewrite
and Pod manifests), a simulated vLLM server on every Pod's address (127.0.0.2, 127.0.0.3, …;
a pool's infergw.dev/sim-model annotation says what its sims serve), and Envoy as a child
process bootstrapped to the control plane.
It waits until a chat completion through Envoy succeeds, prints how to use the gateway, and
runs until Ctrl-C or SIGTERM, which stop everything (Envoy included).

To put real OpenAI-compatible servers behind the gateway instead of sims, point --manifests
at a directory whose Pod manifests carry their addresses (status.podIP) and pass --no-sims.`,
		Example: `  infergw up
  infergw up --manifests ./my-manifests --no-sims
  infergw up --time-scale 0.1 --scheduler-config scheduler.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runUp(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.cfg.ManifestDir, "manifests", f.cfg.ManifestDir, "directory of manifests to serve (watched for changes)")
	fl.StringVar(&f.cfg.XDSAddr, "xds-addr", f.cfg.XDSAddr, "control plane ADS address")
	fl.StringVar(&f.cfg.EnvoyAdminAddr, "envoy-admin-addr", f.cfg.EnvoyAdminAddr, "Envoy admin address")
	fl.StringVar(&f.cfg.Translate.ListenerAddress, "listener-address", f.cfg.Translate.ListenerAddress,
		"IP address Envoy's gateway listeners bind to (0.0.0.0 or :: to accept connections from other hosts)")
	fl.StringVar(&f.cfg.MetricsAddr, "metrics-addr", f.cfg.MetricsAddr, "address serving /metrics, /healthz and /readyz")
	fl.BoolVar(&f.noObserver, "no-response-observer", false, "leave every response body to the picker's own filter (one round trip per chunk) instead of the response observer")
	fl.StringVar(&f.pprofAddr, "pprof-addr", "", "address serving Go profiles at /debug/pprof/ (off when empty; never expose it)")
	fl.StringVar(&f.cfg.EnvoyBinary, "envoy", "", "Envoy binary (default: $ENVOY_BIN, envoy on PATH, .venv/bin/envoy)")
	fl.IntVar(&f.cfg.EnvoyConcurrency, "envoy-concurrency", 0, "Envoy's worker threads (default 2)")
	fl.BoolVar(&f.envoyLog, "envoy-log", false, "show Envoy's own log on stderr")
	fl.BoolVar(&f.noSims, "no-sims", false, "do not start simulated model servers: the Pod manifests point at real ones")
	fl.StringVar(&f.cfg.Sim.Model, "model", f.cfg.Sim.Model, "base model the sims serve, and the model of the readiness request (set it to a model your backends serve with --no-sims)")
	fl.StringVar(&f.adapters, "lora-adapters", strings.Join(f.cfg.Sim.LoRAAdapters, ","), "LoRA adapters every sim serves (comma-separated; a pool's infergw.dev/sim-lora-adapters annotation overrides it)")
	fl.IntVar(&f.cfg.Sim.MaxLoRAs, "max-loras", f.cfg.Sim.MaxLoRAs, "LoRA adapters a sim holds at once")
	fl.IntVar(&f.cfg.Sim.KVBlocks, "kv-blocks", f.cfg.Sim.KVBlocks, "KV-cache blocks of each sim")
	fl.IntVar(&f.cfg.Sim.MaxNumSeqs, "max-num-seqs", f.cfg.Sim.MaxNumSeqs, "sequences each sim runs at once")
	fl.Float64Var(&f.cfg.Sim.TimeScale, "time-scale", f.cfg.Sim.TimeScale, "sim time scale (0.1 = ten times faster than the modelled GPU)")
	fl.StringVar(&f.schedulerConfig, "scheduler-config", "", "picker scheduler config YAML (default: the built-in scorer set)")
	fl.StringVar(&f.policy, "policy", "default", "routing policy: default, random or least-queue (the picker's ready-made scheduler configs; default-v0 and default-fixed for benchmarks), or round-robin (no picker: Envoy's own load balancing)")
	fl.DurationVar(&f.cfg.ReadyTimeout, "ready-timeout", f.cfg.ReadyTimeout, "how long to wait for the first request through Envoy")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	registerRouterFlags(fl, &f.cfg.Router)
	f.kv.register(fl)
	fl.IntVar(&f.oraclePort, "kv-oracle-port", 0,
		"benchmark only: the precise-prefix scorer asks every pod's infergw sim at this port what it really holds (POST /debug/prefix) instead of KV events: the routing benchmark's oracle; with KV events, the events route and every answer is compared with the sims' (infergw_precise_prefix_shadow_* metrics)")
	fl.BoolVar(&f.externalPicker, "external-picker", false,
		"do not run the picker: the pools' endpoint picker Services point at pickers run apart (`infergw picker`), e.g. several replicas")
	fl.StringVar((*string)(&f.cfg.Picker.Transport), "grpc-transport", string(extproc.TransportInline),
		"picker gRPC server: inline (least CPU) or grpc-go (fallback)")
	return cmd
}

func runUp(cmd *cobra.Command, f *upFlags) error {
	log, err := newLogger(f.logLevel)
	if err != nil {
		return err
	}
	cfg := f.cfg
	if net.ParseIP(cfg.Translate.ListenerAddress) == nil {
		return fmt.Errorf("--listener-address %q is not an IP address", cfg.Translate.ListenerAddress)
	}
	cfg.Sims = !f.noSims
	cfg.Translate.NoResponseObserver = f.noObserver
	cfg.Sim.LoRAAdapters = splitList(f.adapters)
	if f.envoyLog {
		cfg.EnvoyOutput = os.Stderr
	}
	kvRef := new(kvroute.Ref)
	plugins, err := newPluginRegistry(kvRef)
	if err != nil {
		return err
	}
	cfg.Router.Plugins = plugins
	switch {
	case f.policy == "round-robin":
		cfg.Translate.DisablePicker = true
	case f.schedulerConfig != "":
		if f.policy != "default" {
			return fmt.Errorf("--policy %s and --scheduler-config are exclusive", f.policy)
		}
		sc, err := plugins.LoadSchedulerConfig(f.schedulerConfig)
		if err != nil {
			return err
		}
		cfg.Router.Scheduler = sc
	default:
		sc, err := router.PolicyConfig(f.policy)
		if err != nil {
			return fmt.Errorf("--policy: %w", err)
		}
		cfg.Router.Scheduler = sc
	}
	cfg.ExternalPicker = f.externalPicker
	if f.oraclePort > 0 && !f.kv.enabled() {
		o, err := kvroute.NewOracle(f.oraclePort)
		if err != nil {
			return fmt.Errorf("--kv-oracle-port: %w", err)
		}
		kvRef.SetSource(o)
		if f.schedulerConfig == "" && f.policy == "default" {
			cfg.Router.Scheduler, _ = router.PolicyConfig("precise")
		}
	}
	if f.kv.enabled() {
		opts, err := f.kv.options()
		if err != nil {
			return fmt.Errorf("--kv-tokenizer: %w", err)
		}
		// With --kv-oracle-port as well, the events route and the sims' answers are only
		// compared with theirs (the benchmark's diagnosis of where the two differ).
		opts.ShadowOraclePort = f.oraclePort
		cfg.KVEvents, cfg.KVSource = &opts, kvRef
		if f.schedulerConfig == "" && f.policy == "default" {
			cfg.Router.Scheduler, _ = router.PolicyConfig("precise")
		}
	}
	if err := pprofserve.Start(cmd.Context(), f.pprofAddr, log); err != nil {
		return err
	}
	started := time.Now()
	st, err := stack.Start(cmd.Context(), cfg, log)
	if err != nil {
		return fmt.Errorf("up: %w", err)
	}
	printWelcome(cmd.OutOrStdout(), st, cfg, time.Since(started))
	<-cmd.Context().Done()
	log.Info("shutting down")
	return st.Close()
}

func printWelcome(w io.Writer, st *stack.Stack, cfg stack.Config, took time.Duration) {
	url := st.GatewayURL()
	fmt.Fprintf(w, `
infergw is up in %s: Envoy, the control plane, the picker and %d simulated vLLM pods.

  gateway   %s
  metrics   http://%s/metrics
  envoy     http://%s (admin)
  manifests %s (edit them: changes apply live)

Try it:
  curl -sN %s/v1/chat/completions -H 'content-type: application/json' \
    -d '{"model":"%s","stream":true,"messages":[{"role":"user","content":"Hello!"}]}'

Load it:
  %s loadtest --url %s --model %s --rate 20 --duration 30s

Ctrl-C stops everything.
`, took.Round(time.Millisecond), len(st.SimAddrs()), url, cfg.MetricsAddr, cfg.EnvoyAdminAddr, cfg.ManifestDir,
		url, cfg.Sim.Model, selfCommand(), url, cfg.Sim.Model)
}

// selfCommand is how the user ran this binary (bin/infergw after make run), so that the
// printed command works as it is; "infergw" when that is unknown.
func selfCommand() string {
	if len(os.Args) > 0 && os.Args[0] != "" {
		return os.Args[0]
	}
	return "infergw"
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
