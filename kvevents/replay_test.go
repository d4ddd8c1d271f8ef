package kvevents

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeReplayPeer is a ROUTER socket answering each replay request with the given replies
// (frames after the requester's identity): a misbehaving or silent publisher, which no
// real one plays. The well-behaved case is the real sim's (kvroute's replay test).
func fakeReplayPeer(t *testing.T, replies [][][]byte) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r := zmq4.NewRouter(ctx)
	t.Cleanup(func() { r.Close() })
	if err := r.Listen("tcp://127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			msg, err := r.Recv()
			if err != nil {
				return
			}
			for _, rep := range replies {
				_ = r.Send(zmq4.NewMsgFrom(append([][]byte{msg.Frames[0]}, rep...)...))
			}
		}
	}()
	return "tcp://" + r.Addr().String()
}

// TestReplayBadPeers: a replay peer that answers with malformed replies or not at all
// costs at most the replay timeout; the live batch that triggered the replay is still
// handed on, and a good batch before a malformed reply is applied in order.
func TestReplayBadPeers(t *testing.T) {
	payload, err := NewEncoder().Encode(sampleBatch())
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		replies  [][][]byte
		wantSeqs []uint64 // handed on, in order
	}{
		"silent":            {nil, []uint64{5}},
		"wrong frame count": {[][][]byte{{{}, []byte("x")}}, []uint64{5}},
		"a good batch then garbage": {[][][]byte{
			{{}, []byte("kv@127.0.0.1@m"), seqFrame(0), payload},
			{{}, []byte("kv@127.0.0.1@m"), []byte{1, 2}, payload},
		}, []uint64{0, 5}},
		"another pod's batch, then the end": {[][][]byte{
			{{}, []byte("kv@10.9.9.9@m"), seqFrame(0), payload},
			{{}, {}, replayEnd, {}},
		}, []uint64{5}},
		"live batch already replayed": {[][][]byte{
			{{}, []byte("kv@127.0.0.1@m"), seqFrame(4), payload},
			{{}, []byte("kv@127.0.0.1@m"), seqFrame(5), payload},
			{{}, {}, replayEnd, {}},
		}, []uint64{4, 5}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			ep := fakeReplayPeer(t, c.replies)
			h := make(chanHandler, 100)
			_, pub := boundWithPub(t, Config{Bind: "tcp://127.0.0.1:0", ReplayTimeout: 300 * time.Millisecond,
				ReplayEndpoint: func(string) string { return ep }}, h, nil)
			start := time.Now()
			first := publishUntil(t, pub, h, "kv@127.0.0.1@m", 5)
			seqs := []uint64{first.seq}
			for done := false; !done; {
				select {
				case g := <-h:
					seqs = append(seqs, g.seq)
				case <-time.After(200 * time.Millisecond):
					done = true
				}
			}
			// publishUntil resends seq 5 until heard: later copies are live duplicates.
			got := seqs[:0]
			for i, q := range seqs {
				if i == 0 || q != seqs[i-1] {
					got = append(got, q)
				}
			}
			if len(got) < len(c.wantSeqs) || !equalSeqs(got[:len(c.wantSeqs)], c.wantSeqs) {
				t.Errorf("handed on %v, want %v first", got, c.wantSeqs)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("took %s", took)
			}
		})
	}
}

func equalSeqs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// seqReplayPeer is a publisher's replay endpoint holding batches 0..last of pod: it
// answers a request from start with start..last and the end marker, as vLLM's does, and
// records each start asked for.
func seqReplayPeer(t *testing.T, topic string, last uint64, payload []byte) (string, chan uint64) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r := zmq4.NewRouter(ctx)
	t.Cleanup(func() { r.Close() })
	if err := r.Listen("tcp://127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	asked := make(chan uint64, 16)
	go func() {
		for {
			msg, err := r.Recv()
			if err != nil {
				return
			}
			if len(msg.Frames) != 3 || len(msg.Frames[2]) != 8 {
				continue
			}
			start := binary.BigEndian.Uint64(msg.Frames[2])
			asked <- start
			id := msg.Frames[0]
			for q := start; q <= last; q++ {
				_ = r.Send(zmq4.NewMsgFrom(id, []byte{}, []byte(topic), seqFrame(q), payload))
			}
			_ = r.Send(zmq4.NewMsgFrom(id, []byte{}, []byte{}, replayEnd, []byte{}))
		}
	}()
	return "tcp://" + r.Addr().String(), asked
}

// TestReplayAfterGap: batches lost between two live ones are asked of the pod's replay
// endpoint from the first missing sequence number and handed on in order before the live
// batch, so the handler (the index) never sees the gap; a second gap within a second is
// left to the index (bounded replays).
func TestReplayAfterGap(t *testing.T) {
	b := sampleBatch()
	b.DPRank = 0 // gap replays follow rank 0's stream
	payload, err := NewEncoder().Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	const topic = "kv@127.0.0.1@m"
	ep, asked := seqReplayPeer(t, topic, 3, payload)
	h := make(chanHandler, 100)
	reg := prometheus.NewRegistry()
	s, pub := boundWithPub(t, Config{Bind: "tcp://127.0.0.1:0", ReplayTimeout: time.Second,
		ReplayEndpoint: func(string) string { return ep }}, h, reg)
	seqs := []uint64{publishUntil(t, pub, h, topic, 0).seq}
	drain := func() {
		for {
			select {
			case g := <-h:
				if g.seq != seqs[len(seqs)-1] { // publishUntil's resends of seq 0
					seqs = append(seqs, g.seq)
				}
			case <-time.After(300 * time.Millisecond):
				return
			}
		}
	}
	drain()
	for _, q := range []uint64{1, 4} { // 2 and 3 lost
		if err := pub.Send(zmq4.NewMsgFrom([]byte(topic), seqFrame(q), payload)); err != nil {
			t.Fatal(err)
		}
	}
	drain()
	if want := []uint64{0, 1, 2, 3, 4}; !equalSeqs(seqs, want) {
		t.Fatalf("handed on %v, want %v", seqs, want)
	}
	if got := <-asked; got != 2 {
		t.Errorf("replay asked from %d, want 2 (the first lost batch)", got)
	}
	// Another gap at once: not replayed (at most one gap replay a second per pod).
	if err := pub.Send(zmq4.NewMsgFrom([]byte(topic), seqFrame(7), payload)); err != nil {
		t.Fatal(err)
	}
	drain()
	if want := []uint64{0, 1, 2, 3, 4, 7}; !equalSeqs(seqs, want) {
		t.Fatalf("second gap: handed on %v, want %v", seqs, want)
	}
	select {
	case got := <-asked:
		t.Errorf("a second replay from %d within a second", got)
	default:
	}
	if got := testutil.ToFloat64(s.gapReplays); got != 1 {
		t.Errorf("gap replays %v, want 1", got)
	}
}
