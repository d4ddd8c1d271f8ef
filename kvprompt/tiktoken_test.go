package kvprompt

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// tiktokenStyle are the Llama 3 and Qwen2 style test tokenizers (testdata/gen/llama3ish.py
// trains them with HF tokenizers and writes golden.json: HF's own ids for each text).
var tiktokenStyle = []string{"llama3ish", "qwen2ish"}

type goldenCase struct {
	Text       string   `json:"text"`
	IDs        []uint32 `json:"ids"`
	IDsSpecial []uint32 `json:"ids_special"`
}

func loadGolden(t testing.TB, name string) (*Model, []goldenCase) {
	t.Helper()
	dir := filepath.Join("testdata", name)
	m, err := Load(dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []goldenCase
	if err := json.Unmarshal(raw, &cases); err != nil {
		t.Fatal(err)
	}
	return m, cases
}

// TestTiktokenStyleGolden: for Llama 3 and Qwen2 style tokenizers the fast path is taken
// and its ids equal Hugging Face tokenizers' (the Python library that generated the
// golden file) on every test text, with and without the post-processor's tokens:
// contractions in any case, digit runs, CR/LF and whitespace runs, NBSP, CJK, emoji,
// combining marks (NFC for Qwen2), added tokens inside text.
func TestTiktokenStyleGolden(t *testing.T) {
	for _, name := range tiktokenStyle {
		t.Run(name, func(t *testing.T) {
			m, cases := loadGolden(t, name)
			if !m.Fast() {
				t.Fatal("no fast path for this tokenizer")
			}
			if len(cases) < 100 {
				t.Fatalf("only %d golden cases", len(cases))
			}
			for i, c := range cases {
				got, err := m.encode(nil, c.Text, false)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got, c.IDs) && !(len(got) == 0 && len(c.IDs) == 0) {
					t.Errorf("case %d %q:\nfast %v\nHF   %v", i, c.Text, got, c.IDs)
				}
				got, err = m.encode(nil, c.Text, true)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got, c.IDsSpecial) {
					t.Errorf("case %d %q with special tokens:\nfast %v\nHF   %v", i, c.Text, got, c.IDsSpecial)
				}
			}
		})
	}
}

// FuzzTiktokenStyle holds the fast path of both tokenizers, on any text, to references
// written differently (the library cannot load these tokenizers: see bpe.go):
//   - the pre-tokenizer scanner to referencePieces, which tries each alternative of the
//     pattern as its own anchored Go regexp, in order (the lookahead of \s+(?!\S) done by
//     hand), with \s spelled as Unicode White_Space;
//   - the heap-based BPE to naiveBPE (repeatedly merge the lowest-ranked adjacent pair);
//   - and the ids decode back to the (NFC-normalized) text's bytes.
//
// Seeds: the golden texts.
func FuzzTiktokenStyle(f *testing.F) {
	models := make([]*Model, len(tiktokenStyle))
	for i, name := range tiktokenStyle {
		m, cases := loadGolden(f, name)
		models[i] = m
		for _, c := range cases[:40] {
			f.Add(c.Text)
		}
	}
	f.Add("x'ſs 'S 'rE\n\r\n  \t")
	refs := []*tiktokenRef{newTiktokenRef(3), newTiktokenRef(1)}
	f.Fuzz(func(t *testing.T, text string) {
		if len(text) > 2048 || !utf8.ValidString(text) {
			t.Skip()
		}
		for i, m := range models {
			var got []string
			for rest := text; len(rest) > 0; {
				n := m.fast.nextPiece(rest)
				if n <= 0 || n > len(rest) {
					t.Fatalf("%s: piece length %d of %q", tiktokenStyle[i], n, rest)
				}
				got = append(got, rest[:n])
				rest = rest[n:]
			}
			if want := refs[i].pieces(text); !slices.Equal(got, want) {
				t.Fatalf("%s %q:\nscanner   %q\nreference %q", tiktokenStyle[i], text, got, want)
			}
			for _, p := range got {
				if a, b := m.fast.bpe.encode(nil, p), naiveBPE(m.fast.bpe, p); !slices.Equal(a, b) {
					t.Fatalf("%s piece %q: heap BPE %v, naive %v", tiktokenStyle[i], p, a, b)
				}
			}
			if strings.Contains(text, "<|") {
				continue // added tokens: ids that decode to their content, checked by the golden test
			}
			ids, err := m.encode(nil, text, false)
			if err != nil {
				t.Fatal(err)
			}
			want := text
			if m.fast.nfc {
				want = norm.NFC.String(text)
			}
			if dec := decodeBytes(t, m, ids); dec != want {
				t.Fatalf("%s: %q decodes to %q", tiktokenStyle[i], text, dec)
			}
		}
	})
}

// tiktokenRef pre-tokenizes with one anchored Go regexp per alternative of the pattern.
type tiktokenRef struct{ alts []*regexp.Regexp }

func newTiktokenRef(maxDigits int) *tiktokenRef {
	const ws = `[\t\n\v\f\r\x{85}\p{Z}]` // Unicode White_Space: Oniguruma's \s
	alts := []string{
		`(?i:'s|'t|'re|'ve|'m|'ll|'d|'\x{17f})`,
		`[^\r\n\p{L}\p{N}]?\p{L}+`,
		fmt.Sprintf(`\p{N}{1,%d}`, maxDigits),
		` ?[^\t\n\v\f\r\x{85}\p{Z}\p{L}\p{N}]+[\r\n]*`,
		ws + `*[\r\n]+`,
		ws + `+`, // \s+(?!\S) and \s+: see pieces
	}
	r := &tiktokenRef{}
	for _, a := range alts {
		r.alts = append(r.alts, regexp.MustCompile(`^(?:`+a+`)`))
	}
	return r
}

func (r *tiktokenRef) pieces(s string) []string {
	var out []string
	for len(s) > 0 {
		n := 0
		for i, re := range r.alts {
			loc := re.FindStringIndex(s)
			if loc == nil {
				continue
			}
			n = loc[1]
			if i == len(r.alts)-1 && n < len(s) {
				// \s+(?!\S): give back the last whitespace character before a non-space,
				// unless that leaves nothing (then \s+ takes the single character).
				if _, last := utf8.DecodeLastRuneInString(s[:n]); n-last > 0 {
					n -= last
				}
			}
			break
		}
		out = append(out, s[:n])
		s = s[n:]
	}
	return out
}

// naiveBPE merges the lowest-ranked adjacent pair (leftmost on ties) until none is left,
// after looking the whole piece up in the vocabulary (by its byte-level characters) under
// ignore_merges, as HF does.
func naiveBPE(b *byteBPE, piece string) []uint32 {
	if b.ignoreMerges {
		chars := byteChars()
		var sb strings.Builder
		for i := 0; i < len(piece); i++ {
			sb.WriteRune(chars[piece[i]])
		}
		if id, ok := b.vocab[sb.String()]; ok {
			return []uint32{id}
		}
	}
	var ids []uint32
	for i := 0; i < len(piece); i++ {
		ids = append(ids, b.byteID[piece[i]])
	}
	for {
		best, at := noMerge, -1
		for i := 0; i+1 < len(ids); i++ {
			if r := b.merges.get(ids[i], ids[i+1]); r < best {
				best, at = r, i
			}
		}
		if at < 0 {
			return ids
		}
		ids = slices.Replace(ids, at, at+2, b.merges.merged[best])
	}
}

// decodeBytes maps ids back to bytes through the vocabulary and GPT-2's byte characters.
func decodeBytes(t *testing.T, m *Model, ids []uint32) string {
	t.Helper()
	tokens := make(map[uint32]string, len(m.fast.bpe.vocab))
	for s, id := range m.fast.bpe.vocab {
		tokens[id] = s
	}
	chars := byteChars()
	byteOf := make(map[rune]byte, 256)
	for c, r := range chars {
		byteOf[r] = byte(c)
	}
	var sb strings.Builder
	for _, id := range ids {
		for _, r := range tokens[id] {
			c, ok := byteOf[r]
			if !ok {
				t.Fatalf("token %d %q holds %q, no byte character", id, tokens[id], r)
			}
			sb.WriteByte(c)
		}
	}
	return sb.String()
}

// BenchmarkTokens8KTiktokenStyle: an 8 KB completion prompt of the golden texts (mixed
// scripts, digits, whitespace runs) through the Llama 3 and Qwen2 style fast paths, with
// the piece cache warm (steady state) and cold. The library path does not exist for these:
// it cannot load them.
func BenchmarkTokens8KTiktokenStyle(b *testing.B) {
	for _, name := range tiktokenStyle {
		m, cases := loadGolden(b, name)
		var sb strings.Builder
		for i := 0; sb.Len() < 8<<10; i++ {
			sb.WriteString(cases[i%len(cases)].Text)
			sb.WriteByte(' ')
		}
		body, _ := json.Marshal(map[string]string{"model": "m", "prompt": sb.String()[:8<<10]})
		b.Run(fmt.Sprintf("%s/fast", name), func(b *testing.B) {
			var dst []uint32
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if dst, err = m.Tokens(dst[:0], body); err != nil {
					b.Fatal(err)
				}
			}
		})
		// Every piece a cache miss: the scanner and the BPE on every piece, the cost of a
		// prompt of words never seen (the cache holds 65,536 pieces).
		b.Run(fmt.Sprintf("%s/cold", name), func(b *testing.B) {
			var dst []uint32
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				m.ResetCache()
				var err error
				if dst, err = m.Tokens(dst[:0], body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
