package sim

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"

	"github.com/go-zeromq/zmq4"
)

// replayBuffer is vLLM's KV-event replay: the publisher keeps its last steps batches and
// serves them on a ROUTER socket. A request is [identity, "", start_seq (8 bytes, big
// endian)]; the answer is [identity, "", topic, seq, payload] for every kept batch with
// seq >= start_seq, then [identity, "", "", -1 (8 bytes), ""] (vLLM 0.32's
// ZmqEventPublisher._service_replay).
type replayBuffer struct {
	mu    sync.Mutex
	ring  []replayEntry // oldest first once full: ring[next:] then ring[:next]
	next  int
	full  bool
	topic []byte
	sock  zmq4.Socket
	done  chan struct{}
	log   *slog.Logger
}

type replayEntry struct {
	seq     uint64
	payload []byte
}

// replayEnd is vLLM's END_SEQ: -1 as a signed 8-byte big-endian integer.
var replayEnd = []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// startReplay binds the ROUTER socket (the caller replaced a "*" host with the sim's own
// address) and serves requests until ctx ends. steps <= 0 is vLLM's default, 10,000.
func startReplay(ctx context.Context, endpoint string, steps int, topic []byte, log *slog.Logger) (*replayBuffer, error) {
	if steps <= 0 {
		steps = 10000
	}
	r := &replayBuffer{ring: make([]replayEntry, steps), topic: topic, sock: zmq4.NewRouter(ctx), done: make(chan struct{}), log: log}
	if err := r.sock.Listen(endpoint); err != nil {
		_ = r.sock.Close()
		return nil, fmt.Errorf("kv events: bind replay %s: %w", endpoint, err)
	}
	go r.serve(ctx)
	return r, nil
}

// add keeps one sent batch (payload is not modified afterwards).
func (r *replayBuffer) add(seq uint64, payload []byte) {
	r.mu.Lock()
	r.ring[r.next] = replayEntry{seq: seq, payload: payload}
	r.next++
	if r.next == len(r.ring) {
		r.next, r.full = 0, true
	}
	r.mu.Unlock()
}

// from returns the kept batches with seq >= start, oldest first.
func (r *replayBuffer) from(start uint64) []replayEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []replayEntry
	appendFrom := func(es []replayEntry) {
		for _, e := range es {
			if e.seq >= start && e.payload != nil {
				out = append(out, e)
			}
		}
	}
	if r.full {
		appendFrom(r.ring[r.next:])
	}
	appendFrom(r.ring[:r.next])
	return out
}

func (r *replayBuffer) serve(ctx context.Context) {
	defer close(r.done)
	for {
		msg, err := r.sock.Recv()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			r.log.Debug("kv events: replay receive", "err", err)
			continue
		}
		f := msg.Frames
		if len(f) != 3 || len(f[2]) != 8 {
			r.log.Warn("kv events: invalid replay request", "frames", len(f))
			continue
		}
		id := f[0]
		for _, e := range r.from(binary.BigEndian.Uint64(f[2])) {
			var seq [8]byte
			binary.BigEndian.PutUint64(seq[:], e.seq)
			if err := r.sock.Send(zmq4.NewMsgFrom(id, []byte{}, r.topic, seq[:], e.payload)); err != nil {
				r.log.Debug("kv events: replay send", "err", err)
				break
			}
		}
		if err := r.sock.Send(zmq4.NewMsgFrom(id, []byte{}, []byte{}, replayEnd, []byte{})); err != nil {
			r.log.Debug("kv events: replay send", "err", err)
		}
	}
}

func (r *replayBuffer) close() {
	_ = r.sock.Close()
	<-r.done
}
