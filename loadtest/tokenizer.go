package loadtest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/sugarme/tokenizer"
	"github.com/sugarme/tokenizer/pretrained"
)

// modelTokens counts and builds text in a model's own tokens, from a Hugging Face
// tokenizer.json read with github.com/sugarme/tokenizer (a pure-Go port of HF tokenizers;
// its ids are checked against the Python library's in tests). Without one, the load tester
// counts words, which is only close to tokens.
type modelTokens struct {
	mu  sync.Mutex // the library's tokenizer is not documented as safe for concurrent use
	tk  *tokenizer.Tokenizer
	src string
	// first and cont are each vocabulary word's token count at the start of a text and
	// after a space; ones are the words that cost one token after a space.
	first, cont []int
	ones        []int
}

// loadModelTokens reads DIR/tokenizer.json or FILE and prepares prompt generation: it
// requires that, with this tokenizer, a text's token count is the sum of its words' (true of
// byte-level BPE and metaspace tokenizers, which split at spaces before merging) and that
// some vocabulary word costs a single token, and fails with an explanation otherwise.
func loadModelTokens(path string) (*modelTokens, error) {
	file := path
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		file = filepath.Join(path, "tokenizer.json")
	}
	tk, err := pretrained.FromFile(file)
	if err != nil {
		return nil, fmt.Errorf("tokenizer %s: %w", file, err)
	}
	m := &modelTokens{tk: tk, src: file, first: make([]int, len(vocabulary)), cont: make([]int, len(vocabulary))}
	for i, w := range vocabulary {
		if m.first[i], err = m.count(w); err != nil {
			return nil, err
		}
		withSpace, err := m.count("a " + w)
		if err != nil {
			return nil, err
		}
		a, _ := m.count("a")
		m.cont[i] = withSpace - a
		if m.cont[i] == 1 {
			m.ones = append(m.ones, i)
		}
	}
	if len(m.ones) == 0 {
		return nil, fmt.Errorf("tokenizer %s: no vocabulary word is a single token after a space; cannot build prompts of exact lengths", file)
	}
	// Additivity check on a fixed sample: the prediction must match the real count.
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 20; trial++ {
		text, want := m.words(rng, 1+rng.IntN(200), false)
		got, err := m.count(text)
		if err != nil {
			return nil, err
		}
		if got != want {
			return nil, fmt.Errorf("tokenizer %s: token counts do not add up over words (%d predicted, %d counted); this tokenizer is not supported for prompt generation", file, want, got)
		}
	}
	return m, nil
}

// count is the number of tokens of text, without special tokens.
func (m *modelTokens) count(text string) (int, error) {
	if text == "" {
		return 0, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	enc, err := m.tk.EncodeSingle(text, false)
	if err != nil {
		return 0, fmt.Errorf("tokenizer %s: %w", m.src, err)
	}
	if enc == nil {
		return 0, errors.New("tokenizer: no encoding")
	}
	return len(enc.Ids), nil
}

// words returns random vocabulary words making exactly n tokens (when n > 0) and that
// count. cont means the text follows a space (a continuation), so its first word is costed
// with its leading space. Words are drawn at random; near the end only single-token words
// are used, so the count is exact.
func (m *modelTokens) words(rng *rand.Rand, n int, cont bool) (string, int) {
	var b strings.Builder
	b.Grow(n * 6)
	used := 0
	for used < n {
		i := rng.IntN(len(vocabulary))
		atStart := b.Len() == 0
		cost := m.cont[i]
		if atStart && !cont {
			cost = m.first[i]
		}
		if used+cost > n || cost == 0 {
			i = m.ones[rng.IntN(len(m.ones))]
			cost = m.cont[i]
			if atStart && !cont {
				cost = m.first[i]
			}
			if used+cost > n {
				// Only at the very start can a single-token word cost more (no leading
				// space): fall back to the word with the smallest first cost.
				i, cost = m.cheapestFirst()
			}
		}
		if !atStart {
			b.WriteByte(' ')
		}
		b.WriteString(vocabulary[i])
		used += cost
	}
	return b.String(), used
}

func (m *modelTokens) cheapestFirst() (int, int) {
	best := 0
	for i, c := range m.first {
		if c < m.first[best] {
			best = i
		}
	}
	return best, m.first[best]
}
