package extproc

import (
	"context"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/proto"

	"github.com/infergw/infergw/internal/modelroute"
)

// BenchmarkExchangeBodyRouting is BenchmarkExchange's 4 KB request with and without a
// model route table (examples/local's: three models, one base-model rule): what body-based
// routing adds to the picker's own work per request (table cache lookup, match, two more
// headers). The body is parsed once either way.
func BenchmarkExchangeBodyRouting(b *testing.B) {
	table, err := modelroute.Encode(modelroute.Table{Routes: []modelroute.Route{
		{Model: []modelroute.Cond{{Exact: "meta-llama/Llama-3.1-8B-Instruct"}}, Pools: poolHot},
		{Base: []modelroute.Cond{{Exact: "meta-llama/Llama-3.1-8B-Instruct"}}, Pools: poolHot},
		{Model: []modelroute.Cond{{Exact: "food-review"}}, Pools: poolHot},
		{Model: []modelroute.Cond{{Exact: "Qwen/Qwen2.5-1.5B-Instruct"}}, Pools: poolHot},
		{Model: []modelroute.Cond{{Exact: "base"}}, Pools: poolMain},
	}})
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name, table string
	}{{"plain", ""}, {"model-table", table}} {
		b.Run(tc.name, func(b *testing.B) {
			h := newHarness(b, Options{})
			body := chatRequest("base", 4<<10)
			sse := []byte(sseResponse("base"))
			var msgs [][]byte
			for _, m := range []*extprocv3.ProcessingRequest{benchRequestHeaders(len(body)), reqBody(body, true), benchResponseHeaders(), respBody(sse, true)} {
				raw, err := proto.Marshal(m)
				if err != nil {
					b.Fatal(err)
				}
				msgs = append(msgs, raw)
			}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			c0 := cpuTime(b)
			for i := 0; i < b.N; i++ {
				x := h.srv.newExchange(ctx)
				x.modelRoutes = tc.table
				if tc.table == "" {
					x.poolList = poolMain
				}
				for _, m := range msgs {
					if _, err := x.handle(m); err != nil {
						b.Fatal(err)
					}
				}
				if x.pool != poolMain || !x.completed || x.bodyRouted != (tc.table != "") {
					b.Fatalf("picked pool %q, completed %v, body-routed %v", x.pool, x.completed, x.bodyRouted)
				}
				x.finish()
			}
			cpu := cpuTime(b) - c0
			b.StopTimer()
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

// BenchmarkModelRouteLookup is the work body-based routing adds to a pick, alone: the
// cached table found by its metadata string, the model matched (the base-model rule
// resolved from the configured mapping) and the two headers set.
func BenchmarkModelRouteLookup(b *testing.B) {
	table, err := modelroute.Encode(modelroute.Table{Routes: []modelroute.Route{
		{Model: []modelroute.Cond{{Exact: "meta-llama/Llama-3.1-8B-Instruct"}}, Pools: "default/vllm-llama3-8b"},
		{Base: []modelroute.Cond{{Exact: "meta-llama/Llama-3.1-8B-Instruct"}}, Pools: "default/vllm-llama3-8b"},
		{Model: []modelroute.Cond{{Exact: "food-review"}}, Pools: "default/vllm-llama3-8b"},
		{Model: []modelroute.Cond{{Exact: "Qwen/Qwen2.5-1.5B-Instruct"}}, Pools: "default/vllm-qwen2-1p5b"},
		{Model: []modelroute.Cond{{Exact: "BAAI/bge-small-en-v1.5"}}, Pools: "default/embeddings-bge-small"},
	}})
	if err != nil {
		b.Fatal(err)
	}
	s, err := NewServer(noopRouter{}, Options{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	st := &routingState{baseModels: map[string]string{"food-review-1": "meta-llama/Llama-3.1-8B-Instruct"}}
	for _, model := range []string{"Qwen/Qwen2.5-1.5B-Instruct", "food-review-1"} {
		b.Run("model="+model, func(b *testing.B) {
			x := &exchange{s: s, modelRoutes: table, model: model}
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				x.bodyRouted, x.poolList = false, ""
				if pass, aerr := x.routeByModel(st); pass || aerr != nil || x.poolList == "" {
					b.Fatalf("routeByModel: %v %v %q", pass, aerr, x.poolList)
				}
				x.pickHdr.init()
				x.setModelHeaders(&x.pickHdr)
			}
		})
	}
}
