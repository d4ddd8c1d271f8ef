package main

import "testing"

// TestParsePolicy: the layer variants of a policy name, and the names that make no sense.
func TestParsePolicy(t *testing.T) {
	good := map[string]policySpec{
		"default":            {Base: "default"},
		"precise-x2":         {Base: "precise", Pickers: 2},
		"precise-x2-restart": {Base: "precise", Pickers: 2, Restart: true},
		"default-x1-restart": {Base: "default", Pickers: 1, Restart: true},
		"default-v0":         {Base: "default-v0"},
		"oracle":             {Base: "oracle"},
		"precise-shadow":     {Base: "precise", Shadow: true},
		"default-fixed":      {Base: "default-fixed"},
	}
	for name, want := range good {
		if got, err := parsePolicy(name); err != nil || got != want {
			t.Errorf("%s: %+v %v, want %+v", name, got, err, want)
		}
	}
	for _, name := range []string{"precise-restart", "precise-x0", "precise-x9", "precise-xx", "round-robin-x2", "oracle-x2", "default-fixed-x2", "nope-x2", ""} {
		if got, err := parsePolicy(name); err == nil {
			t.Errorf("%q accepted as %+v", name, got)
		}
	}
}

// TestKVPressureIsTwiceTheFleet: the kv-pressure workload's prefixes add up to about twice
// the fleet's KV cache in the sims' tokens, whether the load tester writes words (the
// sims' tokenizer counts ~1.77 tokens per word) or the model's tokens (--tokenizer: a
// prefix is exactly its PrefixTokens). Before, the word count was used in both cases, and
// with a tokenizer the working set was 1.13× the fleet.
func TestKVPressureIsTwiceTheFleet(t *testing.T) {
	for _, tok := range []string{"", "kvprompt/testdata/tiny"} {
		p, err := buildPlan(options{Pods: 4, TimeScale: 1, KVBlocks: 768, BlockSize: 16, Adapters: 2, RateFactor: 1, Tokenizer: tok})
		if err != nil {
			t.Fatal(err)
		}
		for _, wl := range p.Workloads {
			if wl.Name != "kv-pressure" {
				continue
			}
			perPrefix := sharedPrefixSimTokens
			if tok != "" {
				perPrefix = wl.Workload.PrefixTokens
			}
			fleet := 4 * 768 * 16
			if ratio := float64(wl.Workload.Groups*perPrefix) / float64(fleet); ratio < 1.9 || ratio > 2.1 {
				t.Errorf("tokenizer %q: %d groups × %d tokens = %.2f× the fleet's %d tokens, want ≈2×", tok, wl.Workload.Groups, perPrefix, ratio, fleet)
			}
		}
	}
}
