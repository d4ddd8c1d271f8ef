package loadtest

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// testdata/tokenizer/tokenizer.json is the byte-level BPE tokenizer of the tiny model the
// real-vLLM test builds (test/vllm/build_model.py); reference.json holds the ids the
// Hugging Face tokenizers library (Python, the one vLLM uses) gives for a few texts.

func TestTokenizerMatchesHuggingFace(t *testing.T) {
	m, err := loadModelTokens("testdata/tokenizer")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("testdata/tokenizer/reference.json")
	if err != nil {
		t.Fatal(err)
	}
	var refs []struct {
		Text string `json:"text"`
		IDs  []int  `json:"ids"`
	}
	if err := json.Unmarshal(b, &refs); err != nil {
		t.Fatal(err)
	}
	for _, r := range refs {
		enc, err := m.tk.EncodeSingle(r.Text, false)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(enc.Ids, r.IDs) && !(len(r.IDs) == 0 && len(enc.Ids) == 0) {
			t.Errorf("%q: ids %v, Hugging Face gives %v", r.Text, enc.Ids, r.IDs)
		}
	}
}

func TestGeneratedPromptsHaveExactTokenCounts(t *testing.T) {
	m, err := loadModelTokens("testdata/tokenizer/tokenizer.json")
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{1, 2, 7, 64, 512, 1000} {
		for _, cont := range []bool{false, true} {
			text, predicted := m.words(rng, n, cont)
			if cont {
				text = "a " + text // as it is sent: after a space
			}
			got, err := m.count(text)
			if err != nil {
				t.Fatal(err)
			}
			if cont {
				a, _ := m.count("a")
				got -= a
			}
			if got != n || predicted != n {
				t.Errorf("n=%d cont=%v: %d tokens (predicted %d)", n, cont, got, predicted)
			}
		}
	}

	// Through the workloads: synthetic prompts and shared-prefix prompts (prefix + suffix).
	for _, wl := range []WorkloadConfig{
		{Kind: "synthetic", Input: LengthDist{Kind: "uniform", Min: 1, Max: 300}},
		{Kind: "shared-prefix", Groups: 2, PrefixTokens: 200, SuffixTokens: 17},
	} {
		wl.Tokenizer, wl.Output = "testdata/tokenizer", LengthDist{Kind: "fixed", Mean: 4}
		g, err := newGenerator(wl, []WeightedModel{{Name: "m", Weight: 1}}, 3)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 20; i++ {
			r := g.Next()
			got, err := m.count(r.Messages[0].Content)
			if err != nil {
				t.Fatal(err)
			}
			if got != r.InputTokens {
				t.Errorf("%s request %d: %d tokens, want %d", wl.Kind, i, got, r.InputTokens)
			}
		}
	}
}

func TestTokenizerErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := loadModelTokens(dir); err == nil || !strings.Contains(err.Error(), "tokenizer.json") {
		t.Errorf("directory without tokenizer.json: %v", err)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"model": {"type": "nope"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadModelTokens(bad); err == nil {
		t.Error("a tokenizer.json of an unknown model type loaded")
	}
	cfg := testConfig("http://127.0.0.1:1")
	cfg.Workload.Tokenizer = bad
	if _, err := Run(t.Context(), cfg, nil); err == nil || !strings.Contains(err.Error(), "tokenizer") {
		t.Errorf("run with a bad tokenizer: %v", err)
	}
}
