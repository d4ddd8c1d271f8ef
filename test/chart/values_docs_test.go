package chart

import (
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// opaqueKeys are values documented as a whole (Kubernetes structures passed through
// verbatim), not key by key.
var opaqueKeys = map[string]bool{"resources": true, "bootstrapResources": true}

// leafKeys lists the dotted paths of values.yaml down to scalars, lists, empty maps and
// opaque keys.
func leafKeys(prefix string, m map[string]any, out *[]string) {
	for k, v := range m {
		path := k
		if prefix != "" {
			path = prefix + "." + k
		}
		if sub, ok := v.(map[string]any); ok && len(sub) > 0 && !opaqueKeys[k] {
			leafKeys(path, sub, out)
			continue
		}
		*out = append(*out, path)
	}
}

var tableKey = regexp.MustCompile("(?m)^\\| `([^`]+)` \\|")

// TestValuesDocumented: every key of values.yaml has a row in the README's values table, and
// every row names a key that exists.
func TestValuesDocumented(t *testing.T) {
	raw, err := os.ReadFile(chartDir + "/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(raw, &values); err != nil {
		t.Fatal(err)
	}
	var keys []string
	leafKeys("", values, &keys)
	sort.Strings(keys)
	readme, err := os.ReadFile(chartDir + "/README.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range tableKey.FindAllStringSubmatch(string(readme), -1) {
		documented[m[1]] = true
	}
	if len(documented) == 0 {
		t.Fatal("README.md has no values table rows (| `key` | … |)")
	}
	var missing []string
	for _, k := range keys {
		if !documented[k] {
			missing = append(missing, k)
		}
		delete(documented, k)
	}
	if len(missing) > 0 {
		t.Errorf("values not documented in README.md:\n  %s", strings.Join(missing, "\n  "))
	}
	var stale []string
	for k := range documented {
		stale = append(stale, k)
	}
	sort.Strings(stale)
	if len(stale) > 0 {
		t.Errorf("README.md documents values that do not exist:\n  %s", strings.Join(stale, "\n  "))
	}
}
