package extproc

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/metadata"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	infv1 "github.com/infergw/infergw/api/v1"
	"github.com/infergw/infergw/discovery"
	"github.com/infergw/infergw/internal/modelroute"
)

// streamWith opens a stream carrying the given gRPC metadata (key, value pairs).
func (h *harness) streamWith(kv ...string) extprocv3.ExternalProcessor_ProcessClient {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	h.t.Cleanup(cancel)
	st, err := h.client.Process(metadata.AppendToOutgoingContext(ctx, kv...))
	if err != nil {
		h.t.Fatalf("open stream: %v", err)
	}
	return st
}

// TestBodyRouting: with a model route table in the stream's metadata the picker picks in
// the pools of the first route the body's model matches (by X-Gateway-Model-Name, or by
// the base model for an adapter), sets the model headers for Envoy's re-match, answers 404
// model_not_found for a model no route names, and lets a route that is not its own pass
// with the headers set and no pick.
func TestBodyRouting(t *testing.T) { forEachTransport(t, testBodyRouting) }

func testBodyRouting(t *testing.T, tr Transport) {
	h := newHarness(t, Options{Transport: tr})
	// The fake servers list adapters without a parent (as engines other than vLLM do); the
	// configured mapping names lora-a's base.
	st := *h.srv.state.Load()
	st.baseModels = map[string]string{"lora-a": "base"}
	h.srv.state.Store(&st)
	table, err := modelroute.Encode(modelroute.Table{Routes: []modelroute.Route{
		{Model: []modelroute.Cond{{Exact: "base"}}, Pools: poolHot},
		{Base: []modelroute.Cond{{Exact: "base"}}, Pools: poolMain},
		{Model: []modelroute.Cond{{Regex: "svc-.*"}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	ask := func(model string) *extprocv3.ProcessingResponse {
		s := h.streamWith(modelroute.MetadataTable, table)
		send(t, s, reqHeaders(protocol(duplex, duplex), false, ":path", "/v1/completions"),
			reqBody([]byte(`{"model":"`+model+`","prompt":"x"}`), true))
		return recv(t, s)
	}

	r := ask("base")
	set := setHeaders(r.GetRequestHeaders().GetResponse().GetHeaderMutation())
	if set[HeaderDestination] != h.hot[0].addr() || set[modelroute.HeaderModelName] != "base" || !r.GetRequestHeaders().GetResponse().GetClearRouteCache() {
		t.Fatalf("model base: headers %v, want the hot pool and %s: base", set, modelroute.HeaderModelName)
	}
	if _, ok := set[modelroute.HeaderBaseModelName]; ok {
		t.Errorf("a base model got %s %q", modelroute.HeaderBaseModelName, set[modelroute.HeaderBaseModelName])
	}

	r = ask("lora-a")
	set = h.checkDestination(r, r.GetRequestHeaders().GetResponse())
	if set[modelroute.HeaderModelName] != "lora-a" || set[modelroute.HeaderBaseModelName] != "base" {
		t.Fatalf("adapter: headers %v, want model lora-a and base base", set)
	}

	r = ask("nope")
	if imm := r.GetImmediateResponse(); imm.GetStatus().GetCode() != 404 || !strings.Contains(string(imm.GetBody()), `"model_not_found"`) {
		t.Fatalf("unknown model: %v", r)
	}

	r = ask("svc-model")
	set = setHeaders(r.GetRequestHeaders().GetResponse().GetHeaderMutation())
	if set[modelroute.HeaderModelName] != "svc-model" || set[HeaderDestination] != "" || !r.GetRequestHeaders().GetResponse().GetClearRouteCache() {
		t.Fatalf("pass-through: headers %v, want the model header, no destination, route cache cleared", set)
	}

	// A GET (no body, no model) matches no route that needs a model: Envoy's "no route" 404.
	g := h.streamWith(modelroute.MetadataTable, table)
	send(t, g, reqHeaders(protocol(duplex, duplex), true, ":path", "/health", ":method", "GET"))
	if imm := recv(t, g).GetImmediateResponse(); imm.GetStatus().GetCode() != 404 || !strings.Contains(string(imm.GetBody()), `"not_found"`) {
		t.Fatalf("bodiless GET: %v", imm)
	}

	// A table the picker cannot read is the proxy's fault: 500, never a pick.
	s := h.streamWith(modelroute.MetadataTable, `{"routes":[{"model":[{"regex":"("}]}]}`)
	send(t, s, reqHeaders(protocol(duplex, duplex), false, ":path", "/v1/completions"), reqBody([]byte(`{"model":"base","prompt":"x"}`), true))
	if got := recv(t, s).GetImmediateResponse().GetStatus().GetCode(); got != 500 {
		t.Fatalf("bad table: status %d, want 500", got)
	}
}

// TestGatewayListsModels: GET /v1/models on the route the control plane marks is answered
// by the picker: the union of the route's pools' model lists and rewrite aliases, each once.
func TestGatewayListsModels(t *testing.T) { forEachTransport(t, testGatewayListsModels) }

func testGatewayListsModels(t *testing.T, tr Transport) {
	h := newHarness(t, Options{Transport: tr})
	s := h.streamWith(modelroute.MetadataListModels, poolMain+","+poolHot)
	send(t, s, reqHeaders(protocol(duplex, duplex), true, ":path", "/v1/models", ":method", "GET"))
	imm := recv(t, s).GetImmediateResponse()
	if imm.GetStatus().GetCode() != 200 {
		t.Fatalf("status %d, body %s", imm.GetStatus().GetCode(), imm.GetBody())
	}
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID     string `json:"id"`
			Object string `json:"object"`
		} `json:"data"`
	}
	if err := json.Unmarshal(imm.GetBody(), &list); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range list.Data {
		ids = append(ids, m.ID)
		if m.Object != "model" {
			t.Errorf("%s: object %q", m.ID, m.Object)
		}
	}
	// main lists base, lora-a, lora-b; hot lists base; main's rewrite accepts "friendly".
	if got := strings.Join(ids, ","); list.Object != "list" || got != "base,friendly,lora-a,lora-b" {
		t.Fatalf("models %q (object %q), want base,friendly,lora-a,lora-b", got, list.Object)
	}
}

// TestBaseModelsAnnotation: the configured adapter → base mapping is read from every pool,
// malformed items are skipped, the first pool naming an adapter wins.
func TestBaseModelsAnnotation(t *testing.T) {
	s, err := NewServer(noopRouter{}, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pool := func(name, ann string) *discovery.Pool {
		return &discovery.Pool{InferencePool: &infv1.InferencePool{ObjectMeta: metav1.ObjectMeta{
			Namespace: "ns", Name: name, Annotations: map[string]string{AnnotationBaseModels: ann}}}}
	}
	got := s.baseModelsOf(&discovery.Snapshot{Pools: []*discovery.Pool{
		pool("a", " lora-1 = llama , bad, =x, y=, lora-2=llama"),
		pool("b", "lora-1=qwen,lora-3=qwen"),
	}})
	want := map[string]string{"lora-1": "llama", "lora-2": "llama", "lora-3": "qwen"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

// TestTableCacheBounded: distinct tables (a proxy could send any number) never grow the
// cache past its bound, and a cached table is the same decoded value.
func TestTableCacheBounded(t *testing.T) {
	var c tableCache
	for i := 0; i < 3*maxCachedTables; i++ {
		enc := `{"routes":[{"model":[{"exact":"m` + strconv.Itoa(i) + `"}],"pools":"ns/p"}]}`
		if _, err := c.get(enc); err != nil {
			t.Fatal(err)
		}
		if n := len(c.tables); n > maxCachedTables {
			t.Fatalf("%d cached tables, over the bound %d", n, maxCachedTables)
		}
	}
	a, _ := c.get(`{"routes":[]}`)
	b, _ := c.get(`{"routes":[]}`)
	if a != b {
		t.Error("the same table decoded twice")
	}
}
