package kvprompt

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

func load(t testing.TB) *Model {
	t.Helper()
	m, err := Load("testdata/tiny", 2)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestCompletionMatchesReference: the ids equal those the Python tokenizers library
// produced for the same tokenizer.json (loadtest's reference file).
func TestCompletionMatchesReference(t *testing.T) {
	m := load(t)
	raw, err := os.ReadFile("../loadtest/testdata/tokenizer/reference.json")
	if err != nil {
		t.Fatal(err)
	}
	var refs []struct {
		Text string
		IDs  []uint32 `json:"ids"`
	}
	if err := json.Unmarshal(raw, &refs); err != nil {
		t.Fatal(err)
	}
	for _, r := range refs {
		body, _ := json.Marshal(map[string]any{"model": "m", "prompt": r.Text})
		got, err := m.Tokens(nil, body)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, r.IDs) {
			t.Errorf("%q:\n got %v\nwant %v", r.Text, got, r.IDs)
		}
	}
}

func TestChatTemplate(t *testing.T) {
	m := load(t)
	body := []byte(`{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hello"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"there"}]}]}`)
	got, err := m.Tokens(nil, body)
	if err != nil {
		t.Fatal(err)
	}
	// The rendered text, tokenized without special tokens added.
	want, err := m.encode(nil, "<s><|system|>\nbe brief</s>\n<|user|>\nhello\nthere</s>\n<|assistant|>\n", false)
	if !m.Fast() {
		t.Fatal("the tiny model's tokenizer does not take the fast path")
	}
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	if got[0] != 1 { // <s> is id 1 in this vocabulary: a special token, not its characters
		t.Fatalf("first token %d, want <s> (1)", got[0])
	}
	noGen, _ := m.Tokens(nil, []byte(`{"messages":[{"role":"user","content":"hello"}],"add_generation_prompt":false}`))
	withGen, _ := m.Tokens(nil, []byte(`{"messages":[{"role":"user","content":"hello"}]}`))
	if len(withGen) <= len(noGen) || !slices.Equal(withGen[:len(noGen)], noGen) {
		t.Fatalf("generation prompt: %v vs %v", withGen, noGen)
	}
}

func TestPromptForms(t *testing.T) {
	m := load(t)
	ids, err := m.Tokens(nil, []byte(`{"prompt":[5,6,7]}`))
	if err != nil || !slices.Equal(ids, []uint32{5, 6, 7}) {
		t.Fatalf("token ids: %v %v", ids, err)
	}
	one, _ := m.Tokens(nil, []byte(`{"prompt":"ka lo mi"}`))
	batch, err := m.Tokens(nil, []byte(`{"prompt":["ka lo mi","ne ru"]}`))
	if err != nil || !slices.Equal(one, batch) {
		t.Fatalf("batch: %v %v", batch, err)
	}
	for _, bad := range []string{`{}`, `{"prompt":{}}`, `{"prompt":[-1]}`, `not json`, `{"prompt":[[[1]]]}`} {
		if _, err := m.Tokens(nil, []byte(bad)); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
	// Python's rules, as vLLM reads the body: a repeated name's last value wins, names are
	// case-sensitive, a null prompt is none.
	last, err := m.Tokens(nil, []byte(`{"prompt":"ne ru","prompt":"ka lo mi"}`))
	if err != nil || !slices.Equal(last, one) {
		t.Fatalf("repeated prompt: %v %v, want %v", last, err, one)
	}
	for _, none := range []string{`{"Prompt":"ka lo mi"}`, `{"prompt":null}`, `{"prompt":"ka","prompt":null}`} {
		if _, err := m.Tokens(nil, []byte(none)); !errors.Is(err, ErrNoPrompt) {
			t.Errorf("%s: %v, want ErrNoPrompt", none, err)
		}
	}
	big, _ := json.Marshal(map[string]string{"prompt": strings.Repeat("a", MaxPromptBytes+1)})
	if _, err := m.Tokens(nil, big); err == nil {
		t.Error("a prompt over the limit was tokenized")
	}
}

// prompt8K is an 8 KB prompt of the tiny model's words.
func prompt8K() []byte { return promptOf(8192) }

func promptOf(size int) []byte {
	words := strings.Fields("kalo mine ruta vozi pesu doba gifa the a of and to in is for on with that this from by as at are be")
	var sb strings.Builder
	for i := 0; sb.Len() < size; i++ {
		sb.WriteString(words[(i*7)%len(words)])
		sb.WriteByte(' ')
	}
	b, _ := json.Marshal(map[string]string{"model": "m", "prompt": sb.String()})
	return b
}

func BenchmarkTokens8K(b *testing.B) {
	m := load(b)
	body := prompt8K()
	var dst []uint32
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = m.Tokens(dst[:0], body); err != nil {
			b.Fatal(err)
		}
	}
}

// TestFastPathMatchesLibrary: on generated text without added tokens (where the library
// is right), the fast path's ids equal the library's.
func TestFastPathMatchesLibrary(t *testing.T) {
	m := load(t)
	if m.fast == nil || m.fast.bpe == nil {
		t.Fatal("the tiny model's pieces do not take the fast path's BPE")
	}
	pieces := []string{"ka", "lo", "mi", "the", " ", "  ", "   ", "\n", "\n\n", " \n", "\t", "'s", "'re", "'ll", "'x", "123", "4", "!!", "?", ".", ",", "-", "ünï", "日本", "é", "Ⅻ", "½", "'", "\u00a0", "A", "Z9", "a'b"}
	rng := uint64(1)
	next := func(n int) int { rng = rng*6364136223846793005 + 1442695040888963407; return int(rng>>33) % n }
	for trial := range 300 {
		var sb strings.Builder
		for range 1 + next(40) {
			sb.WriteString(pieces[next(len(pieces))])
		}
		text := sb.String()
		fast, err := m.encode(nil, text, false)
		if err != nil {
			t.Fatal(err)
		}
		slow, err := m.slowEncode(nil, text, false)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(fast, slow) {
			t.Fatalf("trial %d %q:\nfast %v\nslow %v", trial, text, fast, slow)
		}
	}
}

func BenchmarkTokens8KLibrary(b *testing.B) {
	m := load(b)
	m.fast = nil
	body := prompt8K()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Tokens(nil, body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTokensBySize shows the cost is linear in the prompt's size, with the piece
// cache warm and cold (emptied before every call).
func BenchmarkTokensBySize(b *testing.B) {
	m := load(b)
	for _, kb := range []int{2, 8, 32} {
		body := promptOf(kb << 10)
		for _, cold := range []bool{false, true} {
			name := fmt.Sprintf("%dKB", kb)
			if cold {
				name += "/cold"
			}
			b.Run(name, func(b *testing.B) { benchTokens(b, m, body, cold) })
		}
	}
}

// FuzzBody: Tokens returns ids or an error for any body, never panics; and wherever
// encoding/json (the decoder before this one, with Python's rules on names: exact, the
// last of repeated ones) reads a body as {"prompt": a string, "model": anything}, the
// ids are that string's.
func FuzzBody(f *testing.F) {
	m, _ := loadGolden(f, "llama3ish")
	for _, seed := range []string{
		`{"model":"m","prompt":"a\"b\u00e9\ud83d\ude00 \n\t\/"}`, `{"prompt":[1,2]}`, `{"prompt":["x","y"]}`,
		`{"prompt":[[1],[2]]}`, `{"prompt":null}`, `{"messages":[]}`, `{"prompt":"a","prompt":"b"}`,
		`{"prompt":"\ud800x"}`, "{\"prompt\":\"\xff\"}", `{"prompt":"<|eot_id|>x"}`, `[1]`, `{"prompt":1e3}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) > 4096 {
			t.Skip()
		}
		got, err := m.Tokens(nil, raw)
		var fields map[string]json.RawMessage
		if json.Unmarshal(raw, &fields) != nil || len(fields) > 2 || (len(fields) == 2 && fields["model"] == nil) {
			return
		}
		var text string
		if p := fields["prompt"]; p == nil || string(p) == "null" || json.Unmarshal(p, &text) != nil {
			return
		}
		want, _ := m.encode(nil, text, true)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("%q: %v %v, want the ids of %q: %v", raw, got, err, text, want)
		}
	})
}
