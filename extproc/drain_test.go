package extproc

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestServeDrainsOpenStreams: when Serve's context ends (a pod told to stop), a request
// whose response is still streaming keeps its ext_proc stream until it ends, new streams
// are refused and /readyz turns 503; a stream still open after ShutdownGrace is cut and
// Serve returns.
func TestServeDrainsOpenStreams(t *testing.T) { forEachTransport(t, testServeDrainsOpenStreams) }

func testServeDrainsOpenStreams(t *testing.T, tr Transport) {
	for _, tc := range []struct {
		name   string
		grace  time.Duration
		finish bool // the client finishes its stream during the drain
	}{{"stream ends within the grace", 20 * time.Second, true}, {"stream outlives the grace", 300 * time.Millisecond, false}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Options{Transport: tr, ShutdownGrace: tc.grace})
			gl, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ml, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			served := make(chan error, 1)
			go func() { served <- h.srv.Serve(ctx, gl, ml, nil, h.reg) }()

			conn, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			client := extprocv3.NewExternalProcessorClient(conn)
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			st, err := client.Process(sctx)
			if err != nil {
				t.Fatal(err)
			}
			send(t, st, reqHeaders(protocol(duplex, duplex), false, ":path", "/v1/completions"),
				reqBody([]byte(`{"model":"base","prompt":"a long generation"}`), true))
			if r := recv(t, st); r.GetRequestHeaders() == nil {
				t.Fatalf("want the held headers answer, got %T", r.GetResponse())
			}
			recvStreamedBody(t, st, true, true, len(`{"model":"base","prompt":"a long generation"}`))

			stop() // the pod is told to stop while the response is streaming
			readyz := "http://" + ml.Addr().String() + "/readyz"
			deadline := time.Now().Add(10 * time.Second)
			for {
				resp, err := http.Get(readyz)
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode == http.StatusServiceUnavailable {
						break
					}
				}
				if time.Now().After(deadline) {
					t.Fatal("/readyz did not turn 503 during the drain")
				}
				time.Sleep(10 * time.Millisecond)
			}
			// New streams are refused once the server has sent GOAWAY and closed its
			// listener. /readyz turns 503 just before that, so a stream opened in between
			// may still be served: it is then finished properly, and the next one tried.
			refused := false
			for attempt := 0; attempt < 50 && !refused; attempt++ {
				refused = !headerOnlyExchange(client)
			}
			if !refused {
				t.Fatal("new streams were still served during the drain")
			}

			if tc.finish {
				send(t, st, respHeaders(false, ":status", "200", "content-type", "text/event-stream"))
				if r := recv(t, st); r.GetResponseHeaders() == nil {
					t.Fatalf("response headers during the drain: got %T", r.GetResponse())
				}
				sse := sseResponse("base")
				send(t, st, respBody([]byte(sse), true))
				recvStreamedBody(t, st, false, true, len(sse))
				if err := st.CloseSend(); err != nil {
					t.Fatal(err)
				}
				if _, err := st.Recv(); !errors.Is(err, io.EOF) {
					t.Fatalf("stream end during the drain: %v, want io.EOF", err)
				}
			} else if _, err := st.Recv(); err == nil {
				t.Fatal("a stream outliving the grace period was not cut")
			}
			select {
			case err := <-served:
				if err != nil {
					t.Fatalf("Serve: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("Serve did not return after the drain")
			}
			waitFor(t, func() bool { return h.srv.ActiveStreams() == 0 })
		})
	}
}

// headerOnlyExchange runs one header-only request on a new stream and reports whether it
// was served to the end.
func headerOnlyExchange(client extprocv3.ExternalProcessorClient) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := client.Process(ctx)
	if err != nil {
		return false
	}
	if err := st.Send(reqHeaders(protocol(duplex, duplex), true, ":path", "/v1/models")); err != nil {
		return false
	}
	if _, err := st.Recv(); err != nil {
		return false
	}
	if err := st.CloseSend(); err != nil {
		return false
	}
	_, err = st.Recv()
	return errors.Is(err, io.EOF)
}
