package xds

import (
	"encoding/json"
	"testing"

	"github.com/infergw/infergw/internal/modelroute"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corev1 "k8s.io/api/core/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	infv1 "github.com/infergw/infergw/api/v1"
	"github.com/infergw/infergw/discovery"
)

// modelMatch is a GIE body-based-routing match: path prefix and X-Gateway-Model-Name (or,
// with base, X-Gateway-Base-Model-Name).
func modelMatch(path, model string, base bool) gwapiv1.HTTPRouteMatch {
	name := gwapiv1.HTTPHeaderName("X-Gateway-Model-Name")
	if base {
		name = "X-Gateway-Base-Model-Name"
	}
	return gwapiv1.HTTPRouteMatch{
		Path:    &gwapiv1.HTTPPathMatch{Type: ptr(gwapiv1.PathMatchPathPrefix), Value: ptr(path)},
		Headers: []gwapiv1.HTTPHeaderMatch{{Name: name, Value: model}},
	}
}

// manyModels is the HTTPRoute GIE's BBR guide has users write: one rule per model, each
// matching X-Gateway-Model-Name (the llama rule on the base-model header, so adapters of
// it follow), three pools behind one picker, a canary split on the qwen rule.
func manyModels(port int32, pickerPort int32) *discovery.Snapshot {
	rt := httpRoute("models", "infergw",
		gwapiv1.HTTPRouteRule{Matches: []gwapiv1.HTTPRouteMatch{modelMatch("/", "meta-llama/Llama-3.1-8B-Instruct", false), modelMatch("/", "meta-llama/Llama-3.1-8B-Instruct", true)},
			BackendRefs: []gwapiv1.HTTPBackendRef{poolRef("llama", 1)}},
		gwapiv1.HTTPRouteRule{Matches: []gwapiv1.HTTPRouteMatch{modelMatch("/", "Qwen/Qwen2.5-1.5B-Instruct", false)},
			BackendRefs: []gwapiv1.HTTPBackendRef{poolRef("qwen", 3), poolRef("qwen-canary", 1)}},
		gwapiv1.HTTPRouteRule{Matches: []gwapiv1.HTTPRouteMatch{modelMatch("/v1/embeddings", "BAAI/bge-small-en-v1.5", false)},
			BackendRefs: []gwapiv1.HTTPBackendRef{poolRef("embed", 1)}},
	)
	return &discovery.Snapshot{
		Version:    1,
		Gateways:   []*gwapiv1.Gateway{gateway("infergw", 8080, "")},
		HTTPRoutes: []*gwapiv1.HTTPRoute{rt},
		Pools: []*discovery.Pool{
			pool("embed", "epp", pickerPort, infv1.EndpointPickerFailClose, port, 6, 1),
			pool("llama", "epp", pickerPort, infv1.EndpointPickerFailClose, port, 2, 2),
			pool("qwen", "epp", pickerPort, infv1.EndpointPickerFailClose, port, 4, 1),
			pool("qwen-canary", "epp", pickerPort, infv1.EndpointPickerFailClose, port, 5, 1),
		},
		Services: []*corev1.Service{service("epp", "127.0.0.1", pickerPort)},
	}
}

// withoutGatewayRoutes drops the routes the gateway adds on its own (GET /v1/models).
func withoutGatewayRoutes(rs []*routev3.Route) []*routev3.Route {
	var out []*routev3.Route
	for _, r := range rs {
		if !strings.HasPrefix(r.GetName(), "list-models/") {
			out = append(out, r)
		}
	}
	return out
}

func decodeTable(t *testing.T, enc string) modelroute.Table {
	t.Helper()
	var tbl modelroute.Table
	if err := json.Unmarshal([]byte(enc), &tbl); err != nil {
		t.Fatal(err)
	}
	return tbl
}
