package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/infergw/infergw/internal/wirescan"
)

// client sends requests with fasthttp and reads SSE bodies as they stream. It tracks its
// connections so that an interrupted run can close them and unblock every reader at once.
type client struct {
	cfg       *Config
	url       string
	hc        *fasthttp.HostClient
	std       *stdSender // set with HTTP2: net/http instead of fasthttp
	mu        sync.Mutex
	conns     map[net.Conn]struct{}
	aborted   bool
	statePool sync.Pool
}

// reqState is the per-request scratch space, pooled so that a steady run allocates little.
type reqState struct {
	req   *fasthttp.Request
	resp  *fasthttp.Response
	body  []byte
	sse   *wirescan.SSEReader
	cum   []int // cumulative completion tokens per content chunk (-1 when not reported)
	times []time.Time
}

func newClient(cfg *Config) (*client, error) {
	full, err := cfg.endpointURL()
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(full)
	if err != nil {
		return nil, fmt.Errorf("parse url: %w", err)
	}
	addr := u.Host
	if u.Port() == "" {
		if u.Scheme == "https" {
			addr = net.JoinHostPort(u.Hostname(), "443")
		} else {
			addr = net.JoinHostPort(u.Hostname(), "80")
		}
	}
	https := u.Scheme == "https"
	tc, err := tlsConfig(cfg.TLS, https)
	if err != nil {
		return nil, err
	}
	c := &client{cfg: cfg, url: full, conns: map[net.Conn]struct{}{}}
	maxConns := cfg.MaxInFlight
	if cfg.VUs > maxConns {
		maxConns = cfg.VUs
	}
	for _, s := range cfg.Stages {
		if !cfg.openLoop() && int(s.Target) > maxConns {
			maxConns = int(s.Target)
		}
	}
	c.hc = &fasthttp.HostClient{
		Addr:                      addr,
		IsTLS:                     https,
		TLSConfig:                 tc,
		MaxConns:                  maxConns + 16,
		StreamResponseBody:        true,
		ReadTimeout:               cfg.Timeout,
		WriteTimeout:              cfg.Timeout,
		MaxIdleConnDuration:       90 * time.Second,
		Name:                      "infergw-loadtest",
		MaxIdemponentCallAttempts: 1,
		Dial:                      c.dial,
	}
	if cfg.HTTP2 {
		c.std = newStdSender(c, tc, https, cfg.Timeout)
	}
	c.statePool.New = func() any {
		return &reqState{req: &fasthttp.Request{}, resp: &fasthttp.Response{}, sse: wirescan.NewSSEReader(eofReader{}, 0)}
	}
	return c, nil
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

func (c *client) dial(addr string) (net.Conn, error) {
	return c.track(fasthttp.DialTimeout(addr, 10*time.Second))
}

// track registers a new connection so that abort can close it; it refuses (and closes) it
// once the run is aborted.
func (c *client) track(conn net.Conn, err error) (net.Conn, error) {
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aborted {
		conn.Close()
		return nil, errors.New("loadtest: run aborted")
	}
	tc := &trackedConn{Conn: conn, c: c}
	c.conns[tc] = struct{}{}
	return tc, nil
}

type trackedConn struct {
	net.Conn
	c    *client
	once sync.Once
}

func (t *trackedConn) Close() error {
	t.once.Do(func() {
		t.c.mu.Lock()
		delete(t.c.conns, t)
		t.c.mu.Unlock()
	})
	return t.Conn.Close()
}

// abort closes every connection: blocked reads fail at once and no new one is dialled.
func (c *client) abort() {
	c.mu.Lock()
	c.aborted = true
	conns := make([]net.Conn, 0, len(c.conns))
	for conn := range c.conns {
		conns = append(conns, conn)
	}
	c.mu.Unlock()
	for _, conn := range conns {
		conn.Close()
	}
}

func (c *client) isAborted() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.aborted
}

// do sends one request and measures it into res.
func (c *client) do(ctx context.Context, greq *Request, res *Result) {
	st := c.statePool.Get().(*reqState)
	defer c.statePool.Put(st)
	st.body = appendBody(st.body[:0], c.cfg, greq)
	if c.std != nil {
		c.doStd(ctx, st, res)
		return
	}
	req, resp := st.req, st.resp
	req.Reset()
	req.SetRequestURI(c.url)
	req.Header.SetMethod(fasthttp.MethodPost)
	setHeaders(c.cfg, req.Header.Set)
	req.SetBodyRaw(st.body)

	res.sent = time.Now()
	err := c.hc.Do(req, resp)
	headersAt := time.Now()
	if err != nil {
		res.Error = classifyErr(err, c.isAborted() || ctx.Err() != nil)
		res.E2EMs = ms(headersAt.Sub(res.sent))
		return
	}
	defer resp.CloseBodyStream() //nolint:errcheck // nothing useful to do with a close error
	res.Proto = "HTTP/1.1"
	res.Endpoint = string(resp.Header.Peek(c.cfg.EndpointHeader))
	if res.Endpoint == "" {
		res.Endpoint = string(resp.Header.Peek("x-sim-instance"))
	}
	c.readBody(ctx, st, res, resp.StatusCode(), headersAt, resp.BodyStream())
}

// doStd is do over net/http (HTTP/2).
func (c *client) doStd(ctx context.Context, st *reqState, res *Result) {
	res.sent = time.Now()
	status, endpoint, proto, stream, release, err := c.std.send(ctx, c.cfg, c.url, st.body)
	headersAt := time.Now()
	if err != nil {
		res.Error = classifyErr(err, c.isAborted() || ctx.Err() != nil)
		res.E2EMs = ms(headersAt.Sub(res.sent))
		return
	}
	defer release()
	res.Endpoint, res.Proto = endpoint, proto
	c.readBody(ctx, st, res, status, headersAt, stream)
}

// readBody measures a response from its headers on, whichever client received it.
func (c *client) readBody(ctx context.Context, st *reqState, res *Result, status int, headersAt time.Time, stream io.Reader) {
	res.Status = status
	res.TTFBMs = ms(headersAt.Sub(res.sent))
	if res.Status < 200 || res.Status > 299 {
		res.Error = statusError(res.Status)
		if stream != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(stream, 1<<20))
		}
		res.E2EMs = ms(time.Since(res.sent))
		return
	}
	if stream == nil {
		stream = eofReader{}
	}
	if c.cfg.NoStream {
		c.readWhole(stream, st, res)
		return
	}
	c.readStream(ctx, stream, st, res)
}

func (c *client) readWhole(stream io.Reader, st *reqState, res *Result) {
	body, err := io.ReadAll(io.LimitReader(stream, 64<<20))
	end := time.Now()
	res.E2EMs = ms(end.Sub(res.sent))
	if err != nil {
		res.Error = classifyErr(err, c.isAborted())
		return
	}
	ci, err := scanChunk(body)
	if err != nil {
		res.Error = "decode"
		return
	}
	if ci.errMsg != "" {
		res.Error = "stream"
		return
	}
	if ci.hasUsage {
		res.UsageReported = true
		res.PromptTokens, res.OutputTokens = ci.usage.PromptTokens, ci.usage.CompletionTokens
		if d := ci.usage.PromptTokensDetails; d != nil {
			res.CachedTokens = d.CachedTokens
		}
	}
}

// readStream reads SSE events until [DONE] or EOF. The first content chunk is the first
// event whose choices carry non-empty text; role-only, empty, usage-only chunks and
// comments (keep-alives) do not count.
func (c *client) readStream(ctx context.Context, stream io.Reader, st *reqState, res *Result) {
	st.sse.Reset(stream)
	st.times, st.cum = st.times[:0], st.cum[:0]
	var end time.Time
	for {
		ev, err := st.sse.Next()
		now := time.Now()
		if err != nil {
			end = now
			if !errors.Is(err, io.EOF) {
				res.Error = classifyErr(err, c.isAborted() || ctx.Err() != nil)
			}
			break
		}
		if string(ev.Data) == "[DONE]" {
			end = now
			break
		}
		ci, err := scanChunk(ev.Data)
		if err != nil {
			res.Error = "decode"
			end = now
			break
		}
		if ci.errMsg != "" {
			res.Error = "stream"
			end = now
			break
		}
		if ci.hasUsage {
			res.UsageReported = true
			res.PromptTokens, res.OutputTokens = ci.usage.PromptTokens, ci.usage.CompletionTokens
			if d := ci.usage.PromptTokensDetails; d != nil {
				res.CachedTokens = d.CachedTokens
			}
		}
		if ci.contentBytes > 0 {
			st.times = append(st.times, now)
			if ci.hasUsage {
				st.cum = append(st.cum, ci.usage.CompletionTokens)
			} else {
				st.cum = append(st.cum, -1)
			}
		}
	}
	res.E2EMs = ms(end.Sub(res.sent))
	if res.Error == "" {
		// Read the rest (normally just the chunked terminator) so that the client can reuse the
		// connection: a stream closed before EOF costs a new TCP connection per request.
		_, _ = io.Copy(io.Discard, io.LimitReader(stream, maxDrain))
	}
	res.ContentChunks = len(st.times)
	if !res.UsageReported {
		res.OutputTokens = len(st.times)
	}
	if len(st.times) == 0 {
		return
	}
	res.TTFTMs = ms(st.times[0].Sub(res.sent))
	if res.OutputTokens > 1 {
		res.TPOTMs = (res.E2EMs - res.TTFTMs) / float64(res.OutputTokens-1)
	}
	fillITL(res, st.times, st.cum)
}

// fillITL splits each inter-chunk gap among the tokens its chunk carried. Per-chunk counts
// come from cumulative usage when every content chunk reports it (vLLM continuous usage
// stats); otherwise the tokens beyond one per chunk, from the final usage, are spread evenly
// over the chunks after the first.
func fillITL(res *Result, times []time.Time, cum []int) {
	n := len(times) - 1
	res.itl = res.itl[:0]
	if n <= 0 {
		return
	}
	perChunk := true
	for _, v := range cum {
		if v < 0 {
			perChunk = false
			break
		}
	}
	extra := 0
	if !perChunk && res.OutputTokens > len(times) {
		extra = res.OutputTokens - len(times)
	}
	for k := 1; k <= n; k++ {
		tok := 1
		if perChunk {
			tok = max(1, cum[k]-cum[k-1])
		} else if extra > 0 {
			tok += extra / n
			if k <= extra%n {
				tok++
			}
		}
		res.itl = append(res.itl, chunkGap{gap: times[k].Sub(times[k-1]), tokens: tok})
	}
}

// maxDrain bounds what is read after [DONE] to keep a connection reusable.
const maxDrain = 64 << 10

func classifyErr(err error, aborted bool) string {
	if aborted {
		return "interrupted"
	}
	var ne net.Error
	if errors.Is(err, fasthttp.ErrTimeout) || (errors.As(err, &ne) && ne.Timeout()) {
		return "timeout"
	}
	return "transport"
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
