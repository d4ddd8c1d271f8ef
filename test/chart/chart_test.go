package chart

import (
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
)

// TestLint runs `helm lint` (the SDK's rules: Chart.yaml, values, templates rendered and
// parsed, the Kubernetes objects' basic validity) for every value set.
func TestLint(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			linter := lint.AllWithKubeVersion(chartDir, parseValues(t, vs).AsMap(), releaseNamespace, nil)
			for _, m := range linter.Messages {
				switch {
				case m.Severity >= support.ErrorSev:
					t.Errorf("lint error: %s", m.Error())
				case m.Severity == support.WarningSev:
					t.Errorf("lint warning (the chart should lint clean): %s", m.Error())
				default:
					t.Logf("lint: %s", m.Error())
				}
			}
		})
	}
}

// TestRenderDecodesStrictly renders every value set and decodes each object strictly; it
// also pins which objects exist, so a template that silently renders nothing fails.
func TestRenderDecodesStrictly(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			o := renderObjects(t, vs)
			if got := len(o.deployments); got != 3 {
				t.Errorf("%d Deployments, want 3 (control plane, picker, Envoy)", got)
			}
			for _, c := range []string{"controlplane", "picker", "envoy"} {
				o.deploymentByComponent(t, c)
			}
			if got := len(o.services); got != 3 {
				t.Errorf("%d Services, want 3", got)
			}
			if got := len(o.serviceAccounts); got != 3 {
				t.Errorf("%d ServiceAccounts, want 3", got)
			}
		})
	}
}

// TestStrictDecoderRejectsTypos proves the decoder the other tests rely on is strict: a
// misspelt field must be an error, not a dropped setting.
func TestStrictDecoderRejectsTypos(t *testing.T) {
	dec := strictDecoder(t)
	good := "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: 1\n"
	if _, _, err := dec.Decode([]byte(good), nil, nil); err != nil {
		t.Fatalf("valid Deployment rejected: %v", err)
	}
	bad := "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replica: 1\n"
	if _, _, err := dec.Decode([]byte(bad), nil, nil); err == nil || !strings.Contains(err.Error(), "replica") {
		t.Fatalf("misspelt field accepted (err = %v)", err)
	}
	dup := "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  type: ClusterIP\n  type: NodePort\n"
	if _, _, err := dec.Decode([]byte(dup), nil, nil); err == nil {
		t.Fatal("duplicate field accepted")
	}
}

// TestEmptyListenersFailsClearly: Envoy without a listener port would never be ready; the
// chart must refuse with a message naming the value.
func TestEmptyListenersFailsClearly(t *testing.T) {
	c := loadChart(t)
	_, err := tryRender(c, parseValues(t, valueSet{name: "nolisteners", yaml: "envoy: {listeners: []}"}))
	if err == nil || !strings.Contains(err.Error(), "/envoy/listeners") {
		t.Fatalf("render with no Envoy listeners: err = %v, want one naming /envoy/listeners", err)
	}
}

// TestValuesSchemaRejectsMistakes: values.schema.json turns a misspelt or mistyped value into
// an install-time error naming it, instead of a silently ignored setting.
func TestValuesSchemaRejectsMistakes(t *testing.T) {
	c := loadChart(t)
	for _, tc := range []struct{ yaml, want string }{
		{"picker: {replica: 3}", "replica"},
		{"controlPlane: {xdsPort: not-a-port}", "/controlPlane/xdsPort"},
		{"envoy: {listeners: [{name: http, containerPort: 80, servicePort: 80}]}", "/envoy/listeners/0/containerPort"},
		{"watchNamespaces: [Team_A]", "/watchNamespaces/0"},
		{"picker: {pool: just-a-name}", "/picker/pool"},
		{"tlss: {enabled: true}", "tlss"},
	} {
		_, err := tryRender(c, parseValues(t, valueSet{name: tc.yaml, yaml: tc.yaml}))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("values %q: err = %v, want a schema error naming %q", tc.yaml, err, tc.want)
		}
	}
}

// TestNotes checks NOTES.txt tells the operator the names they need next.
func TestNotes(t *testing.T) {
	text := notes(t, renderFiles(t, valueSets[0]))
	for _, want := range []string{"infergw-picker", "number: 9002", "gatewayClassName: infergw",
		"port-forward service/infergw-envoy 8080:80", "/v1/chat/completions"} {
		if !strings.Contains(text, want) {
			t.Errorf("NOTES.txt lacks %q:\n%s", want, text)
		}
	}
}
