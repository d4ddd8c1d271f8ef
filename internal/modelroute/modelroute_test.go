package modelroute

import (
	"strings"
	"testing"
)

// TestRoundTripAndMatchOrder: what the control plane encodes the picker decodes, and the
// first route whose conditions all hold wins, in table order, as Envoy's route order does.
func TestRoundTripAndMatchOrder(t *testing.T) {
	enc, err := Encode(Table{Routes: []Route{
		{Model: []Cond{{Exact: "llama"}}, Pools: "ns/llama"},
		{Base: []Cond{{Exact: "llama"}}, Pools: "ns/llama-adapters"},
		{Model: []Cond{{Regex: "qwen-.*"}}, Pools: "ns/qwen=3,ns/qwen-canary=1"},
		{Model: []Cond{{Exact: "ëmbed-😀"}}, Pools: "ns/embed"},
		{Model: []Cond{{Exact: "svc-model"}}}, // not a pool route of this picker
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range enc {
		if r < 0x20 || r > 0x7e {
			t.Fatalf("encoded table has a non-printable-ASCII byte %q: %s", r, enc)
		}
	}
	c, err := Decode(enc)
	if err != nil {
		t.Fatal(err)
	}
	if !c.UsesBase {
		t.Error("UsesBase is false with a base condition in the table")
	}
	for _, tc := range []struct {
		model, base string
		hasBase     bool
		pools       string
		ok          bool
	}{
		{"llama", "", false, "ns/llama", true},
		{"llama", "other", true, "ns/llama", true},                // model route ranks first
		{"food-review", "llama", true, "ns/llama-adapters", true}, // adapter by its base
		{"food-review", "", false, "", false},                     // base unknown: no route
		{"qwen-7b", "", false, "ns/qwen=3,ns/qwen-canary=1", true},
		{"xqwen-7b", "", false, "", false}, // regexes match the whole value, as Envoy's
		{"ëmbed-😀", "", false, "ns/embed", true},
		{"svc-model", "", false, "", true}, // matched, no pools: pass through
		{"", "", false, "", false},
	} {
		pools, ok := c.Match(tc.model, tc.base, tc.hasBase)
		if pools != tc.pools || ok != tc.ok {
			t.Errorf("Match(%q, %q, %v) = %q, %v; want %q, %v", tc.model, tc.base, tc.hasBase, pools, ok, tc.pools, tc.ok)
		}
	}
}

func TestDecodeRejectsBadTables(t *testing.T) {
	for name, s := range map[string]string{
		"not json":   `{"routes":`,
		"bad regex":  `{"routes":[{"model":[{"regex":"("}],"pools":"a/b"}]}`,
		"both kinds": `{"routes":[{"model":[{"exact":"a","regex":"a"}],"pools":"a/b"}]}`,
		"too big":    `{"routes":[],"x":"` + strings.Repeat("a", MaxTableBytes) + `"}`,
		"too many":   `{"routes":[` + strings.Repeat(`{"pools":"a/b"},`, maxRoutes) + `{"pools":"a/b"}]}`,
	} {
		if _, err := Decode(s); err == nil {
			t.Errorf("%s: Decode accepted %.80q", name, s)
		}
	}
	if _, err := Encode(Table{Routes: []Route{{Model: []Cond{{Exact: strings.Repeat("m", MaxTableBytes)}}, Pools: "a/b"}}}); err == nil {
		t.Error("Encode accepted a table over MaxTableBytes")
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(`{"routes":[{"model":[{"exact":"llama"}],"pools":"ns/llama"}]}`, "llama", "base")
	f.Add(`{"routes":[{"base":[{"regex":"q.*"}],"pools":"ns/q=1,ns/r=2"}]}`, "x", "qwen")
	f.Fuzz(func(t *testing.T, enc, model, base string) {
		c, err := Decode(enc)
		if err != nil {
			return
		}
		_, _ = c.Match(model, base, base != "")
	})
}

// TestCatchAll: a request without a model reaches only a route without conditions, as an
// absent header matches no header condition in Envoy.
func TestCatchAll(t *testing.T) {
	c, err := Decode(`{"routes":[{"model":[{"regex":".*"}],"pools":"ns/a"},{"pools":"ns/b"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	if pools, ok := c.CatchAll(); !ok || pools != "ns/b" {
		t.Errorf("CatchAll = %q, %v; want ns/b", pools, ok)
	}
	c, _ = Decode(`{"routes":[{"model":[{"regex":".*"}],"pools":"ns/a"}]}`)
	if _, ok := c.CatchAll(); ok {
		t.Error("CatchAll found a route in a table whose routes all need a model")
	}
}
