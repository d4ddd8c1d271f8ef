package kvevents

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultTopicPrefix is the prefix of vLLM's KV-event topics as the gateway configures
// them: "kv@<pod-ip>@<model>".
const DefaultTopicPrefix = "kv@"

// maxTopicBytes bounds a topic frame (an IP and a model name).
const maxTopicBytes = 512

// Handler receives each decoded batch with its pod (the topic's IP), model and sequence
// number, in arrival order, one call at a time. b is reused after Handler returns.
type Handler interface {
	HandleBatch(pod, model string, seq uint64, b *Batch)
}

// Config configures a Subscriber.
type Config struct {
	// Bind is the endpoint the subscriber listens on for publishers that connect (vLLM's
	// default), e.g. "tcp://0.0.0.0:5557"; "" for none.
	Bind string
	// Connect lists publishers' endpoints to dial (pods whose publisher binds: vLLM with
	// a "*" in its endpoint).
	Connect []string
	// TopicPrefix filters topics (default DefaultTopicPrefix).
	TopicPrefix string
	// Limits bound each batch (zero fields: DefaultLimits).
	Limits Limits
	// DialRetry is the wait between dials of an unreachable publisher (default 1 s).
	DialRetry time.Duration
	// ReplayEndpoint, when set, names a pod's replay endpoint (vLLM's replay_endpoint,
	// "tcp://POD:PORT"; "" for none): a pod first heard mid-stream is replayed from its
	// publisher's buffer before its live batches (replay.go).
	ReplayEndpoint func(pod string) string
	// ReplayTimeout bounds one replay (default DefaultReplayTimeout).
	ReplayTimeout time.Duration
}

// Subscriber is one ZMQ SUB socket feeding a Handler.
type Subscriber struct {
	cfg    Config
	log    *slog.Logger
	h      Handler
	sock   zmq4.Socket
	cancel context.CancelFunc
	ctx    context.Context
	wg     sync.WaitGroup
	mu     sync.Mutex // serialises Handler calls

	// known and replayedUpTo (guarded by mu) follow replays: the pods heard so far
	// (bounded by maxKnownPods), and the last replayed sequence of pods whose live
	// batches up to it must be skipped.
	known        map[string]struct{}
	replayedUpTo map[string]uint64
	// last is the last sequence number handed on per pod (rank 0), for gap replays;
	// nextGapReplay when a pod's next gap may be replayed (bounded like known).
	last          map[string]uint64
	nextGapReplay map[string]time.Time

	dialMu sync.Mutex
	dials  map[string]context.CancelFunc // endpoint -> its dial loop (SetPublishers)

	messages *prometheus.CounterVec // by result
	events   *prometheus.CounterVec // by type
	// gapReplays counts replays asked for at a sequence gap.
	gapReplays prometheus.Counter
}

// Message results counted in infergw_kv_events_messages_total.
const (
	resultOK        = "ok"
	resultBadFrames = "bad_frames"
	resultBadTopic  = "bad_topic"
	resultBadBatch  = "bad_batch"
	resultReplayed  = "replayed" // a batch from a publisher's replay buffer
)

// New creates a subscriber; Start opens its socket. reg receives its metrics (nil: none).
func New(cfg Config, h Handler, log *slog.Logger, reg prometheus.Registerer) (*Subscriber, error) {
	if cfg.TopicPrefix == "" {
		cfg.TopicPrefix = DefaultTopicPrefix
	}
	if cfg.DialRetry <= 0 {
		cfg.DialRetry = time.Second
	}
	if cfg.ReplayTimeout <= 0 {
		cfg.ReplayTimeout = DefaultReplayTimeout
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Subscriber{
		cfg: cfg, log: log, h: h, known: map[string]struct{}{}, replayedUpTo: map[string]uint64{},
		last: map[string]uint64{}, nextGapReplay: map[string]time.Time{},
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "infergw_kv_events_messages_total",
			Help: "KV-event messages received from model servers, by result (ok, replayed, bad_frames, bad_topic, bad_batch).",
		}, []string{"result"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "infergw_kv_events_total",
			Help: "KV-cache events received from model servers, by type.",
		}, []string{"type"}),
		gapReplays: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "infergw_kv_events_gap_replays_total",
			Help: "Replays asked of a pod's replay endpoint for the batches a sequence gap lost.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{s.messages, s.events, s.gapReplays} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("kvevents metrics: %w", err)
			}
		}
	}
	return s, nil
}

// Start binds and dials, then receives until Close. The bind must succeed; dials retry
// in the background.
//
// The bound socket and each dialled publisher get a SUB socket of their own, and a
// dialled one is re-created when its connection drops: zmq4's automatic reconnect
// re-dials a socket's last endpoint from inside its connection reaper, racing with Close
// (the race detector shows it), and would make a bound socket dial itself.
func (s *Subscriber) Start(ctx context.Context) error {
	ctx, s.cancel = context.WithCancel(ctx)
	s.ctx = ctx
	if s.cfg.Bind != "" {
		ep, err := zmqEndpoint(s.cfg.Bind)
		if err != nil {
			s.cancel()
			return err
		}
		s.sock = zmq4.NewSub(ctx)
		err = s.sock.SetOption(zmq4.OptionSubscribe, s.cfg.TopicPrefix)
		if err == nil {
			err = s.sock.Listen(ep)
		}
		if err != nil {
			s.cancel()
			_ = s.sock.Close()
			return fmt.Errorf("kvevents: bind %s: %w", s.cfg.Bind, err)
		}
		sock := s.sock
		s.wg.Go(func() { s.receive(ctx, sock) })
	}
	for _, c := range s.cfg.Connect {
		ep, err := zmqEndpoint(c)
		if err != nil {
			s.cancel()
			if s.sock != nil {
				_ = s.sock.Close()
			}
			s.wg.Wait()
			return err
		}
		s.wg.Go(func() { s.dialLoop(ctx, c, ep) })
	}
	return nil
}

// SetPublishers makes the subscriber dial exactly these publishers (tcp://HOST:PORT) in
// addition to Config.Connect: new ones get a dial loop, dropped ones have theirs stopped.
// A picker with several replicas uses it to subscribe every replica to every pod (the
// pods' publishers bind). At most MaxConnsPerListener are dialled.
func (s *Subscriber) SetPublishers(eps []string) error {
	if s.ctx == nil {
		return errors.New("kvevents: SetPublishers before Start")
	}
	if len(eps) > MaxConnsPerListener {
		return fmt.Errorf("kvevents: %d publishers (limit %d)", len(eps), MaxConnsPerListener)
	}
	want := make(map[string]string, len(eps))
	for _, ep := range eps {
		zep, err := zmqEndpoint(ep)
		if err != nil {
			return err
		}
		want[ep] = zep
	}
	s.dialMu.Lock()
	defer s.dialMu.Unlock()
	if s.dials == nil {
		s.dials = make(map[string]context.CancelFunc)
	}
	for ep, cancel := range s.dials {
		if _, ok := want[ep]; !ok {
			cancel()
			delete(s.dials, ep)
		}
	}
	for ep, zep := range want {
		if _, ok := s.dials[ep]; ok || s.ctx.Err() != nil {
			continue
		}
		ctx, cancel := context.WithCancel(s.ctx)
		s.dials[ep] = cancel
		s.wg.Go(func() { s.dialLoop(ctx, ep, zep) })
	}
	return nil
}

// Publishers returns the endpoints SetPublishers dials.
func (s *Subscriber) Publishers() []string {
	s.dialMu.Lock()
	defer s.dialMu.Unlock()
	out := make([]string, 0, len(s.dials))
	for ep := range s.dials {
		out = append(out, ep)
	}
	return out
}

// dialLoop keeps one SUB socket connected to a publisher that binds.
func (s *Subscriber) dialLoop(ctx context.Context, name, ep string) {
	for ctx.Err() == nil {
		sock := zmq4.NewSub(ctx, zmq4.WithDialerRetry(s.cfg.DialRetry), zmq4.WithDialerMaxRetries(-1))
		err := sock.SetOption(zmq4.OptionSubscribe, s.cfg.TopicPrefix)
		if err == nil {
			err = sock.Dial(ep)
		}
		if err == nil {
			// Closing the socket when ctx ends unblocks Recv.
			stop := context.AfterFunc(ctx, func() { _ = sock.Close() })
			s.receive(ctx, sock) // returns when the connection drops or ctx ends
			stop()
		} else if ctx.Err() == nil {
			s.log.Warn("kvevents: dial failed", "endpoint", name, "err", err)
		}
		_ = sock.Close()
		select {
		case <-ctx.Done():
		case <-time.After(s.cfg.DialRetry):
		}
	}
}

// Addr is the bound address ("" when not bound).
func (s *Subscriber) Addr() string {
	if s.sock == nil || s.sock.Addr() == nil {
		return ""
	}
	return s.sock.Addr().String()
}

// Close stops receiving and waits for every receiving goroutine to end.
func (s *Subscriber) Close() error {
	if s.cancel == nil {
		return nil
	}
	s.cancel()
	var err error
	if s.sock != nil {
		err = s.sock.Close()
	}
	s.wg.Wait()
	return err
}

// receive hands sock's messages on until ctx ends or, for a dialled socket, its
// connection fails.
func (s *Subscriber) receive(ctx context.Context, sock zmq4.Socket) {
	dec := NewDecoder(s.cfg.Limits)
	var b Batch
	bound := sock == s.sock
	for {
		msg, err := sock.Recv()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// A publisher's connection failed: a bound socket serves the others on, a
			// dialled one is re-created by its dial loop.
			s.log.Debug("kvevents: receive", "err", err)
			if !bound {
				return
			}
			continue
		}
		s.mu.Lock() // the Handler sees one batch at a time
		s.handle(dec, &b, msg.Frames)
		s.mu.Unlock()
	}
}

// handle checks and decodes one message: frames topic, 8-byte big-endian sequence
// number, payload.
func (s *Subscriber) handle(dec *Decoder, b *Batch, frames [][]byte) {
	if len(frames) != 3 || len(frames[1]) != 8 {
		s.messages.WithLabelValues(resultBadFrames).Inc()
		return
	}
	pod, model, ok := ParseTopic(frames[0], s.cfg.TopicPrefix)
	if !ok {
		s.messages.WithLabelValues(resultBadTopic).Inc()
		return
	}
	seq := binary.BigEndian.Uint64(frames[1])
	if err := dec.Decode(frames[2], b); err != nil {
		s.messages.WithLabelValues(resultBadBatch).Inc()
		s.log.Debug("kvevents: bad batch", "pod", pod, "seq", seq, "err", err)
		return
	}
	if !s.beforeLive(pod, seq, b.DPRank) {
		return
	}
	s.messages.WithLabelValues(resultOK).Inc()
	for i := range b.Events {
		s.events.WithLabelValues(b.Events[i].Kind.String()).Inc()
	}
	s.h.HandleBatch(pod, model, seq, b)
}

// ParseTopic splits "<prefix><pod>@<model>" (the model may itself contain '@').
func ParseTopic(topic []byte, prefix string) (pod, model string, ok bool) {
	if len(topic) > maxTopicBytes || len(topic) <= len(prefix) || string(topic[:len(prefix)]) != prefix {
		return "", "", false
	}
	rest := string(topic[len(prefix):])
	pod, model, found := strings.Cut(rest, "@")
	if !found || pod == "" || model == "" {
		return "", "", false
	}
	return pod, model, true
}
