package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/infergw/infergw/discovery"
)

// nodeGroup is the one snapshot-cache key: every Envoy of an infergw gateway gets the same
// configuration, whatever its node id.
const nodeGroup = "infergw"

// ServerOptions configure a Server.
type ServerOptions struct {
	// Translate are the translation options.
	Translate Options
	// Registerer receives the server's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Logger receives NACKs, stream and update logs; nil discards them.
	Logger *slog.Logger
}

// Server holds the snapshot cache and serves it over ADS.
type Server struct {
	opts    ServerOptions
	log     *slog.Logger
	cache   cachev3.SnapshotCache
	metrics *serverMetrics

	mu      sync.Mutex
	version uint64
	current *Resources
	// lastSeen is the discovery version of the newest Update attempt.
	lastSeen uint64
	streams  map[int64]bool
	// sent is the last response per stream and type URL, to know which version a NACK rejects.
	sent     map[streamType]sentResponse
	applied  chan struct{} // closed on the first successful Update
	appliedO sync.Once
}

// NewServer creates a Server with an empty cache; Envoys that connect before the first
// Update wait for it.
func NewServer(opts ServerOptions) (*Server, error) {
	if err := opts.Translate.Validate(); err != nil {
		return nil, fmt.Errorf("xds server: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newServerMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{
		opts:    opts,
		log:     log,
		metrics: m,
		streams: map[int64]bool{},
		sent:    map[streamType]sentResponse{},
		applied: make(chan struct{}),
	}
	s.cache = cachev3.NewSnapshotCache(true, constantHash{}, cacheLogger{log: log})
	return s, nil
}

// Update translates snap and, when the result is valid and consistent, sets it as the
// served configuration with the next version. On error the last good configuration stays.
func (s *Server) Update(ctx context.Context, snap *discovery.Snapshot) (*Resources, error) {
	start := time.Now()
	if snap != nil {
		s.mu.Lock()
		s.lastSeen = max(s.lastSeen, snap.Version)
		s.mu.Unlock()
	}
	res, err := Translate(snap, s.opts.Translate)
	s.metrics.translate.Observe(time.Since(start).Seconds())
	if err != nil {
		s.metrics.updateError.Inc()
		return nil, fmt.Errorf("xds update: %w", err)
	}
	if err := s.set(ctx, res); err != nil {
		return nil, err
	}
	for _, w := range res.Warnings {
		s.log.Warn("xds translation", "warning", w, "discovery_version", snap.Version)
	}
	s.log.Info("xds snapshot set", "version", s.Version(), "discovery_version", snap.Version,
		"listeners", len(res.Listeners), "clusters", len(res.Clusters), "took", time.Since(start))
	return res, nil
}

// set stores res in the cache as the next version, if it is a consistent snapshot.
func (s *Server) set(ctx context.Context, res *Resources) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	version := s.version + 1
	cs, err := cachev3.NewSnapshot(strconv.FormatUint(version, 10), map[resource.Type][]cachetypes.Resource{
		resource.ListenerType: toResources(res.Listeners),
		resource.RouteType:    toResources(res.Routes),
		resource.ClusterType:  toResources(res.Clusters),
		resource.EndpointType: toResources(res.Endpoints),
	})
	if err == nil {
		err = cs.Consistent()
	}
	if err == nil {
		err = s.cache.SetSnapshot(ctx, nodeGroup, cs)
	}
	if err != nil {
		s.metrics.updateError.Inc()
		return fmt.Errorf("xds update version %d: %w", version, err)
	}
	s.version = version
	s.current = res
	s.metrics.version.Set(float64(version))
	s.appliedO.Do(func() { close(s.applied) })
	return nil
}

// Version is the version of the served snapshot (0 before the first Update).
func (s *Server) Version() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version
}

// LastDiscoveryVersion is the highest discovery snapshot version given to Update, applied
// or not; a caller can skip snapshots it has already offered.
func (s *Server) LastDiscoveryVersion() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastSeen
}

// Ready is closed once a first snapshot is served.
func (s *Server) Ready() <-chan struct{} { return s.applied }

// Register adds the ADS service to a gRPC server.
func (s *Server) Register(g *grpc.Server) {
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, serverv3.NewServer(context.Background(), s.cache, s.callbacks()))
}

// GRPCServerOptions are the options Serve uses: keepalives that suit long-lived ADS streams.
func GRPCServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 15 * time.Second, PermitWithoutStream: true}),
	}
}

// Serve serves ADS on lis until ctx is done. extra adds options (for example TLS credentials).
func (s *Server) Serve(ctx context.Context, lis net.Listener, extra ...grpc.ServerOption) error {
	g := grpc.NewServer(append(GRPCServerOptions(), extra...)...)
	s.Register(g)
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		stopped := make(chan struct{})
		go func() { g.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(2 * time.Second): // ADS streams never end by themselves
			g.Stop()
		}
	}()
	err := g.Serve(lis)
	<-done
	if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("xds serve: %w", err)
	}
	return nil
}

func (s *Server) callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamOpenFunc: func(_ context.Context, id int64, typeURL string) error {
			s.streamOpened(id)
			s.log.Debug("xds stream opened", "stream", id, "type_url", typeURL)
			return nil
		},
		StreamClosedFunc: func(id int64, node *corev3.Node) {
			s.streamClosed(id)
			s.log.Debug("xds stream closed", "stream", id, "node", node.GetId())
		},
		DeltaStreamOpenFunc: func(_ context.Context, id int64, _ string) error {
			s.streamOpened(-id - 1) // delta ids are a separate sequence
			return nil
		},
		DeltaStreamClosedFunc: func(id int64, _ *corev3.Node) { s.streamClosed(-id - 1) },
		StreamRequestFunc: func(id int64, req *discoveryv3.DiscoveryRequest) error {
			if st := req.GetErrorDetail(); st != nil {
				s.nack(id, req.GetNode(), req.GetTypeUrl(), req.GetVersionInfo(), req.GetResponseNonce(), st.GetMessage())
				// The cache answers any request whose version differs from the snapshot's,
				// so a NACK would get the rejected version again at once, forever. Mark the
				// rejected version as seen: the proxy gets the next version instead.
				if v, ok := s.rejectedVersion(id, req.GetTypeUrl(), req.GetResponseNonce()); ok {
					req.VersionInfo = v
				}
			}
			return nil
		},
		StreamDeltaRequestFunc: func(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
			if st := req.GetErrorDetail(); st != nil {
				s.nack(id, req.GetNode(), req.GetTypeUrl(), "", req.GetResponseNonce(), st.GetMessage())
			}
			return nil
		},
		StreamResponseFunc: func(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
			s.metrics.pushes.WithLabelValues(resp.GetTypeUrl()).Inc()
			s.mu.Lock()
			s.sent[streamType{id, resp.GetTypeUrl()}] = sentResponse{nonce: resp.GetNonce(), version: resp.GetVersionInfo()}
			s.mu.Unlock()
		},
		StreamDeltaResponseFunc: func(_ int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
			s.metrics.pushes.WithLabelValues(resp.GetTypeUrl()).Inc()
		},
	}
}

func (s *Server) nack(stream int64, node *corev3.Node, typeURL, version, nonce, detail string) {
	s.metrics.nacks.WithLabelValues(typeURL).Inc()
	s.log.Error("xds NACK: proxy rejected configuration", "stream", stream, "node", node.GetId(),
		"type_url", typeURL, "last_accepted_version", version, "nonce", nonce, "error", detail)
}

func (s *Server) streamOpened(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.streams[id] {
		s.streams[id] = true
		s.metrics.proxies.Set(float64(len(s.streams)))
	}
}

type streamType struct {
	stream  int64
	typeURL string
}

type sentResponse struct{ nonce, version string }

// rejectedVersion is the version of the response a NACK names by its nonce.
func (s *Server) rejectedVersion(id int64, typeURL, nonce string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.sent[streamType{id, typeURL}]
	if !ok || r.nonce != nonce {
		return "", false
	}
	return r.version, true
}

func (s *Server) streamClosed(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.sent {
		if k.stream == id {
			delete(s.sent, k)
		}
	}
	delete(s.streams, id)
	s.metrics.proxies.Set(float64(len(s.streams)))
}

func toResources[T cachetypes.Resource](s []T) []cachetypes.Resource {
	out := make([]cachetypes.Resource, len(s))
	for i, r := range s {
		out[i] = r
	}
	return out
}

// constantHash maps every node to the one shared snapshot.
type constantHash struct{}

func (constantHash) ID(*corev3.Node) string { return nodeGroup }

// cacheLogger sends go-control-plane's logs to slog (its Debug/Info are chatty: debug level).
type cacheLogger struct{ log *slog.Logger }

func (l cacheLogger) Debugf(format string, args ...any) { l.log.Debug(fmt.Sprintf(format, args...)) }
func (l cacheLogger) Infof(format string, args ...any)  { l.log.Debug(fmt.Sprintf(format, args...)) }
func (l cacheLogger) Warnf(format string, args ...any)  { l.log.Warn(fmt.Sprintf(format, args...)) }
func (l cacheLogger) Errorf(format string, args ...any) { l.log.Error(fmt.Sprintf(format, args...)) }

// Current returns the resources being served (nil before the first Update).
func (s *Server) Current() *Resources {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current
}
