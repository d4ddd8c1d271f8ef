package validation

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	infv1 "github.com/infergw/infergw/api/v1"
	infv1alpha2 "github.com/infergw/infergw/api/v1alpha2"
)

func ptr[T any](v T) *T { return &v }

func validPool() *infv1.InferencePool {
	return &infv1.InferencePool{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "llama"},
		Spec: infv1.InferencePoolSpec{
			Selector:    infv1.LabelSelector{MatchLabels: map[infv1.LabelKey]infv1.LabelValue{"app": "llama"}},
			TargetPorts: []infv1.Port{{Number: 8000}},
			EndpointPickerRef: infv1.EndpointPickerRef{
				Name: "infergw-picker", Port: &infv1.Port{Number: 9002}, FailureMode: infv1.EndpointPickerFailClose,
			},
		},
	}
}

func messages(es Errors) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Error())
	}
	return out
}

func TestPool(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(p *infv1.InferencePool)
		want   []string
	}{
		{"valid", func(p *infv1.InferencePool) {}, nil},
		{"valid eight ports and h2c", func(p *infv1.InferencePool) {
			p.Spec.AppProtocol = infv1.AppProtocolH2C
			p.Spec.TargetPorts = nil
			for i := 0; i < 8; i++ {
				p.Spec.TargetPorts = append(p.Spec.TargetPorts, infv1.Port{Number: infv1.PortNumber(8000 + i)})
			}
		}, nil},
		{"valid non-Service picker without port", func(p *infv1.InferencePool) {
			p.Spec.EndpointPickerRef.Kind = "Backend"
			p.Spec.EndpointPickerRef.Group = ptr(infv1.Group("example.com"))
			p.Spec.EndpointPickerRef.Port = nil
		}, nil},
		{"duplicate port", func(p *infv1.InferencePool) {
			p.Spec.TargetPorts = []infv1.Port{{Number: 8000}, {Number: 8000}}
		}, []string{"spec.targetPorts[1].number: duplicate port 8000 (also targetPorts[0])"}},
		{"no ports", func(p *infv1.InferencePool) { p.Spec.TargetPorts = nil },
			[]string{"spec.targetPorts: must have at least 1 port"}},
		{"nine ports", func(p *infv1.InferencePool) {
			p.Spec.TargetPorts = nil
			for i := 0; i < 9; i++ {
				p.Spec.TargetPorts = append(p.Spec.TargetPorts, infv1.Port{Number: infv1.PortNumber(8000 + i)})
			}
		}, []string{"spec.targetPorts: must have at most 8 ports, has 9"}},
		{"port out of range", func(p *infv1.InferencePool) {
			p.Spec.TargetPorts = []infv1.Port{{Number: 0}, {Number: 65536}}
		}, []string{"spec.targetPorts[0].number: port 0 out of range 1-65535", "spec.targetPorts[1].number: port 65536 out of range 1-65535"}},
		{"empty selector", func(p *infv1.InferencePool) { p.Spec.Selector.MatchLabels = nil },
			[]string{"spec.selector.matchLabels: must have at least 1 label"}},
		{"bad label value", func(p *infv1.InferencePool) {
			p.Spec.Selector.MatchLabels = map[infv1.LabelKey]infv1.LabelValue{"app": "-bad-"}
		}, []string{`spec.selector.matchLabels[app]: invalid label value "-bad-": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')`}},
		{"picker Service without port", func(p *infv1.InferencePool) { p.Spec.EndpointPickerRef.Port = nil },
			[]string{"spec.endpointPickerRef.port: required when kind is Service (the default)"}},
		{"picker explicit Service without port", func(p *infv1.InferencePool) {
			p.Spec.EndpointPickerRef.Kind = "Service"
			p.Spec.EndpointPickerRef.Port = nil
		}, []string{"spec.endpointPickerRef.port: required when kind is Service (the default)"}},
		{"picker without name", func(p *infv1.InferencePool) { p.Spec.EndpointPickerRef.Name = "" },
			[]string{"spec.endpointPickerRef.name: required"}},
		{"picker port out of range", func(p *infv1.InferencePool) { p.Spec.EndpointPickerRef.Port.Number = 70000 },
			[]string{"spec.endpointPickerRef.port.number: port 70000 out of range 1-65535"}},
		{"failure mode enum", func(p *infv1.InferencePool) { p.Spec.EndpointPickerRef.FailureMode = "FailSoft" },
			[]string{`spec.endpointPickerRef.failureMode: unsupported value "FailSoft": must be "FailOpen" or "FailClose"`}},
		{"app protocol enum", func(p *infv1.InferencePool) { p.Spec.AppProtocol = "grpc" },
			[]string{`spec.appProtocol: unsupported value "grpc": must be "http" or "kubernetes.io/h2c"`}},
		{"bad kind and group", func(p *infv1.InferencePool) {
			p.Spec.EndpointPickerRef.Kind = "9bad"
			p.Spec.EndpointPickerRef.Group = ptr(infv1.Group("Bad_Group"))
		}, []string{`spec.endpointPickerRef.group: invalid group "Bad_Group"`, `spec.endpointPickerRef.kind: invalid kind "9bad"`}},
		{"missing name", func(p *infv1.InferencePool) { p.Name = "" }, []string{"metadata.name: required"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := validPool()
			tc.mutate(p)
			if diff := cmp.Diff(tc.want, messages(Pool(p))); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestObjective(t *testing.T) {
	tests := []struct {
		name string
		obj  infv1alpha2.InferenceObjective
		want []string
	}{
		{"valid negative priority", infv1alpha2.InferenceObjective{
			ObjectMeta: metav1.ObjectMeta{Name: "batch"},
			Spec:       infv1alpha2.InferenceObjectiveSpec{Priority: ptr(-1), PoolRef: infv1alpha2.PoolObjectReference{Name: "llama"}},
		}, nil},
		{"missing pool name", infv1alpha2.InferenceObjective{ObjectMeta: metav1.ObjectMeta{Name: "x"}},
			[]string{"spec.poolRef.name: required"}},
		{"wrong kind and group", infv1alpha2.InferenceObjective{
			ObjectMeta: metav1.ObjectMeta{Name: "x"},
			Spec:       infv1alpha2.InferenceObjectiveSpec{PoolRef: infv1alpha2.PoolObjectReference{Name: "p", Kind: "Service", Group: "core"}},
		}, []string{`spec.poolRef.group: unsupported value "core": must be "inference.networking.k8s.io"`, `spec.poolRef.kind: unsupported value "Service": must be "InferencePool"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, messages(Objective(&tc.obj))); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

func rewriteWith(rules ...infv1alpha2.InferenceModelRewriteRule) *infv1alpha2.InferenceModelRewrite {
	return &infv1alpha2.InferenceModelRewrite{
		ObjectMeta: metav1.ObjectMeta{Name: "rw"},
		Spec:       infv1alpha2.InferenceModelRewriteSpec{PoolRef: infv1alpha2.PoolObjectReference{Name: "llama"}, Rules: rules},
	}
}

func match(v string) []infv1alpha2.Match {
	return []infv1alpha2.Match{{Model: infv1alpha2.ModelMatch{Value: v}}}
}

func TestRewrite(t *testing.T) {
	tests := []struct {
		name string
		rw   *infv1alpha2.InferenceModelRewrite
		want []string
	}{
		{"valid weighted", rewriteWith(infv1alpha2.InferenceModelRewriteRule{
			Matches: match("food-review"),
			Targets: []infv1alpha2.TargetModel{{ModelRewrite: "a", Weight: ptr(int32(90))}, {ModelRewrite: "b", Weight: ptr(int32(10))}},
		}), nil},
		{"valid unweighted", rewriteWith(infv1alpha2.InferenceModelRewriteRule{
			Targets: []infv1alpha2.TargetModel{{ModelRewrite: "a"}, {ModelRewrite: "b"}},
		}), nil},
		{"no rules", rewriteWith(), []string{"spec.rules: must have at least 1 rule"}},
		{"no targets", rewriteWith(infv1alpha2.InferenceModelRewriteRule{Matches: match("m")}),
			[]string{"spec.rules[0].targets: must have at least 1 target"}},
		{"weights on some targets", rewriteWith(
			infv1alpha2.InferenceModelRewriteRule{Targets: []infv1alpha2.TargetModel{{ModelRewrite: "a"}}},
			infv1alpha2.InferenceModelRewriteRule{
				Matches: match("m"),
				Targets: []infv1alpha2.TargetModel{{ModelRewrite: "a", Weight: ptr(int32(1))}, {ModelRewrite: "b"}},
			}),
			[]string{"spec.rules[1].targets: weights must be set on all targets or on none (1 of 2 have one)"}},
		{"weight range, empty names, bad match type", rewriteWith(infv1alpha2.InferenceModelRewriteRule{
			Matches: []infv1alpha2.Match{{Model: infv1alpha2.ModelMatch{Value: "", Type: ptr(infv1alpha2.MatchType("Prefix"))}}},
			Targets: []infv1alpha2.TargetModel{{ModelRewrite: "", Weight: ptr(int32(0))}},
		}), []string{
			`spec.rules[0].matches[0].model.type: unsupported value "Prefix": must be "Exact"`,
			"spec.rules[0].matches[0].model.value: required",
			"spec.rules[0].targets[0].modelRewrite: required",
			"spec.rules[0].targets[0].weight: weight 0 out of range 1-1000000",
		}},
		{"model name too long", rewriteWith(infv1alpha2.InferenceModelRewriteRule{
			Targets: []infv1alpha2.TargetModel{{ModelRewrite: strings.Repeat("m", 254)}},
		}), []string{"spec.rules[0].targets[0].modelRewrite: must be at most 253 characters, has 254"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, messages(Rewrite(tc.rw))); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGatewayAndRoute(t *testing.T) {
	gw := &gwapiv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: "gw"},
		Spec: gwapiv1.GatewaySpec{Listeners: []gwapiv1.Listener{
			{Name: "http", Port: 8080, Protocol: gwapiv1.HTTPProtocolType},
			{Name: "http", Port: 0},
		}},
	}
	wantGW := []string{
		"spec.gatewayClassName: required",
		`spec.listeners[1].name: duplicate listener name "http" (also listeners[0])`,
		"spec.listeners[1].protocol: required",
		"spec.listeners[1].port: port 0 out of range 1-65535",
	}
	if diff := cmp.Diff(wantGW, messages(Gateway(gw))); diff != "" {
		t.Errorf("gateway errors (-want +got):\n%s", diff)
	}

	rt := &gwapiv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: "rt"},
		Spec: gwapiv1.HTTPRouteSpec{
			CommonRouteSpec: gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{{Name: "gw"}}},
			Rules: []gwapiv1.HTTPRouteRule{{BackendRefs: []gwapiv1.HTTPBackendRef{
				{BackendRef: gwapiv1.BackendRef{BackendObjectReference: gwapiv1.BackendObjectReference{
					Group: ptr(gwapiv1.Group("inference.networking.k8s.io")), Kind: ptr(gwapiv1.Kind("InferencePool")), Name: "llama"}}},
				{BackendRef: gwapiv1.BackendRef{BackendObjectReference: gwapiv1.BackendObjectReference{Name: "web"}}},
				{BackendRef: gwapiv1.BackendRef{BackendObjectReference: gwapiv1.BackendObjectReference{
					Kind: ptr(gwapiv1.Kind("InferencePool")), Name: "llama"}, Weight: ptr(int32(-1))}},
			}}},
		},
	}
	wantRT := []string{
		"spec.rules[0].backendRefs[1].port: required when the backend is a Service",
		`spec.rules[0].backendRefs[2].group: must be "inference.networking.k8s.io" for kind InferencePool, got ""`,
		"spec.rules[0].backendRefs[2].weight: weight -1 out of range 0-1000000",
	}
	if diff := cmp.Diff(wantRT, messages(HTTPRoute(rt))); diff != "" {
		t.Errorf("route errors (-want +got):\n%s", diff)
	}
}

func TestPodAndService(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "Bad_Name"}, Status: corev1.PodStatus{PodIP: "127.0.0.300"}}
	got := messages(Pod(pod))
	if len(got) != 2 || !strings.HasPrefix(got[0], `metadata.name: invalid name "Bad_Name"`) || got[1] != `status.podIP: invalid IP address "127.0.0.300"` {
		t.Errorf("pod errors: %q", got)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "svc"}, Spec: corev1.ServiceSpec{
		ClusterIP: "localhost", Ports: []corev1.ServicePort{{Port: 9002}, {Port: 0}},
	}}
	want := []string{`spec.clusterIP: invalid IP address "localhost"`, "spec.ports[1].port: port 0 out of range 1-65535"}
	if diff := cmp.Diff(want, messages(Service(svc))); diff != "" {
		t.Errorf("service errors (-want +got):\n%s", diff)
	}
	if es := Service(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "headless"}, Spec: corev1.ServiceSpec{ClusterIP: "None"}}); len(es) != 0 {
		t.Errorf("headless service rejected: %v", es.String())
	}
}

func TestNilObjectsAndErr(t *testing.T) {
	for name, es := range map[string]Errors{
		"pool": Pool(nil), "objective": Objective(nil), "rewrite": Rewrite(nil),
		"gateway": Gateway(nil), "route": HTTPRoute(nil), "pod": Pod(nil), "service": Service(nil),
	} {
		if es.Err() == nil {
			t.Errorf("%s: nil object accepted", name)
		}
	}
	if (Errors{}).Err() != nil {
		t.Error("empty Errors must give a nil error")
	}
}

func TestDefaults(t *testing.T) {
	p := validPool()
	p.Spec.EndpointPickerRef.FailureMode = ""
	DefaultPool(p)
	ref := p.Spec.EndpointPickerRef
	if ref.Kind != "Service" || ref.Group == nil || *ref.Group != "" || ref.FailureMode != infv1.EndpointPickerFailClose {
		t.Errorf("pool defaults: %+v", ref)
	}
	rw := rewriteWith(infv1alpha2.InferenceModelRewriteRule{Matches: match("m"), Targets: []infv1alpha2.TargetModel{{ModelRewrite: "a"}}})
	DefaultRewrite(rw)
	if rw.Spec.PoolRef.Group != "inference.networking.k8s.io" || rw.Spec.PoolRef.Kind != "InferencePool" ||
		*rw.Spec.Rules[0].Matches[0].Model.Type != infv1alpha2.MatchExact {
		t.Errorf("rewrite defaults: %+v", rw.Spec)
	}
}
