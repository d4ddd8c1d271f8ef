package xds

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	infv1 "github.com/infergw/infergw/api/v1"
	"github.com/infergw/infergw/discovery"
)

// Example snapshots, built the way discovery publishes them. They feed the golden tests, the
// real-Envoy test and the benchmark.

const ns = "default"

func ptr[T any](v T) *T { return &v }

func gateway(name string, port int32, hostname string) *gwapiv1.Gateway {
	l := gwapiv1.Listener{Name: "http", Port: port, Protocol: gwapiv1.HTTPProtocolType}
	if hostname != "" {
		l.Hostname = ptr(gwapiv1.Hostname(hostname))
	}
	return &gwapiv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       gwapiv1.GatewaySpec{GatewayClassName: "infergw", Listeners: []gwapiv1.Listener{l}},
	}
}

func poolRef(name string, weight int32) gwapiv1.HTTPBackendRef {
	return gwapiv1.HTTPBackendRef{BackendRef: gwapiv1.BackendRef{
		BackendObjectReference: gwapiv1.BackendObjectReference{
			Group: ptr(gwapiv1.Group("inference.networking.k8s.io")),
			Kind:  ptr(gwapiv1.Kind("InferencePool")),
			Name:  gwapiv1.ObjectName(name),
		},
		Weight: ptr(weight),
	}}
}

func serviceRef(name string, port int32) gwapiv1.HTTPBackendRef {
	return gwapiv1.HTTPBackendRef{BackendRef: gwapiv1.BackendRef{
		BackendObjectReference: gwapiv1.BackendObjectReference{Name: gwapiv1.ObjectName(name), Port: ptr(port)},
	}}
}

func prefix(p string) []gwapiv1.HTTPRouteMatch {
	return []gwapiv1.HTTPRouteMatch{{Path: &gwapiv1.HTTPPathMatch{Type: ptr(gwapiv1.PathMatchPathPrefix), Value: ptr(p)}}}
}

func httpRoute(name, gw string, rules ...gwapiv1.HTTPRouteRule) *gwapiv1.HTTPRoute {
	return &gwapiv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))},
		Spec: gwapiv1.HTTPRouteSpec{
			CommonRouteSpec: gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{{Name: gwapiv1.ObjectName(gw)}}},
			Rules:           rules,
		},
	}
}

// pool returns a pool of n endpoints 127.0.0.(first+i) on port, with picker Service picker.
func pool(name, picker string, pickerPort int32, mode infv1.EndpointPickerFailureMode, port int32, first, n int) *discovery.Pool {
	p := &discovery.Pool{InferencePool: &infv1.InferencePool{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: infv1.InferencePoolSpec{
			Selector:    infv1.LabelSelector{MatchLabels: map[infv1.LabelKey]infv1.LabelValue{"app": infv1.LabelValue(name)}},
			TargetPorts: []infv1.Port{{Number: infv1.PortNumber(port)}},
			EndpointPickerRef: infv1.EndpointPickerRef{
				Name: infv1.ObjectName(picker), Port: &infv1.Port{Number: infv1.PortNumber(pickerPort)}, FailureMode: mode,
			},
		},
	}}
	for i := 0; i < n; i++ {
		p.Endpoints = append(p.Endpoints, discovery.Endpoint{
			Name: fmt.Sprintf("%s-%d", name, i), Namespace: ns, IP: fmt.Sprintf("127.0.0.%d", first+i),
		})
	}
	return p
}

func service(name, clusterIP string, port int32) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{ClusterIP: clusterIP, Ports: []corev1.ServicePort{{Port: port}}},
	}
}

func onePool() *discovery.Snapshot {
	return &discovery.Snapshot{
		Version:    1,
		Gateways:   []*gwapiv1.Gateway{gateway("infergw", 8080, "")},
		HTTPRoutes: []*gwapiv1.HTTPRoute{httpRoute("llm", "infergw", gwapiv1.HTTPRouteRule{Matches: prefix("/v1"), BackendRefs: []gwapiv1.HTTPBackendRef{poolRef("llama", 1)}})},
		Pools:      []*discovery.Pool{pool("llama", "llama-epp", 9002, "", 8000, 2, 2)},
		Services:   []*corev1.Service{service("llama-epp", "127.0.0.1", 9002)},
	}
}

func twoPoolsWeighted() *discovery.Snapshot {
	return &discovery.Snapshot{
		Version:  1,
		Gateways: []*gwapiv1.Gateway{gateway("infergw", 8080, "")},
		HTTPRoutes: []*gwapiv1.HTTPRoute{httpRoute("llm", "infergw", gwapiv1.HTTPRouteRule{
			Matches: prefix("/v1"), BackendRefs: []gwapiv1.HTTPBackendRef{poolRef("llama", 80), poolRef("llama-canary", 20)},
		})},
		Pools: []*discovery.Pool{
			pool("llama", "epp", 9002, infv1.EndpointPickerFailClose, 8000, 2, 2),
			pool("llama-canary", "epp", 9002, infv1.EndpointPickerFailClose, 8000, 4, 1),
		},
		Services: []*corev1.Service{service("epp", "127.0.0.1", 9002)},
	}
}

func serviceBackend() *discovery.Snapshot {
	return &discovery.Snapshot{
		Version:  1,
		Gateways: []*gwapiv1.Gateway{gateway("infergw", 8080, "")},
		HTTPRoutes: []*gwapiv1.HTTPRoute{httpRoute("web", "infergw",
			gwapiv1.HTTPRouteRule{Matches: prefix("/"), BackendRefs: []gwapiv1.HTTPBackendRef{serviceRef("web", 8081)}},
			gwapiv1.HTTPRouteRule{Matches: prefix("/docs"), BackendRefs: []gwapiv1.HTTPBackendRef{serviceRef("docs", 80)}},
			gwapiv1.HTTPRouteRule{Matches: prefix("/missing"), BackendRefs: []gwapiv1.HTTPBackendRef{serviceRef("nope", 80)}},
		)},
		Services: []*corev1.Service{service("docs", "None", 80), service("web", "127.0.0.1", 8081)},
	}
}

// failModes has a FailOpen pool, a FailClose pool and a FailClose pool whose picker Service
// does not exist. Pickers listen on pickerPort (nothing there in the Envoy test: "down").
func failModes(port, pickerPort int32) *discovery.Snapshot {
	return &discovery.Snapshot{
		Version:  1,
		Gateways: []*gwapiv1.Gateway{gateway("infergw", 8080, "")},
		HTTPRoutes: []*gwapiv1.HTTPRoute{httpRoute("llm", "infergw",
			gwapiv1.HTTPRouteRule{Matches: prefix("/open"), BackendRefs: []gwapiv1.HTTPBackendRef{poolRef("open", 1)}},
			gwapiv1.HTTPRouteRule{Matches: prefix("/close"), BackendRefs: []gwapiv1.HTTPBackendRef{poolRef("close", 1)}},
			gwapiv1.HTTPRouteRule{Matches: prefix("/nopicker"), BackendRefs: []gwapiv1.HTTPBackendRef{poolRef("nopicker", 1)}},
		)},
		Pools: []*discovery.Pool{
			pool("close", "epp", pickerPort, infv1.EndpointPickerFailClose, port, 2, 2),
			pool("nopicker", "missing-epp", pickerPort, infv1.EndpointPickerFailClose, port, 2, 2),
			pool("open", "epp", pickerPort, infv1.EndpointPickerFailOpen, port, 2, 2),
		},
		Services: []*corev1.Service{service("epp", "127.0.0.1", pickerPort)},
	}
}

func matches() *discovery.Snapshot {
	snap := onePool()
	snap.Gateways = []*gwapiv1.Gateway{gateway("infergw", 8080, "*.example.com")}
	rt := httpRoute("matches", "infergw",
		gwapiv1.HTTPRouteRule{
			Matches: []gwapiv1.HTTPRouteMatch{{
				Path:        &gwapiv1.HTTPPathMatch{Type: ptr(gwapiv1.PathMatchExact), Value: ptr("/v1/chat/completions")},
				Method:      ptr(gwapiv1.HTTPMethodPost),
				Headers:     []gwapiv1.HTTPHeaderMatch{{Name: "X-Tenant", Value: "gold"}},
				QueryParams: []gwapiv1.HTTPQueryParamMatch{{Type: ptr(gwapiv1.QueryParamMatchRegularExpression), Name: "debug", Value: "^(1|true)$"}},
			}},
			Filters: []gwapiv1.HTTPRouteFilter{
				{Type: gwapiv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gwapiv1.HTTPHeaderFilter{
					Set: []gwapiv1.HTTPHeader{{Name: "X-Gateway-Inference-Objective", Value: "premium"}},
					Add: []gwapiv1.HTTPHeader{{Name: "X-Trace", Value: "on"}}, Remove: []string{"X-Internal"},
				}},
				{Type: gwapiv1.HTTPRouteFilterRequestMirror, RequestMirror: &gwapiv1.HTTPRequestMirrorFilter{}},
			},
			BackendRefs: []gwapiv1.HTTPBackendRef{poolRef("llama", 1)},
			Timeouts:    &gwapiv1.HTTPRouteTimeouts{Request: ptr(gwapiv1.Duration("10m"))},
		},
		gwapiv1.HTTPRouteRule{
			Matches: []gwapiv1.HTTPRouteMatch{
				{Path: &gwapiv1.HTTPPathMatch{Type: ptr(gwapiv1.PathMatchRegularExpression), Value: ptr("/v1/(completions|embeddings)")}},
				{Path: &gwapiv1.HTTPPathMatch{Type: ptr(gwapiv1.PathMatchRegularExpression), Value: ptr("/v1/(unclosed")}},
			},
			BackendRefs: []gwapiv1.HTTPBackendRef{poolRef("llama", 1)},
		},
	)
	rt.Spec.Hostnames = []gwapiv1.Hostname{"api.example.com", "other.org"}
	snap.HTTPRoutes = append(snap.HTTPRoutes, rt)
	return snap
}

func h2cPool() *discovery.Snapshot {
	snap := onePool()
	snap.Pools[0].Spec.AppProtocol = infv1.AppProtocolH2C
	snap.Pools[0].Spec.TargetPorts = append(snap.Pools[0].Spec.TargetPorts, infv1.Port{Number: 8001})
	return snap
}

// bigSnapshot has pools pools of eps endpoints each and one route per pool.
func bigSnapshot(pools, eps int) *discovery.Snapshot {
	snap := &discovery.Snapshot{Version: 1, Gateways: []*gwapiv1.Gateway{gateway("infergw", 8080, "")}}
	snap.Services = []*corev1.Service{service("epp", "10.0.0.1", 9002)}
	for i := 0; i < pools; i++ {
		name := fmt.Sprintf("pool-%04d", i)
		p := pool(name, "epp", 9002, infv1.EndpointPickerFailClose, 8000, 0, 0)
		for j := 0; j < eps; j++ {
			p.Endpoints = append(p.Endpoints, discovery.Endpoint{Name: fmt.Sprintf("%s-%d", name, j), Namespace: ns, IP: fmt.Sprintf("10.%d.%d.%d", 1+i/250, i%250, 1+j)})
		}
		snap.Pools = append(snap.Pools, p)
		snap.HTTPRoutes = append(snap.HTTPRoutes, httpRoute("route-"+name, "infergw", gwapiv1.HTTPRouteRule{
			Matches: prefix("/" + name), BackendRefs: []gwapiv1.HTTPBackendRef{poolRef(name, 1)},
		}))
	}
	return snap
}
