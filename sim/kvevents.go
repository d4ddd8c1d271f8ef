package sim

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/go-zeromq/zmq4"

	"github.com/infergw/infergw/kvevents"
)

// KVEventsConfig mirrors vLLM's --kv-events-config JSON (the fields the sim implements):
// with "publisher": "zmq" the sim publishes its KV-cache events as vLLM does — a PUB socket
// that connects to Endpoint (or binds it when it holds a '*'), messages of three frames
// (Topic, an 8-byte big-endian sequence number, a msgpack [ts, [events], dp_rank] batch),
// one batch per engine step: BlockStored when a full prompt block is first computed,
// BlockRemoved when a cached block is evicted, AllBlocksCleared when the prefix cache is
// reset.
type KVEventsConfig struct {
	Enable    bool   `json:"enable_kv_cache_events"`
	Publisher string `json:"publisher"`
	Endpoint  string `json:"endpoint"`
	Topic     string `json:"topic"`
	// BufferSteps bounds the batches queued for sending (vLLM's max_queue_size);
	// beyond it batches are dropped, and the subscriber sees the sequence gap.
	BufferSteps int `json:"max_queue_size"`
	// ReplayEndpoint, when set, serves the last ReplaySteps batches as vLLM does (a ROUTER
	// socket bound there; a "*" host is the sim's own address): a subscriber that joins
	// mid-stream asks for them from a sequence number (replay.go).
	ReplayEndpoint string `json:"replay_endpoint"`
	ReplaySteps    int    `json:"buffer_steps"`
}

// ParseKVEventsConfig reads the JSON of --kv-events-config.
func ParseKVEventsConfig(s string) (KVEventsConfig, error) {
	var c KVEventsConfig
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("kv-events-config: %w", err)
	}
	if c.Enable && c.Publisher != "zmq" {
		return c, fmt.Errorf("kv-events-config: publisher %q: only zmq is supported", c.Publisher)
	}
	if c.Enable && !strings.HasPrefix(c.Endpoint, "tcp://") {
		return c, fmt.Errorf("kv-events-config: endpoint %q: want tcp://HOST:PORT", c.Endpoint)
	}
	return c, nil
}

// kvPublisher sends the engine's batches from its own goroutine: the engine never waits
// on the network.
type kvPublisher struct {
	topic []byte
	sock  zmq4.Socket
	seq   uint64 // next sequence number; owned by enqueue (engine lock held)
	// enqueueFn offers a batch to the sender without blocking.
	enqueueFn func(seqBatch) bool
	cancel    context.CancelFunc
	done      chan struct{}
	log       *slog.Logger
	replay    *replayBuffer // nil without a replay endpoint
}

type seqBatch struct {
	seq    uint64
	events []kvevents.Event
}

// bind: listen on cfg.Endpoint (vLLM's "*" endpoints) rather than connect to it.
func startKVPublisher(cfg KVEventsConfig, bind bool, log *slog.Logger) (*kvPublisher, error) {
	ctx, cancel := context.WithCancel(context.Background())
	p := &kvPublisher{topic: []byte(cfg.Topic), cancel: cancel, done: make(chan struct{}), log: log,
		sock: zmq4.NewPub(ctx, zmq4.WithDialerRetry(200*time.Millisecond), zmq4.WithDialerMaxRetries(-1))}
	n := cfg.BufferSteps
	if n <= 0 {
		n = 1024
	}
	queue := make(chan seqBatch, n)
	p.enqueueFn = func(b seqBatch) bool {
		select {
		case queue <- b:
			return true
		default:
			return false
		}
	}
	if bind {
		if err := p.sock.Listen(cfg.Endpoint); err != nil {
			cancel()
			return nil, fmt.Errorf("kv events: bind %s: %w", cfg.Endpoint, err)
		}
	}
	if cfg.ReplayEndpoint != "" {
		rb, err := startReplay(ctx, cfg.ReplayEndpoint, cfg.ReplaySteps, p.topic, log)
		if err != nil {
			cancel()
			_ = p.sock.Close()
			return nil, err
		}
		p.replay = rb
	}
	go func() {
		defer close(p.done)
		if !bind {
			// vLLM's publisher connects to the subscriber; zmq4's Dial retries until it can.
			if err := p.sock.Dial(cfg.Endpoint); err != nil {
				if ctx.Err() == nil {
					log.Warn("kv events: connect failed", "endpoint", cfg.Endpoint, "err", err)
				}
				return
			}
		}
		enc := kvevents.NewEncoder()
		for {
			select {
			case <-ctx.Done():
				return
			case b := <-queue:
				payload, err := enc.Encode(&kvevents.Batch{TS: float64(time.Now().UnixNano()) / 1e9, Events: b.events})
				if err != nil {
					log.Error("kv events: encode", "err", err)
					continue
				}
				var seq [8]byte
				binary.BigEndian.PutUint64(seq[:], b.seq)
				// zmq4's PUB sends asynchronously, holding the frames: give it its own copy
				// (the encoder reuses its buffer).
				own := bytes.Clone(payload)
				if err := p.sock.Send(zmq4.NewMsgFrom(p.topic, seq[:], own)); err != nil && ctx.Err() == nil {
					log.Debug("kv events: send", "err", err)
				}
				if p.replay != nil {
					p.replay.add(b.seq, own)
				}
			}
		}
	}()
	return p, nil
}

// enqueue hands one step's events to the sender, numbering the batch even when the queue
// is full and the batch is dropped, so that a subscriber sees the loss as a gap.
func (p *kvPublisher) enqueue(events []kvevents.Event) {
	b := seqBatch{seq: p.seq, events: events}
	p.seq++
	if !p.enqueueFn(b) {
		p.log.Debug("kv events: queue full, batch dropped", "seq", b.seq)
	}
}

func (p *kvPublisher) close() {
	p.cancel()
	if p.replay != nil {
		p.replay.close()
	}
	_ = p.sock.Close()
	<-p.done
}
