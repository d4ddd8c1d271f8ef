// Package stack runs the whole local gateway in one process: the manifest-directory
// discovery source, the xDS control plane, the endpoint picker, a simulated model server on
// every pool endpoint, and Envoy as a child process bootstrapped to the control plane. It is
// what `infergw up` runs, and what the end-to-end tests and the routing benchmark start.
package stack

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/infergw/infergw/discovery"
	"github.com/infergw/infergw/discovery/dirsource"
	"github.com/infergw/infergw/extproc"
	"github.com/infergw/infergw/internal/envoyproc"
	"github.com/infergw/infergw/kvroute"
	"github.com/infergw/infergw/router"
	"github.com/infergw/infergw/sim"
	"github.com/infergw/infergw/xds"
)

// Config says what to run. Zero values take the defaults of DefaultConfig.
type Config struct {
	// ManifestDir is the directory of Gateway API / GIE / Pod / Service manifests.
	ManifestDir  string
	GatewayClass string

	// XDSAddr is where the control plane serves ADS; EnvoyAdminAddr is Envoy's admin.
	XDSAddr        string
	EnvoyAdminAddr string
	// MetricsAddr serves the picker's and the control plane's /metrics, /healthz and
	// /readyz (one registry: it is one process).
	MetricsAddr string

	// Sims starts a simulated model server on every pool endpoint of the manifests. Turn it
	// off when the Pod manifests point at real OpenAI-compatible servers.
	Sims bool
	Sim  sim.Config

	Router    router.Config
	Translate xds.Options
	Picker    extproc.Options
	// PickerTLS, when set, serves the picker's gRPC port over TLS; Envoy's side is
	// Translate.PickerTLS.
	PickerTLS *tls.Config
	// ExternalPicker leaves the picker's gRPC port to a picker running elsewhere (its own
	// process, as in a real deployment, which a test can kill); the stack still keeps an
	// in-process picker state for its metrics handler.
	ExternalPicker bool

	// EnvoyBinary is the Envoy to run (see envoyproc.Find); EnvoyOutput receives its logs.
	EnvoyBinary   string
	EnvoyOutput   io.Writer
	EnvoyLogLevel string
	// EnvoyConcurrency is Envoy's worker thread count (0: envoyproc's default).
	EnvoyConcurrency int

	// ReadyTimeout bounds the wait for the first request through Envoy to succeed.
	ReadyTimeout time.Duration
	// ProbeModel is the model of the readiness request (default: Sim.Model).
	ProbeModel string
	// KVEvents, when set, subscribes the picker to the model servers' KV events;
	// KVSource (registered with the precise-prefix scorer in Router.Plugins) is then set
	// to answer from them.
	KVEvents *kvroute.Options
	KVSource *kvroute.Ref
}

// DefaultConfig is the configuration of `infergw up` with the bundled examples.
func DefaultConfig() Config {
	s := sim.DefaultConfig()
	s.LoRAAdapters = []string{"food-review-1", "food-review-2"}
	tr := xds.Options{ListenerAddress: "127.0.0.1"}
	return Config{
		ManifestDir:    "examples/local",
		GatewayClass:   "infergw",
		XDSAddr:        "127.0.0.1:18000",
		EnvoyAdminAddr: "127.0.0.1:19000",
		MetricsAddr:    "127.0.0.1:9090",
		Sims:           true,
		Sim:            s,
		Router:         router.DefaultConfig(),
		Translate:      tr,
		EnvoyLogLevel:  "warn",
		ReadyTimeout:   60 * time.Second,
	}
}

// Stack is a running local gateway.
type Stack struct {
	cfg Config
	log *slog.Logger

	cancel context.CancelFunc
	wg     sync.WaitGroup

	Source *dirsource.DirSource
	// KV is the KV-event subscriber and index (nil unless Config.KVEvents).
	KV     *kvroute.Runtime
	Router *router.Router
	Picker *extproc.Server
	XDS    *xds.Server
	Envoy  *envoyproc.Process

	sims    *simManager
	metrics *http.Server

	pickerMu    sync.Mutex
	pickerAddrs []string
	pickerGRPC  []extproc.GRPCServer

	xdsGRPCDone chan error
	gatewayURL  string
}

// Start brings every component up and returns once a request through Envoy succeeded.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (_ *Stack, err error) {
	if cfg.ProbeModel == "" {
		cfg.ProbeModel = cfg.Sim.Model
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 60 * time.Second
	}
	if cfg.EnvoyBinary == "" {
		if cfg.EnvoyBinary, err = envoyproc.Find("."); err != nil {
			return nil, err
		}
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s := &Stack{cfg: cfg, log: log, cancel: cancel, sims: newSimManager(cfg.Sim, log)}
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()

	reg := prometheus.NewRegistry()
	if s.Source, err = dirsource.NewDirSource(cfg.ManifestDir, dirsource.DirOptions{GatewayClass: cfg.GatewayClass, Registerer: reg}, log); err != nil {
		return nil, fmt.Errorf("manifests: %w", err)
	}
	updates, unsubscribe := s.Source.Subscribe()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.Source.Run(runCtx); err != nil && runCtx.Err() == nil {
			log.Error("manifest source stopped", "err", err)
		}
	}()
	first, err := waitSnapshot(ctx, s.Source, updates, cfg.ReadyTimeout)
	if err != nil {
		unsubscribe()
		return nil, err
	}

	if cfg.KVEvents != nil {
		if s.KV, err = kvroute.Start(runCtx, *cfg.KVEvents, log.With("component", "kvevents"), reg); err != nil {
			unsubscribe()
			return nil, fmt.Errorf("kv events: %w", err)
		}
		if cfg.KVSource != nil {
			cfg.KVSource.Set(s.KV.Source)
		}
		if addr := s.KV.Sub.Addr(); addr != "" {
			// The sims publish their KV events to the picker as vLLM pods would, and
			// tokenize with the model's tokenizer so that their blocks are the picker's.
			s.sims.base.KVEvents = sim.KVEventsConfig{Enable: true, Publisher: "zmq", Endpoint: "tcp://" + addr}
			if s.sims.base.Tokenizer == "" {
				dir, ok := cfg.KVEvents.Tokenizers[s.sims.base.Model]
				if !ok {
					dir = cfg.KVEvents.Tokenizers[""]
				}
				s.sims.base.Tokenizer = dir
			}
		}
	}
	if s.Router, err = router.New(cfg.Router, log, reg); err != nil {
		unsubscribe()
		return nil, fmt.Errorf("router: %w", err)
	}
	if s.KV != nil {
		s.KV.FollowPods(runCtx, s.Router.EndpointHosts, cfg.KVEvents.PodPort, 2*time.Second)
	}
	pickerOpts := cfg.Picker
	pickerOpts.Registerer = reg
	if s.Picker, err = extproc.NewServer(s.Router, pickerOpts, log); err != nil {
		unsubscribe()
		return nil, fmt.Errorf("picker: %w", err)
	}
	if s.XDS, err = xds.NewServer(xds.ServerOptions{Translate: cfg.Translate, Registerer: reg, Logger: log}); err != nil {
		unsubscribe()
		return nil, fmt.Errorf("control plane: %w", err)
	}

	// Apply the first snapshot before anything listens, so Envoy's first configuration and
	// the picker's first pools are complete.
	s.apply(runCtx, first)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer unsubscribe()
		for {
			select {
			case <-runCtx.Done():
				return
			case snap := <-updates:
				s.apply(runCtx, snap)
			}
		}
	}()

	if err := s.startXDS(runCtx); err != nil {
		return nil, err
	}
	s.pickerAddrs = pickerAddrs(first)
	if len(s.pickerAddrs) == 0 {
		return nil, errors.New("manifests: no InferencePool names an endpoint picker Service with a clusterIP address; the local picker has nowhere to listen")
	}
	if !cfg.ExternalPicker {
		if err := s.StartPicker(); err != nil {
			return nil, err
		}
	}
	if err := s.startMetrics(reg); err != nil {
		return nil, err
	}
	if s.gatewayURL, err = gatewayURL(first, cfg.Translate.ListenerAddress); err != nil {
		return nil, err
	}
	if err := s.startEnvoy(ctx); err != nil {
		return nil, err
	}
	if err := s.waitGateway(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func waitSnapshot(ctx context.Context, src discovery.Source, updates <-chan *discovery.Snapshot, timeout time.Duration) (*discovery.Snapshot, error) {
	if snap := src.Current(); snap != nil {
		return snap, nil
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case snap := <-updates:
		return snap, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
		return nil, fmt.Errorf("manifests: no valid snapshot within %s (see the errors logged above)", timeout)
	}
}

// apply hands a snapshot to every consumer: sims first so that endpoints answer before
// the picker or Envoy send them anything.
func (s *Stack) apply(ctx context.Context, snap *discovery.Snapshot) {
	if s.cfg.Sims {
		if err := s.sims.sync(snap); err != nil {
			s.log.Error("sims", "err", err)
		}
	}
	s.Picker.ApplySnapshot(snap)
	if _, err := s.XDS.Update(ctx, snap); err != nil {
		s.log.Error("control plane rejected snapshot; Envoy keeps the previous configuration", "version", snap.Version, "err", err)
	}
}

func (s *Stack) startXDS(ctx context.Context) error {
	lis, err := net.Listen("tcp", s.cfg.XDSAddr)
	if err != nil {
		return fmt.Errorf("control plane: listen %s: %w", s.cfg.XDSAddr, err)
	}
	s.xdsGRPCDone = make(chan error, 1)
	go func() { s.xdsGRPCDone <- s.XDS.Serve(ctx, lis) }()
	return nil
}

// pickerAddrs are the distinct ip:port the pools' endpointPickerRefs resolve to.
func pickerAddrs(snap *discovery.Snapshot) []string {
	svcs := map[string]string{}
	for _, svc := range snap.Services {
		if net.ParseIP(svc.Spec.ClusterIP) != nil {
			svcs[discovery.Key(svc.Namespace, svc.Name)] = svc.Spec.ClusterIP
		}
	}
	seen := map[string]bool{}
	var out []string
	for _, p := range snap.Pools {
		ref := p.Spec.EndpointPickerRef
		ip, ok := svcs[discovery.Key(p.Namespace, string(ref.Name))]
		if !ok || ref.Port == nil {
			continue
		}
		addr := net.JoinHostPort(ip, strconv.Itoa(int(ref.Port.Number)))
		if !seen[addr] {
			seen[addr] = true
			out = append(out, addr)
		}
	}
	sort.Strings(out)
	return out
}

// StartPicker (re)starts the picker's gRPC servers on the addresses the manifests name.
func (s *Stack) StartPicker() error {
	s.pickerMu.Lock()
	defer s.pickerMu.Unlock()
	if len(s.pickerGRPC) > 0 {
		return nil
	}
	for _, addr := range s.pickerAddrs {
		lis, err := net.Listen("tcp", addr)
		if err != nil {
			s.stopPickerLocked()
			return fmt.Errorf("picker: listen %s: %w", addr, err)
		}
		g, err := s.Picker.NewGRPCServer(s.cfg.PickerTLS)
		if err != nil {
			lis.Close()
			s.stopPickerLocked()
			return fmt.Errorf("picker: %w", err)
		}
		s.pickerGRPC = append(s.pickerGRPC, g)
		go func() { _ = g.Serve(lis) }()
		s.log.Info("picker listening", "addr", addr)
	}
	return nil
}

// StopPicker stops the picker's gRPC servers (abruptly, as a crash would), leaving the rest
// of the stack running: the end-to-end tests use it to check FailOpen and FailClose.
func (s *Stack) StopPicker() {
	s.pickerMu.Lock()
	defer s.pickerMu.Unlock()
	s.stopPickerLocked()
}

func (s *Stack) stopPickerLocked() {
	for _, g := range s.pickerGRPC {
		g.Close()
	}
	s.pickerGRPC = nil
}

func (s *Stack) startMetrics(reg *prometheus.Registry) error {
	lis, err := net.Listen("tcp", s.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("metrics: listen %s: %w", s.cfg.MetricsAddr, err)
	}
	// One registry holds the picker's, the router's, the control plane's and discovery's
	// metrics: the picker's handler serves it with /healthz and /readyz.
	s.metrics = &http.Server{Handler: s.Picker.MetricsHandler(reg), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.metrics.Serve(lis) }()
	return nil
}

// gatewayURL is the base URL of the first HTTP listener of the first Gateway.
func gatewayURL(snap *discovery.Snapshot, listenerAddr string) (string, error) {
	host := listenerAddr
	switch host {
	case "", "0.0.0.0": // every IPv4 address: reach it on the loopback
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	for _, gw := range snap.Gateways {
		for _, l := range gw.Spec.Listeners {
			if l.Protocol == "HTTP" {
				return "http://" + net.JoinHostPort(host, strconv.Itoa(int(l.Port))), nil
			}
		}
	}
	return "", errors.New("manifests: no Gateway with an HTTP listener")
}

func (s *Stack) startEnvoy(ctx context.Context) error {
	bootstrap, err := xds.Bootstrap(xds.BootstrapOptions{XDSAddr: s.cfg.XDSAddr, AdminAddr: s.cfg.EnvoyAdminAddr, NodeID: "infergw-local"})
	if err != nil {
		return fmt.Errorf("envoy bootstrap: %w", err)
	}
	s.Envoy, err = envoyproc.Start(envoyproc.Config{
		Binary:      s.cfg.EnvoyBinary,
		Bootstrap:   bootstrap,
		AdminAddr:   s.cfg.EnvoyAdminAddr,
		LogLevel:    s.cfg.EnvoyLogLevel,
		Output:      s.cfg.EnvoyOutput,
		Concurrency: s.cfg.EnvoyConcurrency,
	}, s.log)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.ReadyTimeout)
	defer cancel()
	return s.Envoy.WaitReady(wctx)
}

// waitGateway sends a one-token chat completion through Envoy until one succeeds: only then
// is every hop (listener, route, picker, cluster, model server) known to work.
func (s *Stack) waitGateway(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ReadyTimeout)
	defer cancel()
	body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"ping"}],"max_tokens":1}`, s.cfg.ProbeModel)
	client := &http.Client{Timeout: 5 * time.Second}
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.gatewayURL+"/v1/chat/completions", bytes.NewBufferString(body))
		req.Header.Set("content-type", "application/json")
		resp, err := client.Do(req)
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(b))
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gateway %s did not answer a chat completion within %s (last: %s)", s.gatewayURL, s.cfg.ReadyTimeout, last)
		case <-s.Envoy.Done():
			return errors.New("envoy exited while waiting for the gateway")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// GatewayURL is the base URL clients send requests to.
func (s *Stack) GatewayURL() string { return s.gatewayURL }

// SimAddrs lists the running sims.
func (s *Stack) SimAddrs() []string { return s.sims.addrs() }

// Close stops Envoy first (so no request is cut mid-way by a vanished backend), then the
// picker, the control plane, the sims and the manifest watcher.
func (s *Stack) Close() error {
	var errs []error
	if s.Envoy != nil {
		if err := s.Envoy.Stop(10 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	s.StopPicker()
	if s.Picker != nil {
		s.Picker.StopFlowControl() // the flow controllers' goroutines (issue 19)
	}
	if s.metrics != nil {
		sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
		_ = s.metrics.Shutdown(sctx)
		c()
	}
	s.cancel()
	if s.xdsGRPCDone != nil {
		if err := <-s.xdsGRPCDone; err != nil {
			errs = append(errs, err)
		}
	}
	s.wg.Wait()
	if s.Router != nil {
		s.Router.Close()
	}
	if s.KV != nil {
		if err := s.KV.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.sims.closeAll(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
