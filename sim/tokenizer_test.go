package sim

import (
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestTokenizeDeterministicAndRoughlyFourCharsPerToken(t *testing.T) {
	text := strings.Repeat("The quick brown fox jumps over the lazy dog, again and again. ", 50)
	a := tokenize(text, nil)
	b := tokenize(text, nil)
	if len(a) != len(b) {
		t.Fatalf("lengths differ: %d vs %d", len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] || a[i] >= vocabSize {
			t.Fatalf("token %d: %d vs %d", i, a[i], b[i])
		}
	}
	ratio := float64(len(text)) / float64(len(a))
	if ratio < 2.5 || ratio > 5 {
		t.Errorf("%.2f chars per token, want about 3-4", ratio)
	}
}

func TestTokenizeSharedPrefixGivesSharedTokens(t *testing.T) {
	p := tokenize("system prompt that is shared. user: one", nil)
	q := tokenize("system prompt that is shared. user: two", nil)
	same := 0
	for same < min(len(p), len(q)) && p[same] == q[same] {
		same++
	}
	if same < len(p)-2 {
		t.Errorf("only %d of %d leading tokens shared", same, len(p))
	}
}

func TestTokenizeSpecialTokensAreSingle(t *testing.T) {
	if got := tokenize("<|eot_id|>", nil); len(got) != 1 {
		t.Errorf("<|eot_id|> gave %d tokens, want 1", len(got))
	}
	if got := tokenize("a <| b", nil); len(got) < 3 {
		t.Errorf("unterminated <| treated as special: %d tokens", len(got))
	}
}

func TestOutputIsDeterministic(t *testing.T) {
	// The same seed gives the same tokens on every call; another seed gives other ones.
	var first, again, other []string
	for i := range 50 {
		first = append(first, outputToken(42, i))
	}
	for i := range 50 {
		again = append(again, outputToken(42, i))
		other = append(other, outputToken(43, i))
	}
	if !slices.Equal(first, again) || slices.Contains(first, "") {
		t.Fatalf("output not deterministic: %q then %q", first, again)
	}
	if slices.Equal(first, other) {
		t.Fatal("seeds 42 and 43 gave the same output")
	}
	if n := naturalLength(12345); n < 16 || n > 271 {
		t.Errorf("natural length %d outside [16,271]", n)
	}
}

func FuzzTokenize(f *testing.F) {
	f.Add("hello world")
	f.Add("<|start_header_id|>user<|end_header_id|>\n\nhi")
	f.Add("日本語のテキストです。")
	f.Add("\xff\xfe broken utf8")
	f.Fuzz(func(t *testing.T, text string) {
		ids := tokenize(text, nil)
		if text != "" && strings.TrimSpace(text) != "" && len(ids) == 0 {
			t.Errorf("non-blank text %q gave no tokens", text)
		}
		if len(ids) > len(text) {
			t.Errorf("%d tokens from %d bytes", len(ids), len(text))
		}
		if utf8.ValidString(text) && len(text) > 0 && len(ids) == 0 && strings.TrimSpace(text) != "" {
			t.Errorf("valid text lost")
		}
	})
}

func BenchmarkTokenize(b *testing.B) {
	text := words(2000, "word")
	ids := make([]uint32, 0, len(text))
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		ids = tokenize(text, ids[:0])
	}
}
