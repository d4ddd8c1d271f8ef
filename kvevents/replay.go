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
	// gapReplayEvery spaces a pod's gap replays.
	gapReplayEvery = time.Second
)

// replayResult says what a replay applied.
type replayResult struct {
	batches int
	last    uint64 // the last sequence number applied (valid when batches > 0)
}

// replay asks ep for pod's batches from sequence from and hands them to the handler in
// order. Caller holds s.mu (the handler sees one batch at a time).
func (s *Subscriber) replay(ctx context.Context, ep, pod string, from uint64) (replayResult, error) {
	return replayInto(ctx, ep, pod, from, s.cfg.TopicPrefix, s.cfg.Limits, s.cfg.ReplayTimeout, s.h, s.messages, s.events)
}

// Replay asks a publisher's replay endpoint ep for pod's buffered batches from sequence 0
// and hands them to h in order, returning how many it applied and the last sequence
// number. It is what a Subscriber with Config.ReplayEndpoint does when it joins a pod's
// stream mid-way; exported for tests against a real vLLM.
func Replay(ctx context.Context, ep, pod string, h Handler, timeout time.Duration) (batches int, last uint64, err error) {
	res, err := replayInto(ctx, ep, pod, 0, DefaultTopicPrefix, Limits{}, timeout, h, nil, nil)
	return res.batches, res.last, err
}

func replayInto(ctx context.Context, ep, pod string, from uint64, prefix string, limits Limits, timeout time.Duration, h Handler,
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
	var start [8]byte // from 0: everything the publisher still holds
	binary.BigEndian.PutUint64(start[:], from)
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
		if seq < from || (res.batches > 0 && seq <= res.last) {
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
// whether to hand it on. When the pod has a replay endpoint, a replay fills what this
// subscriber missed of its stream: from sequence 0 at the pod's first batch with seq > 0
// (this subscriber joined mid-way: a restarted replica), and from the missing sequence
// numbers at a gap (batches lost on the way: ZMQ's PUB drops what a slow subscriber's
// queue cannot take, and the publisher's own buffer drops under load), so that the index
// applies them in order and never sees the gap, instead of dropping the pod's entries and
// trusting them only as a lower bound until the pod's cache turns over. Live batches the
// replay already applied are skipped. Gap replays follow rank 0's stream only (vLLM's
// data-parallel ranks each publish and replay on ports of their own) and at most once a
// second per pod, so a pod losing batches all the time costs at most that. Caller holds
// s.mu.
func (s *Subscriber) beforeLive(pod string, seq uint64, rank int) bool {
	if upto, ok := s.replayedUpTo[pod]; ok {
		if seq <= upto {
			return false
		}
		delete(s.replayedUpTo, pod)
	}
	if s.cfg.ReplayEndpoint == nil {
		return true
	}
	last, haveLast := s.last[pod]
	if rank == 0 && (haveLast || len(s.last) < maxKnownPods) {
		s.last[pod] = seq
	}
	if _, seen := s.known[pod]; seen || len(s.known) >= maxKnownPods {
		if rank != 0 || !haveLast || seq <= last+1 {
			return true
		}
		return s.replayGap(pod, seq, last+1)
	}
	s.known[pod] = struct{}{}
	if seq == 0 {
		return true // the stream's start: nothing to replay
	}
	return s.replayFrom(pod, seq, 0)
}

// replayGap replays pod's batches from..seq-1 that the live stream lost, at most once a
// second per pod.
func (s *Subscriber) replayGap(pod string, seq, from uint64) bool {
	now := time.Now()
	if next, ok := s.nextGapReplay[pod]; ok && now.Before(next) {
		return true // the index sees the gap: entries dropped, pod partial
	}
	if len(s.nextGapReplay) >= maxKnownPods {
		clear(s.nextGapReplay) // bounded: forgetting only allows an early replay
	}
	s.nextGapReplay[pod] = now.Add(gapReplayEvery)
	s.gapReplays.Inc()
	return s.replayFrom(pod, seq, from)
}

// replayFrom replays pod's buffered batches from sequence from and reports whether the
// live batch seq is still to be handed on.
func (s *Subscriber) replayFrom(pod string, seq, from uint64) bool {
	ep := s.cfg.ReplayEndpoint(pod)
	if ep == "" {
		return true
	}
	t0 := time.Now()
	res, err := s.replay(s.ctx, ep, pod, from)
	if err != nil {
		s.log.Warn("kvevents: replay failed; the pod stays partial until its events fill the index", "pod", pod, "from", from, "err", err)
	}
	s.log.Info("kvevents: replayed a pod's buffered batches", "pod", pod, "from", from, "batches", res.batches, "last_seq", res.last,
		"live_seq", seq, "took", time.Since(t0).Round(time.Millisecond))
	if res.batches == 0 {
		return true
	}
	if seq <= res.last {
		s.replayedUpTo[pod] = res.last
		if _, ok := s.last[pod]; ok {
			s.last[pod] = res.last
		}
		return false
	}
	return true
}
