package extproc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/experimental"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/infergw/infergw/internal/inlinegrpc"
)

// GRPCServer is the picker's gRPC server on either transport.
type GRPCServer interface {
	// Serve accepts connections on lis until Shutdown or Close (then it returns nil).
	Serve(lis net.Listener) error
	// Shutdown stops accepting, lets open streams finish and returns; when ctx ends first
	// it closes the rest.
	Shutdown(ctx context.Context) error
	// Close drops every connection at once.
	Close()
}

// NewGRPCServer returns the gRPC server for Options.Transport, serving the processor and
// the health service. tlsCfg nil means plaintext (h2c), which is what Envoy's ext_proc
// cluster uses by default.
func (s *Server) NewGRPCServer(tlsCfg *tls.Config) (GRPCServer, error) {
	if s.opts.Transport == TransportGRPCGo {
		return grpcGoServer{s.GRPCGoServer(tlsCfg)}, nil
	}
	g, err := s.InlineServer(tlsCfg)
	if err != nil {
		return nil, err
	}
	return inlineServer{g}, nil
}

type inlineServer struct{ *inlinegrpc.Server }

func (g inlineServer) Serve(lis net.Listener) error {
	if err := g.Server.Serve(lis); !errors.Is(err, inlinegrpc.ErrServerClosed) {
		return err
	}
	return nil
}

type grpcGoServer struct{ g *grpc.Server }

func (g grpcGoServer) Serve(lis net.Listener) error {
	if err := g.g.Serve(lis); !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

func (g grpcGoServer) Shutdown(ctx context.Context) error {
	stopped := make(chan struct{})
	go func() { g.g.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
		return nil
	case <-ctx.Done():
		g.g.Stop()
		<-stopped
		return fmt.Errorf("grpc shutdown: %w", ctx.Err())
	}
}

func (g grpcGoServer) Close() { g.g.Stop() }

// GRPCGoServer returns a grpc-go server serving the processor and the health service: the
// "grpc-go" transport. tlsCfg nil means plaintext (h2c).
func (s *Server) GRPCGoServer(tlsCfg *tls.Config) *grpc.Server {
	// BUFFERED mode sends (and takes back) the whole body in one message.
	maxMsg := s.opts.MaxBodyBytes + 1<<20
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxMsg),
		grpc.MaxSendMsgSize(maxMsg),
		// Bodies arrive in chunks of up to 64 KiB and more; larger windows than gRPC's
		// 64 KiB default avoid a window-update round trip per chunk.
		grpc.InitialWindowSize(1 << 20),
		grpc.InitialConnWindowSize(4 << 20),
		grpc.WriteBufferSize(128 << 10),
		grpc.ReadBufferSize(128 << 10),
		// Per-message buffers from the server's own size classes (see codec.go).
		experimental.BufferPool(s.bufPool),
		grpc.ForceServerCodecV2(protoCodec{pool: s.bufPool}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		// The inline transport's bounds (internal/inlinegrpc), so that both hold a hostile
		// client to the same limits: header lists of 1 MiB, 65,536 streams per
		// connection, idle connections closed after 5 minutes.
		grpc.MaxHeaderListSize(1 << 20),
		grpc.MaxConcurrentStreams(inlinegrpc.DefaultMaxConcurrentStreams),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: inlinegrpc.DefaultIdleTimeout}),
	}
	if tlsCfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsCfg)))
	}
	g := grpc.NewServer(opts...)
	g.RegisterService(processServiceDesc(), s)
	healthpb.RegisterHealthServer(g, s.health)
	return g
}

// MetricsHandler serves /metrics from gatherer, /healthz (alive) and /readyz (a snapshot
// has been applied).
func (s *Server) MetricsHandler(gatherer prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.Ready() {
			http.Error(w, "no snapshot applied yet", http.StatusServiceUnavailable)
			return
		}
		if s.draining.Load() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// Serve runs the gRPC server on grpcLis and the metrics server on metricsLis until ctx is
// done, then stops both: gRPC gracefully within Options.ShutdownGrace, the metrics server
// within 5 s.
func (s *Server) Serve(ctx context.Context, grpcLis, metricsLis net.Listener, tlsCfg *tls.Config, gatherer prometheus.Gatherer) error {
	g, err := s.NewGRPCServer(tlsCfg)
	if err != nil {
		grpcLis.Close()
		metricsLis.Close()
		return err
	}
	hs := &http.Server{Handler: s.MetricsHandler(gatherer), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 2)
	go func() {
		if err := g.Serve(grpcLis); err != nil {
			errc <- fmt.Errorf("grpc server: %w", err)
			return
		}
		errc <- nil
	}()
	go func() {
		if err := hs.Serve(metricsLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("metrics server: %w", err)
			return
		}
		errc <- nil
	}()
	var first error
	pending := 2
	select {
	case <-ctx.Done():
	case first = <-errc:
		pending--
	}
	s.draining.Store(true) // /readyz turns 503 with the gRPC health states
	s.health.Shutdown()    // watchers hear NOT_SERVING first
	s.endWatches()
	// Streams in flight are requests whose responses are still streaming: let them end
	// (bounded by ShutdownGrace) while the proxy sends new ones elsewhere.
	sctx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownGrace)
	defer cancel()
	// Requests still queued by flow control would hold the graceful stop: they get their
	// rejection (503/429 with retry-after) now and go elsewhere.
	s.flows.closeAll()
	if err := g.Shutdown(sctx); err != nil {
		s.log.Warn("picker shutdown: streams still open after the grace period were cut", "grace", s.opts.ShutdownGrace)
	}
	hctx, hcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer hcancel()
	_ = hs.Shutdown(hctx)
	// Collect the remaining goroutine results so none outlives Serve.
	for ; pending > 0; pending-- {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return first
}
