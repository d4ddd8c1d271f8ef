package kvevents

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/prometheus/client_golang/prometheus"
)

// vLLM's publisher keeps its last buffer_steps batches (10,000 by default) and serves them
// on a ROUTER socket bound at its replay_endpoint: a client sends ["", start_seq as 8 bytes
// big-endian] and gets, per buffered batch with seq >= start_seq, ["", topic, seq, payload],
// then ["", "", -1 as 8 bytes, ""] (vLLM 0.32's ZmqEventPublisher._service_replay; a
// DEALER sees the frames after the ROUTER's identity).
//
// A picker that joins a pod's stream mid-way (a restarted replica) asks for a replay from
// sequence 0 before it applies the first live batch: when the buffer still holds the pod's
// whole history, the index becomes exact at once; else it holds the last buffer_steps
// batches' blocks (a lower bound), instead of nothing until the pod happens to store
// blocks again.

// replayEnd is the end-of-replay sequence frame (-1 as a signed 8-byte integer).
var replayEnd = []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// Replay bounds.
const (
	// DefaultReplayTimeout bounds one replay: the subscriber's other publishers wait
	// while it runs (batches are applied in order, one pod's replay before its live ones).
	DefaultReplayTimeout = 2 * time.Second
	// maxReplayBatches bounds the batches one replay applies (vLLM's default buffer is
	// 10,000 batches).
	maxReplayBatches = 1 << 16
	// maxKnownPods bounds the pods the subscriber remembers having seen (those beyond it
	// are never replayed).
	maxKnownPods = 4096
)

// replayResult says what a replay applied.
type replayResult struct {
	batches int
	last    uint64 // the last sequence number applied (valid when batches > 0)
}

// replay asks ep for pod's batches from sequence 0 and hands them to the handler in order.
// Caller holds s.mu (the handler sees one batch at a time).
func (s *Subscriber) replay(ctx context.Context, ep, pod string) (replayResult, error) {
	return replayInto(ctx, ep, pod, s.cfg.TopicPrefix, s.cfg.Limits, s.cfg.ReplayTimeout, s.h, s.messages, s.events)
}

// Replay asks a publisher's replay endpoint ep for pod's buffered batches from sequence 0
// and hands them to h in order, returning how many it applied and the last sequence
// number. It is what a Subscriber with Config.ReplayEndpoint does when it joins a pod's
// stream mid-way; exported for tests against a real vLLM.
func Replay(ctx context.Context, ep, pod string, h Handler, timeout time.Duration) (batches int, last uint64, err error) {
	res, err := replayInto(ctx, ep, pod, DefaultTopicPrefix, Limits{}, timeout, h, nil, nil)
	return res.batches, res.last, err
}

func replayInto(ctx context.Context, ep, pod, prefix string, limits Limits, timeout time.Duration, h Handler,
	messages, events *prometheus.CounterVec) (replayResult, error) {
	var res replayResult
	count := func(result string) {
		if messages != nil {
			messages.WithLabelValues(result).Inc()
		}
	}
	zep, err := zmqEndpoint(ep)
	if err != nil {
		return res, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	sock := zmq4.NewDealer(ctx)
	defer sock.Close()
	stop := context.AfterFunc(ctx, func() { _ = sock.Close() }) // unblocks Recv at the deadline
	defer stop()
	if err := sock.Dial(zep); err != nil {
		return res, fmt.Errorf("kvevents: replay dial %s: %w", ep, err)
	}
	var start [8]byte // sequence 0: everything the publisher still holds
	if err := sock.Send(zmq4.NewMsgFrom([]byte{}, start[:])); err != nil {
		return res, fmt.Errorf("kvevents: replay request %s: %w", ep, err)
	}
	dec := NewDecoder(limits)
	var b Batch
	for res.batches < maxReplayBatches {
		msg, err := sock.Recv()
		if err != nil {
			return res, fmt.Errorf("kvevents: replay %s after %d batches: %w", ep, res.batches, err)
		}
		f := msg.Frames
		if len(f) != 4 || len(f[0]) != 0 || len(f[2]) != 8 {
			count(resultBadFrames)
			return res, fmt.Errorf("kvevents: replay %s: a reply of %d frames", ep, len(f))
		}
		if string(f[2]) == string(replayEnd) {
			return res, nil
		}
		p, model, ok := ParseTopic(f[1], prefix)
		if !ok || p != pod {
			// Another pod's batches (a publisher serving several topics): not this one's.
			count(resultBadTopic)
			continue
		}
		seq := binary.BigEndian.Uint64(f[2])
		if res.batches > 0 && seq <= res.last {
			continue // never apply a batch twice or out of order
		}
		if err := dec.Decode(f[3], &b); err != nil {
			count(resultBadBatch)
			continue // the index sees the hole as a gap: entries dropped, pod partial
		}
		count(resultReplayed)
		if events != nil {
			for i := range b.Events {
				events.WithLabelValues(b.Events[i].Kind.String()).Inc()
			}
		}
		h.HandleBatch(pod, model, seq, &b)
		res.batches++
		res.last = seq
	}
	return res, nil
}

// beforeLive runs before a live batch of pod with sequence seq is handed on, and reports
// whether to hand it on: a pod's first batch with seq > 0 (this subscriber joined its
// stream mid-way) triggers a replay when the pod has a replay endpoint, and live batches
// the replay already applied are skipped. Caller holds s.mu.
func (s *Subscriber) beforeLive(pod string, seq uint64) bool {
	if upto, ok := s.replayedUpTo[pod]; ok {
		if seq <= upto {
			return false
		}
		delete(s.replayedUpTo, pod)
	}
	if s.cfg.ReplayEndpoint == nil {
		return true
	}
	if _, seen := s.known[pod]; seen || len(s.known) >= maxKnownPods {
		return true
	}
	s.known[pod] = struct{}{}
	if seq == 0 {
		return true // the stream's start: nothing to replay
	}
	ep := s.cfg.ReplayEndpoint(pod)
	if ep == "" {
		return true
	}
	t0 := time.Now()
	res, err := s.replay(s.ctx, ep, pod)
	if err != nil {
		s.log.Warn("kvevents: replay failed; the pod stays partial until its events fill the index", "pod", pod, "err", err)
	}
	s.log.Info("kvevents: replayed a pod's buffered batches", "pod", pod, "batches", res.batches, "last_seq", res.last,
		"live_seq", seq, "took", time.Since(t0).Round(time.Millisecond))
	if res.batches == 0 {
		return true
	}
	if seq <= res.last {
		s.replayedUpTo[pod] = res.last
		return false
	}
	return true
}
