package kubesource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/infergw/infergw/discovery"
	"github.com/infergw/infergw/model"
)

// Defaults of KubeOptions.
const (
	DefaultKubeDebounce  = 100 * time.Millisecond
	kubeStatusTimeout    = 10 * time.Second
	kubeStatusRetryFirst = 500 * time.Millisecond
	kubeStatusRetryMax   = 30 * time.Second
)

// KubeOptions configures a KubeSource.
type KubeOptions struct {
	// RESTConfig reaches the API server (in-cluster config or a kubeconfig). Required.
	RESTConfig *rest.Config
	// Namespaces limits every informer to these namespaces; empty means all namespaces.
	Namespaces []string
	// GatewayClass selects the Gateways infergw serves (default "infergw").
	GatewayClass string
	// WriteStatus makes the source write InferencePool and HTTPRoute status.
	WriteStatus bool
	// ControllerName is written into HTTPRoute status (default infergw.dev/gateway-controller).
	ControllerName string
	// GatewayAPI makes the source also read what Gateway status, HTTPS and Service backends
	// need: GatewayClasses, ReferenceGrants, TLS Secrets, Namespaces and EndpointSlices (the
	// control plane; the picker needs none of them, and its RBAC does not grant them).
	GatewayAPI bool
	// GatewayAddresses are written into every Gateway's status.addresses: where clients
	// reach the proxy (for example the Envoy Service's ClusterIP).
	GatewayAddresses []gwapiv1.GatewayStatusAddress
	// GatewayService ("namespace/name") is the proxy's Service: its load-balancer ingress
	// addresses, else its clusterIP, are written into Gateway status.addresses (after
	// GatewayAddresses).
	GatewayService string
	// GatewayPorts and GatewayServices give every Gateway its own address (WriteStatus
	// only): the model allocates each (Gateway, listener port) an Envoy port from
	// GatewayPorts, and the source keeps a Service per Gateway pointing at those ports,
	// whose address goes into the Gateway's status. The xDS translation must use the same
	// GatewayPorts. GatewayService and GatewayAddresses are not used for those Gateways.
	GatewayPorts    model.PortRange
	GatewayServices *GatewayServiceOptions
	// Registerer receives the source's metrics; nil leaves them unregistered.
	Registerer prometheus.Registerer
	// Debounce is how long the source waits after a change before it builds a snapshot, so
	// that a burst of changes gives one snapshot (default 100ms).
	Debounce time.Duration
}

// KubeSource reads resources from the Kubernetes API through informers and publishes a new
// snapshot (at most one per Debounce interval) whenever the resources a snapshot holds
// change. When WriteStatus is set it also keeps InferencePool and HTTPRoute status current.
type KubeSource struct {
	discovery.Publisher

	opts KubeOptions
	log  *slog.Logger
	// cacheOpts configures the informer cache Run creates (creating it asks the API server
	// which kinds are namespaced, so NewKubeSource does not).
	cacheOpts cache.Options
	cache     cache.Cache
	client    client.Client // for status writes; nil unless WriteStatus
	store     *kubeStore
	metrics   *kubeMetrics
	invalid   *invalidLog

	// trigger has capacity one: informer handlers never block, and any number of changes
	// while a build is pending coalesce into one.
	trigger chan struct{}
	started atomic.Bool
}

var _ discovery.Source = (*KubeSource)(nil)

// NewKubeSource prepares informers for every resource kind infergw reads. It does not
// contact the API server; Run does.
func NewKubeSource(opts KubeOptions, log *slog.Logger) (*KubeSource, error) {
	if opts.RESTConfig == nil {
		return nil, errors.New("discovery/kube: RESTConfig is required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.GatewayClass == "" {
		opts.GatewayClass = discovery.DefaultGatewayClass
	}
	if opts.ControllerName == "" {
		opts.ControllerName = model.DefaultControllerName
	}
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultKubeDebounce
	}
	opts.Namespaces = slices.Clone(opts.Namespaces)
	for _, ns := range opts.Namespaces {
		if ns == "" {
			return nil, errors.New("discovery/kube: empty namespace in Namespaces (leave the list empty for all namespaces)")
		}
	}
	if opts.GatewayServices != nil {
		gs := *opts.GatewayServices
		if err := gs.validate(opts.Namespaces); err != nil {
			return nil, fmt.Errorf("discovery/kube: %w", err)
		}
		if !opts.WriteStatus || !opts.GatewayAPI || !opts.GatewayPorts.Enabled() {
			return nil, errors.New("discovery/kube: gateway services need WriteStatus, GatewayAPI and GatewayPorts")
		}
		opts.GatewayServices = &gs
	}
	if err := opts.GatewayPorts.Validate(); err != nil {
		return nil, fmt.Errorf("discovery/kube: %w", err)
	}
	scheme, err := newKubeScheme()
	if err != nil {
		return nil, err
	}
	// The informers and the status client share one HTTP client and one lazily filled
	// REST mapper.
	httpClient, err := rest.HTTPClientFor(opts.RESTConfig)
	if err != nil {
		return nil, fmt.Errorf("discovery/kube: HTTP client from REST config: %w", err)
	}
	mapper, err := apiutil.NewDynamicRESTMapper(opts.RESTConfig, httpClient)
	if err != nil {
		return nil, fmt.Errorf("discovery/kube: REST mapper: %w", err)
	}
	cacheOpts := kubeCacheOptions(scheme, opts.Namespaces, opts.GatewayAPI)
	cacheOpts.HTTPClient, cacheOpts.Mapper = httpClient, mapper
	metrics, err := newKubeMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	s := &KubeSource{
		opts:      opts,
		log:       log.With("source", "kubernetes"),
		cacheOpts: cacheOpts,
		store:     newKubeStore(),
		metrics:   metrics,
		invalid:   newInvalidLog(),
		trigger:   make(chan struct{}, 1),
	}
	if opts.WriteStatus {
		// Status writes go straight to the API server; reads come from the informers.
		s.client, err = client.New(opts.RESTConfig, client.Options{HTTPClient: httpClient, Scheme: scheme, Mapper: mapper})
		if err != nil {
			return nil, fmt.Errorf("discovery/kube: create status client: %w", err)
		}
	}
	return s, nil
}

// Run starts the informers, publishes a first snapshot once all of them have listed their
// resources, then a new one after every relevant change, until ctx is done. It returns
// nil when ctx ends and an error when the informers cannot start (for example when the
// Gateway API or infergw CRDs are not installed). Run may be called once.
func (s *KubeSource) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("discovery/kube: Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	c, err := cache.New(s.opts.RESTConfig, s.cacheOpts)
	if err != nil {
		return fmt.Errorf("discovery/kube: create informer cache (is the API server reachable?): %w", err)
	}
	s.cache = c
	synced, err := s.registerHandlers(ctx)
	if err != nil {
		return err
	}
	cacheErr := make(chan error, 1)
	cacheStopped := make(chan struct{})
	go func() {
		cacheErr <- s.cache.Start(ctx)
		close(cacheStopped)
	}()
	// Stop the informers and wait for them on every return path, so Run leaks nothing.
	defer func() { cancel(); <-cacheStopped }()

	s.log.Info("waiting for informers to sync", "namespaces", s.opts.Namespaces, "gatewayClass", s.opts.GatewayClass)
	if !toolscache.WaitForCacheSync(ctx.Done(), synced...) {
		if ctx.Err() != nil && errors.Is(context.Cause(ctx), context.Canceled) {
			return nil
		}
		return fmt.Errorf("discovery/kube: informers did not sync: %w", context.Cause(ctx))
	}
	return s.loop(ctx, cacheStopped, cacheErr)
}

// loop rebuilds after each trigger (once the debounce interval has passed) and retries
// failed status writes with backoff.
func (s *KubeSource) loop(ctx context.Context, cacheStopped <-chan struct{}, cacheErr <-chan error) error {
	// Both timers start stopped; Reset arms them.
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	backoff := kubeStatusRetryFirst

	rebuild := func() {
		if failed := s.rebuild(ctx); failed > 0 && ctx.Err() == nil {
			retry.Reset(backoff)
			backoff = min(2*backoff, kubeStatusRetryMax)
		} else if failed == 0 {
			backoff = kubeStatusRetryFirst
		}
	}
	rebuild()
	pending := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-cacheStopped:
			// The cache only stops before ctx ends when it fails.
			err := <-cacheErr
			if ctx.Err() != nil {
				return nil //nolint:nilerr // stopped because Run was cancelled: not a failure
			}
			if err == nil {
				err = errors.New("informer cache stopped")
			}
			return fmt.Errorf("discovery/kube: %w", err)
		case <-s.trigger:
			if !pending {
				pending = true
				debounce.Reset(s.opts.Debounce)
			}
		case <-debounce.C:
			pending = false
			rebuild()
		case <-retry.C:
			if !pending {
				rebuild()
			}
		}
	}
}

// poke asks for a rebuild without ever blocking an informer handler.
func (s *KubeSource) poke() {
	select {
	case s.trigger <- struct{}{}:
	default:
	}
}

// rebuild builds a snapshot from the informers' objects, publishes it when its content
// changed, and writes status. It returns the number of failed status writes.
func (s *KubeSource) rebuild(ctx context.Context) int {
	start := time.Now()
	objs := s.store.objects()
	objs = s.dropInvalid(objs)
	snap := discovery.Build(s.NextVersion(), objs, s.opts.GatewayClass)
	s.metrics.buildSeconds.Observe(time.Since(start).Seconds())
	if prev := s.Current(); prev == nil || !sameSnapshotContent(prev, snap) {
		if s.Publish(snap) {
			s.metrics.snapshots.Inc()
			s.metrics.version.Set(float64(snap.Version))
			s.log.Info("snapshot published", "version", snap.Version, "gateways", len(snap.Gateways),
				"routes", len(snap.HTTPRoutes), "pools", len(snap.Pools), "endpoints", countEndpoints(snap))
		}
	}
	if s.client == nil {
		return 0
	}
	return s.writeStatus(ctx, objs, snap)
}

func countEndpoints(snap *discovery.Snapshot) int {
	n := 0
	for _, p := range snap.Pools {
		n += len(p.Endpoints)
	}
	return n
}

// watched reports whether the source reads a namespace.
func (s *KubeSource) watched(ns string) bool {
	return len(s.opts.Namespaces) == 0 || slices.Contains(s.opts.Namespaces, ns)
}
