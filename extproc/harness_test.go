package extproc

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	infv1 "github.com/infergw/infergw/api/v1"
	infv1alpha2 "github.com/infergw/infergw/api/v1alpha2"
	"github.com/infergw/infergw/discovery"
	"github.com/infergw/infergw/router"
)

// backend is a real HTTP model server on a 127.0.0.x address serving vLLM-style
// /metrics and /v1/models; the router scrapes it.
type backend struct {
	srv     *httptest.Server
	ip      string
	port    int
	waiting atomic.Int64
	models  []string
}

func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/metrics":
		fmt.Fprintf(w, "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name=\"base\"} %d\n", b.waiting.Load())
		fmt.Fprintf(w, "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name=\"base\"} 1\n")
		fmt.Fprintf(w, "# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{model_name=\"base\"} 0.25\n")
	case "/v1/models":
		var parts []string
		for _, m := range b.models {
			parts = append(parts, fmt.Sprintf(`{"id":%q,"object":"model"}`, m))
		}
		fmt.Fprintf(w, `{"object":"list","data":[%s]}`, strings.Join(parts, ","))
	default:
		http.NotFound(w, r)
	}
}

// startBackends starts one backend per IP, all on the same port (a pool has one target
// port), retrying with another port if one is taken on some address.
func startBackends(t testing.TB, ips []string, models []string) []*backend {
	t.Helper()
	for attempt := 0; attempt < 20; attempt++ {
		first, err := net.Listen("tcp", ips[0]+":0")
		if err != nil {
			t.Fatalf("listen on %s: %v", ips[0], err)
		}
		port := first.Addr().(*net.TCPAddr).Port
		lis := []net.Listener{first}
		ok := true
		for _, ip := range ips[1:] {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			lis = append(lis, l)
		}
		if !ok {
			for _, l := range lis {
				l.Close()
			}
			continue
		}
		var out []*backend
		for i, l := range lis {
			b := &backend{ip: ips[i], port: port, models: models}
			b.srv = httptest.NewUnstartedServer(b)
			b.srv.Listener.Close()
			b.srv.Listener = l
			b.srv.Start()
			t.Cleanup(b.srv.Close)
			out = append(out, b)
		}
		return out
	}
	t.Fatal("no common free port for the backends")
	return nil
}

func (b *backend) addr() string { return net.JoinHostPort(b.ip, strconv.Itoa(b.port)) }

func testPool(ns, name string, port int, bes []*backend) *discovery.Pool {
	p := &discovery.Pool{InferencePool: &infv1.InferencePool{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: infv1.InferencePoolSpec{
			TargetPorts:       []infv1.Port{{Number: infv1.PortNumber(port)}},
			EndpointPickerRef: infv1.EndpointPickerRef{Name: "picker"},
		},
	}}
	for i, b := range bes {
		p.Endpoints = append(p.Endpoints, discovery.Endpoint{
			Name: fmt.Sprintf("%s-%d", name, i), Namespace: ns, IP: b.ip,
			Labels: map[string]string{"app": name},
		})
	}
	return p
}

// harness is a picker on a real gRPC server over a real router and real backends.
type harness struct {
	t       testing.TB
	srv     *Server
	router  *router.Router
	reg     *prometheus.Registry
	client  extprocv3.ExternalProcessorClient
	conn    *grpc.ClientConn
	metrics *httptest.Server
	main    []*backend // pool default/main
	hot     []*backend // pool default/hot (saturated)
}

const (
	poolMain  = "default/main"
	poolHot   = "default/hot"
	poolEmpty = "default/empty"
)

// forEachTransport runs a protocol test once per gRPC transport: the inline default and
// the grpc-go fallback must behave the same.
func forEachTransport(t *testing.T, test func(t *testing.T, tr Transport)) {
	for _, tr := range []Transport{TransportInline, TransportGRPCGo} {
		t.Run(string(tr), func(t *testing.T) { test(t, tr) })
	}
}

// newHarness builds the harness; log, when given, receives the picker's logs.
func newHarness(t testing.TB, opts Options, log ...*slog.Logger) *harness {
	t.Helper()
	return newHarnessWith(t, opts, nil, log...)
}

// newHarnessWith is newHarness with the router's config changed by mutate first.
func newHarnessWith(t testing.TB, opts Options, mutate func(*router.Config), log ...*slog.Logger) *harness {
	t.Helper()
	h := &harness{t: t, reg: prometheus.NewRegistry()}
	h.main = startBackends(t, []string{"127.0.0.2", "127.0.0.3"}, []string{"base", "lora-a", "lora-b"})
	h.hot = startBackends(t, []string{"127.0.0.4"}, []string{"base"})
	h.hot[0].waiting.Store(100)

	cfg := router.DefaultConfig()
	cfg.ModelsRefresh = 200 * time.Millisecond
	if mutate != nil {
		mutate(&cfg)
	}
	r, err := router.New(cfg, nil, h.reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	h.router = r
	opts.Registerer = h.reg
	if opts.DefaultPool == "" {
		opts.DefaultPool = poolMain
	}
	var logger *slog.Logger
	if len(log) > 0 {
		logger = log[0]
	}
	h.srv, err = NewServer(r, opts, logger)
	if err != nil {
		t.Fatal(err)
	}
	prio := -1
	weight90, weight10 := int32(1), int32(0)
	h.srv.ApplySnapshot(&discovery.Snapshot{
		Version: 1,
		Pools: []*discovery.Pool{
			testPool("default", "empty", h.main[0].port, nil),
			testPool("default", "hot", h.hot[0].port, h.hot),
			testPool("default", "main", h.main[0].port, h.main),
		},
		Objectives: []*infv1alpha2.InferenceObjective{
			{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "batch"},
				Spec: infv1alpha2.InferenceObjectiveSpec{Priority: &prio, PoolRef: infv1alpha2.PoolObjectReference{Name: "hot"}}},
		},
		Rewrites: []*infv1alpha2.InferenceModelRewrite{
			{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "canary"},
				Spec: infv1alpha2.InferenceModelRewriteSpec{
					PoolRef: infv1alpha2.PoolObjectReference{Name: "main"},
					Rules: []infv1alpha2.InferenceModelRewriteRule{{
						Matches: []infv1alpha2.Match{{Model: infv1alpha2.ModelMatch{Value: "friendly"}}},
						Targets: []infv1alpha2.TargetModel{{ModelRewrite: "lora-a", Weight: &weight90}, {ModelRewrite: "lora-b", Weight: &weight10}},
					}},
				}},
		},
	})

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g, err := h.srv.NewGRPCServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- g.Serve(lis) }()
	t.Cleanup(func() {
		g.Close()
		if err := <-served; err != nil {
			t.Errorf("grpc server: %v", err)
		}
	})
	// Larger flow-control windows than grpc-go's 64 KiB default, closer to what Envoy uses
	// (its HTTP/2 defaults are 256 MiB per stream and per connection).
	h.conn, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(1<<20), grpc.WithInitialConnWindowSize(4<<20),
		grpc.WithWriteBufferSize(128<<10), grpc.WithReadBufferSize(128<<10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.conn.Close() })
	h.client = extprocv3.NewExternalProcessorClient(h.conn)
	h.metrics = httptest.NewServer(h.srv.MetricsHandler(h.reg))
	t.Cleanup(h.metrics.Close)

	// Wait (bounded) until the router has scraped every endpoint and learnt the models.
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, hot := h.router.PoolStats(poolMain), h.router.PoolStats(poolHot)
		if m.Ready == 2 && hot.Ready == 1 && !h.router.ServesModel(poolMain, "nope") && !h.router.ServesModel(poolHot, "nope") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("router not ready: main %+v hot %+v", m, hot)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return h
}

// stream opens one ext_proc stream, with the pools metadata when pools is not empty.
func (h *harness) stream(pools string) extprocv3.ExternalProcessor_ProcessClient {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	h.t.Cleanup(cancel)
	if pools != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, MetadataPools, pools)
	}
	st, err := h.client.Process(ctx)
	if err != nil {
		h.t.Fatalf("open stream: %v", err)
	}
	return st
}

func hdrs(kv ...string) *corev3.HeaderMap {
	m := &corev3.HeaderMap{}
	for i := 0; i+1 < len(kv); i += 2 {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return m
}

func protocol(req, resp extprocfilterv3.ProcessingMode_BodySendMode) *extprocv3.ProtocolConfiguration {
	return &extprocv3.ProtocolConfiguration{RequestBodyMode: req, ResponseBodyMode: resp}
}

func reqHeaders(pc *extprocv3.ProtocolConfiguration, eos bool, kv ...string) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{
		ProtocolConfig: pc,
		Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers: hdrs(kv...), EndOfStream: eos}},
	}
}

func reqBody(b []byte, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
		RequestBody: &extprocv3.HttpBody{Body: b, EndOfStream: eos}}}
}

func respHeaders(eos bool, kv ...string) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocv3.HttpHeaders{Headers: hdrs(kv...), EndOfStream: eos}}}
}

func respBody(b []byte, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
		ResponseBody: &extprocv3.HttpBody{Body: b, EndOfStream: eos}}}
}

func send(t *testing.T, st extprocv3.ExternalProcessor_ProcessClient, msgs ...*extprocv3.ProcessingRequest) {
	t.Helper()
	for _, m := range msgs {
		if err := st.Send(m); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
}

func recv(t *testing.T, st extprocv3.ExternalProcessor_ProcessClient) *extprocv3.ProcessingResponse {
	t.Helper()
	r, err := st.Recv()
	if err != nil {
		t.Fatalf("recv: %v", err)
	}
	return r
}

// setHeaders flattens a header mutation.
func setHeaders(m *extprocv3.HeaderMutation) map[string]string {
	out := map[string]string{}
	for _, h := range m.GetSetHeaders() {
		out[h.GetHeader().GetKey()] = string(h.GetHeader().GetRawValue())
	}
	return out
}

// recvStreamedBody reads streamed body responses until end_of_stream (or until want bytes
// when eos is not expected) and checks the chunk bound.
func recvStreamedBody(t *testing.T, st extprocv3.ExternalProcessor_ProcessClient, request, expectEOS bool, want int) []byte {
	t.Helper()
	var out []byte
	for {
		r := recv(t, st)
		var br *extprocv3.BodyResponse
		if request {
			br = r.GetRequestBody()
		} else {
			br = r.GetResponseBody()
		}
		if br == nil {
			t.Fatalf("expected a body response, got %T", r.GetResponse())
		}
		sb := br.GetResponse().GetBodyMutation().GetStreamedResponse()
		if sb == nil {
			t.Fatalf("expected a streamed body mutation, got %v", br)
		}
		if len(sb.GetBody()) > MaxChunkBytes {
			t.Fatalf("chunk of %d bytes exceeds %d", len(sb.GetBody()), MaxChunkBytes)
		}
		out = append(out, sb.GetBody()...)
		if sb.GetEndOfStream() {
			if !expectEOS {
				t.Fatal("unexpected end_of_stream on body")
			}
			return out
		}
		if !expectEOS && len(out) >= want {
			return out
		}
	}
}

// scrape reads /metrics with the real Prometheus text parser.
func (h *harness) scrape() map[string]*dto.MetricFamily {
	h.t.Helper()
	resp, err := http.Get(h.metrics.URL + "/metrics")
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(raw)))
	if err != nil {
		h.t.Fatalf("parse metrics: %v", err)
	}
	return fams
}

// metricValue finds the sample of family name whose labels include want; counters, gauges
// and histogram sample counts (with sum) are returned.
func metricValue(fams map[string]*dto.MetricFamily, name string, want map[string]string) (value, sum float64, found bool) {
	mf := fams[name]
	if mf == nil {
		return 0, 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), 0, true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), 0, true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), m.GetHistogram().GetSampleSum(), true
		}
	}
	return 0, 0, false
}

// reqBodies is one body message per part, the last one ending the stream.
func reqBodies(parts [][]byte) []*extprocv3.ProcessingRequest {
	out := make([]*extprocv3.ProcessingRequest, len(parts))
	for i, p := range parts {
		out[i] = reqBody(p, i == len(parts)-1)
	}
	return out
}
