package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/infergw/infergw/discovery"
	"github.com/infergw/infergw/discovery/dirsource"
	"github.com/infergw/infergw/discovery/kubesource"
	"github.com/infergw/infergw/extproc"
	"github.com/infergw/infergw/internal/pprofserve"
	"github.com/infergw/infergw/kvroute"
	"github.com/infergw/infergw/router"
)

type pickerFlags struct {
	grpcAddr        string
	metricsAddr     string
	pprofAddr       string
	source          sourceFlags
	pool            string
	schedulerConfig string
	listPlugins     bool
	maxBodyBytes    int
	tlsCert         string
	tlsKey          string
	transport       string
	shutdownGrace   time.Duration
	noStreamUsage   bool
	streamFirstByte time.Duration
	logLevel        string
	router          router.Config
	kv              kvFlags
}

// newPickerCmd runs the endpoint picker: the ext_proc gRPC server over the router, fed by
// a manifest directory or the Kubernetes API.
func newPickerCmd() *cobra.Command {
	f := &pickerFlags{router: router.DefaultConfig()}
	cmd := &cobra.Command{
		Use:   "picker",
		Short: "Run the endpoint picker (Envoy ext_proc server speaking the GIE endpoint-picker protocol)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.listPlugins {
				return listPlugins(cmd.OutOrStdout())
			}
			return runPicker(cmd.Context(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.grpcAddr, "grpc-addr", "127.0.0.1:9002", "ext_proc gRPC listen address")
	fl.StringVar(&f.metricsAddr, "metrics-addr", "127.0.0.1:9090", "listen address of /metrics, /healthz and /readyz")
	fl.StringVar(&f.pprofAddr, "pprof-addr", "", "address serving Go profiles at /debug/pprof/ (off when empty; never expose it)")
	f.source.register(fl)
	fl.StringVar(&f.pool, "pool", "", "pool (namespace/name) for requests whose route names none")
	fl.StringVar(&f.schedulerConfig, "scheduler-config", "", "scheduler plugin configuration YAML: infergw's format or GIE's EndpointPickerConfig (default: built-in)")
	fl.BoolVar(&f.listPlugins, "list-plugins", false, "print the reference of every scheduler plugin (types, parameters, defaults) and exit")
	fl.IntVar(&f.maxBodyBytes, "max-body-bytes", extproc.DefaultMaxBodyBytes, "request body limit; larger bodies get 413")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "TLS certificate file for the gRPC port (reloaded on change)")
	fl.StringVar(&f.tlsKey, "tls-key", "", "TLS key file for the gRPC port")
	fl.StringVar(&f.transport, "grpc-transport", string(extproc.TransportInline),
		"gRPC server: inline (streams run in the connection's goroutine; least CPU) or grpc-go (fallback)")
	fl.DurationVar(&f.shutdownGrace, "shutdown-grace", extproc.DefaultShutdownGrace,
		"on SIGTERM, how long streams in flight (responses still streaming) may finish before they are cut")
	fl.BoolVar(&f.noStreamUsage, "no-stream-usage", false,
		"do not add stream_options.include_usage to streamed requests that lack it (their tokens then go uncounted)")
	fl.DurationVar(&f.streamFirstByte, "stream-first-byte-timeout", extproc.DefaultStreamFirstByteTimeout,
		"per-try timeout of streaming requests until their first response byte; Envoy retries on the next picked endpoint (negative disables)")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	registerRouterFlags(fl, &f.router)
	f.kv.register(fl)
	return cmd
}

func runPicker(ctx context.Context, f *pickerFlags) error {
	log, err := newLogger(f.logLevel)
	if err != nil {
		return err
	}
	if err := f.source.validate(); err != nil {
		return err
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	rcfg := f.router
	kvRef := new(kvroute.Ref)
	plugins, err := newPluginRegistry(kvRef)
	if err != nil {
		return err
	}
	rcfg.Plugins = plugins
	if f.schedulerConfig != "" {
		sc, err := plugins.LoadSchedulerConfig(f.schedulerConfig)
		if err != nil {
			return fmt.Errorf("--scheduler-config: %w", err)
		}
		rcfg.Scheduler = sc
	}
	var kv *kvroute.Runtime
	if f.kv.enabled() {
		opts, err := f.kv.options()
		if err != nil {
			return fmt.Errorf("--kv-tokenizer: %w", err)
		}
		if kv, err = kvroute.Start(ctx, opts, log.With("component", "kvevents"), reg); err != nil {
			return fmt.Errorf("kv events: %w", err)
		}
		defer kv.Close()
		kvRef.Set(kv.Source)
		if f.schedulerConfig == "" {
			// Where events arrive, the default uses them (and the guess where they do not).
			rcfg.Scheduler, _ = router.PolicyConfig("precise")
		}
	}
	r, err := router.New(rcfg, log.With("component", "router"), reg)
	if err != nil {
		return fmt.Errorf("router: %w", err)
	}
	defer r.Close()
	if kv != nil {
		kv.FollowPods(ctx, r.EndpointHosts, f.kv.podPort, kvFollowPeriod)
	}

	tp, shutdownTracing, err := extproc.NewTracerProvider(ctx, "infergw-picker")
	if err != nil {
		return err
	}
	defer func() { _ = shutdownTracing(context.Background()) }()

	srv, err := extproc.NewServer(r, extproc.Options{
		DefaultPool:    f.pool,
		MaxBodyBytes:   f.maxBodyBytes,
		TracerProvider: tp,
		Registerer:     reg,
		Transport:      extproc.Transport(f.transport),
		ShutdownGrace:  f.shutdownGrace,
		NoStreamUsage:  f.noStreamUsage,
		// Zero would mean the default: a zero flag value means off, as negative does.
		StreamFirstByteTimeout: zeroIsOff(f.streamFirstByte),
	}, log.With("component", "extproc"))
	if err != nil {
		return err
	}

	src, err := pickerSource(f, reg, log)
	if err != nil {
		return err
	}

	var tlsCfg *tls.Config
	if f.tlsCert != "" {
		if tlsCfg, err = extproc.TLSConfig(f.tlsCert, f.tlsKey, log); err != nil {
			return fmt.Errorf("tls: %w", err)
		}
	}
	// The gRPC port listens only once the first snapshot is applied (ListenWhenReady):
	// before that the picker could only answer "unknown pool". Check the address now so a
	// bad flag fails at start, not at readiness.
	probe, err := (&net.ListenConfig{}).Listen(ctx, "tcp", f.grpcAddr)
	if err != nil {
		return fmt.Errorf("--grpc-addr: %w", err)
	}
	probe.Close()
	grpcLis := srv.ListenWhenReady("tcp", f.grpcAddr)
	metricsLis, err := net.Listen("tcp", f.metricsAddr)
	if err != nil {
		return fmt.Errorf("--metrics-addr: %w", err)
	}
	log.Info("picker listening (gRPC once the first snapshot is applied)", "grpc", f.grpcAddr, "metrics", metricsLis.Addr().String(), "tls", tlsCfg != nil)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := pprofserve.Start(ctx, f.pprofAddr, log); err != nil {
		return err
	}
	srcErr := make(chan error, 1)
	go func() { srcErr <- src.Run(ctx) }()
	snaps, unsubscribe := src.Subscribe()
	defer unsubscribe()
	applied := make(chan struct{})
	go func() {
		defer close(applied)
		if cur := src.Current(); cur != nil {
			srv.ApplySnapshot(cur)
		}
		for {
			select {
			case <-ctx.Done():
				return
			case snap := <-snaps:
				srv.ApplySnapshot(snap)
			}
		}
	}()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ctx, grpcLis, metricsLis, tlsCfg, reg) }()

	var result error
	select {
	case err := <-srcErr:
		if err != nil && ctx.Err() == nil {
			result = fmt.Errorf("discovery: %w", err)
		}
		cancel()
		result = errors.Join(result, <-serveErr)
	case err := <-serveErr:
		result = err
		cancel()
		if err := <-srcErr; err != nil && !errors.Is(err, context.Canceled) {
			result = errors.Join(result, fmt.Errorf("discovery: %w", err))
		}
	}
	<-applied
	return result
}

func pickerSource(f *pickerFlags, reg prometheus.Registerer, log *slog.Logger) (discovery.Source, error) {
	if f.source.manifests != "" {
		return dirsource.NewDirSource(f.source.manifests, dirsource.DirOptions{Registerer: reg}, log.With("component", "discovery"))
	}
	cfg, err := f.source.restConfig()
	if err != nil {
		return nil, err
	}
	return kubesource.NewKubeSource(kubesource.KubeOptions{
		RESTConfig: cfg,
		Namespaces: f.source.namespaces,
		Registerer: reg,
	}, log.With("component", "discovery"))
}

// zeroIsOff maps a zero duration flag to -1 (off) for options where zero means "default".
func zeroIsOff(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
