package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/infergw/infergw/discovery"
	"github.com/infergw/infergw/discovery/dirsource"
	"github.com/infergw/infergw/discovery/kubesource"
	"github.com/infergw/infergw/xds"
)

// controlPlaneFlags are the flags of `infergw controlplane`.
type controlPlaneFlags struct {
	xdsAddr, metricsAddr string
	source               sourceFlags
	gatewayClass         string
	writeStatus          bool
	gatewayAddresses     []string
	gatewayService       string
	tlsCert, tlsKey      string
	tlsCA                string
	logLevel             string
	requestBodyMode      string
	responseBodyMode     string
	responseObserver     bool
	translate            xds.Options
	gatewayServices      gatewayServiceFlags
}

func newControlPlaneCmd() *cobra.Command {
	f := &controlPlaneFlags{}
	cmd := &cobra.Command{
		Use:   "controlplane",
		Short: "Serve Envoy configuration (xDS over ADS) built from Gateway API and InferencePool resources",
		Long: `controlplane reads Gateways, HTTPRoutes, InferencePools and the Services they name from a
directory of manifests (--manifests) or from the Kubernetes API (--kubernetes), turns every
snapshot into Envoy listeners, routes, clusters and endpoints, and serves them over ADS.
"infergw controlplane bootstrap" prints the Envoy bootstrap that connects to it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runControlPlane(cmd.Context(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.xdsAddr, "xds-addr", "127.0.0.1:18000", "address of the ADS gRPC server")
	fl.StringVar(&f.metricsAddr, "metrics-addr", "127.0.0.1:9091", "address serving /metrics, /healthz and /readyz")
	f.source.register(fl)
	fl.StringVar(&f.gatewayClass, "gateway-class", "infergw", "GatewayClass whose Gateways this control plane serves")
	fl.BoolVar(&f.writeStatus, "write-status", true, "write GatewayClass, Gateway, HTTPRoute and InferencePool status (--kubernetes only)")
	fl.StringVar(&f.gatewayService, "gateway-service", "", "namespace/name of the proxy's Service; its load-balancer addresses, else its clusterIP, go into Gateway status.addresses (--kubernetes only)")
	fl.StringSliceVar(&f.gatewayAddresses, "gateway-address", nil, "address (IP or hostname) clients reach the proxy at, written into every Gateway's status.addresses; repeatable (--kubernetes only)")
	f.gatewayServices.register(fl, &f.translate.GatewayPorts, &f.translate.ReadyPort)
	fl.StringVar(&f.translate.ListenerAddress, "listener-address", "0.0.0.0", "IP address Envoy listeners bind to")
	fl.Var(portMapValue{&f.translate.ListenerPortMap}, "listener-port-map", "Gateway listener port = port Envoy binds for it, comma-separated (e.g. 80=10080,443=10443: a non-root Envoy behind a Service whose port 80 targets 10080)")
	fl.DurationVar(&f.translate.RouteTimeout, "route-timeout", 0, "whole-request timeout of routes without their own (0 disables)")
	fl.DurationVar(&f.translate.StreamIdleTimeout, "stream-idle-timeout", 5*time.Minute, "idle timeout of a request stream")
	fl.DurationVar(&f.translate.PickerHealthInterval, "picker-health-interval", time.Second, "interval of Envoy's gRPC readiness checks of each picker (negative disables)")
	fl.DurationVar(&f.translate.FirstByteTimeout, "first-byte-timeout", 0, "per-try timeout of pool requests until their first response byte; a try that times out is retried on the picker's next endpoint (0 disables; per pool: annotation "+xds.AnnotationFirstByteTimeout+")")
	fl.Float64Var(&f.translate.RetryBudgetPercent, "retry-budget-percent", 20, "retries in flight per pool, as a percentage of its active requests (negative: no budget)")
	fl.StringVar(&f.requestBodyMode, "request-body-mode", string(xds.BodyBuffered), "ext_proc request body mode of FailClose pools: BUFFERED or FULL_DUPLEX_STREAMED (a picker crash then cuts streaming responses)")
	fl.StringVar(&f.responseBodyMode, "response-body-mode", string(xds.BodyStreamed), "ext_proc response body mode of FailClose pools: STREAMED or FULL_DUPLEX_STREAMED (a picker crash then cuts streaming responses)")
	fl.BoolVar(&f.responseObserver, "response-observer", true, "with STREAMED response bodies, read the bodies the picker does not change with a second ext_proc filter in observability mode (no round trip per chunk)")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "serve ADS over TLS with this certificate")
	fl.StringVar(&f.tlsKey, "tls-key", "", "private key of --tls-cert")
	fl.StringVar(&f.tlsCA, "tls-ca", "", "require client certificates signed by this CA")
	// The picker TLS files are read by Envoy, not by this process: give the paths as the
	// Envoy container sees them.
	fl.StringVar(&f.translate.PickerTLS.CAFile, "picker-tls-ca", "", "Envoy verifies endpoint pickers with this CA (enables TLS to the pickers; a path in Envoy's filesystem)")
	fl.StringVar(&f.translate.PickerTLS.CertFile, "picker-tls-cert", "", "Envoy's client certificate for the pickers (a path in Envoy's filesystem)")
	fl.StringVar(&f.translate.PickerTLS.KeyFile, "picker-tls-key", "", "private key of --picker-tls-cert (a path in Envoy's filesystem)")
	fl.StringVar(&f.translate.PickerTLS.SNI, "picker-tls-sni", "", "server name Envoy sends to and requires from every picker (default: each picker Service's <name>.<namespace>.svc)")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	cmd.AddCommand(newControlPlaneBootstrapCmd())
	return cmd
}

func runControlPlane(ctx context.Context, f *controlPlaneFlags) error {
	log, err := newLogger(f.logLevel)
	if err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	if err := f.source.validate(); err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	f.translate.RequestBodyMode = xds.BodyMode(f.requestBodyMode)
	f.translate.ResponseBodyMode = xds.BodyMode(f.responseBodyMode)
	f.translate.NoResponseObserver = !f.responseObserver
	if err := f.translate.Validate(); err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	source, err := controlPlaneSource(f, reg, log)
	if err != nil {
		return err
	}
	srv, err := xds.NewServer(xds.ServerOptions{Translate: f.translate, Registerer: reg, Logger: log})
	if err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	var grpcOpts []grpc.ServerOption
	if f.tlsCert != "" || f.tlsKey != "" || f.tlsCA != "" {
		opt, err := xds.ServerTLS(f.tlsCert, f.tlsKey, f.tlsCA)
		if err != nil {
			return fmt.Errorf("controlplane: %w", err)
		}
		grpcOpts = append(grpcOpts, opt)
	}
	xdsLis, err := (&net.ListenConfig{}).Listen(ctx, "tcp", f.xdsAddr)
	if err != nil {
		return fmt.Errorf("controlplane: listen xds: %w", err)
	}
	metricsLis, err := (&net.ListenConfig{}).Listen(ctx, "tcp", f.metricsAddr)
	if err != nil {
		xdsLis.Close()
		return fmt.Errorf("controlplane: listen metrics: %w", err)
	}
	log.Info("control plane starting", "xds_addr", xdsLis.Addr().String(), "metrics_addr", metricsLis.Addr().String(),
		"tls", len(grpcOpts) > 0, "picker_tls", f.translate.PickerTLS.Enabled())

	g, ctx := errgroup.WithContext(ctx)
	// Subscribe before Run so the first snapshot is never missed.
	snaps, unsubscribe := source.Subscribe()
	defer unsubscribe()
	g.Go(func() error { return source.Run(ctx) })
	g.Go(func() error { return applySnapshots(ctx, source, snaps, srv, log) })
	g.Go(func() error { return srv.Serve(ctx, xdsLis, grpcOpts...) })
	g.Go(func() error { return serveControlPlaneHTTP(ctx, metricsLis, reg, srv) })
	err = g.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("controlplane: %w", err)
	}
	return nil
}

// applySnapshots feeds every published snapshot to the xDS server. A snapshot that cannot
// be translated is logged and skipped: Envoy keeps the last good configuration.
func applySnapshots(ctx context.Context, source discovery.Source, snaps <-chan *discovery.Snapshot, srv *xds.Server, log *slog.Logger) error {
	if cur := source.Current(); cur != nil {
		if _, err := srv.Update(ctx, cur); err != nil {
			log.Error("snapshot rejected; keeping the last good configuration", "discovery_version", cur.Version, "error", err)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case snap, ok := <-snaps:
			if !ok {
				return nil
			}
			if snap == nil || snap.Version <= srv.LastDiscoveryVersion() {
				continue
			}
			if _, err := srv.Update(ctx, snap); err != nil {
				log.Error("snapshot rejected; keeping the last good configuration", "discovery_version", snap.Version, "error", err)
			}
		}
	}
}

func serveControlPlaneHTTP(ctx context.Context, lis net.Listener, reg *prometheus.Registry, srv *xds.Server) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-srv.Ready():
			fmt.Fprintln(w, "ok")
		default:
			http.Error(w, "no snapshot applied yet", http.StatusServiceUnavailable)
		}
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { //nolint:gosec // G118: the shutdown runs after ctx has ended, so it needs a context of its own
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		hs.Shutdown(shutdownCtx) //nolint:errcheck // best effort on exit
	}()
	if err := hs.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics server: %w", err)
	}
	return nil
}

func controlPlaneSource(f *controlPlaneFlags, reg prometheus.Registerer, log *slog.Logger) (discovery.Source, error) {
	if f.source.manifests != "" {
		if f.translate.GatewayPorts.Enabled() {
			return nil, errors.New("controlplane: --gateway-port-range needs --kubernetes (the per-Gateway Services make the allocated ports reachable)")
		}
		src, err := dirsource.NewDirSource(f.source.manifests, dirsource.DirOptions{GatewayClass: f.gatewayClass, Registerer: reg}, log)
		if err != nil {
			return nil, fmt.Errorf("controlplane: manifests: %w", err)
		}
		return src, nil
	}
	gatewayServices, err := f.gatewayServices.options(f.translate.GatewayPorts, f.source.kubernetes, f.writeStatus)
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	cfg, err := f.source.restConfig()
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	src, err := kubesource.NewKubeSource(kubesource.KubeOptions{
		GatewayPorts:     f.translate.GatewayPorts,
		GatewayServices:  gatewayServices,
		RESTConfig:       cfg,
		Namespaces:       f.source.namespaces,
		GatewayClass:     f.gatewayClass,
		WriteStatus:      f.writeStatus,
		GatewayAPI:       true,
		GatewayAddresses: gatewayAddresses(f.gatewayAddresses),
		GatewayService:   f.gatewayService,
		ControllerName:   "infergw.dev/gateway-controller",
		Registerer:       reg,
	}, log)
	if err != nil {
		return nil, fmt.Errorf("controlplane: kubernetes: %w", err)
	}
	return src, nil
}

// portMapValue is the flag value of --listener-port-map: "80=10080,443=10443".
type portMapValue struct{ m *map[int32]int32 }

func (v portMapValue) Type() string { return "port=port,..." }

func (v portMapValue) String() string {
	if v.m == nil || len(*v.m) == 0 {
		return ""
	}
	keys := make([]int32, 0, len(*v.m))
	for k := range *v.m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d=%d", k, (*v.m)[k]))
	}
	return strings.Join(parts, ",")
}

func (v portMapValue) Set(s string) error {
	m := map[int32]int32{}
	for item := range strings.SplitSeq(s, ",") {
		from, to, ok := strings.Cut(strings.TrimSpace(item), "=")
		a, errA := strconv.ParseUint(from, 10, 16)
		b, errB := strconv.ParseUint(to, 10, 16)
		if !ok || errA != nil || errB != nil || a == 0 || b == 0 {
			return fmt.Errorf("%q is not gatewayPort=envoyPort", item)
		}
		m[int32(a)] = int32(b)
	}
	*v.m = m
	return nil
}

// gatewayAddresses types the --gateway-address values: an IP address, else a hostname.
func gatewayAddresses(values []string) []gwapiv1.GatewayStatusAddress {
	out := make([]gwapiv1.GatewayStatusAddress, 0, len(values))
	for _, v := range values {
		t := gwapiv1.HostnameAddressType
		if _, err := netip.ParseAddr(v); err == nil {
			t = gwapiv1.IPAddressType
		}
		out = append(out, gwapiv1.GatewayStatusAddress{Type: &t, Value: v})
	}
	return out
}

func newControlPlaneBootstrapCmd() *cobra.Command {
	var o xds.BootstrapOptions
	var output string
	cmd := &cobra.Command{
		Use:   "bootstrap",
		Short: "Print an Envoy bootstrap (YAML) that takes its configuration from the control plane",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out, err := xds.Bootstrap(o)
			if err != nil {
				return err
			}
			if output != "" {
				// Images without a shell (distroless) cannot redirect stdout, so the Helm
				// chart's init container writes the file through this flag.
				if err := os.WriteFile(output, out, 0o644); err != nil { //nolint:gosec // no secret in it; Envoy may run as another user

					return fmt.Errorf("bootstrap: %w", err)
				}
				return nil
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.XDSAddr, "xds-addr", "127.0.0.1:18000", "control plane ADS address (host:port)")
	fl.StringVar(&o.NodeID, "node-id", "infergw-envoy", "Envoy node id")
	fl.StringVar(&o.NodeCluster, "node-cluster", "infergw", "Envoy node cluster")
	fl.StringVar(&o.AdminAddr, "admin-addr", "127.0.0.1:19000", "Envoy admin address")
	fl.StringVar(&o.CAFile, "tls-ca", "", "verify the control plane with this CA (enables TLS)")
	fl.StringVar(&o.CertFile, "tls-cert", "", "client certificate for the control plane")
	fl.StringVar(&o.KeyFile, "tls-key", "", "private key of --tls-cert")
	fl.StringVar(&o.ServerName, "tls-server-name", "", "name expected in the control plane certificate (default: host of --xds-addr)")
	fl.StringVarP(&output, "output", "o", "", "write the bootstrap to this file instead of stdout")
	return cmd
}
