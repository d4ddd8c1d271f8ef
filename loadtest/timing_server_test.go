package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// timedChunk is one step of the test server's script: wait Delay, then send the event.
type timedChunk struct {
	Delay   time.Duration
	Payload string // SSE data, or a raw line when Raw is set
	Raw     bool
	Content bool // whether the chunk carries generated text (for the truth record)
}

// serverTruth is what the test server recorded for one request (same process and clock as
// the client, so instants can be compared directly).
type serverTruth struct {
	Recv      time.Time   // when the request's first bytes were read from the socket
	ContentAt []time.Time // just before each content chunk was written
	DoneAt    time.Time   // just before [DONE] was written
	Model     string
}

// knownScript: role-only chunk at 10 ms, a keep-alive comment and an empty-content chunk,
// then content: first at 40 ms, then gaps of 20, 20, 30 (carrying 3 tokens) and 20 ms.
// Per-chunk cumulative usage is reported, so ITL per token is 20, 20, 10, 10, 10, 20 ms.
func knownScript(perChunkUsage bool) []timedChunk {
	content := func(text string, cum int) string {
		if perChunkUsage {
			return chatChunkUsage(text, cum)
		}
		return chatChunk(text)
	}
	return []timedChunk{
		{Delay: 10 * time.Millisecond, Payload: `{"choices":[{"index":0,"delta":{"role":"assistant"}}]}`},
		{Delay: 5 * time.Millisecond, Payload: ": keep-alive\n\n", Raw: true},
		{Delay: 5 * time.Millisecond, Payload: chatChunk("")},
		{Delay: 20 * time.Millisecond, Payload: content("Hello", 1), Content: true},
		{Delay: 20 * time.Millisecond, Payload: content(" big", 2), Content: true},
		{Delay: 20 * time.Millisecond, Payload: content(" wide", 3), Content: true},
		{Delay: 30 * time.Millisecond, Payload: content(" world of", 6), Content: true},
		{Delay: 20 * time.Millisecond, Payload: content("!", 7), Content: true},
		{Payload: `{"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":7,"prompt_tokens_details":{"cached_tokens":4}}}`},
	}
}

var scripts = map[string]func() ([]timedChunk, int){
	"known":         func() ([]timedChunk, int) { return knownScript(true), 200 },
	"known-nousage": func() ([]timedChunk, int) { return knownScript(false), 200 },
	"503":           func() ([]timedChunk, int) { return nil, 503 },
	// slow: one content chunk after 200 ms (open-loop schedule test).
	"slow": func() ([]timedChunk, int) {
		return []timedChunk{{Delay: 200 * time.Millisecond, Payload: chatChunk("x"), Content: true}}, 200
	},
}

func chatChunk(content string) string {
	b, _ := json.Marshal(content)
	return `{"choices":[{"index":0,"delta":{"content":` + string(b) + `}}]}`
}

func chatChunkUsage(content string, completion int) string {
	b, _ := json.Marshal(content)
	return fmt.Sprintf(`{"choices":[{"index":0,"delta":{"content":%s}}],"usage":{"prompt_tokens":10,"completion_tokens":%d}}`, b, completion)
}

// timingServer is a real HTTP server on 127.0.0.1 replaying a script with known delays and
// recording when it wrote each chunk; every response carries a unique x-test-id header so
// that client results can be matched to the server's records.
type timingServer struct {
	url string
	*scriptServer
}

func startTimingServer(t *testing.T, script string) *timingServer {
	t.Helper()
	chunks, status := scripts[script]()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cs := &scriptServer{script: chunks, status: status, truth: map[string]serverTruth{}}
	srv := &http.Server{Handler: cs, ReadHeaderTimeout: 5 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, connKey{}, c) }}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(stampListener{ln}) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return &timingServer{url: "http://" + ln.Addr().String(), scriptServer: cs}
}

func (ts *timingServer) get(id string) (serverTruth, bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	tr, ok := ts.truth[id]
	return tr, ok
}

// scriptServer is the handler and its records.
type scriptServer struct {
	script []timedChunk
	status int
	n      atomic.Int64
	mu     sync.Mutex
	truth  map[string]serverTruth
}

// stampListener records when each request's first bytes were read from the socket, the
// server's earliest view of "request arrived" (the handler runs a little later).
type stampListener struct{ net.Listener }

type connKey struct{}

type stampConn struct {
	net.Conn
	mu       sync.Mutex
	awaiting bool
	firstAt  time.Time
}

func (l stampListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &stampConn{Conn: c, awaiting: true}, nil
}

func (c *stampConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		now := time.Now()
		c.mu.Lock()
		if c.awaiting {
			c.firstAt, c.awaiting = now, false
		}
		c.mu.Unlock()
	}
	return n, err
}

// takeArrival returns the first-read time of the current request and re-arms the stamp.
func (c *stampConn) takeArrival() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.firstAt
	c.awaiting = true
	return t
}

func (ts *scriptServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	recv := time.Now()
	if sc, ok := r.Context().Value(connKey{}).(*stampConn); ok {
		recv = sc.takeArrival()
	}
	body, _ := io.ReadAll(r.Body)
	var req struct {
		Model string `json:"model"`
	}
	_ = json.Unmarshal(body, &req)
	tr := serverTruth{Model: req.Model, Recv: recv}
	id := strconv.FormatInt(ts.n.Add(1), 10)
	w.Header().Set("x-test-id", id)
	if ts.status != 200 {
		ts.record(id, tr)
		w.WriteHeader(ts.status)
		fmt.Fprint(w, `{"error":{"message":"busy","type":"overloaded"}}`)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(200)
	fl := w.(http.Flusher)
	fl.Flush()
	for _, c := range ts.script {
		if c.Delay > 0 {
			time.Sleep(c.Delay)
		}
		// Stamped just before the write, so a correct client can only see the chunk later:
		// the truth is a lower bound of what the client measures.
		if c.Content {
			tr.ContentAt = append(tr.ContentAt, time.Now())
		}
		if c.Raw {
			fmt.Fprint(w, c.Payload)
		} else {
			fmt.Fprintf(w, "data: %s\n\n", c.Payload)
		}
		fl.Flush()
	}
	tr.DoneAt = time.Now()
	ts.record(id, tr) // before the write: the client may look it up as soon as it sees [DONE]
	fmt.Fprint(w, "data: [DONE]\n\n")
	fl.Flush()
}

func (ts *scriptServer) record(id string, tr serverTruth) {
	ts.mu.Lock()
	ts.truth[id] = tr
	ts.mu.Unlock()
}
