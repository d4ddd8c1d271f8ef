package kvprompt

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
	"unicode/utf8"
)

// bigStyles are the real-size tokenizers testdata/gen/bigvocab.py trains (128,256 tokens,
// as Llama 3's vocabulary): Llama 3 style with ignore_merges, Qwen2 style (NFC, single
// digits) and GPT-2 style (the library's path loads it too).
var bigStyles = []string{"llama3", "qwen2", "gpt2"}

// bigTokenizers returns the directory of the real-size tokenizers, building them on first
// use with the python of the vLLM venv (it has Hugging Face `tokenizers`; another one with
// INFERGW_TOKENIZERS_PYTHON) into the user cache directory, keyed by the generator's hash:
// ~10 MB each, too big to commit, and minutes of training on this machine. Skips when that
// python is absent.
func bigTokenizers(tb testing.TB) string {
	tb.Helper()
	script := filepath.Join("testdata", "gen", "bigvocab.py")
	src, err := os.ReadFile(script)
	if err != nil {
		tb.Fatal(err)
	}
	sum := sha256.Sum256(src)
	cache, err := os.UserCacheDir()
	if err != nil {
		tb.Skipf("no cache directory for the real-size tokenizers: %v", err)
	}
	dir := filepath.Join(cache, "infergw", "kvprompt-bigvocab", hex.EncodeToString(sum[:8]))
	if _, err := os.Stat(filepath.Join(dir, "done")); err == nil {
		return dir
	}
	py := os.Getenv("INFERGW_TOKENIZERS_PYTHON")
	if py == "" {
		home, _ := os.UserHomeDir()
		py = filepath.Join(home, ".cache", "infergw", "vllm-venv-0.32.0", "bin", "python")
	}
	if _, err := os.Stat(py); err != nil {
		tb.Skipf("no python with Hugging Face tokenizers at %s (INFERGW_TOKENIZERS_PYTHON): cannot build the real-size tokenizers", py)
	}
	// The build takes minutes (~10 on this 2-core machine under load): it runs only when
	// asked (`make test-bigvocab`, a CI step of its own with its own time), never as a
	// side effect of `make test`, whose time it would double on a machine that has the
	// python but not the cache yet.
	if os.Getenv("INFERGW_BUILD_BIGVOCAB") != "1" {
		tb.Skipf("the real-size tokenizers are not built yet (%s): build them with `make test-bigvocab` (minutes, once per machine)", dir)
	}
	// Under go test's default 10-minute timeout the build would fail the package instead
	// of skipping.
	if f := flag.Lookup("test.timeout"); f != nil {
		if d, err := time.ParseDuration(f.Value.String()); err == nil && d > 0 && d < 20*time.Minute {
			tb.Skipf("building the real-size tokenizers takes minutes: run with a longer -timeout, "+
				"e.g. INFERGW_BUILD_BIGVOCAB=1 go test -run TestRealSizeGolden -timeout 30m ./kvprompt/ (-timeout %v here)", d)
		}
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		tb.Fatal(err)
	}
	// Built beside and renamed into place: a concurrent build by another test process
	// then costs time, not a half-written directory.
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "build-")
	if err != nil {
		tb.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	// Its progress streams to stderr (go test streams a single package's output): a
	// build of minutes must not look hung.
	cmd := exec.Command(py, script, tmp)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	fmt.Fprintf(os.Stderr, "kvprompt: building the real-size tokenizers into %s with %s (once per machine; minutes)\n", dir, py)
	done := make(chan struct{})
	defer close(done)
	go func() {
		tick := time.NewTicker(time.Minute)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				fmt.Fprintf(os.Stderr, "kvprompt: still building the real-size tokenizers (%s)\n", time.Since(start).Round(time.Second))
			}
		}
	}()
	if err := cmd.Run(); err != nil {
		tb.Fatalf("%s %s: %v", py, script, err)
	}
	fmt.Fprintf(os.Stderr, "kvprompt: real-size tokenizers built in %s\n", time.Since(start).Round(time.Second))
	if err := os.Rename(tmp, dir); err != nil {
		if _, statErr := os.Stat(filepath.Join(dir, "done")); statErr != nil {
			tb.Fatal(errors.Join(err, statErr))
		}
	}
	return dir
}

func loadBig(tb testing.TB, style string) (*Model, []goldenCase) {
	tb.Helper()
	dir := filepath.Join(bigTokenizers(tb), style)
	m, err := Load(dir, 1)
	if err != nil {
		tb.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "golden.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var cases []goldenCase
	if err := json.Unmarshal(raw, &cases); err != nil {
		tb.Fatal(err)
	}
	return m, cases
}

// bigPrompts are the generator's prompts: "seen" of the training's words, "unseen" of
// words it never saw (their pieces go through the merges), each cut to size bytes.
func bigPrompts(tb testing.TB, style string, size int) (seen, unseen string) {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join(bigTokenizers(tb), style, "prompts.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var p struct{ Seen, Unseen string }
	if err := json.Unmarshal(raw, &p); err != nil {
		tb.Fatal(err)
	}
	cut := func(s string) string {
		if len(s) < size {
			tb.Fatalf("generated prompt of %d bytes, want %d", len(s), size)
		}
		s = s[:size]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
		return s
	}
	return cut(p.Seen), cut(p.Unseen)
}

// TestRealSizeGolden: with real-size vocabularies (128,256 tokens, ~128k merges) the fast
// path's ids equal HF tokenizers' on texts of the training's words and of words it never
// saw, for the three styles, with and without special tokens.
func TestRealSizeGolden(t *testing.T) {
	for _, style := range bigStyles {
		t.Run(style, func(t *testing.T) {
			m, cases := loadBig(t, style)
			if m.fast == nil || m.fast.bpe == nil {
				t.Fatal("no fast path with its own BPE for this tokenizer")
			}
			if n := len(m.fast.bpe.vocab); n != 128256 {
				t.Fatalf("vocabulary of %d tokens, want 128,256", n)
			}
			for i, c := range cases {
				for _, special := range []bool{false, true} {
					got, err := m.encode(nil, c.Text, special)
					if err != nil {
						t.Fatal(err)
					}
					want := c.IDs
					if special {
						want = c.IDsSpecial
					}
					if !slices.Equal(got, want) && len(got)+len(want) > 0 {
						t.Errorf("case %d special=%v %q:\nfast %v\nHF   %v", i, special, c.Text, got, want)
					}
				}
			}
		})
	}
}

// BenchmarkRealSize8K: an 8 KB completion body through the whole of Model.Tokens with
// the real-size tokenizers: "warm" (the piece cache holds the prompt's pieces), "cold"
// (emptied before every call: the prompt's words are the training's, most pieces whole
// vocabulary tokens) and "unseen" (cold, of words the training never saw: every piece
// merged from bytes).
func BenchmarkRealSize8K(b *testing.B) {
	for _, style := range bigStyles {
		m, _ := loadBig(b, style)
		seen, unseen := bigPrompts(b, style, 8<<10)
		for _, run := range []struct {
			name, text string
			cold       bool
		}{{"warm", seen, false}, {"cold", seen, true}, {"unseen", unseen, true}} {
			body, _ := json.Marshal(map[string]string{"model": "m", "prompt": run.text})
			b.Run(fmt.Sprintf("%s/%s", style, run.name), func(b *testing.B) {
				benchTokens(b, m, body, run.cold)
			})
		}
	}
}

// BenchmarkRealSizeBySize: the Llama 3 style real-size tokenizer on prompts of unseen
// words, cold, at three sizes: the cost per byte should not grow with the size.
func BenchmarkRealSizeBySize(b *testing.B) {
	m, _ := loadBig(b, "llama3")
	for _, kb := range []int{2, 8, 30} { // the generator's prompts are ~31 KB
		_, unseen := bigPrompts(b, "llama3", kb<<10)
		body, _ := json.Marshal(map[string]string{"model": "m", "prompt": unseen})
		b.Run(fmt.Sprintf("%dKB/unseen", kb), func(b *testing.B) { benchTokens(b, m, body, true) })
	}
}

// benchTokens runs Model.Tokens on body, with the piece cache emptied before each call
// when cold.
func benchTokens(b *testing.B, m *Model, body []byte, cold bool) {
	var dst []uint32
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if cold {
			m.ResetCache()
		}
		var err error
		if dst, err = m.Tokens(dst[:0], body); err != nil {
			b.Fatal(err)
		}
	}
}
