package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

func TestHeavyTailDatasetIsSeededAndHeavyTailed(t *testing.T) {
	dir := t.TempDir()
	h := heavyTail{Conversations: 2000, PromptMedian: 300, PromptSigma: 1.0, PromptMax: 3000,
		OutputMedian: 100, OutputSigma: 0.9, OutputMax: 1000}
	a, b, c := filepath.Join(dir, "a.json"), filepath.Join(dir, "b.json"), filepath.Join(dir, "c.json")
	for _, f := range []struct {
		path string
		seed uint64
	}{{a, 1}, {b, 1}, {c, 2}} {
		if err := writeHeavyTailDataset(f.path, h, f.seed); err != nil {
			t.Fatal(err)
		}
	}
	ab, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	cb, _ := os.ReadFile(c)
	if !bytes.Equal(ab, bb) {
		t.Error("same seed gave different datasets")
	}
	if bytes.Equal(ab, cb) {
		t.Error("different seeds gave the same dataset")
	}
	var recs []shareGPTRecord
	if err := json.Unmarshal(ab, &recs); err != nil {
		t.Fatal(err)
	}
	if len(recs) != h.Conversations {
		t.Fatalf("records = %d, want %d", len(recs), h.Conversations)
	}
	var prompts []int
	for _, r := range recs {
		if len(r.Conversations) != 2 || r.Conversations[0].From != "human" || r.Conversations[1].From != "gpt" {
			t.Fatalf("record %s: want a human then a gpt turn, got %+v", r.ID, r.Conversations)
		}
		n := len(strings.Fields(r.Conversations[0].Value))
		if n < 1 || n > h.PromptMax {
			t.Fatalf("prompt of %d words outside [1, %d]", n, h.PromptMax)
		}
		if o := len(strings.Fields(r.Conversations[1].Value)); o < 1 || o > h.OutputMax {
			t.Fatalf("output of %d words outside [1, %d]", o, h.OutputMax)
		}
		prompts = append(prompts, n)
	}
	sort.Ints(prompts)
	p50, p99 := prompts[len(prompts)/2], prompts[len(prompts)*99/100]
	// Log-normal with sigma 1: median ≈ 300, p99 ≈ 300·e^2.33 ≈ 3,000 (clamped); a heavy tail
	// means the p99 is many times the median.
	if p50 < 250 || p50 > 360 {
		t.Errorf("prompt median %d, want ≈ 300", p50)
	}
	if float64(p99) < 6*float64(p50) {
		t.Errorf("prompt p99 %d is not heavy-tailed against the median %d", p99, p50)
	}
}

func TestHeavyTailDatasetRejectsBadSpec(t *testing.T) {
	if err := writeHeavyTailDataset(filepath.Join(t.TempDir(), "x.json"), heavyTail{}, 1); err == nil {
		t.Error("zero spec: want an error")
	}
}
