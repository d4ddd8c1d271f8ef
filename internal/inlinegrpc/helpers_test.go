package inlinegrpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/proto"
)

// boundedWait caps every wait for a condition. It is a hang detector, not a speed target:
// everything it guards normally happens in milliseconds, so reaching it means the condition
// will never hold.
const boundedWait = 15 * time.Second

// Header that makes the test service keep a stream open after the client's half-close, so a
// test can observe what happens to a stream that neither side has finished.
const keepOpenHeader = "x-test-keep-open"

const (
	methodUnary        = testgrpc.TestService_UnaryCall_FullMethodName
	methodBidi         = testgrpc.TestService_FullDuplexCall_FullMethodName
	methodServerStream = testgrpc.TestService_StreamingOutputCall_FullMethodName
)

// pattern returns n deterministic pseudo-random bytes for seed, so every message of every
// stream has its own content and a mix-up between streams or messages is detected.
func pattern(seed uint32, n int) []byte {
	b := make([]byte, n)
	x := seed*2654435761 + 0x9e3779b9
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// testService implements grpc.testing.TestService's UnaryCall, FullDuplexCall and
// StreamingOutputCall as inline handlers and records each handler's life for assertions.
type testService struct {
	closed  chan *testHandler // every handler, when its Close first runs
	started atomic.Int32      // handlers made
	closes  atomic.Int32      // calls of Close, over all handlers
}

func newTestService() *testService {
	return &testService{closed: make(chan *testHandler, 4096)}
}

func (s *testService) methods() map[string]NewStreamFunc {
	return map[string]NewStreamFunc{
		methodUnary:        s.starter(kindUnary),
		methodBidi:         s.starter(kindBidi),
		methodServerStream: s.starter(kindServerStream),
	}
}

type handlerKind int

const (
	kindUnary handlerKind = iota
	kindBidi
	kindServerStream
)

func (s *testService) starter(kind handlerKind) NewStreamFunc {
	return func(st *Stream) StreamHandler {
		s.started.Add(1)
		return &testHandler{svc: s, kind: kind, keepOpen: st.Header(keepOpenHeader) != ""}
	}
}

// testHandler's plain fields are written only in the connection goroutine; tests read them
// after receiving the handler from svc.closed, which orders the reads after the writes.
type testHandler struct {
	svc      *testService
	kind     handlerKind
	keepOpen bool

	messages   int
	halfCloses int
	closeErr   error
	closes     atomic.Int32
}

func (h *testHandler) Message(st *Stream, msg []byte) {
	h.messages++
	switch h.kind {
	case kindUnary:
		if h.messages > 1 {
			st.Finish(codes.Internal, "unary call with more than one request")
			return
		}
		req := &testgrpc.SimpleRequest{}
		if err := proto.Unmarshal(msg, req); err != nil {
			st.Finish(codes.InvalidArgument, "decode SimpleRequest: "+err.Error())
			return
		}
		if rs := req.GetResponseStatus(); rs.GetCode() != 0 {
			st.Finish(codes.Code(rs.GetCode()), rs.GetMessage())
			return
		}
		body := req.GetPayload().GetBody()
		if req.GetResponseSize() > 0 {
			body = pattern(uint32(req.GetResponseSize()), int(req.GetResponseSize()))
		}
		h.send(st, &testgrpc.SimpleResponse{
			Payload:  &testgrpc.Payload{Body: body},
			Username: st.Header("x-test-user"), // proves request metadata reaches Header
			ServerId: st.Method(),
		})
	case kindBidi, kindServerStream:
		if h.kind == kindServerStream && h.messages > 1 {
			st.Finish(codes.Internal, "server-streaming call with more than one request")
			return
		}
		req := &testgrpc.StreamingOutputCallRequest{}
		if err := proto.Unmarshal(msg, req); err != nil {
			st.Finish(codes.InvalidArgument, "decode StreamingOutputCallRequest: "+err.Error())
			return
		}
		if rs := req.GetResponseStatus(); rs.GetCode() != 0 {
			st.Finish(codes.Code(rs.GetCode()), rs.GetMessage())
			return
		}
		if len(req.GetResponseParameters()) == 0 {
			h.send(st, &testgrpc.StreamingOutputCallResponse{Payload: req.GetPayload()})
			return
		}
		for i, p := range req.GetResponseParameters() {
			body := pattern(uint32(i), int(p.GetSize()))
			if !h.send(st, &testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: body}}) {
				return
			}
		}
	}
}

func (h *testHandler) send(st *Stream, m proto.Message) bool {
	if err := st.Send(m); err != nil {
		st.Finish(codes.Internal, "send: "+err.Error())
		return false
	}
	return true
}

func (h *testHandler) HalfClose(st *Stream) {
	h.halfCloses++
	if h.keepOpen {
		return
	}
	if h.kind != kindBidi && h.messages == 0 {
		st.Finish(codes.Internal, "no request message")
		return
	}
	st.Finish(codes.OK, "")
}

func (h *testHandler) Close(err error) {
	h.svc.closes.Add(1)
	if h.closes.Add(1) != 1 {
		return // counted; the test checks for exactly one
	}
	h.closeErr = err
	select {
	case h.svc.closed <- h:
	default: // never blocks the connection; tests that watch the channel use few streams
	}
}

// waitClosed returns the next handler whose Close ran.
func (s *testService) waitClosed(t testing.TB) *testHandler {
	t.Helper()
	select {
	case h := <-s.closed:
		return h
	case <-time.After(boundedWait):
		t.Fatal("no handler Close within the bound")
		return nil
	}
}

// testServer is a Server serving the test service on 127.0.0.1:0.
type testServer struct {
	srv     *Server
	svc     *testService
	addr    string
	accepts atomic.Int32 // connections accepted: proves calls shared one connection

	serveDone chan struct{}
	serveErr  error
}

func startServer(t testing.TB, opts Options) *testServer {
	t.Helper()
	ts := &testServer{svc: newTestService(), serveDone: make(chan struct{})}
	if opts.Methods == nil {
		opts.Methods = ts.svc.methods()
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.srv, ts.addr = srv, lis.Addr().String()
	go func() {
		ts.serveErr = srv.Serve(countingListener{Listener: lis, n: &ts.accepts})
		close(ts.serveDone)
	}()
	t.Cleanup(func() {
		closeBounded(t, srv)
		if err := ts.waitServe(); !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return ts
}

// waitServe waits for Serve to return and gives its error.
func (ts *testServer) waitServe() error {
	select {
	case <-ts.serveDone:
		return ts.serveErr
	case <-time.After(boundedWait):
		return errors.New("serve did not return within the bound")
	}
}

type countingListener struct {
	net.Listener
	n *atomic.Int32
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// connCount is the number of connections the server is serving now.
func connCount(s *Server) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// serverConns returns the connections the server is serving now.
func serverConns(s *Server) []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		out = append(out, c)
	}
	return out
}

func dial(t testing.TB, addr string, opts ...grpc.DialOption) (*grpc.ClientConn, testgrpc.TestServiceClient) {
	t.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	cc, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc, testgrpc.NewTestServiceClient(cc)
}

// waitFor polls cond until it holds; failing the test when the bound is reached.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(boundedWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitGoroutines waits until at most max goroutines run, and dumps them if that never
// happens.
func waitGoroutines(t testing.TB, max int) {
	t.Helper()
	deadline := time.Now().Add(boundedWait)
	for runtime.NumGoroutine() > max {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("%d goroutines still running, want at most %d:\n%s", runtime.NumGoroutine(), max, buf[:n])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// withConnLock runs f with the connection's lock held, for reading its fields.
func withConnLock(c *conn, f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f()
}

func timeAfterBound() <-chan time.Time { return time.After(boundedWait) }

// chanListener hands out connections pushed into it (net.Pipe ends), for tests that
// serve connections without a socket.
type chanListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) isClosed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

func (l *chanListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// testCtx bounds a test's calls, so a server that stops answering fails the call with
// DeadlineExceeded instead of hanging the test binary.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), boundedWait)
	t.Cleanup(cancel)
	return ctx
}

// closeBounded runs srv.Close, failing the test if it does not return (Close waits for
// every connection goroutine).
func closeBounded(t testing.TB, srv *Server) {
	t.Helper()
	done := make(chan struct{})
	go func() { srv.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(boundedWait):
		t.Fatal("Server.Close did not return: a connection goroutine did not end")
	}
}
