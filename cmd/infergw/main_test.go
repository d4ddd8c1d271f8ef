package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestVersion(t *testing.T) {
	out, err := run(t, "version")
	if err != nil || !strings.HasPrefix(out, "infergw ") {
		t.Fatalf("version: %q, %v", out, err)
	}
}

// The Helm chart's init container writes the bootstrap with --output (distroless has no
// shell to redirect stdout); the file must be the same YAML that stdout gets.
func TestBootstrapOutputFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bootstrap.yaml")
	args := []string{"controlplane", "bootstrap", "--xds-addr", "infergw-controlplane.infergw.svc:18000", "--node-id", "envoy-0"}
	stdout, err := run(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, append(args, "--output", file)...); err != nil {
		t.Fatal(err)
	}
	written, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if string(written) != stdout {
		t.Fatal("--output wrote something else than stdout gets")
	}
	var doc map[string]any
	if err := yaml.Unmarshal(written, &doc); err != nil {
		t.Fatalf("bootstrap is not YAML: %v", err)
	}
	if !strings.Contains(stdout, "infergw-controlplane.infergw.svc") || !strings.Contains(stdout, "envoy-0") {
		t.Fatalf("bootstrap lacks the control plane address or node id:\n%s", stdout)
	}
}

func TestControlPlaneNeedsOneSource(t *testing.T) {
	_, err := run(t, "controlplane", "--metrics-addr", "127.0.0.1:0", "--xds-addr", "127.0.0.1:0")
	if err == nil || !strings.Contains(err.Error(), "--manifests") {
		t.Fatalf("want an error naming --manifests, got %v", err)
	}
}

// A bad routing policy is refused before anything starts.
func TestUpRejectsUnknownPolicy(t *testing.T) {
	_, err := run(t, "up", "--policy", "fastest")
	if err == nil || !strings.Contains(err.Error(), "--policy") {
		t.Fatalf("want an error naming --policy, got %v", err)
	}
}

// The router flags reach the router: a staleness threshold below the scrape interval is
// refused with both values named, before the picker listens on anything.
func TestPickerRouterFlags(t *testing.T) {
	_, err := run(t, "picker", "--manifests", t.TempDir(), "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0",
		"--scrape-interval", "3s", "--staleness-threshold", "1500ms")
	if err == nil || !strings.Contains(err.Error(), "staleness threshold 1.5s must exceed the scrape interval 3s") {
		t.Fatalf("want the router's refusal naming both values, got %v", err)
	}
	_, err = run(t, "picker", "--manifests", t.TempDir(), "--fallbacks", "-1")
	if err == nil || !strings.Contains(err.Error(), "fallbacks -1") {
		t.Fatalf("want the router's refusal of --fallbacks -1, got %v", err)
	}
}

func TestUpRejectsListenerAddressThatIsNoIP(t *testing.T) {
	_, err := run(t, "up", "--listener-address", "localhost")
	if err == nil || !strings.Contains(err.Error(), "--listener-address") {
		t.Fatalf("up --listener-address localhost: %v, want an error naming the flag", err)
	}
}

// --list-plugins prints the reference of every plugin the picker's registry holds, the
// built-ins (the same text as router/README.md's reference) and any registered here.
func TestPickerListPlugins(t *testing.T) {
	out, err := run(t, "picker", "--list-plugins")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := newPluginRegistry()
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range reg.Types() {
		if !strings.Contains(out, "**`"+typ.Type+"`**") {
			t.Errorf("--list-plugins lacks %s", typ.Type)
		}
	}
	readme, err := os.ReadFile("../../router/README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "#### Filter plugins") || !strings.Contains(out, "| `maxNumOfEndpoints` | integer | `1` |") {
		t.Fatalf("--list-plugins output:\n%s", out)
	}
}

// A bad --scheduler-config is refused with the plugin and field named, before anything
// starts listening.
func TestPickerSchedulerConfigErrorNamesPlugin(t *testing.T) {
	path := filepath.Join(t.TempDir(), "epp.yaml")
	doc := "apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\nplugins:\n- type: prefix-cache-scorer\n  parameters: {hashBlockSize: -4}\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := run(t, "picker", "--scheduler-config", path, "--manifests", t.TempDir(), "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0")
	if err == nil || !strings.Contains(err.Error(), "prefix-cache-scorer") || !strings.Contains(err.Error(), "blockSize -4") {
		t.Fatalf("error %v, want one naming prefix-cache-scorer and blockSize", err)
	}
}
