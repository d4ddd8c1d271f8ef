package chart

import (
	"os"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	infv1 "github.com/infergw/infergw/api/v1"
	infv1alpha2 "github.com/infergw/infergw/api/v1alpha2"
)

const examplesDir = "../../examples/kubernetes"

// decodeExample strictly decodes every document of an example manifest.
func decodeExample(t *testing.T, file string) []any {
	t.Helper()
	data, err := os.ReadFile(examplesDir + "/" + file)
	if err != nil {
		t.Fatalf("read example: %v", err)
	}
	dec := strictDecoder(t)
	var out []any
	for _, d := range manifestDocs(map[string]string{file: string(data)}) {
		obj, _, err := dec.Decode([]byte(d.yaml), nil, nil)
		if err != nil {
			t.Fatalf("%s document %d: strict decode: %v", file, d.index, err)
		}
		out = append(out, obj)
	}
	return out
}

func only[T any](t *testing.T, objs []any) T {
	t.Helper()
	var found []T
	for _, o := range objs {
		if v, ok := o.(T); ok {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("%d objects of type %T, want 1", len(found), zero)
	}
	return found[0]
}

// TestKubernetesExamples: the example manifests decode strictly (infergw's own API types
// included) and fit together and with the chart's defaults: the pool selects the vLLM pods
// on their port and names the chart's picker Service; the route sends the Gateway's traffic
// to the pool; the Gateway uses the chart's class and Envoy's listener port.
func TestKubernetesExamples(t *testing.T) {
	vllm := only[*appsv1.Deployment](t, decodeExample(t, "vllm-deployment.yaml"))
	objs := decodeExample(t, "inferencepool.yaml")
	pool := only[*infv1.InferencePool](t, objs)
	gw := only[*gwapiv1.Gateway](t, objs)
	route := only[*gwapiv1.HTTPRoute](t, objs)
	only[*infv1alpha2.InferenceModelRewrite](t, objs)

	podLabels := vllm.Spec.Template.Labels
	if podLabels["app"] != "vllm-llama3-8b" || podLabels["inference.networking.k8s.io/engine-type"] != "vllm" {
		t.Errorf("vLLM pod labels %v", podLabels)
	}
	vc := container(t, vllm, "vllm", false)
	if !slices.Contains(vc.Args, "--enable-lora") {
		t.Error("vLLM does not enable LoRA")
	}
	if model, _ := flagValue(vc.Args, "--model"); model != "meta-llama/Llama-3.1-8B-Instruct" {
		t.Errorf("vLLM model %q", model)
	}
	if gpu := vc.Resources.Limits[corev1.ResourceName("nvidia.com/gpu")]; gpu.Value() < 1 {
		t.Error("vLLM container requests no GPU")
	}
	for _, p := range []*corev1.Probe{vc.StartupProbe, vc.ReadinessProbe, vc.LivenessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Fatalf("vLLM probe missing or not httpGet: %+v", p)
		}
		if _, ok := resolvePort(vc, p.HTTPGet.Port); !ok {
			t.Errorf("vLLM probe port %s is not declared", p.HTTPGet.Port.String())
		}
	}

	sel := map[string]string{}
	for k, v := range pool.Spec.Selector.MatchLabels {
		sel[string(k)] = string(v)
	}
	if !selectorMatches(sel, podLabels) {
		t.Errorf("pool selector %v does not match the vLLM pods %v", sel, podLabels)
	}
	for _, tp := range pool.Spec.TargetPorts {
		if !slices.ContainsFunc(vc.Ports, func(p corev1.ContainerPort) bool { return p.ContainerPort == int32(tp.Number) }) {
			t.Errorf("pool target port %d is not a vLLM container port", tp.Number)
		}
	}
	if port, _ := flagValue(vc.Args, "--port"); len(pool.Spec.TargetPorts) != 1 || port != "8000" || pool.Spec.TargetPorts[0].Number != 8000 {
		t.Errorf("vLLM --port %q vs pool target ports %v", port, pool.Spec.TargetPorts)
	}

	chartObjs := renderObjects(t, valueSetByName(t, "default"))
	pickerSvc := chartObjs.servicesFor(chartObjs.deploymentByComponent(t, "picker"))[0]
	ref := pool.Spec.EndpointPickerRef
	if string(ref.Name) != pickerSvc.Name {
		t.Errorf("pool endpointPickerRef %q, want the chart's picker Service %q", ref.Name, pickerSvc.Name)
	}
	if ref.Port == nil || !slices.ContainsFunc(pickerSvc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == int32(ref.Port.Number) }) {
		t.Errorf("pool endpointPickerRef port %v is not a picker Service port", ref.Port)
	}
	if len(chartObjs.gatewayClasses) != 1 || string(gw.Spec.GatewayClassName) != chartObjs.gatewayClasses[0].Name {
		t.Errorf("Gateway class %q does not match the chart's GatewayClass", gw.Spec.GatewayClassName)
	}
	envoy := container(t, chartObjs.deploymentByComponent(t, "envoy"), "envoy", false)
	for _, l := range gw.Spec.Listeners {
		if !slices.ContainsFunc(envoy.Ports, func(p corev1.ContainerPort) bool { return p.ContainerPort == l.Port }) {
			t.Errorf("Gateway listener port %d is not an Envoy container port", l.Port)
		}
	}

	if len(route.Spec.ParentRefs) != 1 || route.Spec.ParentRefs[0].Name != gwapiv1.ObjectName(gw.Name) {
		t.Errorf("HTTPRoute parents %v, want the Gateway %s", route.Spec.ParentRefs, gw.Name)
	}
	backends := 0
	for _, rule := range route.Spec.Rules {
		for _, b := range rule.BackendRefs {
			backends++
			if b.Group == nil || *b.Group != "inference.networking.k8s.io" || b.Kind == nil || *b.Kind != "InferencePool" || string(b.Name) != pool.Name {
				t.Errorf("HTTPRoute backend %+v is not the pool %s", b.BackendObjectReference, pool.Name)
			}
		}
	}
	if backends == 0 {
		t.Error("HTTPRoute has no backend")
	}
	for _, o := range objs {
		if obj, ok := o.(*infv1alpha2.InferenceObjective); ok && string(obj.Spec.PoolRef.Name) != pool.Name {
			t.Errorf("objective %s refers to pool %q", obj.Name, obj.Spec.PoolRef.Name)
		}
		if rw, ok := o.(*infv1alpha2.InferenceModelRewrite); ok && string(rw.Spec.PoolRef.Name) != pool.Name {
			t.Errorf("rewrite %s refers to pool %q", rw.Name, rw.Spec.PoolRef.Name)
		}
	}
}
