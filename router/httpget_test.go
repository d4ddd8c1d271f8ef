package router

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func gzipped(t *testing.T, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	if _, err := w.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestEndpointClientGet drives the scrape client against real HTTP servers: plain,
// gzipped and chunked bodies, a non-200 status, and one connection kept alive across
// requests.
func TestEndpointClientGet(t *testing.T) {
	exposition := strings.Repeat("vllm:num_requests_waiting 3\n", 200)
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/plain":
			_, _ = w.Write([]byte(exposition))
		case "/gzip":
			if r.Header.Get("Accept-Encoding") != "gzip" {
				http.Error(w, "client did not ask for gzip", http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Encoding", "gzip")
			_, _ = w.Write(gzipped(t, exposition))
		case "/chunked":
			for i := 0; i < 4; i++ {
				_, _ = w.Write([]byte(exposition[:len(exposition)/4]))
				w.(http.Flusher).Flush()
			}
		default:
			http.NotFound(w, r)
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	c := newEndpointClient(srv.Listener.Addr().String())
	defer c.close()
	ctx := context.Background()
	var buf bytes.Buffer
	for _, tc := range []struct {
		path       string
		wantStatus int
		wantBody   string
	}{
		{"/plain", 200, exposition},
		{"/gzip", 200, exposition},
		{"/chunked", 200, strings.Repeat(exposition[:len(exposition)/4], 4)},
		{"/missing", 404, ""},
		{"/plain", 200, exposition},
	} {
		buf.Reset()
		status, err := c.get(ctx, tc.path, 2*time.Second, 1<<20, &buf)
		if err != nil || status != tc.wantStatus {
			t.Fatalf("GET %s: status %d, %v; want %d", tc.path, status, err, tc.wantStatus)
		}
		if buf.String() != tc.wantBody {
			t.Fatalf("GET %s: body of %d bytes, want %d", tc.path, buf.Len(), len(tc.wantBody))
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for 5 requests, want 1 kept alive", n)
	}
}

// TestEndpointClientLimits: a body over the limit is an error, before decompression and
// after it (a small gzip stream that inflates past the limit).
func TestEndpointClientLimits(t *testing.T) {
	big := strings.Repeat("x", 64<<10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/bomb" {
			w.Header().Set("Content-Encoding", "gzip")
			_, _ = w.Write(gzipped(t, big))
			return
		}
		_, _ = w.Write([]byte(big))
	}))
	defer srv.Close()
	c := newEndpointClient(srv.Listener.Addr().String())
	defer c.close()
	var buf bytes.Buffer
	for _, path := range []string{"/raw", "/bomb"} {
		buf.Reset()
		if _, err := c.get(context.Background(), path, 2*time.Second, 32<<10, &buf); err == nil {
			t.Fatalf("GET %s: a 64 KiB body passed a 32 KiB limit", path)
		}
	}
	// The client recovers: a request within the limit works on a new connection.
	buf.Reset()
	if status, err := c.get(context.Background(), "/raw", 2*time.Second, 1<<20, &buf); err != nil || status != 200 || buf.Len() != len(big) {
		t.Fatalf("after the errors: status %d, %d bytes, %v", status, buf.Len(), err)
	}
}

// TestEndpointClientRetriesDeadKeepAlive: a server that closes a kept-alive connection
// without saying so (as servers do at their idle timeout) costs no failed scrape: the
// request is sent again on a new connection.
func TestEndpointClientRetriesDeadKeepAlive(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int32
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer conn.Close()
				// One response per connection, then close without "Connection: close".
				if _, err := http.ReadRequest(bufio.NewReader(conn)); err != nil {
					return
				}
				_, _ = fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}()
		}
	}()
	c := newEndpointClient(ln.Addr().String())
	defer c.close()
	for i := range 3 {
		var buf bytes.Buffer
		status, err := c.get(context.Background(), "/metrics", 2*time.Second, 1<<10, &buf)
		if err != nil || status != 200 || buf.String() != "ok" {
			t.Fatalf("request %d: status %d, body %q, %v", i, status, buf.String(), err)
		}
		time.Sleep(20 * time.Millisecond) // let the server's close arrive
	}
	if n := accepted.Load(); n != 3 {
		t.Fatalf("%d connections, want 3 (one per request, each retried once)", n)
	}
}

// TestEndpointClientCancelAndTimeout: a server that never answers holds a request only
// until its timeout, and cancelling the context ends it at once (a removed endpoint's
// loop must not wait out the scrape timeout).
func TestEndpointClientCancelAndTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var held []net.Conn // read nothing, answer nothing
	acceptorDone := make(chan struct{})
	go func() {
		defer close(acceptorDone)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, conn)
		}
	}()
	defer func() {
		ln.Close()
		<-acceptorDone
		for _, conn := range held {
			conn.Close()
		}
	}()
	c := newEndpointClient(ln.Addr().String())
	defer c.close()
	var buf bytes.Buffer

	start := time.Now()
	if _, err := c.get(context.Background(), "/metrics", 150*time.Millisecond, 1<<10, &buf); err == nil {
		t.Fatal("a server that never answers gave no error")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("timeout of 150ms took %v", d)
	}

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start = time.Now()
	_, err = c.get(ctx, "/metrics", time.Minute, 1<<10, &buf)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled request: %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("cancelled request took %v with a one-minute timeout: cancellation did not abort it", d)
	}
}
