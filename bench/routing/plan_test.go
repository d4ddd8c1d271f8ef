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
	}
	for name, want := range good {
		if got, err := parsePolicy(name); err != nil || got != want {
			t.Errorf("%s: %+v %v, want %+v", name, got, err, want)
		}
	}
	for _, name := range []string{"precise-restart", "precise-x0", "precise-x9", "precise-xx", "round-robin-x2", "oracle-x2", "nope-x2", ""} {
		if got, err := parsePolicy(name); err == nil {
			t.Errorf("%q accepted as %+v", name, got)
		}
	}
}
