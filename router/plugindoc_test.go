package router

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"
)

var updateReference = flag.Bool("update-plugin-reference", false, "rewrite the plugin reference in README.md")

const (
	referenceBegin = "<!-- BEGIN plugin reference: generated from NewRegistry() by `go test ./router -run TestPluginReference -update-plugin-reference`; do not edit -->\n"
	referenceEnd   = "<!-- END plugin reference -->\n"
)

// TestPluginReference fails when the plugin reference in README.md is not what the
// registry generates (a plugin, parameter, default or doc changed without the README).
func TestPluginReference(t *testing.T) {
	var ref bytes.Buffer
	if err := NewRegistry().WriteReference(&ref); err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	before, rest, ok := strings.Cut(string(readme), referenceBegin)
	if !ok {
		t.Fatalf("README.md lacks the line %q", referenceBegin)
	}
	current, after, ok := strings.Cut(rest, referenceEnd)
	if !ok {
		t.Fatalf("README.md lacks the line %q", referenceEnd)
	}
	want := "\n" + ref.String()
	if current == want {
		return
	}
	if *updateReference {
		if err := os.WriteFile("README.md", []byte(before+referenceBegin+want+referenceEnd+after), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("README.md's plugin reference is stale: run go test ./router -run TestPluginReference -update-plugin-reference\ngenerated:\n%s", want)
}

func TestReferenceListsEveryPlugin(t *testing.T) {
	var ref bytes.Buffer
	reg := NewRegistry()
	if err := reg.WriteReference(&ref); err != nil {
		t.Fatal(err)
	}
	for _, typ := range reg.Types() {
		if !strings.Contains(ref.String(), "**`"+typ.Type+"`**") {
			t.Errorf("reference lacks %s", typ.Type)
		}
		if typ.Doc == "" {
			t.Errorf("%s has no doc", typ.Type)
		}
	}
	for _, want := range []string{"| `hashBlockSize` | integer | — | GIE's name of blockSize |", "| `threshold` | number | `1` |", "default weight 3"} {
		if !strings.Contains(ref.String(), want) {
			t.Errorf("reference lacks %q:\n%s", want, ref.String())
		}
	}
}

// TestREADMEConfigsParse: every scheduler config the README shows loads.
func TestREADMEConfigsParse(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(readme), "## Scheduler config and plugins")
	section, _, _ = strings.Cut(section, "### Plugin reference")
	blocks := strings.Split(section, "```yaml\n")[1:]
	if len(blocks) < 4 {
		t.Fatalf("found %d YAML examples, want at least 4", len(blocks))
	}
	reg := NewRegistry()
	for i, b := range blocks {
		doc, _, _ := strings.Cut(b, "```")
		if _, err := reg.ParseSchedulerConfig([]byte(doc)); err != nil {
			t.Errorf("example %d does not load: %v\n%s", i, err, doc)
		}
	}
}
