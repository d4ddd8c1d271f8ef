package xds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	corev1 "k8s.io/api/core/v1"

	infv1 "github.com/infergw/infergw/api/v1"
	"github.com/infergw/infergw/discovery"
)

// testPicker is a minimal ext_proc server speaking the endpoint-picker protocol, so that this
// package can prove that Envoy honours a picker's choice with the generated config. It is a
// stand-in only because the real picker (extproc/) is another package that must not be a
// dependency of xds; it picks what the client asks for in test headers:
// x-test-endpoint (ip:port), x-test-pool (ns/name) and x-test-mode ("metadata" sends the
// choice only as envoy.lb dynamic metadata, otherwise only as the header).
type testPicker struct {
	extprocsvc.UnimplementedExternalProcessorServer
	mu    sync.Mutex
	pools []string // x-infergw-pools metadata of each stream
}

func (p *testPicker) Process(stream extprocsvc.ExternalProcessor_ProcessServer) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	p.mu.Lock()
	p.pools = append(p.pools, strings.Join(md.Get(MetadataPools), ","))
	p.mu.Unlock()
	// Bodies not in FULL_DUPLEX_STREAMED mode (BUFFERED requests, STREAMED responses) are
	// answered message by message, unchanged.
	duplexRequest, duplexResponse := true, true
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if pc := req.GetProtocolConfig(); pc != nil {
			duplexRequest = pc.GetRequestBodyMode() == extprocv3.ProcessingMode_FULL_DUPLEX_STREAMED
			duplexResponse = pc.GetResponseBodyMode() == extprocv3.ProcessingMode_FULL_DUPLEX_STREAMED
		}
		resp := &extprocsvc.ProcessingResponse{}
		switch r := req.GetRequest().(type) {
		case *extprocsvc.ProcessingRequest_RequestHeaders:
			resp.Response, resp.DynamicMetadata = p.choose(r.RequestHeaders)
		case *extprocsvc.ProcessingRequest_RequestBody:
			body := echoBody(r.RequestBody)
			if !duplexRequest {
				body = &extprocsvc.BodyResponse{}
			}
			resp.Response = &extprocsvc.ProcessingResponse_RequestBody{RequestBody: body}
		case *extprocsvc.ProcessingRequest_RequestTrailers:
			resp.Response = &extprocsvc.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocsvc.TrailersResponse{}}
		case *extprocsvc.ProcessingRequest_ResponseHeaders:
			resp.Response = &extprocsvc.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocsvc.HeadersResponse{}}
		case *extprocsvc.ProcessingRequest_ResponseBody:
			body := echoBody(r.ResponseBody)
			if !duplexResponse {
				body = &extprocsvc.BodyResponse{}
			}
			resp.Response = &extprocsvc.ProcessingResponse_ResponseBody{ResponseBody: body}
		case *extprocsvc.ProcessingRequest_ResponseTrailers:
			resp.Response = &extprocsvc.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocsvc.TrailersResponse{}}
		default:
			continue
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

func (p *testPicker) choose(h *extprocsvc.HttpHeaders) (*extprocsvc.ProcessingResponse_RequestHeaders, *structpb.Struct) {
	get := func(name string) string {
		for _, hv := range h.GetHeaders().GetHeaders() {
			if hv.GetKey() == name {
				return string(hv.GetRawValue()) + hv.GetValue()
			}
		}
		return ""
	}
	endpoint, pool, mode := get("x-test-endpoint"), get("x-test-pool"), get("x-test-mode")
	set := []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: HeaderPool, RawValue: []byte(pool)}}}
	var md *structpb.Struct
	if mode == "metadata" {
		md, _ = structpb.NewStruct(map[string]any{MetadataNamespaceLB: map[string]any{HeaderDestinationEndpoint: endpoint}})
	} else {
		set = append(set, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: HeaderDestinationEndpoint, RawValue: []byte(endpoint)}})
	}
	return &extprocsvc.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocsvc.HeadersResponse{Response: &extprocsvc.CommonResponse{
		HeaderMutation:  &extprocsvc.HeaderMutation{SetHeaders: set},
		ClearRouteCache: true,
	}}}, md
}

// servePickerHealth registers the grpc.health.v1 service a real picker serves, reporting
// its ext_proc service SERVING: Envoy health-checks picker clusters against it.
func servePickerHealth(g *grpc.Server) {
	hs := health.NewServer()
	hs.SetServingStatus(pickerReadinessService, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(g, hs)
}

// echoBody hands a FULL_DUPLEX_STREAMED chunk back unchanged.
func echoBody(b *extprocsvc.HttpBody) *extprocsvc.BodyResponse {
	return &extprocsvc.BodyResponse{Response: &extprocsvc.CommonResponse{BodyMutation: &extprocsvc.BodyMutation{
		Mutation: &extprocsvc.BodyMutation_StreamedResponse{StreamedResponse: &extprocsvc.StreamedBodyResponse{Body: b.GetBody(), EndOfStream: b.GetEndOfStream()}},
	}}}
}

// TestRealEnvoyFollowsPickerChoice: two pools behind one weighted route; whatever pool and
// endpoint the picker names (by header or by envoy.lb metadata), Envoy re-matches to that
// pool's route and sends the request to exactly that endpoint.
func TestRealEnvoyFollowsPickerChoice(t *testing.T) {
	bin := envoyBinary(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	port := backends(t, "127.0.0.2", "127.0.0.3", "127.0.0.4")
	picker := &testPicker{}
	plis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	extprocsvc.RegisterExternalProcessorServer(g, picker)
	servePickerHealth(g)
	go g.Serve(plis)
	defer g.Stop()
	pickerPort := int32(plis.Addr().(*net.TCPAddr).Port)

	listenPort := freePort(t, "127.0.0.1")
	snap := &discovery.Snapshot{
		Version:  1,
		Gateways: []*gwapiv1.Gateway{gateway("infergw", listenPort, "")},
		HTTPRoutes: []*gwapiv1.HTTPRoute{httpRoute("llm", "infergw", gwapiv1.HTTPRouteRule{
			Matches: prefix("/v1"), BackendRefs: []gwapiv1.HTTPBackendRef{poolRef("a", 50), poolRef("b", 50)},
		})},
		Pools: []*discovery.Pool{
			pool("a", "epp", pickerPort, infv1.EndpointPickerFailClose, port, 2, 2),
			pool("b", "epp", pickerPort, infv1.EndpointPickerFailClose, port, 4, 1),
		},
		Services: []*corev1.Service{service("epp", "127.0.0.1", pickerPort)},
	}
	_, env := serveToEnvoy(ctx, t, bin, Options{ListenerAddress: "127.0.0.1"}, snap, listenPort)

	cases := []struct{ pool, ip, mode string }{
		{"default/a", "127.0.0.3", "header"},
		{"default/a", "127.0.0.2", "metadata"},
		{"default/b", "127.0.0.4", "header"},
		{"default/b", "127.0.0.4", "metadata"},
	}
	client := &http.Client{Timeout: 5 * time.Second}
	for _, c := range cases {
		want := fmt.Sprintf("%s:%d", c.ip, port)
		for i := 0; i < 4; i++ { // the weighted first match must not matter
			req, _ := http.NewRequest(http.MethodPost, "http://"+env.listen+"/v1/completions", strings.NewReader(`{"model":"m","prompt":"hi"}`))
			req.Header.Set("x-test-endpoint", want)
			req.Header.Set("x-test-pool", c.pool)
			req.Header.Set("x-test-mode", c.mode)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("x-sim-instance") != want || resp.Header.Get(HeaderUpstream) != want {
				t.Fatalf("%s via %s: status %d, instance %q, upstream %q, body %q", want, c.mode, resp.StatusCode,
					resp.Header.Get("x-sim-instance"), resp.Header.Get(HeaderUpstream), body)
			}
		}
	}
	picker.mu.Lock()
	defer picker.mu.Unlock()
	if len(picker.pools) == 0 || picker.pools[0] != "default/a=50,default/b=50" {
		t.Errorf("picker saw x-infergw-pools %q", picker.pools)
	}
}
