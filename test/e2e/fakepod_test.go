package e2e

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// brokenPod is a model server that is broken in one way while its metrics look healthy and
// idle, so that the picker picks it: the case the gateway must survive. It is a real HTTP
// server on the pod's address (the stack's sim manager then finds the address taken and
// leaves it alone).
type brokenPod int

const (
	// podHangs accepts inference requests and never answers them (a wedged engine whose
	// metrics endpoint still works).
	podHangs brokenPod = iota
	// podResets closes the connection on every inference request.
	podResets
)

const idleVLLMMetrics = "vllm:num_requests_waiting 0\nvllm:num_requests_running 0\nvllm:kv_cache_usage_perc 0\n"

// startBrokenPod serves mode on addr until the test ends. A hung request is released when
// its client (Envoy) goes away or the test ends, so no handler outlives the test.
func startBrokenPod(t *testing.T, addr string, mode brokenPod) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("broken pod: %v", err)
	}
	done := make(chan struct{})
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/metrics":
			_, _ = io.WriteString(w, idleVLLMMetrics)
			return
		case "/v1/models":
			_, _ = io.WriteString(w, `{"object":"list","data":[{"id":"`+baseModel+`","object":"model"}]}`)
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		switch mode {
		case podHangs:
			select {
			case <-r.Context().Done():
			case <-done:
			}
		case podResets:
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					_ = c.(*net.TCPConn).SetLinger(0) // RST, not FIN
					c.Close()
				}
			}
		}
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() {
		close(done)
		_ = srv.Close()
	})
}
