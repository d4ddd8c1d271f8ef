package dirsource

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	infv1 "github.com/infergw/infergw/api/v1"
	"github.com/infergw/infergw/discovery"
)

// The documents below are small valid manifests; tests break them one field at a time.
const (
	poolDoc = `apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata:
  name: llama
spec:
  selector:
    matchLabels:
      app: llama
  targetPorts:
    - number: 8000
  endpointPickerRef:
    name: picker
    port:
      number: 9002
`
	gatewayDoc = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  gatewayClassName: infergw
  listeners:
    - name: http
      protocol: HTTP
      port: 8080
`
	routeDoc = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: route
spec:
  parentRefs:
    - name: gw
  rules:
    - backendRefs:
        - group: inference.networking.k8s.io
          kind: InferencePool
          name: llama
`
	objectiveDoc = `apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata:
  name: critical
spec:
  priority: 10
  poolRef:
    name: llama
`
	serviceDoc = `apiVersion: v1
kind: Service
metadata:
  name: picker
spec:
  clusterIP: 127.0.0.1
  ports:
    - port: 9002
`
)

func podDoc(name, ip, ready string) string {
	return `apiVersion: v1
kind: Pod
metadata:
  name: ` + name + `
  labels:
    app: llama
status:
  podIP: ` + ip + `
  conditions:
    - type: Ready
      status: "` + ready + `"
`
}

func parseFiles(files map[string]string) (discovery.Objects, error) {
	var mf []manifestFile
	for name, data := range files {
		mf = append(mf, manifestFile{rel: name, data: []byte(data)})
	}
	// Sorted like readManifestDir sorts, so that "first declared in" is deterministic.
	for i := range mf {
		for j := i + 1; j < len(mf); j++ {
			if mf[j].rel < mf[i].rel {
				mf[i], mf[j] = mf[j], mf[i]
			}
		}
	}
	return parseManifests(mf)
}

func errLines(err error) []string {
	if err == nil {
		return nil
	}
	return strings.Split(err.Error(), "\n")
}

func TestParseManifestsErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{
			name:  "valid multi-document file",
			files: map[string]string{"all.yaml": "# comment only\n---\n" + gatewayDoc + "---\n" + routeDoc + "---\n" + poolDoc + "---\n" + objectiveDoc + "---\n" + serviceDoc + "---\n---\n" + podDoc("p0", "127.0.0.2", "True")},
		},
		{
			name:  "duplicate target port names file, document and field",
			files: map[string]string{"pools.yaml": serviceDoc + "---\n" + strings.Replace(poolDoc, "    - number: 8000\n", "    - number: 8000\n    - number: 8000\n", 1)},
			want:  []string{"pools.yaml: document 2 (InferencePool default/llama): spec.targetPorts[1].number: duplicate port 8000 (also targetPorts[0])"},
		},
		{
			name:  "unknown field",
			files: map[string]string{"pool.yaml": strings.Replace(poolDoc, "  targetPorts:", "  targetPort:", 1)},
			want:  []string{`pool.yaml: document 1 (InferencePool default/llama): unknown field "spec.targetPort"`},
		},
		{
			name:  "field names are case-sensitive",
			files: map[string]string{"pool.yaml": strings.Replace(poolDoc, "  selector:", "  Selector:", 1)},
			want:  []string{`pool.yaml: document 1 (InferencePool default/llama): unknown field "spec.Selector"`},
		},
		{
			name:  "duplicate field",
			files: map[string]string{"pool.yaml": strings.Replace(poolDoc, "kind: InferencePool\n", "kind: InferencePool\nkind: InferencePool\n", 1)},
			want:  []string{`pool.yaml: document 1: yaml: unmarshal errors:`, `  line 3: key "kind" already set in map`},
		},
		{
			name:  "unsupported kind",
			files: map[string]string{"cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"},
			want:  []string{`cm.yaml: document 1 (ConfigMap default/x): unsupported apiVersion/kind "v1 ConfigMap" (supported: ` + supportedKinds + `)`},
		},
		{
			name:  "wrong version of a known kind",
			files: map[string]string{"p.yaml": strings.Replace(poolDoc, "inference.networking.k8s.io/v1", "inference.networking.x-k8s.io/v1alpha2", 1)},
			want:  []string{`p.yaml: document 1 (InferencePool default/llama): unsupported apiVersion/kind "inference.networking.x-k8s.io/v1alpha2 InferencePool" (supported: ` + supportedKinds + `)`},
		},
		{
			name:  "missing kind",
			files: map[string]string{"x.yaml": "metadata:\n  name: x\n"},
			want:  []string{"x.yaml: document 1: apiVersion and kind are required"},
		},
		{
			name:  "not a mapping",
			files: map[string]string{"x.yaml": "- just\n- a list\n"},
			want:  []string{"x.yaml: document 1: not a Kubernetes object (want a mapping with apiVersion, kind and metadata)"},
		},
		{
			name:  "metadata of the wrong shape",
			files: map[string]string{"x.yaml": "apiVersion: v1\nkind: Pod\nmetadata: {name: [1]}\n"},
			want:  []string{"x.yaml: document 1: not a Kubernetes object: json: cannot unmarshal array into Go struct field .metadata.name of type string"},
		},
		{
			name:  "wrong type",
			files: map[string]string{"pool.yaml": strings.Replace(poolDoc, "number: 8000", "number: eight", 1)},
			want:  []string{`pool.yaml: document 1 (InferencePool default/llama): json: cannot unmarshal string into Go struct field Port.spec.targetPorts.number of type v1.PortNumber`},
		},
		{
			name:  "picker port required, failure mode enum",
			files: map[string]string{"pool.yaml": strings.Replace(poolDoc, "    port:\n      number: 9002\n", "    failureMode: Sometimes\n", 1)},
			want: []string{
				"pool.yaml: document 1 (InferencePool default/llama): spec.endpointPickerRef.port: required when kind is Service (the default)",
				`pool.yaml: document 1 (InferencePool default/llama): spec.endpointPickerRef.failureMode: unsupported value "Sometimes": must be "FailOpen" or "FailClose"`,
			},
		},
		{
			name: "duplicate names across files",
			files: map[string]string{
				"a.yaml": poolDoc,
				"b.yaml": objectiveDoc + "---\n" + poolDoc,
			},
			want: []string{"b.yaml: document 2 (InferencePool default/llama): metadata.name: duplicate InferencePool default/llama, first declared in a.yaml document 1"},
		},
		{
			name: "same name in another namespace is fine",
			files: map[string]string{
				"a.yaml": poolDoc,
				"b.yaml": strings.Replace(poolDoc, "  name: llama\n", "  name: llama\n  namespace: other\n", 1),
			},
		},
		{
			name:  "objective names a missing pool",
			files: map[string]string{"o.yaml": objectiveDoc},
			want:  []string{"o.yaml: document 1 (InferenceObjective default/critical): spec.poolRef.name: InferencePool default/llama not found"},
		},
		{
			name:  "route names a missing pool",
			files: map[string]string{"r.yaml": gatewayDoc + "---\n" + routeDoc},
			want:  []string{"r.yaml: document 2 (HTTPRoute default/route): spec.rules[0].backendRefs[0].name: InferencePool default/llama not found"},
		},
		{
			name: "rewrite: weights on all or none, at least one target",
			files: map[string]string{"rw.yaml": poolDoc + `---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata:
  name: rw
spec:
  poolRef:
    name: llama
  rules:
    - matches:
        - model:
            value: food-review
      targets:
        - modelRewrite: food-review-1
          weight: 90
        - modelRewrite: food-review-2
    - targets: []
`},
			want: []string{
				"rw.yaml: document 2 (InferenceModelRewrite default/rw): spec.rules[0].targets: weights must be set on all targets or on none (1 of 2 have one)",
				"rw.yaml: document 2 (InferenceModelRewrite default/rw): spec.rules[1].targets: must have at least 1 target",
			},
		},
		{
			name:  "pod with a bad IP",
			files: map[string]string{"pods.yaml": podDoc("p0", "127.0.0.999", "True")},
			want:  []string{`pods.yaml: document 1 (Pod default/p0): status.podIP: invalid IP address "127.0.0.999"`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := parseFiles(tc.files)
			if diff := cmp.Diff(tc.want, errLines(err)); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
			if err != nil && (len(objs.Pools) != 0 || len(objs.Gateways) != 0) {
				t.Errorf("objects returned with an error: %+v", objs)
			}
		})
	}
}

func TestParseManifestsAppliesDefaultsAndNamespace(t *testing.T) {
	objs, err := parseFiles(map[string]string{"p.yaml": poolDoc})
	if err != nil {
		t.Fatal(err)
	}
	p := objs.Pools[0]
	ref := p.Spec.EndpointPickerRef
	if p.Namespace != "default" || ref.Kind != "Service" || ref.Group == nil || *ref.Group != "" || ref.FailureMode != infv1.EndpointPickerFailClose {
		t.Errorf("defaults not applied: ns %q ref %+v", p.Namespace, ref)
	}
}

func TestParseManifestsCapsErrorCount(t *testing.T) {
	var b strings.Builder
	for i := 0; i < maxManifestErrors+10; i++ {
		b.WriteString("---\napiVersion: v1\nkind: Nope\n")
	}
	_, err := parseFiles(map[string]string{"many.yaml": b.String()})
	lines := errLines(err)
	if len(lines) != maxManifestErrors+1 || lines[len(lines)-1] != "... and 10 more errors" {
		t.Fatalf("got %d lines, last %q", len(lines), lines[len(lines)-1])
	}
}

// TestExamplesLocalLoad loads the shipped examples/local directory, which `infergw up` uses.
func TestExamplesLocalLoad(t *testing.T) {
	dir := filepath.Join("..", "..", "examples", "local")
	files, err := readManifestDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := parseManifests(files)
	if err != nil {
		t.Fatalf("examples/local is invalid:\n%v", err)
	}
	snap := discovery.Build(1, objs, discovery.DefaultGatewayClass)
	if len(snap.Gateways) != 1 || snap.Gateways[0].Name != "inference-gateway" {
		t.Fatalf("gateways: %v", snap.Gateways)
	}
	// Three pools (Llama, Qwen, embeddings) on one route, chosen by the body's model.
	if len(snap.HTTPRoutes) != 1 || len(snap.Pools) != 3 || len(snap.Objectives) != 3 || len(snap.Rewrites) != 1 || len(snap.Services) != 1 {
		t.Fatalf("routes %d pools %d objectives %d rewrites %d services %d",
			len(snap.HTTPRoutes), len(snap.Pools), len(snap.Objectives), len(snap.Rewrites), len(snap.Services))
	}
	var pool *discovery.Pool
	for _, p := range snap.Pools {
		if p.Name == "vllm-llama3-8b" {
			pool = p
		}
	}
	if pool == nil {
		t.Fatal("pool vllm-llama3-8b missing")
	}
	if pool.Name != "vllm-llama3-8b" || pool.Spec.EndpointPickerRef.FailureMode != infv1.EndpointPickerFailClose {
		t.Errorf("pool: %s %+v", pool.Name, pool.Spec.EndpointPickerRef)
	}
	var eps []string
	for _, e := range pool.Endpoints {
		eps = append(eps, e.Name+"@"+e.IP+"/"+e.Labels["inference.networking.k8s.io/engine-type"])
	}
	want := []string{"vllm-llama3-8b-0@127.0.0.2/vllm", "vllm-llama3-8b-1@127.0.0.3/vllm", "vllm-llama3-8b-2@127.0.0.4/vllm", "vllm-llama3-8b-3@127.0.0.5/vllm"}
	if diff := cmp.Diff(want, eps); diff != "" {
		t.Errorf("endpoints (-want +got):\n%s", diff)
	}
	if snap.Services[0].Name != "infergw-picker" || snap.Services[0].Spec.ClusterIP != "127.0.0.1" {
		t.Errorf("picker service: %+v", snap.Services[0].Spec)
	}
}

func TestReadManifestDirSkipsHiddenAndOtherFiles(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "a.yaml"), poolDoc)
	mustWrite(t, filepath.Join(dir, "sub", "b.yml"), serviceDoc)
	mustWrite(t, filepath.Join(dir, "notes.txt"), "not yaml")
	mustWrite(t, filepath.Join(dir, ".a.yaml.swp"), "garbage: [")
	mustWrite(t, filepath.Join(dir, "..2026_11_27", "a.yaml"), poolDoc) // ConfigMap volume revision
	files, err := readManifestDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, f.rel)
	}
	if diff := cmp.Diff([]string{"a.yaml", "sub/b.yml"}, names); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
}

func mustWrite(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// FuzzDecodeManifests feeds arbitrary bytes to the manifest decoder and validation: they
// must return errors, never panic, and every decoded object must have a name location.
func FuzzDecodeManifests(f *testing.F) {
	f.Add([]byte(poolDoc + "---\n" + routeDoc))
	f.Add([]byte(gatewayDoc + "---\n" + objectiveDoc + "---\n" + serviceDoc))
	f.Add([]byte(podDoc("p", "127.0.0.2", "True")))
	f.Add([]byte("---\n---\n# c\n"))
	f.Add([]byte("apiVersion: v1\nkind: Pod\nmetadata: {name: [1]}\n"))
	f.Add([]byte("a: &a [*a, *a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ms, errs := decodeManifests("fuzz.yaml", data)
		for _, e := range errs {
			if !strings.HasPrefix(e.Error(), "fuzz.yaml") {
				t.Fatalf("error without file name: %v", e)
			}
		}
		var objs discovery.Objects
		for i := range ms {
			if ms[i].obj == nil || ms[i].index < 1 {
				t.Fatalf("bad manifest %+v", ms[i])
			}
			_ = validateManifest(&ms[i], &objs)
		}
		_ = checkReferences(ms)
		_ = discovery.Build(1, objs, discovery.DefaultGatewayClass)
	})
}

// TestParseManifestsEndpointSlice: hand-written EndpointSlices load (e.g. a picker Service's
// replicas in local mode); a slice without its Service label or with a bad address does not.
func TestParseManifestsEndpointSlice(t *testing.T) {
	const sliceDoc = `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: picker-replicas
  labels:
    kubernetes.io/service-name: picker
addressType: IPv4
ports:
  - port: 9102
endpoints:
  - addresses: ["127.0.0.1"]
  - addresses: ["127.0.0.9"]
`
	objs, err := parseFiles(map[string]string{"s.yaml": serviceDoc + "---\n" + sliceDoc})
	if err != nil {
		t.Fatal(err)
	}
	if len(objs.EndpointSlices) != 1 || len(objs.EndpointSlices[0].Endpoints) != 2 || objs.EndpointSlices[0].Namespace != "default" {
		t.Fatalf("slices = %+v, want one of two endpoints in default", objs.EndpointSlices)
	}
	bad := strings.Replace(strings.Replace(sliceDoc, "    kubernetes.io/service-name: picker\n", "    app: x\n", 1), `"127.0.0.9"`, `"not-an-ip"`, 1)
	_, err = parseFiles(map[string]string{"s.yaml": bad})
	if err == nil || !strings.Contains(err.Error(), "kubernetes.io/service-name") || !strings.Contains(err.Error(), "not-an-ip") {
		t.Errorf("bad slice: err %v, want the missing label and the bad address", err)
	}
}
