package loadtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
)

// tlsConfig builds the client's TLS configuration from the options; nil when the URL is
// plain http and no option is set.
func tlsConfig(o TLSOptions, https bool) (*tls.Config, error) {
	if !https {
		if o.set() {
			return nil, errors.New("config: TLS options need an https URL")
		}
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.InsecureSkipVerify, ServerName: o.ServerName} //nolint:gosec // skip-verify only when the user asks
	if o.CAFile != "" {
		pemBytes, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("config: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("config: CA file %s: no PEM certificate in it", o.CAFile)
		}
		tc.RootCAs = pool
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, errors.New("config: a client certificate needs both a cert file and a key file")
	}
	if o.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("config: client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// stdSender sends requests with net/http, for HTTP/2 (over TLS by ALPN, or h2c with prior
// knowledge). HTTP/1.1 stays on fasthttp, the cheaper client; HTTP/2 multiplexes every
// request of the run over a few connections, which fasthttp cannot do.
type stdSender struct {
	hc      *http.Client
	timeout time.Duration
}

func newStdSender(c *client, tc *tls.Config, https bool, timeout time.Duration) *stdSender {
	var protocols http.Protocols
	if https {
		protocols.SetHTTP1(true) // what ALPN settles on is reported, not assumed
		protocols.SetHTTP2(true)
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	tr := &http.Transport{
		// Dialled connections are tracked like fasthttp's so that abort unblocks every reader.
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return c.track((&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, network, addr))
		},
		TLSClientConfig:       tc,
		Protocols:             &protocols,
		ForceAttemptHTTP2:     true,
		DisableCompression:    true,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: timeout,
	}
	return &stdSender{hc: &http.Client{Transport: tr}, timeout: timeout}
}

// send posts the body and returns the response's status, the endpoint header, the protocol
// and its body, which fails once no byte arrived for the timeout (fasthttp's ReadTimeout,
// per read, has the same meaning). The returned release must be called when done.
func (s *stdSender) send(ctx context.Context, cfg *Config, url string, body []byte) (status int, endpoint, proto string, stream io.Reader, release func(), err error) {
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, &bodyReader{b: body})
	if err != nil {
		cancel()
		return 0, "", "", nil, nil, err
	}
	req.ContentLength = int64(len(body))
	setHeaders(cfg, func(k, v string) { req.Header.Set(k, v) })
	resp, err := s.hc.Do(req) //nolint:bodyclose // closed by release, which the caller defers
	if err != nil {
		cancel()
		return 0, "", "", nil, nil, err
	}
	endpoint = resp.Header.Get(cfg.EndpointHeader)
	if endpoint == "" {
		endpoint = resp.Header.Get("x-sim-instance")
	}
	idle := &idleReader{r: resp.Body, timeout: s.timeout, cancel: cancel}
	idle.timer = time.AfterFunc(s.timeout, idle.expire)
	release = func() {
		idle.timer.Stop()
		cancel()
		_ = resp.Body.Close() // a close error changes nothing measured
	}
	return resp.StatusCode, endpoint, resp.Proto, idle, release, nil
}

// bodyReader serves a request body from a slice without copying it.
type bodyReader struct {
	b   []byte
	off int
}

func (r *bodyReader) Read(p []byte) (int, error) {
	if r.off >= len(r.b) {
		return 0, io.EOF
	}
	n := copy(p, r.b[r.off:])
	r.off += n
	return n, nil
}

// idleReader cancels its request when no read returns data for the timeout.
type idleReader struct {
	r       io.Reader
	timeout time.Duration
	cancel  context.CancelFunc
	timer   *time.Timer
	mu      sync.Mutex
	expired bool
}

func (r *idleReader) expire() {
	r.mu.Lock()
	r.expired = true
	r.mu.Unlock()
	r.cancel()
}

func (r *idleReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.timer.Reset(r.timeout)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		r.mu.Lock()
		expired := r.expired
		r.mu.Unlock()
		if expired {
			return n, errReadTimeout
		}
	}
	return n, err
}

// errReadTimeout is a read that waited longer than the timeout.
var errReadTimeout = timeoutError{}

type timeoutError struct{}

func (timeoutError) Error() string   { return "loadtest: read timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// setHeaders sets the request headers every request carries, for either client.
func setHeaders(cfg *Config, set func(k, v string)) {
	set("Content-Type", "application/json")
	if cfg.NoStream {
		set("Accept", "application/json")
	} else {
		set("Accept", "text/event-stream")
	}
	if cfg.APIKey != "" {
		set("Authorization", "Bearer "+cfg.APIKey)
	}
	for _, h := range cfg.Headers {
		set(h.Name, h.Value)
	}
}

// statusError names a non-2xx status.
func statusError(status int) string { return "http_" + strconv.Itoa(status) }
