package sim

import (
	"context"
	"errors"
	"fmt"
	"github.com/infergw/infergw/kvprompt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// Server is one simulated vLLM instance: an engine plus its OpenAI-compatible HTTP API.
type Server struct {
	tok      *kvprompt.Model // nil: the built-in tokenizer
	cfg      Config
	log      *slog.Logger
	engine   *engine
	metrics  *metrics
	registry *prometheus.Registry
	created  int64
	idPrefix string
	nextID   atomic.Uint64
	faults   atomic.Pointer[Faults]
	genReqs  atomic.Uint64 // generation requests received, faulted ones included

	adaptersMu sync.RWMutex
	adapters   map[string]string // served LoRA adapters -> path

	// fasthttp, not net/http: measured at about twice the streamed requests per CPU-second
	// on loopback (README, "Speed").
	httpSrv  *fasthttp.Server
	metricsH fasthttp.RequestHandler
	listener net.Listener
	serveErr chan error
	connsMu  sync.Mutex
	conns    map[net.Conn]struct{}
	closeMu  sync.Mutex
	started  bool
	closed   bool
}

// New builds a sim from cfg (see DefaultConfig); Start makes it listen.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("sim config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.LoRAAdapters = append([]string(nil), cfg.LoRAAdapters...)
	s := &Server{
		cfg:      cfg,
		registry: prometheus.NewRegistry(),
		created:  time.Now().Unix(),
		adapters: make(map[string]string, len(cfg.LoRAAdapters)),
		serveErr: make(chan error, 1),
		conns:    make(map[net.Conn]struct{}),
	}
	for _, a := range cfg.LoRAAdapters {
		s.adapters[a] = "/sim/adapters/" + a
	}
	faults := cfg.Faults
	s.faults.Store(&faults)
	s.engine = newEngine(&s.cfg, log)
	m, err := newMetrics(s.registry, &s.cfg, s.engine)
	if err != nil {
		return nil, fmt.Errorf("sim metrics: %w", err)
	}
	s.metrics, s.engine.m = m, m
	if cfg.Tokenizer != "" {
		if s.tok, err = kvprompt.Load(cfg.Tokenizer, 2); err != nil {
			return nil, fmt.Errorf("sim tokenizer: %w", err)
		}
	}
	s.log = log
	s.idPrefix = fmt.Sprintf("%x", time.Now().UnixNano()&0xffffffffff)
	return s, nil
}

// Registry is the sim's own metrics registry (what /metrics serves).
func (s *Server) Registry() *prometheus.Registry { return s.registry }

// Config returns the configuration the sim runs with.
func (s *Server) Config() Config { return s.cfg }

// Start listens on cfg.Addr and serves in the background.
func (s *Server) Start() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.started || s.closed {
		return errors.New("sim: Start called twice or after Close")
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("sim listen %s: %w", s.cfg.Addr, err)
	}
	s.started = true
	s.listener = ln
	if s.cfg.Name == "" {
		s.cfg.Name = ln.Addr().String()
	}
	s.log = s.log.With("sim", s.cfg.Name)
	s.engine.log = s.log
	if s.cfg.KVEvents.Enable {
		if s.cfg.KVEvents.Topic == "" {
			host, _, _ := net.SplitHostPort(ln.Addr().String())
			s.cfg.KVEvents.Topic = "kv@" + host + "@" + s.cfg.Model
		}
		bind := strings.Contains(s.cfg.KVEvents.Endpoint, "*")
		if host, _, _ := net.SplitHostPort(ln.Addr().String()); strings.Contains(s.cfg.KVEvents.Endpoint, "*") && !net.ParseIP(host).IsUnspecified() {
			// vLLM binds "tcp://*:PORT" on every address of its pod, that is the pod's
			// IP; a sim listening on one address (a local "pod" on 127.0.0.x) binds there,
			// so a fleet's sims can share the port as pods do.
			s.cfg.KVEvents.Endpoint = strings.Replace(s.cfg.KVEvents.Endpoint, "*", host, 1)
		}
		if host, _, _ := net.SplitHostPort(ln.Addr().String()); !net.ParseIP(host).IsUnspecified() {
			// vLLM always binds its replay endpoint; "*" is the pod's address, as above.
			s.cfg.KVEvents.ReplayEndpoint = strings.Replace(s.cfg.KVEvents.ReplayEndpoint, "*", host, 1)
		}
		pub, err := startKVPublisher(s.cfg.KVEvents, bind, s.log)
		if err != nil {
			_ = ln.Close()
			return err
		}
		s.engine.mu.Lock()
		s.engine.enableKVEvents(pub)
		s.engine.mu.Unlock()
	}
	s.metricsH = exposition(s.registry)
	s.httpSrv = &fasthttp.Server{
		Handler:               s.serveHTTP,
		Name:                  "infergw-sim",
		NoDefaultServerHeader: true,
		NoDefaultDate:         true,
		MaxRequestBodySize:    int(s.cfg.MaxBodyBytes),
		ReadTimeout:           time.Minute,
		IdleTimeout:           time.Minute,
		// A stream can last minutes; the engine, not a write deadline, decides when it ends.
		WriteTimeout: 0,
		Concurrency:  1 << 16,
		// fasthttp's worker-pool cleaner sleeps this long between rounds and only then sees
		// the stop: keep it short so that a closed sim leaves no goroutine for long.
		MaxIdleWorkerDuration: time.Second,
		CloseOnShutdown:       true,
		ConnState:             s.trackConn,
		Logger:                fasthttpLogger{s.log},
		ErrorHandler:          s.transportError,
	}
	go s.engine.run()
	go func() { s.serveErr <- s.httpSrv.Serve(ln) }()
	s.log.Info("sim listening", "addr", ln.Addr().String(), "model", s.cfg.Model, "time_scale", s.cfg.TimeScale)
	return nil
}

// Addr is the address the sim listens on (ip:port), or cfg.Addr before Start.
func (s *Server) Addr() string {
	if s.listener != nil {
		return s.listener.Addr().String()
	}
	return s.cfg.Addr
}

// Name is the instance name sent in x-sim-instance.
func (s *Server) Name() string { return s.cfg.Name }

// Close stops the engine and the HTTP server, ending in-flight streams, and waits for the
// goroutines the sim started. Only fasthttp's worker-pool cleaner may outlive it, by at most
// MaxIdleWorkerDuration (1 s): fasthttp gives no way to wait for it.
func (s *Server) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if !s.started {
		return nil
	}
	// Stop the engine first: waiting handlers and stream writers see engine.done and end
	// their responses; then closing every connection ends anything still reading or idle.
	s.engine.stop()
	if s.engine.pub != nil {
		s.engine.pub.close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	shutdownDone := make(chan error, 1)
	go func() { shutdownDone <- s.httpSrv.ShutdownWithContext(ctx) }()
	// Keep closing: a connection accepted just before the listener closed registers late.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var err error
	for done := false; !done; {
		s.closeConns()
		select {
		case err = <-shutdownDone:
			done = true
		case <-tick.C:
		}
	}
	if serveErr := <-s.serveErr; serveErr != nil {
		err = errors.Join(err, serveErr)
	}
	if err != nil {
		return fmt.Errorf("sim close: %w", err)
	}
	return nil
}

// serveHTTP routes a request; every response names the instance.
func (s *Server) serveHTTP(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.Set("x-sim-instance", s.cfg.Name)
	path, method := string(ctx.Path()), string(ctx.Method())
	switch {
	case path == "/v1/chat/completions" && method == fasthttp.MethodPost:
		s.handleGenerate(ctx, true)
	case path == "/v1/completions" && method == fasthttp.MethodPost:
		s.handleGenerate(ctx, false)
	case path == "/metrics" && method == fasthttp.MethodGet:
		s.metricsH(ctx)
	case path == "/debug/engine" && method == fasthttp.MethodGet:
		s.handleDebugEngine(ctx)
	case path == "/debug/prefix" && method == fasthttp.MethodPost:
		s.handleDebugPrefix(ctx)
	case path == "/health" && method == fasthttp.MethodGet:
		ctx.SetStatusCode(fasthttp.StatusOK)
	case path == "/v1/embeddings" && method == fasthttp.MethodPost:
		s.handleEmbeddings(ctx)
	case path == "/v1/models" && method == fasthttp.MethodGet:
		s.handleModels(ctx)
	case path == "/v1/load_lora_adapter" && method == fasthttp.MethodPost:
		s.handleLoadLoRA(ctx)
	case path == "/v1/unload_lora_adapter" && method == fasthttp.MethodPost:
		s.handleUnloadLoRA(ctx)
	default:
		s.writeError(ctx, &apiError{status: fasthttp.StatusNotFound, errType: "NotFoundError",
			message: fmt.Sprintf("no route for %s %s", method, path)})
	}
}

// transportError answers requests fasthttp rejected before routing (oversized or malformed).
func (s *Server) transportError(ctx *fasthttp.RequestCtx, err error) {
	ctx.Response.Header.Set("x-sim-instance", s.cfg.Name)
	if errors.Is(err, fasthttp.ErrBodyTooLarge) {
		s.writeError(ctx, &apiError{status: fasthttp.StatusRequestEntityTooLarge, errType: "BadRequestError",
			message: fmt.Sprintf("request body exceeds %d bytes", s.cfg.MaxBodyBytes)})
		return
	}
	s.writeError(ctx, badRequest("malformed HTTP request: %v", err))
}

func (s *Server) trackConn(c net.Conn, state fasthttp.ConnState) {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	switch state {
	case fasthttp.StateNew:
		s.conns[c] = struct{}{}
	case fasthttp.StateClosed, fasthttp.StateHijacked:
		delete(s.conns, c)
	}
}

func (s *Server) closeConns() {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	for c := range s.conns {
		_ = c.Close()
	}
}

// fasthttpLogger sends fasthttp's own messages (connection errors) to slog at debug level.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...))
}
