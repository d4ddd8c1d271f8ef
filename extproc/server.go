// Package extproc is infergw's endpoint picker: an Envoy external processor (ext_proc, gRPC)
// that speaks the Gateway API Inference Extension endpoint-picker protocol. It reads each
// OpenAI-style request, asks the router for the best endpoint and tells Envoy where to send
// it; on the way back it reads token usage and timing for metrics. See README.md.
package extproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/infergw/infergw/router"
)

// Scheduler is the part of *router.Router the picker uses.
type Scheduler interface {
	SetPool(pool string, eps []router.EndpointSpec)
	RemovePool(pool string)
	Pick(req *router.Request) (*router.Decision, error)
	ServesModel(pool, model string) bool
}

// Defaults of Options.
const (
	DefaultMaxBodyBytes = 16 << 20
	// MaxChunkBytes bounds each body chunk sent back in FULL_DUPLEX_STREAMED mode (the GIE
	// reference picker uses the same bound, under Envoy's default 64 KiB gRPC frame budget).
	MaxChunkBytes = 62000
)

// Health service names served on the gRPC port.
const (
	HealthLiveness  = "liveness"
	HealthReadiness = "readiness"
	HealthExtProc   = "envoy.service.ext_proc.v3.ExternalProcessor"
)

// Options configure a Server.
type Options struct {
	// DefaultPool (namespace/name) is used when the proxy names no pool; empty = the only
	// pool of the snapshot.
	DefaultPool string
	// MaxBodyBytes is the request body limit (413 above it); 0 = DefaultMaxBodyBytes.
	MaxBodyBytes int
	// DefaultRequestBodyMode applies when Envoy sends no protocol_config (Envoy before
	// 1.33); zero = FULL_DUPLEX_STREAMED, the GIE default.
	DefaultRequestBodyMode extprocfilterv3.ProcessingMode_BodySendMode
	// TracerProvider for request spans; nil = no-op.
	TracerProvider trace.TracerProvider
	// Registerer for the picker's metrics; nil = a private registry.
	Registerer prometheus.Registerer
	// StreamFirstByteTimeout bounds each try of a streaming request until its first
	// response byte (HeaderPerTryTimeout on the pick); Envoy retries a try that times out
	// on the pick's next endpoint. 0 = DefaultStreamFirstByteTimeout, negative = off.
	StreamFirstByteTimeout time.Duration
	// Transport is the gRPC server implementation; empty = TransportInline.
	Transport Transport
	// ShutdownGrace bounds how long Serve lets open streams finish once its context ends
	// (the proxy gets GOAWAY and opens no new stream here); what is still open then is cut.
	// A stream lasts as long as its response, which for a long generation is minutes, so
	// it should be most of the pod's termination grace period. 0 = DefaultShutdownGrace.
	ShutdownGrace time.Duration
	// NoStreamUsage stops the picker from adding stream_options.include_usage to streamed
	// chat and completions requests that do not ask for usage. Without it those responses
	// carry no token counts and the token metrics miss them; with it the usage chunk is
	// read and removed, so the client sees the stream it asked for.
	NoStreamUsage bool
}

// DefaultShutdownGrace is Options.ShutdownGrace's default.
const DefaultShutdownGrace = 25 * time.Second

// Transport names a gRPC server implementation for the picker.
type Transport string

const (
	// TransportInline runs each connection's streams in the goroutine that reads it
	// (internal/inlinegrpc): a fraction of grpc-go's CPU per request.
	TransportInline Transport = "inline"
	// TransportGRPCGo is grpc-go's server: a goroutine per stream plus reader and writer
	// goroutines per connection. Kept as a fallback.
	TransportGRPCGo Transport = "grpc-go"
)

// Server implements envoy.service.ext_proc.v3.ExternalProcessor (see NewGRPCServer).
type Server struct {
	router  Scheduler
	opts    Options
	buffers bufferPools
	// exchanges pools *exchange values (see exchange).
	exchanges sync.Pool
	// handoffs meet the picker's exchanges with the response observer's streams (observe.go).
	handoffs *handoffTable
	log      *slog.Logger
	metrics  *metrics
	tracer   trace.Tracer
	tracing  bool // false: no spans at all
	prop     propagation.TextMapPropagator
	health   *health.Server
	// watchesCtx ends every health Watch stream when Serve shuts down.
	watchesCtx context.Context
	endWatches context.CancelFunc

	state    atomic.Pointer[routingState]
	applyMu  sync.Mutex
	ready    atomic.Bool
	readyCh  chan struct{} // closed when ready turns true
	perTry   string        // HeaderPerTryTimeout value for streaming requests; "" = none
	draining atomic.Bool   // Serve is shutting down
	active   atomic.Int64  // open Process streams
	destMD   destCache     // envoy.lb metadata per destination value
	bufPool  mem.BufferPool
	// Body-based routing and the gateway's /v1/models (bodyrouting.go, listmodels.go).
	modelTables tableCache
	catalog     ModelCatalog // nil when the scheduler publishes no model lists
	started     time.Time
	flows       *flowControllers // nil: the scheduler has no flow control
}

// NewServer builds a picker over a router. It is not ready (readiness NOT_SERVING) until
// the first ApplySnapshot.
func NewServer(r Scheduler, opts Options, log *slog.Logger) (*Server, error) {
	if r == nil {
		return nil, errors.New("extproc: nil router")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.MaxBodyBytes < 0 {
		return nil, fmt.Errorf("extproc: max body bytes %d is negative", opts.MaxBodyBytes)
	}
	if opts.MaxBodyBytes == 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.DefaultPool != "" {
		if _, err := parsePools(opts.DefaultPool); err != nil {
			return nil, fmt.Errorf("extproc: default pool: %w", err)
		}
	}
	if opts.DefaultRequestBodyMode == extprocfilterv3.ProcessingMode_NONE {
		opts.DefaultRequestBodyMode = extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED
	}
	switch opts.Transport {
	case "":
		opts.Transport = TransportInline
	case TransportInline, TransportGRPCGo:
	default:
		return nil, fmt.Errorf("extproc: unknown transport %q (want %q or %q)", opts.Transport, TransportInline, TransportGRPCGo)
	}
	if opts.ShutdownGrace < 0 {
		return nil, fmt.Errorf("extproc: shutdown grace %s is negative", opts.ShutdownGrace)
	}
	if opts.ShutdownGrace == 0 {
		opts.ShutdownGrace = DefaultShutdownGrace
	}
	perTry, err := streamPerTryValue(opts.StreamFirstByteTimeout)
	if err != nil {
		return nil, err
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	tp := opts.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	// With a no-op provider a span would record nothing; skipping it saves its context and
	// options (a fifth of the picker's allocations). Envoy forwards traceparent unchanged.
	_, noTracing := tp.(noop.TracerProvider)
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	pool, err := newBufferPool()
	if err != nil {
		return nil, err
	}
	s := &Server{
		router:  r,
		opts:    opts,
		log:     log,
		metrics: m,
		tracer:  tp.Tracer("github.com/infergw/infergw/extproc"),
		tracing: !noTracing,
		prop:    propagation.TraceContext{},
		health:  health.NewServer(),
		bufPool: pool,
		readyCh: make(chan struct{}),
		perTry:  perTry,
		started: time.Now(),
	}
	s.handoffs = newHandoffTable(maxHandoffs)
	s.catalog, _ = r.(ModelCatalog)
	s.watchesCtx, s.endWatches = context.WithCancel(context.Background())
	s.state.Store(&routingState{})
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(HealthLiveness, healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(HealthReadiness, healthpb.HealthCheckResponse_NOT_SERVING)
	s.health.SetServingStatus(HealthExtProc, healthpb.HealthCheckResponse_NOT_SERVING)
	// Open streams are requests between their headers and the end of their response: the
	// picker's concurrency, read at scrape time.
	if err := opts.Registerer.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "infergw_picker_open_streams",
		Help: "ext_proc streams open now: requests from their headers to the end of their response.",
	}, func() float64 { return float64(s.active.Load()) })); err != nil {
		return nil, fmt.Errorf("register picker metrics: %w", err)
	}
	if err := registerPoolGauges(opts.Registerer, s); err != nil {
		return nil, err
	}
	if src, ok := r.(flowSource); ok {
		s.flows = newFlowControllers(src, opts.Registerer, log.With("component", "flowcontrol"))
	}
	return s, nil
}

// Health is the gRPC health service to register next to the processor.
func (s *Server) Health() *health.Server { return s.health }

// ActiveStreams is the number of Process streams not yet returned.
func (s *Server) ActiveStreams() int64 { return s.active.Load() }

// Ready reports whether a snapshot has been applied.
func (s *Server) Ready() bool { return s.ready.Load() }

func (s *Server) markReady() {
	if s.ready.Swap(true) {
		return
	}
	close(s.readyCh)
	s.health.SetServingStatus(HealthReadiness, healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(HealthExtProc, healthpb.HealthCheckResponse_SERVING)
}

// processGRPCGo serves one HTTP request/response exchange on the grpc-go transport: Envoy
// opens one stream per request. Messages arrive undecoded (rawMessage, see codec.go) and
// the exchange reads them in place, as on the inline transport.
func (s *Server) processGRPCGo(stream grpc.ServerStream) error {
	s.active.Add(1)
	defer s.active.Add(-1)
	ctx := stream.Context()
	if v := metadata.ValueFromIncomingContext(ctx, MetadataObserver); len(v) > 0 && v[0] == "1" {
		return s.observeGRPCGo(stream)
	}
	x := s.newExchange(ctx)
	// ValueFromIncomingContext copies only this key's values, not the whole metadata map.
	if v := metadata.ValueFromIncomingContext(ctx, MetadataPools); len(v) > 0 {
		x.poolList = v[0]
	}
	x.observed = len(metadata.ValueFromIncomingContext(ctx, MetadataObserved)) > 0
	x.readModelMetadata(func(k string) string {
		if v := metadata.ValueFromIncomingContext(ctx, k); len(v) > 0 {
			return v[0]
		}
		return ""
	})
	defer x.finish()
	for {
		var msg rawMessage
		if err := stream.RecvMsg(&msg); err != nil {
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled || ctx.Err() != nil {
				return nil
			}
			return status.Errorf(codes.Unknown, "receive from proxy: %v", err)
		}
		out, err := x.handle(msg.buf.ReadOnlyData())
		if err != nil {
			msg.buf.Free()
			return status.Errorf(codes.InvalidArgument, "decode ProcessingRequest: %v", err)
		}
		err = sendAnswers(ctx, stream, out)
		msg.buf.Free()
		if err != nil || ctx.Err() != nil {
			return err
		}
		if x.queued {
			// Held by flow control: this goroutine is the stream's own, so it waits here;
			// the proxy resetting the stream (client gone) ends ctx, and finish cancels.
			select {
			case <-x.ticket.Done():
			case <-ctx.Done():
				return nil
			}
			if err := sendAnswers(ctx, stream, x.resume()); err != nil {
				return err
			}
		}
	}
}

// observeGRPCGo serves one stream of the response observer (observe.go) on the grpc-go
// transport: it reads and never answers.
func (s *Server) observeGRPCGo(stream grpc.ServerStream) error {
	o := s.newObserver()
	defer o.close()
	for {
		var msg rawMessage
		if err := stream.RecvMsg(&msg); err != nil {
			return nil // the proxy ended the stream, or it broke: either way the observer is done
		}
		keep, err := o.handle(msg.buf.ReadOnlyData())
		msg.buf.Free()
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "decode ProcessingRequest: %v", err)
		}
		if !keep {
			return nil // a clean end: Envoy sends nothing more
		}
	}
}

// sendAnswers sends the answers in order; a send failing because the stream ended is no error.
func sendAnswers(ctx context.Context, stream grpc.ServerStream, out []*extprocv3.ProcessingResponse) error {
	for _, resp := range out {
		if err := stream.SendMsg(resp); err != nil { // encodes before returning
			if ctx.Err() != nil {
				return nil //nolint:nilerr // the proxy ended the stream: nothing to report
			}
			return status.Errorf(codes.Unknown, "send to proxy: %v", err)
		}
	}
	return nil
}

// processServiceDesc is ExternalProcessor's service description with a handler that takes
// undecoded messages (the generated one decodes into ProcessingRequest).
func processServiceDesc() *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: "envoy.service.ext_proc.v3.ExternalProcessor",
		HandlerType: (*grpcGoProcessor)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    "Process",
			ServerStreams: true,
			ClientStreams: true,
			Handler: func(srv any, stream grpc.ServerStream) error {
				return srv.(grpcGoProcessor).processGRPCGo(stream)
			},
		}},
		Metadata: "envoy/service/ext_proc/v3/external_processor.proto",
	}
}

type grpcGoProcessor interface {
	processGRPCGo(grpc.ServerStream) error
}
