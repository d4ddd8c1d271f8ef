package extproc

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/proto"
)

// The server-side request benchmark must not count the CPU of the gRPC client that plays
// Envoy. So the benchmark re-executes this test binary as a child process with
// envBenchClient set; the child is only that client. It talks to the parent over its
// stdin/stdout with one-line messages:
//
//	child → parent  "ready"           after connecting and a warm-up
//	parent → child  "run N"           drive N full requests
//	child → parent  "done CPU_NS"     finished; CPU_NS is the child's own CPU for the N requests
//
// The child exits when its stdin closes.
const (
	envBenchClient = "INFERGW_EXTPROC_BENCH_CLIENT" // gRPC address of the picker
	envBenchSize   = "INFERGW_EXTPROC_BENCH_SIZE"   // request body bytes
	envBenchChunks = "INFERGW_EXTPROC_BENCH_CHUNKS" // request body chunks
	envBenchConc   = "INFERGW_EXTPROC_BENCH_CONC"   // requests in flight at once (streams)
)

// benchWarmup requests are driven by the child before it says ready, so connection setup
// and first-use allocations stay out of the measurement.
const benchWarmup = 50

func TestMain(m *testing.M) {
	if addr := os.Getenv(envBenchClient); addr != "" {
		if err := runBenchClient(addr, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench client:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// processCPU is this process's user+system CPU time (its children excluded).
func processCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// benchExchange is the Envoy side of one full request: the message sequence Envoy sends in
// FULL_DUPLEX_STREAMED mode, in Envoy's bursts (envoyLikeClient), with the picker's
// answers checked.
type benchExchange struct {
	client *envoyLikeClient
	body   []byte
	parts  [][]byte
	sse    []byte
}

func newBenchExchange(client *envoyLikeClient, size, chunks int) *benchExchange {
	body := chatRequest("base", size)
	return &benchExchange{client: client, body: body, parts: splitN(body, chunks), sse: []byte(sseResponse("base"))}
}

const benchAnswerTimeout = 20 * time.Second

func (e *benchExchange) run() error {
	// Envoy writes the request headers and the body it has read in one burst.
	first := append([]proto.Message{benchRequestHeaders(len(e.body))}, asMessages(reqBodies(e.parts))...)
	st, id, err := e.client.open(first...)
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	r, err := st.recv(benchAnswerTimeout)
	if err != nil || r.GetRequestHeaders() == nil {
		return fmt.Errorf("headers answer: %v %w", r, err)
	}
	if r.GetRequestHeaders().GetResponse().GetHeaderMutation() == nil || r.GetDynamicMetadata() == nil {
		return fmt.Errorf("headers answer carries no pick: %v", r)
	}
	for got := 0; ; {
		r, err := st.recv(benchAnswerTimeout)
		if err != nil {
			return fmt.Errorf("body answer: %w", err)
		}
		sb := r.GetRequestBody().GetResponse().GetBodyMutation().GetStreamedResponse()
		got += len(sb.GetBody())
		if sb.GetEndOfStream() {
			if got != len(e.body) {
				return fmt.Errorf("got %d body bytes back, sent %d", got, len(e.body))
			}
			break
		}
	}
	if err := e.client.send(id, st, benchResponseHeaders()); err != nil {
		return fmt.Errorf("send response headers: %w", err)
	}
	if r, err := st.recv(benchAnswerTimeout); err != nil || r.GetResponseHeaders() == nil {
		return fmt.Errorf("response headers answer: %v %w", r, err)
	}
	if err := e.client.send(id, st, respBody(e.sse, true)); err != nil {
		return fmt.Errorf("send response body: %w", err)
	}
	if r, err := st.recv(benchAnswerTimeout); err != nil || r.GetResponseBody() == nil {
		return fmt.Errorf("response body answer: %v %w", r, err)
	}
	// The HTTP exchange is over: Envoy resets the ext_proc stream.
	if err := e.client.reset(id); err != nil {
		return fmt.Errorf("reset stream: %w", err)
	}
	return nil
}

func asMessages(reqs []*extprocv3.ProcessingRequest) []proto.Message {
	out := make([]proto.Message, len(reqs))
	for i, r := range reqs {
		out[i] = r
	}
	return out
}

// benchRequestHeaders are the request headers Envoy forwards for a chat completion sent by
// the OpenAI Python SDK (its x-stainless-* set included), plus the ones Envoy adds: the
// benchmark pays for decoding a realistic header list, not two headers.
func benchRequestHeaders(bodyLen int) *extprocv3.ProcessingRequest {
	return reqHeaders(protocol(duplex, duplex), false,
		":authority", "gateway.example.com:8080", ":path", "/v1/chat/completions", ":method", "POST",
		":scheme", "http", "accept", "application/json", "accept-encoding", "gzip, deflate",
		"authorization", "Bearer sk-0123456789abcdef0123456789abcdef", "content-type", "application/json",
		"content-length", strconv.Itoa(bodyLen), "user-agent", "OpenAI/Python 1.54.0",
		"x-stainless-arch", "x64", "x-stainless-async", "false", "x-stainless-lang", "python",
		"x-stainless-os", "Linux", "x-stainless-package-version", "1.54.0",
		"x-stainless-retry-count", "0", "x-stainless-runtime", "CPython",
		"x-stainless-runtime-version", "3.12.3", "x-forwarded-proto", "http",
		"x-request-id", "6f1c1a52-7f53-4a8e-9a7e-3f2f5d0f6e21")
}

// benchResponseHeaders are vLLM's streaming response headers as Envoy forwards them.
func benchResponseHeaders() *extprocv3.ProcessingRequest {
	return respHeaders(false, ":status", "200", "content-type", "text/event-stream; charset=utf-8",
		"date", "Fri, 27 Nov 2026 23:00:00 GMT", "server", "uvicorn",
		"x-envoy-upstream-service-time", "3")
}

// runBenchClient is the child process's whole job.
func runBenchClient(addr string, in io.Reader, out io.Writer) error {
	size, err := strconv.Atoi(os.Getenv(envBenchSize))
	if err != nil {
		return fmt.Errorf("%s: %w", envBenchSize, err)
	}
	chunks, err := strconv.Atoi(os.Getenv(envBenchChunks))
	if err != nil {
		return fmt.Errorf("%s: %w", envBenchChunks, err)
	}
	conc, err := strconv.Atoi(os.Getenv(envBenchConc))
	if err != nil || conc < 1 {
		return fmt.Errorf("%s: %q is not a positive number", envBenchConc, os.Getenv(envBenchConc))
	}
	client, err := dialEnvoyLike(addr)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer client.Close()
	e := newBenchExchange(client, size, chunks)
	for i := 0; i < benchWarmup; i++ {
		if err := e.run(); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	if _, err := fmt.Fprintln(out, "ready"); err != nil {
		return err
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		n, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "run "))
		if err != nil {
			return fmt.Errorf("bad command %q: %w", sc.Text(), err)
		}
		c0, err := processCPU()
		if err != nil {
			return err
		}
		if err := runConcurrently(e, n, conc); err != nil {
			return err
		}
		c1, err := processCPU()
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(out, "done %d\n", int64(c1-c0)); err != nil {
			return err
		}
	}
	return sc.Err()
}

// runConcurrently drives n requests from conc goroutines, each running one stream at a
// time, and returns the first error.
func runConcurrently(e *benchExchange, n, conc int) error {
	var next atomic.Int64
	errs := make(chan error, conc)
	for w := 0; w < conc; w++ {
		go func() {
			for {
				i := next.Add(1)
				if i > int64(n) {
					errs <- nil
					return
				}
				if err := e.run(); err != nil {
					errs <- fmt.Errorf("request %d: %w", i, err)
					return
				}
			}
		}()
	}
	var first error
	for w := 0; w < conc; w++ {
		if err := <-errs; err != nil && first == nil {
			first = err
			next.Store(int64(n)) // stop the other workers after their current request
		}
	}
	return first
}
