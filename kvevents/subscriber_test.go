package kvevents

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/prometheus/client_golang/prometheus"
)

type got struct {
	pod, model string
	seq        uint64
	events     int
}

type chanHandler chan got

func (c chanHandler) HandleBatch(pod, model string, seq uint64, b *Batch) {
	c <- got{pod, model, seq, len(b.Events)}
}

func seqFrame(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

// publishUntil sends the batch as vLLM does (topic, 8-byte sequence, payload) until the
// handler sees it: a PUB drops what it sends before the subscription reaches it.
func publishUntil(t *testing.T, pub zmq4.Socket, h chanHandler, topic string, seq uint64) got {
	t.Helper()
	payload, err := NewEncoder().Encode(sampleBatch())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		if err := pub.Send(zmq4.NewMsgFrom([]byte(topic), seqFrame(seq), payload)); err != nil {
			t.Fatalf("send: %v", err)
		}
		select {
		case g := <-h:
			return g
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatal("no batch received in 10 s")
		}
	}
}

// TestSubscriberBindVLLMMode: the subscriber binds and a real ZMQ PUB socket connects to
// it, as vLLM's publisher does with an endpoint without '*'.
func TestSubscriberBindVLLMMode(t *testing.T) {
	h := make(chanHandler, 100)
	_, pub := boundWithPub(t, Config{Bind: "tcp://127.0.0.1:0"}, h, nil)
	g := publishUntil(t, pub, h, "kv@10.1.2.3@tiny", 7)
	if g.pod != "10.1.2.3" || g.model != "tiny" || g.seq != 7 || g.events != 4 {
		t.Fatalf("got %+v", g)
	}
	// Wrong frames, topics and payloads are counted and dropped, not handed on.
	_ = pub.Send(zmq4.NewMsgFrom([]byte("kv@10.1.2.3@tiny"), []byte{1}, []byte{0x90}))
	_ = pub.Send(zmq4.NewMsgFrom([]byte("kv@nomodel"), seqFrame(1), []byte{0x90}))
	_ = pub.Send(zmq4.NewMsgFrom([]byte("kv@1.1.1.1@m"), seqFrame(1), []byte{0xc1}))
	g = publishUntil(t, pub, h, "kv@10.1.2.3@tiny", 8)
	if g.seq != 8 {
		t.Fatalf("after bad messages: %+v", g)
	}
}

// TestSubscriberConnectMode: the pod's publisher binds (vLLM with "*" in its endpoint)
// and the subscriber dials it.
func TestSubscriberConnectMode(t *testing.T) {
	pub := zmq4.NewPub(context.Background())
	defer pub.Close()
	if err := pub.Listen("tcp://127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	h := make(chanHandler, 100)
	s, err := New(Config{Connect: []string{"tcp://" + pub.Addr().String()}, DialRetry: 50 * time.Millisecond}, h, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if g := publishUntil(t, pub, h, "kv@10.9.9.9@m@x", 0); g.pod != "10.9.9.9" || g.model != "m@x" {
		t.Fatalf("got %+v", g)
	}
}

// zmtpGreeting is a ZMTP 3.0 NULL-mechanism greeting (client side).
func zmtpGreeting() []byte {
	g := make([]byte, 64)
	g[0], g[9], g[10], g[11] = 0xff, 0x7f, 3, 0
	copy(g[12:], "NULL")
	return g
}

func readyCommand(socketType string) []byte {
	body := []byte{5}
	body = append(body, "READY"...)
	body = append(body, 11)
	body = append(body, "Socket-Type"...)
	body = binary.BigEndian.AppendUint32(body, uint32(len(socketType)))
	body = append(body, socketType...)
	return append([]byte{0x04, byte(len(body))}, body...)
}

// TestSubscriberRejectsHugeFrame: a peer declaring a 1 GiB frame has its connection
// closed before anything is allocated for it (zmq4 alone would allocate the declared
// size), and the subscriber goes on serving other publishers.
func TestSubscriberRejectsHugeFrame(t *testing.T) {
	h := make(chanHandler, 100)
	s, err := New(Config{Bind: "tcp://127.0.0.1:0"}, h, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for _, frames := range [][]byte{
		// A 1 GiB frame header.
		append([]byte{0x02}, binary.BigEndian.AppendUint64(nil, 1<<30)...),
		// Five small frames in one message (MORE set on the first four).
		{0x01, 1, 'a', 0x01, 1, 'b', 0x01, 1, 'c', 0x01, 1, 'd', 0x00, 1, 'e'},
	} {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		msg := append(zmtpGreeting(), readyCommand("PUB")...)
		msg = append(msg, frames...)
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		// The subscriber answers with its greeting and READY, then closes: read to EOF.
		if _, err := io.Copy(io.Discard, c); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("connection not closed by the subscriber: %v", err)
			} // else reset by the subscriber (it closed with our bytes unread): closed too
		}
		_ = c.Close()
	}
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > 64<<20 {
		t.Fatalf("allocated %d MiB for a rejected frame", d>>20)
	}
	pub := zmq4.NewPub(context.Background())
	defer pub.Close()
	if err := pub.Dial("tcp://" + s.Addr()); err != nil {
		t.Fatal(err)
	}
	publishUntil(t, pub, h, "kv@10.0.0.1@m", 1)
}

func TestLimitListener(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ll := &limitListener{Listener: l, max: 2}
	defer ll.Close()
	var mu sync.Mutex
	var accepted []net.Conn
	go func() {
		for {
			c, err := ll.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted = append(accepted, c)
			mu.Unlock()
		}
	}()
	var clients []net.Conn
	for range 4 {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	// The third and fourth are closed by the listener: their reads end.
	for _, c := range clients[2:] {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("connection beyond the limit: read err %v, want EOF", err)
		}
	}
	mu.Lock()
	n := len(accepted)
	first := accepted[0]
	mu.Unlock()
	if n != 2 {
		t.Fatalf("accepted %d, want 2", n)
	}
	// Closing one frees a slot.
	_ = first.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n = len(accepted)
		mu.Unlock()
		if n == 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n != 3 {
		t.Fatalf("after a close, accepted %d, want 3", n)
	}
	for _, c := range clients {
		_ = c.Close()
	}
}

// boundWithPub starts a subscriber that binds (cfg.Bind) and a real ZMQ PUB socket dialled
// to it, as vLLM's publisher connects; both are closed when the test ends.
func boundWithPub(t *testing.T, cfg Config, h Handler, reg prometheus.Registerer) (*Subscriber, zmq4.Socket) {
	t.Helper()
	s, err := New(cfg, h, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	pub := zmq4.NewPub(context.Background())
	t.Cleanup(func() { pub.Close() })
	if err := pub.Dial("tcp://" + s.Addr()); err != nil {
		t.Fatal(err)
	}
	return s, pub
}
