package contract

import (
	"slices"
	"strings"
	"testing"
)

func TestPoolsRoundTrip(t *testing.T) {
	for _, pools := range [][]WeightedPool{
		{{Key: "default/llama", Weight: 1}},
		{{Key: "ns/a", Weight: 80}, {Key: "ns/b", Weight: 20}},
		{{Key: "ns/a", Weight: 0}, {Key: "other/b", Weight: 4294967295}, {Key: "ns/c", Weight: 1}},
	} {
		enc := EncodePools(pools)
		got, err := ParsePools(enc)
		if err != nil {
			t.Fatalf("ParsePools(%q): %v", enc, err)
		}
		if !slices.Equal(got, pools) {
			t.Errorf("ParsePools(EncodePools(%v)) = %v (encoded %q)", pools, got, enc)
		}
	}
	// One pool is written without its weight: it gets every request whatever the weight.
	if enc := EncodePools([]WeightedPool{{Key: "ns/a", Weight: 7}}); enc != "ns/a" {
		t.Errorf("one pool encodes as %q, want ns/a", enc)
	}
}

func TestParsePoolsRefusesBadLists(t *testing.T) {
	for _, v := range []string{"", " , ", "nsonly", "/name", "ns/", "ns/a/b", "ns/a=-1", "ns/a=x", "ns/a=4294967296"} {
		if got, err := ParsePools(v); err == nil {
			t.Errorf("ParsePools(%q) = %v, want an error", v, got)
		}
	}
	long := strings.Repeat("ns/p=1,", MaxPools+1)
	if _, err := ParsePools(long); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("a list of %d pools: err = %v, want the bound", MaxPools+1, err)
	}
	if _, err := ParsePools(strings.Repeat("ns/p=1,", MaxPools)); err != nil {
		t.Errorf("a list of exactly %d pools: %v", MaxPools, err)
	}
}

// FuzzParsePools: whatever the input, ParsePools does not panic, and what it accepts
// survives a round trip through EncodePools.
func FuzzParsePools(f *testing.F) {
	for _, s := range []string{"ns/a", "ns/a=3,ns/b=1", " ns/a = 2 , ns/b ", "x", "ns/a=99999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pools, err := ParsePools(s)
		if err != nil {
			return
		}
		if len(pools) == 1 {
			pools[0].Weight = 1
		}
		again, err := ParsePools(EncodePools(pools))
		if err != nil || !slices.Equal(again, pools) {
			t.Fatalf("round trip of %q: %v, %v", s, again, err)
		}
	})
}
