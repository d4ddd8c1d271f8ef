package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/infergw/infergw/kvevents"
	"github.com/infergw/infergw/kvindex"
	"github.com/infergw/infergw/kvprompt"
)

// indexHandler feeds an index and remembers what it saw.
type indexHandler struct {
	ix     *kvindex.Index
	mu     sync.Mutex
	topics map[string]bool
	kinds  map[kvevents.Kind]int
}

func (h *indexHandler) HandleBatch(pod, model string, seq uint64, b *kvevents.Batch) {
	h.mu.Lock()
	h.topics[pod+"@"+model] = true
	for _, e := range b.Events {
		h.kinds[e.Kind]++
	}
	h.mu.Unlock()
	h.ix.HandleBatch(pod, model, seq, b)
}

func (h *indexHandler) count(k kvevents.Kind) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.kinds[k]
}

// TestSimPublishesKVEvents: a sim with --kv-events-config and a real model's tokenizer
// publishes, over real ZMQ to a bound subscriber, BlockStored events whose tokens chain to
// the keys the picker computes from the same request, and BlockRemoved events when its
// small cache evicts, so that an evicted prompt stops matching.
func TestSimPublishesKVEvents(t *testing.T) {
	ix, err := kvindex.New(kvindex.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &indexHandler{ix: ix, topics: map[string]bool{}, kinds: map[kvevents.Kind]int{}}
	sub, err := kvevents.New(kvevents.Config{Bind: "tcp://127.0.0.1:0"}, h, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	s := startSim(t, func(c *Config) {
		c.Model = "tiny"
		c.Tokenizer = "../kvprompt/testdata/tiny"
		c.BlockSize, c.KVBlocks = 16, 24 // 384 tokens: three ~150-token prompts do not fit
		c.MaxModelLen = 380
		c.KVEvents = KVEventsConfig{Enable: true, Publisher: "zmq", Endpoint: "tcp://" + sub.Addr()}
	})
	tok, err := kvprompt.Load("../kvprompt/testdata/tiny", 1)
	if err != nil {
		t.Fatal(err)
	}
	words := strings.Fields("kalo mine ruta vozi pesu doba the a of and to in is for on with")
	prompt := func(k int) []byte {
		var sb strings.Builder
		for i := range 150 {
			sb.WriteString(words[(i*(k+3))%len(words)] + " ")
		}
		b, _ := json.Marshal(map[string]any{"model": "tiny", "messages": []map[string]string{{"role": "user", "content": sb.String()}}, "max_tokens": 1})
		return b
	}
	keys := func(body []byte) []uint64 {
		ids, err := tok.Tokens(nil, body)
		if err != nil {
			t.Fatal(err)
		}
		var hs kvindex.Hasher
		return hs.AppendKeys(nil, kvindex.RootKey(""), ids, 16, 0)
	}
	send := func(body []byte) {
		path := "/v1/chat/completions"
		if !strings.Contains(string(body), `"messages"`) {
			path = "/v1/completions"
		}
		resp := post(t, "http://"+s.Addr()+path, json.RawMessage(body))
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
	}
	host := strings.Split(s.Addr(), ":")[0]
	waitMatch := func(what string, body []byte, want func(hit, n int) bool) {
		t.Helper()
		k := keys(body)
		deadline := time.Now().Add(10 * time.Second)
		for {
			hit := ix.Match(host, k)
			if want(hit, len(k)) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d of %d blocks matched (events: %v)", what, hit, len(k), h.kinds)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// A PUB drops what it sends before the subscriber's subscription reaches it: send the
	// first prompt until its blocks show up (the sim re-stores nothing already cached,
	// so repeats publish nothing new; vary a suffix to force new blocks).
	p0 := prompt(0)
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ix.Info(host).State == kvindex.StateUnknown; i++ {
		if time.Now().After(deadline) {
			t.Fatal("no KV event from the sim in 10 s")
		}
		send([]byte(fmt.Sprintf(`{"model":"tiny","prompt":"warm up %d kalo mine ruta vozi pesu doba the a of and kalo mine ruta vozi pesu doba","max_tokens":1}`, i)))
		time.Sleep(50 * time.Millisecond)
	}
	send(p0)
	waitMatch("prompt 0 after its request", p0, func(hit, n int) bool { return n > 5 && hit == n })
	if !h.topics[host+"@tiny"] {
		t.Fatalf("topics %v, want %s@tiny", h.topics, host)
	}
	// Two more distinct prompts need more blocks than are free: the sim evicts prompt 0's.
	send(prompt(1))
	send(prompt(2))
	waitMatch("evicted prompt 0", p0, func(hit, n int) bool { return hit < n })
	waitMatch("prompt 2", prompt(2), func(hit, n int) bool { return hit == n })
	if h.count(kvevents.BlockRemoved) == 0 {
		t.Fatal("no BlockRemoved event")
	}
	if st := ix.Info(host).State; st != kvindex.StatePartial && st != kvindex.StateConsistent {
		t.Fatalf("state %v", st)
	}
}

func TestParseKVEventsConfig(t *testing.T) {
	c, err := ParseKVEventsConfig(`{"enable_kv_cache_events": true, "publisher": "zmq", "endpoint": "tcp://127.0.0.1:5557", "topic": "kv@1.2.3.4@m"}`)
	if err != nil || !c.Enable || c.Endpoint != "tcp://127.0.0.1:5557" || c.Topic != "kv@1.2.3.4@m" {
		t.Fatalf("%+v %v", c, err)
	}
	for _, bad := range []string{
		`{"enable_kv_cache_events": true, "publisher": "null", "endpoint": "tcp://x:1"}`,
		`{"enable_kv_cache_events": true, "publisher": "zmq", "endpoint": "ipc:///tmp/x"}`,
		`{"enable_kv_cache_events": true, "publisher": "zmq", "endpoint": "tcp://x:1", "unknown_field": 1}`,
		`not json`,
	} {
		if _, err := ParseKVEventsConfig(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// TestSimsBindStarOnTheirOwnAddress: sims on two loopback "pod" addresses, both with vLLM's
// binding endpoint tcp://*:PORT, share the port as pods do (each binds its own address),
// and a subscriber that dials both hears both.
func TestSimsBindStarOnTheirOwnAddress(t *testing.T) {
	hosts := []string{"127.0.0.73", "127.0.0.74"}
	var port int
	for attempt := 0; port == 0; attempt++ {
		l, err := net.Listen("tcp", hosts[0]+":0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if l2, err := net.Listen("tcp", net.JoinHostPort(hosts[1], strconv.Itoa(p))); err == nil {
			l2.Close()
			port = p
		} else if attempt > 20 {
			t.Fatal("no port free on both addresses")
		}
	}
	var sims []*Server
	for _, h := range hosts {
		// Not startSim: its goroutine check at cleanup would count the other sim's.
		c := DefaultConfig()
		c.Addr, c.TimeScale = h+":0", 0.01
		c.Model = "tiny"
		c.Tokenizer = "../kvprompt/testdata/tiny"
		c.KVEvents = KVEventsConfig{Enable: true, Publisher: "zmq", Endpoint: "tcp://*:" + strconv.Itoa(port)}
		s, err := New(c, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(); err != nil {
			t.Fatalf("second sim on the same port: %v", err)
		}
		t.Cleanup(func() { _ = s.Close() })
		sims = append(sims, s)
	}
	ix, err := kvindex.New(kvindex.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &indexHandler{ix: ix, topics: map[string]bool{}, kinds: map[kvevents.Kind]int{}}
	var eps []string
	for _, host := range hosts {
		eps = append(eps, "tcp://"+net.JoinHostPort(host, strconv.Itoa(port)))
	}
	sub, err := kvevents.New(kvevents.Config{Connect: eps}, h, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		// ZMQ drops what a PUB sends before the SUB's subscription arrives: send until heard.
		for _, s := range sims {
			resp := post(t, "http://"+s.Addr()+"/v1/completions", map[string]any{"model": "tiny", "prompt": words(60, fmt.Sprint(time.Now().UnixNano())), "max_tokens": 1})
			resp.Body.Close()
		}
		h.mu.Lock()
		n := len(h.topics)
		h.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("heard %d of 2 pods", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
