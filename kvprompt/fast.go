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

	"golang.org/x/text/unicode/norm"
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
// The fast path is used only for a BPE tokenizer.json whose pre-tokenizer it implements
// (pretok.go: GPT-2's ByteLevel with use_regex, and the Llama 3 and Qwen2 Split pattern
// before a ByteLevel without regex), with no normalizer or NFC (Qwen2); others take the
// library's path (exact, slow). Tests hold the fast path to HF tokenizers' own ids
// (golden files from the Python library) and to the library path on generated text.

// maxCachedPieces bounds the piece cache (entries); when full it is emptied. Natural text
// reuses a vocabulary of tens of thousands of words.
const maxCachedPieces = 1 << 16

// maxCachedPieceBytes: longer pieces (long digit or punctuation runs) are not cached.
const maxCachedPieceBytes = 64

type fastPath struct {
	// nextPiece is the pre-tokenizer: the length of the first piece of a non-empty text.
	nextPiece func(string) int
	nfc       bool         // NFC-normalize text outside added tokens first (Qwen2)
	bpe       *byteBPE     // nil: pieces are encoded by the library (m)
	added     []addedToken // longest first
	prefix    []uint32     // ids the post-processor puts before a single sequence
	suffix    []uint32     // and after it
	mu        sync.RWMutex
	cache     map[string][]uint32
}

type addedToken struct {
	content string
	id      uint32
}

// tokenizerJSON is the part of tokenizer.json the fast path reads.
type tokenizerJSON struct {
	AddedTokens []struct {
		ID         uint32 `json:"id"`
		Content    string `json:"content"`
		SingleWord bool   `json:"single_word"`
		LStrip     bool   `json:"lstrip"`
		RStrip     bool   `json:"rstrip"`
		Normalized bool   `json:"normalized"`
	} `json:"added_tokens"`
	Normalizer    json.RawMessage   `json:"normalizer"`
	PreTokenizer  *preTokenizerJSON `json:"pre_tokenizer"`
	PostProcessor json.RawMessage   `json:"post_processor"`
	Model         bpeModelJSON      `json:"model"`
}

func readTokenizerJSON(file string) (*tokenizerJSON, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("kvprompt: %w", err)
	}
	var tj tokenizerJSON
	if err := json.Unmarshal(raw, &tj); err != nil {
		return nil, fmt.Errorf("kvprompt: %s: %w", file, err)
	}
	return &tj, nil
}

// native reports whether the fast path must run without the library: its pre-tokenizer
// is a Split on a pattern Go's regexp cannot compile (the library would panic loading it).
func (tj *tokenizerJSON) native() bool {
	return tj.PreTokenizer != nil && tj.PreTokenizer.Type == "Sequence"
}

// newFastPath returns nil when the fast path would not be exact for tj. m is the library
// (nil for a native fast path: then the fast path has its own BPE and reads the
// post-processor's tokens from the file).
func newFastPath(tj *tokenizerJSON, m *Model) (*fastPath, error) {
	nfc := false
	if norm := strings.TrimSpace(string(tj.Normalizer)); norm != "" && norm != "null" {
		if !isNFC(tj.Normalizer) {
			return nil, nil // a normalizer the fast path does not implement: the library's path
		}
		nfc = true // Qwen2's
	}
	next := tj.PreTokenizer.scanner()
	if next == nil || tj.Model.Type != "BPE" {
		return nil, nil
	}
	f := &fastPath{cache: make(map[string][]uint32), nextPiece: next, nfc: nfc}
	for _, a := range tj.AddedTokens {
		if a.SingleWord || a.LStrip || a.RStrip || a.Content == "" || (nfc && a.Normalized) {
			return nil, nil // matching rules the fast path does not implement
		}
		f.added = append(f.added, addedToken{a.Content, a.ID})
	}
	slices.SortFunc(f.added, func(a, b addedToken) int { return len(b.content) - len(a.content) })
	if m == nil {
		var err error
		if f.bpe, err = newByteBPE(&tj.Model); err != nil {
			return nil, err
		}
		if f.prefix, f.suffix, err = postProcessorTokens(tj.PostProcessor); err != nil {
			return nil, err
		}
		return f, nil
	}
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

// isNFC reports whether a normalizer is exactly {"type": "NFC"}.
func isNFC(raw json.RawMessage) bool {
	var nm map[string]json.RawMessage
	return json.Unmarshal(raw, &nm) == nil && len(nm) == 1 && string(nm["type"]) == `"NFC"`
}

// postProcessorTokens reads the ids a post-processor puts around a single sequence:
// TemplateProcessing's special tokens before and after $A (Llama 3), none for ByteLevel
// (Qwen2) or no post-processor.
func postProcessorTokens(raw json.RawMessage) (prefix, suffix []uint32, err error) {
	if s := strings.TrimSpace(string(raw)); s == "" || s == "null" {
		return nil, nil, nil
	}
	var pp struct {
		Type   string `json:"type"`
		Single []struct {
			SpecialToken *struct {
				ID string `json:"id"`
			} `json:"SpecialToken"`
			Sequence *struct {
				ID string `json:"id"`
			} `json:"Sequence"`
		} `json:"single"`
		SpecialTokens map[string]struct {
			IDs []uint32 `json:"ids"`
		} `json:"special_tokens"`
	}
	if err := json.Unmarshal(raw, &pp); err != nil {
		return nil, nil, fmt.Errorf("kvprompt: post_processor: %w", err)
	}
	switch pp.Type {
	case "ByteLevel":
		return nil, nil, nil
	case "TemplateProcessing":
	default:
		return nil, nil, fmt.Errorf("kvprompt: post_processor %q: the fast path does not implement it", pp.Type)
	}
	seen := false
	for _, piece := range pp.Single {
		switch {
		case piece.Sequence != nil:
			seen = true
		case piece.SpecialToken != nil:
			st, ok := pp.SpecialTokens[piece.SpecialToken.ID]
			if !ok {
				return nil, nil, fmt.Errorf("kvprompt: post_processor: special token %q not defined", piece.SpecialToken.ID)
			}
			if seen {
				suffix = append(suffix, st.IDs...)
			} else {
				prefix = append(prefix, st.IDs...)
			}
		}
	}
	return prefix, suffix, nil
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
	if f.nfc {
		text = norm.NFC.String(text)
	}
	for len(text) > 0 {
		n := f.nextPiece(text)
		piece := text[:n]
		text = text[n:]
		if ids, ok := f.cache[piece]; ok {
			dst = append(dst, ids...)
			continue
		}
		f.mu.RUnlock()
		var ids []uint32
		if f.bpe != nil {
			ids = f.bpe.encode(nil, piece)
		} else {
			var err error
			if ids, err = m.slowEncode(nil, piece, false); err != nil {
				return dst, err
			}
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
