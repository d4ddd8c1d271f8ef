package loadtest

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func newTestRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 1)) }

func genSeq(t *testing.T, cfg WorkloadConfig, models []WeightedModel, seed uint64, n int) []Request {
	t.Helper()
	g, err := newGenerator(cfg, models, seed)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]Request, n)
	for i := range out {
		out[i] = g.Next()
	}
	return out
}

func TestWorkloadsAreSeededAndReproducible(t *testing.T) {
	models := []WeightedModel{{"base", 3}, {"lora", 1}}
	dir := t.TempDir()
	sg := filepath.Join(dir, "sg.json")
	writeShareGPT(t, sg)
	for _, cfg := range []WorkloadConfig{
		{Kind: "synthetic", Input: LengthDist{Kind: "uniform", Min: 5, Max: 50}, Output: LengthDist{Kind: "normal", Mean: 20, StdDev: 5}},
		{Kind: "shared-prefix", Groups: 3, PrefixTokens: 20, SuffixTokens: 4, Output: LengthDist{Kind: "fixed", Mean: 8}},
		{Kind: "multi-turn", Sessions: 2, Turns: 3, Input: LengthDist{Kind: "fixed", Mean: 5}, Output: LengthDist{Kind: "fixed", Mean: 6}},
		{Kind: "sharegpt", ShareGPTFile: sg},
	} {
		a := genSeq(t, cfg, models, 42, 50)
		b := genSeq(t, cfg, models, 42, 50)
		c := genSeq(t, cfg, models, 43, 50)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s: same seed gave different sequences", cfg.Kind)
		}
		if reflect.DeepEqual(a, c) {
			t.Errorf("%s: different seeds gave the same sequence", cfg.Kind)
		}
		// The body of every request is valid JSON with the model and max_tokens.
		conf := Config{IgnoreEOS: true}
		for _, api := range []string{"chat", "completions"} {
			conf.API = api
			var v map[string]any
			if err := json.Unmarshal(appendBody(nil, &conf, &a[0]), &v); err != nil || v["model"] != a[0].Model {
				t.Errorf("%s %s body: %v %v", cfg.Kind, api, err, v)
			}
		}
	}
}

func TestModelMixFollowsWeights(t *testing.T) {
	models, err := ParseModels([]string{"base=3", "lora=1"})
	if err != nil {
		t.Fatal(err)
	}
	seq := genSeq(t, WorkloadConfig{Input: LengthDist{Mean: 1}, Output: LengthDist{Mean: 1}}, models, 1, 4000)
	n := 0
	for _, r := range seq {
		if r.Model == "base" {
			n++
		}
	}
	if frac := float64(n) / 4000; frac < 0.72 || frac > 0.78 {
		t.Errorf("base share %.3f, want 0.75", frac)
	}
	if m, _ := ParseModels([]string{"a,b"}); len(m) != 2 || m[1].Weight != 1 {
		t.Errorf("a,b parsed as %+v", m)
	}
	for _, bad := range [][]string{{"a=0"}, {"=2"}, {"a=x"}, {}} {
		if _, err := ParseModels(bad); err == nil {
			t.Errorf("ParseModels(%q) accepted", bad)
		}
	}
}

func TestSharedPrefixAndMultiTurnShapes(t *testing.T) {
	cfg := WorkloadConfig{Kind: "shared-prefix", Groups: 4, PrefixTokens: 30, SuffixTokens: 5, Output: LengthDist{Mean: 3}}
	prefixes := map[string]bool{}
	for _, r := range genSeq(t, cfg, []WeightedModel{{"m", 1}}, 7, 200) {
		words := strings.Fields(r.Messages[0].Content)
		if len(words) != 35 || r.InputTokens != 35 || r.MaxTokens != 3 {
			t.Fatalf("prompt of %d words (input %d, max %d), want 35", len(words), r.InputTokens, r.MaxTokens)
		}
		prefixes[strings.Join(words[:30], " ")] = true
	}
	if len(prefixes) != 4 {
		t.Errorf("%d distinct prefixes, want 4 groups", len(prefixes))
	}
	mt := WorkloadConfig{Kind: "multi-turn", Sessions: 1, Turns: 3, Input: LengthDist{Mean: 4}, Output: LengthDist{Mean: 2}}
	seq := genSeq(t, mt, []WeightedModel{{"m", 1}}, 7, 4)
	for i, want := range []int{1, 3, 5, 1} { // grows by user+assistant per turn, then restarts
		if len(seq[i].Messages) != want || seq[i].Turn != i%3 {
			t.Errorf("request %d: %d messages turn %d, want %d messages turn %d", i, len(seq[i].Messages), seq[i].Turn, want, i%3)
		}
	}
	if seq[2].Messages[0] != seq[1].Messages[0] || seq[3].Session == seq[0].Session {
		t.Errorf("conversation not grown from the same history, or session not renewed")
	}
}

func writeShareGPT(t *testing.T, path string) {
	t.Helper()
	data := `[
 {"id":"a","conversations":[{"from":"human","value":"What is a cat?"},{"from":"gpt","value":"A small domesticated carnivorous mammal."}]},
 {"id":"b","conversations":[{"from":"gpt","value":"starts with gpt"},{"from":"human","value":"skipped"}]},
 {"id":"c","conversations":[{"from":"human","value":"Only one turn"}]},
 {"id":"d","conversations":[{"from":"human","value":"Say hi twice"},{"from":"gpt","value":"hi hi"}]},
 {"id":"e","conversations":[{"from":"human","value":""},{"from":"gpt","value":"empty prompt"}]}
]`
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestShareGPTParsing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sg.json")
	writeShareGPT(t, path)
	items, err := loadShareGPT(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []shareGPTItem{{"What is a cat?", 4, 5}, {"Say hi twice", 3, 2}}
	if !reflect.DeepEqual(items, want) {
		t.Fatalf("items %+v, want %+v", items, want)
	}
	for _, bad := range []string{`{}`, `[{"conversations":[]}]`, `not json`} {
		if _, err := parseShareGPT(strings.NewReader(bad)); err == nil {
			t.Errorf("parseShareGPT(%q) accepted", bad)
		}
	}
	if _, err := loadShareGPT(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("missing file accepted")
	}
}

func TestParseLengthDist(t *testing.T) {
	for in, want := range map[string]LengthDist{
		"128":           {Kind: "fixed", Mean: 128},
		"fixed:5":       {Kind: "fixed", Mean: 5},
		"uniform:10:20": {Kind: "uniform", Min: 10, Max: 20, Mean: 15},
		"normal:100:10": {Kind: "normal", Mean: 100, StdDev: 10},
	} {
		got, err := ParseLengthDist(in)
		if err != nil || got != want {
			t.Errorf("ParseLengthDist(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "x", "uniform:5", "uniform:9:1", "normal:a:b", "-3", "poisson:3:3"} {
		if _, err := ParseLengthDist(bad); err == nil {
			t.Errorf("ParseLengthDist(%q) accepted", bad)
		}
	}
}
