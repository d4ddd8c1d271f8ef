package router

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/infergw/infergw/internal/rawio"
)

// endpointClient is one endpoint's HTTP/1.1 keep-alive connection for its scrapes and model
// lists. Only the endpoint's loop goroutine uses it, and a request runs entirely in that
// goroutine: the request is written and the response read (with fasthttp's parser) right
// there. net/http's client hands each request to a connection's writer goroutine and each
// response back from its reader goroutine; at 20 scrapes a second per endpoint, those
// hand-offs woke threads several times per scrape, which on a VM cost more than the
// scrape itself. One connection per endpoint is all a loop that makes one request at a
// time needs.
type endpointClient struct {
	addr   string
	dialer net.Dialer
	tls    *tls.Config // nil: plain HTTP
	auth   string      // Authorization header value, "" for none

	conn  net.Conn // nil until the first request, and after an error
	br    *bufio.Reader
	bw    *bufio.Writer
	reuse bool // conn has served a response (so a dead keep-alive may be retried)

	req  fasthttp.Request
	resp fasthttp.Response
	gz   *gzip.Reader
}

func newEndpointClient(addr string) *endpointClient {
	return &endpointClient{addr: addr}
}

// newMetricsClient is the client of an endpoint's metrics when they are not plain HTTP on
// the serving port (MetricsEndpoint): TLS when the scheme is https, checked against the
// endpoint's host unless the configuration names a server, and a bearer token.
func newMetricsClient(addr string, m MetricsEndpoint) *endpointClient {
	c := &endpointClient{addr: addr}
	if m.Scheme == "https" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if m.TLS != nil {
			cfg = m.TLS.Clone()
		}
		if cfg.ServerName == "" {
			if host, _, err := net.SplitHostPort(addr); err == nil {
				cfg.ServerName = host
			}
		}
		c.tls = cfg
	}
	if m.BearerToken != "" {
		c.auth = "Bearer " + m.BearerToken
	}
	return c
}

// close drops the connection.
func (c *endpointClient) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// get fetches path ("/metrics") within timeout and writes the body, decompressed, to dst.
// A body larger than limit (compressed or not) is an error. Cancelling ctx aborts the
// request at once (the connection's deadline is moved to the past). It returns the HTTP
// status; dst is only written for 200.
func (c *endpointClient) get(ctx context.Context, path string, timeout time.Duration, limit int, dst *bytes.Buffer) (int, error) {
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	status, err := c.roundTrip(ctx, path, deadline, limit)
	if err != nil && c.reuse && ctx.Err() == nil && errors.Is(err, errStaleConn) {
		// The server closed the idle connection as we reused it: once more, on a new one.
		status, err = c.roundTrip(ctx, path, deadline, limit)
	}
	if err != nil {
		c.close()
		if ctxErr := ctx.Err(); ctxErr != nil {
			return 0, fmt.Errorf("%w (%w)", ctxErr, err)
		}
		return 0, err
	}
	if status != fasthttp.StatusOK {
		return status, nil
	}
	return status, c.body(dst, limit)
}

// errStaleConn: a reused connection ended before any byte of the response.
var errStaleConn = errors.New("connection closed before the response")

func (c *endpointClient) roundTrip(ctx context.Context, path string, deadline time.Time, limit int) (int, error) {
	if c.conn == nil {
		dctx, cancel := context.WithDeadline(ctx, deadline)
		conn, err := c.dialer.DialContext(dctx, "tcp", c.addr)
		cancel()
		if err != nil {
			return 0, err
		}
		var rw io.ReadWriter = conn
		if c.tls != nil {
			tconn := tls.Client(conn, c.tls)
			hctx, cancel := context.WithDeadline(ctx, deadline)
			err := tconn.HandshakeContext(hctx)
			cancel()
			if err != nil {
				conn.Close()
				return 0, fmt.Errorf("handshake: %w", err)
			}
			conn, rw = tconn, tconn
		} else if rio := rawio.New(conn); rio != nil {
			// Raw system calls on plain TCP (internal/rawio): a scrape every 50 ms per
			// endpoint through the runtime's system-call path kept its sysmon thread
			// polling, measured at a quarter of an idle picker's CPU.
			rw = rio
		}
		c.conn, c.reuse = conn, false
		if c.br == nil {
			c.br, c.bw = bufio.NewReaderSize(rw, 16<<10), bufio.NewWriterSize(rw, 1<<10)
		} else {
			c.br.Reset(rw)
			c.bw.Reset(rw)
		}
	}
	conn := c.conn
	if err := conn.SetDeadline(deadline); err != nil {
		c.close()
		return 0, err
	}
	// Cancellation (the endpoint was removed, the router closed) must not wait for the
	// deadline: a past deadline makes the blocked read or write return now.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	c.req.Reset()
	c.req.Header.SetMethod(fasthttp.MethodGet)
	c.req.SetRequestURI("http://" + c.addr + path)
	c.req.Header.Set("Accept", "text/plain;version=0.0.4, application/json;q=0.9")
	c.req.Header.Set("Accept-Encoding", "gzip")
	c.req.Header.Set("User-Agent", "infergw-router")
	if c.auth != "" {
		c.req.Header.Set("Authorization", c.auth)
	}
	err := c.req.Write(c.bw)
	if err == nil {
		err = c.bw.Flush()
	}
	if err != nil {
		c.close()
		if c.reuse && ctx.Err() == nil {
			return 0, fmt.Errorf("%w: %w", errStaleConn, err) // e.g. EPIPE after the server's close
		}
		return 0, err
	}
	c.resp.Reset()
	if err := c.resp.ReadLimitBody(c.br, limit); err != nil {
		c.close()
		if c.reuse && errors.Is(err, io.EOF) {
			return 0, errStaleConn
		}
		return 0, err
	}
	if c.resp.ConnectionClose() {
		c.close()
	} else {
		c.reuse = true
	}
	return c.resp.StatusCode(), nil
}

// body writes the response body to dst, gunzipped when the server compressed it, failing
// when it decompresses to more than limit bytes.
func (c *endpointClient) body(dst *bytes.Buffer, limit int) error {
	raw := c.resp.Body()
	switch enc := string(c.resp.Header.ContentEncoding()); enc {
	case "", "identity":
		dst.Write(raw)
		return nil
	case "gzip":
	default:
		return fmt.Errorf("unsupported content-encoding %q", enc)
	}
	var err error
	if c.gz == nil {
		c.gz, err = gzip.NewReader(bytes.NewReader(raw))
	} else {
		err = c.gz.Reset(bytes.NewReader(raw))
	}
	if err != nil {
		return fmt.Errorf("gzip: %w", err)
	}
	n, err := dst.ReadFrom(io.LimitReader(c.gz, int64(limit)+1))
	if err != nil {
		return fmt.Errorf("gzip: %w", err)
	}
	if n > int64(limit) {
		return fmt.Errorf("body larger than %d bytes", limit)
	}
	return nil
}
