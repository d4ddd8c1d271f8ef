package extproc

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"sync"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/infergw/infergw/internal/inlinegrpc"
)

// InlineServer returns the picker's gRPC server on the inline transport (the default; see
// internal/inlinegrpc): the processor and the health service's Check and Watch, with the
// same message limits as GRPCServer. tlsCfg nil means plaintext (h2c).
func (s *Server) InlineServer(tlsCfg *tls.Config) (*inlinegrpc.Server, error) {
	g, err := inlinegrpc.New(inlinegrpc.Options{
		Methods: map[string]inlinegrpc.NewStreamFunc{
			extprocv3.ExternalProcessor_Process_FullMethodName: s.newProcessStream,
			healthpb.Health_Check_FullMethodName:               s.newHealthCheck,
			healthpb.Health_Watch_FullMethodName:               s.newHealthWatch,
		},
		TLS: tlsCfg,
		// BUFFERED mode sends (and takes back) the whole body in one message.
		MaxRecvMsgBytes: s.opts.MaxBodyBytes + 1<<20,
		Log:             s.log,
	})
	if err != nil {
		return nil, fmt.Errorf("extproc: %w", err)
	}
	return g, nil
}

// processStream is one Process call on the inline transport: the same exchange state
// machine as processGRPCGo, driven by the connection's goroutine.
type processStream struct {
	s  *Server
	x  *exchange
	st *inlinegrpc.Stream
}

func (s *Server) newProcessStream(st *inlinegrpc.Stream) inlinegrpc.StreamHandler {
	s.active.Add(1)
	if st.Header(MetadataObserver) == "1" {
		return &observeStream{s: s, o: s.newObserver()}
	}
	x := s.newExchange(context.Background())
	x.poolList = st.Header(MetadataPools)
	x.observed = st.Header(MetadataObserved) != ""
	x.readModelMetadata(st.Header)
	p := &processStream{s: s, x: x, st: st}
	x.waiter = p
	return p
}

// decided runs on the flow controller's goroutine: the held request has its outcome. The
// rest of the exchange runs under the connection's lock, as a callback would; if the
// stream has ended meanwhile, Close has already given the request's place back.
func (p *processStream) decided() {
	p.st.Do(func(st *inlinegrpc.Stream) {
		if p.x == nil {
			return
		}
		p.send(st, p.x.resume())
	})
}

func (p *processStream) Message(st *inlinegrpc.Stream, msg []byte) {
	// Responses are encoded by Send before this returns, so they may alias msg.
	out, err := p.x.handle(msg)
	if err != nil {
		st.Finish(codes.InvalidArgument, "decode ProcessingRequest: "+err.Error())
		return
	}
	p.send(st, out)
}

func (p *processStream) send(st *inlinegrpc.Stream, out []*extprocv3.ProcessingResponse) {
	for _, resp := range out {
		if err := st.Send(resp); err != nil {
			st.Finish(codes.Internal, "send to proxy: "+err.Error())
			return
		}
	}
}

// HalfClose: Envoy closes its side when the HTTP exchange is over.
func (p *processStream) HalfClose(st *inlinegrpc.Stream) { st.Finish(codes.OK, "") }

func (p *processStream) Close(error) {
	p.x.finish()
	p.x = nil // pooled now
	p.s.active.Add(-1)
}

// observeStream is one stream of the response observer (observe.go) on the inline
// transport: it reads and never answers.
type observeStream struct {
	s *Server
	o *observer
}

func (p *observeStream) Message(st *inlinegrpc.Stream, msg []byte) {
	keep, err := p.o.handle(msg)
	switch {
	case err != nil:
		st.Finish(codes.InvalidArgument, "decode ProcessingRequest: "+err.Error())
	case !keep:
		st.Finish(codes.OK, "") // a clean end: Envoy sends nothing more
	}
}

func (p *observeStream) HalfClose(st *inlinegrpc.Stream) { st.Finish(codes.OK, "") }

func (p *observeStream) Close(error) {
	p.o.close()
	p.s.active.Add(-1)
}

// healthCheck is the unary grpc.health.v1.Health/Check.
type healthCheck struct {
	s        *Server
	answered bool
}

func (s *Server) newHealthCheck(*inlinegrpc.Stream) inlinegrpc.StreamHandler {
	return &healthCheck{s: s}
}

// healthRequest decodes the one request message a health call takes; on false the call
// has been finished with an error.
func healthRequest(st *inlinegrpc.Stream, msg []byte, seen *bool) (*healthpb.HealthCheckRequest, bool) {
	if *seen {
		st.Finish(codes.Internal, "more than one request message for a method that takes one")
		return nil, false
	}
	*seen = true
	req := &healthpb.HealthCheckRequest{}
	if err := proto.Unmarshal(msg, req); err != nil {
		st.Finish(codes.InvalidArgument, "decode HealthCheckRequest: "+err.Error())
		return nil, false
	}
	return req, true
}

func (h *healthCheck) Message(st *inlinegrpc.Stream, msg []byte) {
	req, ok := healthRequest(st, msg, &h.answered)
	if !ok {
		return
	}
	resp, err := h.s.health.Check(context.Background(), req)
	if err != nil {
		sts := status.Convert(err)
		st.Finish(sts.Code(), sts.Message())
		return
	}
	if err := st.Send(resp); err != nil {
		st.Finish(codes.Internal, err.Error())
	}
}

func (h *healthCheck) HalfClose(st *inlinegrpc.Stream) {
	if !h.answered {
		st.Finish(codes.Internal, "no request message for a unary method")
		return
	}
	st.Finish(codes.OK, "")
}

func (h *healthCheck) Close(error) {}

// healthWatch is the server-streaming grpc.health.v1.Health/Watch. Watch waits for status
// changes, so it runs grpc-go's health server on its own goroutine, which writes through
// SendAsync and ends when the stream's context does.
type healthWatch struct {
	s       *Server
	started bool
}

func (s *Server) newHealthWatch(*inlinegrpc.Stream) inlinegrpc.StreamHandler {
	return &healthWatch{s: s}
}

func (h *healthWatch) Message(st *inlinegrpc.Stream, msg []byte) {
	req, ok := healthRequest(st, msg, &h.started)
	if !ok {
		return
	}
	// The context is made here, on the connection's goroutine. It also ends when Serve
	// shuts down, after a last NOT_SERVING: a watch never ends by itself and would hold a
	// graceful stop.
	ctx, cancel := context.WithCancel(st.Context())
	w := &watchStream{st: st, ctx: ctx, last: -1}
	stop := context.AfterFunc(h.s.watchesCtx, func() {
		_ = w.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING})
		w.mu.Lock()
		w.ended = true
		w.mu.Unlock()
		cancel()
	})
	go func() {
		defer cancel()
		defer stop()
		err := h.s.health.Watch(req, w)
		sts := status.Convert(err)
		st.FinishAsync(sts.Code(), sts.Message())
	}()
}

func (h *healthWatch) HalfClose(st *inlinegrpc.Stream) {
	if !h.started {
		st.Finish(codes.Internal, "no request message for a server-streaming method")
	}
}

func (h *healthWatch) Close(error) {}

// watchStream is the grpc.ServerStreamingServer the health server's Watch writes to. Two
// goroutines send (the Watch and the shutdown hook), so the last status sent is guarded.
type watchStream struct {
	st  *inlinegrpc.Stream
	ctx context.Context

	mu    sync.Mutex
	last  healthpb.HealthCheckResponse_ServingStatus
	ended bool
}

func (w *watchStream) Send(m *healthpb.HealthCheckResponse) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended {
		return inlinegrpc.ErrStreamDone
	}
	if m.GetStatus() == w.last {
		return nil
	}
	w.last = m.GetStatus()
	return w.st.SendAsync(m)
}

func (w *watchStream) Context() context.Context     { return w.ctx }
func (w *watchStream) SetHeader(metadata.MD) error  { return nil }
func (w *watchStream) SendHeader(metadata.MD) error { return nil }
func (w *watchStream) SetTrailer(metadata.MD)       {}
func (w *watchStream) RecvMsg(any) error            { return io.EOF }
func (w *watchStream) SendMsg(m any) error {
	r, ok := m.(*healthpb.HealthCheckResponse)
	if !ok {
		return fmt.Errorf("health watch: cannot send %T", m)
	}
	return w.Send(r)
}
