package kvprompt

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// The library tokenizes an 8 KB prompt in 27–62 ms here (BenchmarkTokens8K with
// fastPath off): 30–60 times the picker's 1 ms budget, spent in its offset-tracking
// normalized strings. For the tokenizers where it is exact, the fast path below splits the
// text itself and asks the library only for pieces it has not seen:
//
//   - added tokens (special tokens such as "<s>", "<|user|>") are cut out first, as HF
//     tokenizers does (the library misses them inside text: the test shows it);
//   - the rest is pre-tokenized with GPT-2's pattern, which ByteLevel(use_regex) applies,
//     by a hand-written scanner (the pattern's lookahead is beyond Go's regexp);
//   - a BPE model merges inside a piece only, so a text's ids are its pieces' ids in
//     order: each piece is tokenized once by the library and cached.
//
// The fast path is used only for a tokenizer.json with no normalizer, a ByteLevel
// pre-tokenizer with use_regex and no prefix space, and a BPE model; others take the
// library's path (exact, slow). Tests hold the fast path to the library on generated text.

// maxCachedPieces bounds the piece cache (entries); when full it is emptied. Natural text
// reuses a vocabulary of tens of thousands of words.
const maxCachedPieces = 1 << 16

// maxCachedPieceBytes: longer pieces (long digit or punctuation runs) are not cached.
const maxCachedPieceBytes = 64

type fastPath struct {
	added  []addedToken // longest first
	prefix []uint32     // ids the post-processor puts before a single sequence
	suffix []uint32     // and after it
	mu     sync.RWMutex
	cache  map[string][]uint32
}

type addedToken struct {
	content string
	id      uint32
}

// newFastPath reads tokenizer.json's shape and returns nil when the fast path would not be
// exact for it.
func newFastPath(file string, m *Model) (*fastPath, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("kvprompt: %w", err)
	}
	var tj struct {
		AddedTokens []struct {
			ID         uint32 `json:"id"`
			Content    string `json:"content"`
			SingleWord bool   `json:"single_word"`
			LStrip     bool   `json:"lstrip"`
			RStrip     bool   `json:"rstrip"`
			Normalized bool   `json:"normalized"`
		} `json:"added_tokens"`
		Normalizer   json.RawMessage `json:"normalizer"`
		PreTokenizer *struct {
			Type           string `json:"type"`
			AddPrefixSpace bool   `json:"add_prefix_space"`
			UseRegex       bool   `json:"use_regex"`
		} `json:"pre_tokenizer"`
		Model struct {
			Type string `json:"type"`
		} `json:"model"`
	}
	if err := json.Unmarshal(raw, &tj); err != nil {
		return nil, fmt.Errorf("kvprompt: %s: %w", file, err)
	}
	if (len(tj.Normalizer) > 0 && string(tj.Normalizer) != "null") || tj.PreTokenizer == nil ||
		tj.PreTokenizer.Type != "ByteLevel" || !tj.PreTokenizer.UseRegex || tj.PreTokenizer.AddPrefixSpace ||
		tj.Model.Type != "BPE" {
		return nil, nil
	}
	f := &fastPath{cache: make(map[string][]uint32)}
	for _, a := range tj.AddedTokens {
		if a.SingleWord || a.LStrip || a.RStrip || a.Content == "" {
			return nil, nil // matching rules the fast path does not implement
		}
		f.added = append(f.added, addedToken{a.Content, a.ID})
	}
	slices.SortFunc(f.added, func(a, b addedToken) int { return len(b.content) - len(a.content) })
	// The post-processor's special tokens: what encoding a probe with them adds around
	// the ids without them.
	const probe = "probe"
	bare, err := m.slowEncode(nil, probe, false)
	if err != nil {
		return nil, err
	}
	full, err := m.slowEncode(nil, probe, true)
	if err != nil {
		return nil, err
	}
	i := slicesIndex(full, bare)
	if i < 0 {
		return nil, nil
	}
	f.prefix, f.suffix = full[:i], full[i+len(bare):]
	return f, nil
}

func slicesIndex(s, sub []uint32) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if slices.Equal(s[i:i+len(sub)], sub) {
			return i
		}
	}
	return -1
}

// encode appends text's ids.
func (f *fastPath) encode(dst []uint32, text string, special bool, m *Model) ([]uint32, error) {
	if special {
		dst = append(dst, f.prefix...)
	}
	for len(text) > 0 {
		// The next added token, if any, and the plain text before it.
		at, tok := len(text), -1
		for i, a := range f.added {
			if j := strings.Index(text[:min(len(text), at+len(a.content))], a.content); j >= 0 && j < at {
				at, tok = j, i
			}
		}
		var err error
		if dst, err = f.plain(dst, text[:at], m); err != nil {
			return dst, err
		}
		if tok < 0 {
			break
		}
		dst = append(dst, f.added[tok].id)
		text = text[at+len(f.added[tok].content):]
	}
	if special {
		dst = append(dst, f.suffix...)
	}
	return dst, nil
}

// plain tokenizes text without added tokens, piece by piece. The cache's read lock is
// held across hits and dropped only to tokenize and insert a miss.
func (f *fastPath) plain(dst []uint32, text string, m *Model) ([]uint32, error) {
	f.mu.RLock()
	for len(text) > 0 {
		n := nextPiece(text)
		piece := text[:n]
		text = text[n:]
		if ids, ok := f.cache[piece]; ok {
			dst = append(dst, ids...)
			continue
		}
		f.mu.RUnlock()
		ids, err := m.slowEncode(nil, piece, false)
		if err != nil {
			return dst, err
		}
		dst = append(dst, ids...)
		if len(piece) <= maxCachedPieceBytes {
			f.mu.Lock()
			if len(f.cache) >= maxCachedPieces {
				clear(f.cache)
			}
			f.cache[strings.Clone(piece)] = ids
			f.mu.Unlock()
		}
		f.mu.RLock()
	}
	f.mu.RUnlock()
	return dst, nil
}

// nextPiece returns the length of the first piece of s under GPT-2's pre-tokenizer
// pattern: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (alternatives tried in that order at each position).
func nextPiece(s string) int {
	if s[0] == '\'' && len(s) >= 2 {
		switch s[1] {
		case 's', 't', 'm', 'd':
			return 2
		}
		if len(s) >= 3 {
			switch s[1:3] {
			case "re", "ve", "ll":
				return 3
			}
		}
	}
	start := 0
	if s[0] == ' ' && len(s) > 1 {
		if r, _ := utf8.DecodeRuneInString(s[1:]); !unicode.IsSpace(r) {
			start = 1
		}
	}
	r, size := utf8.DecodeRuneInString(s[start:])
	switch {
	case unicode.IsLetter(r):
		return start + runLen(s[start:], size, unicode.IsLetter)
	case unicode.IsNumber(r):
		return start + runLen(s[start:], size, unicode.IsNumber)
	case !unicode.IsSpace(r):
		return start + runLen(s[start:], size, isOther)
	}
	// Whitespace at s[0]: the run, less its last character when a non-space follows
	// (\s+(?!\S)), or a single character when the run is one long (\s+).
	end := runLen(s, size, unicode.IsSpace)
	if end == len(s) {
		return end
	}
	_, last := utf8.DecodeLastRuneInString(s[:end])
	if end-last > 0 {
		return end - last
	}
	return end
}

func isOther(r rune) bool { return !unicode.IsSpace(r) && !unicode.IsLetter(r) && !unicode.IsNumber(r) }

// runLen is the byte length of the run of runes satisfying in at the start of s (the
// first, of size first, is known to).
func runLen(s string, first int, in func(rune) bool) int {
	i := first
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		if !in(r) {
			break
		}
		i += size
	}
	return i
}
