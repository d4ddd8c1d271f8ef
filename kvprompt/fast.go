package kvprompt

import (
	"encoding/json"
	"fmt"
	"hash/maphash"
	"os"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// The library tokenizes an 8 KB prompt in 27–62 ms here (BenchmarkTokens8K with
// fastPath off): 30–60 times the picker's 1 ms budget, spent in its offset-tracking
// normalized strings. For the tokenizers where it is exact, the fast path below splits the
// text itself and tokenizes each piece it has not seen with its own byte-level BPE
// (bpe.go; the library's, for a model that BPE does not implement):
//
//   - added tokens (special tokens such as "<s>", "<|user|>") are cut out first, as HF
//     tokenizers does (the library misses them inside text: the test shows it);
//   - the rest is pre-tokenized with GPT-2's pattern, which ByteLevel(use_regex) applies,
//     by a hand-written scanner (the pattern's lookahead is beyond Go's regexp);
//   - a BPE model merges inside a piece only, so a text's ids are its pieces' ids in
//     order: each piece is tokenized once and cached (pieceCache).
//
// The fast path is used only for a BPE tokenizer.json whose pre-tokenizer it implements
// (pretok.go: GPT-2's ByteLevel with use_regex, and the Llama 3 and Qwen2 Split pattern
// before a ByteLevel without regex), with no normalizer or NFC (Qwen2); others take the
// library's path (exact, slow). Tests hold the fast path to HF tokenizers' own ids
// (golden files from the Python library) and to the library path on generated text.

// maxCachedPieces bounds the piece cache (entries); when full it is emptied. Natural text
// reuses a vocabulary of tens of thousands of words.
const maxCachedPieces = 1 << 16

// maxCachedPieceBytes: longer pieces (long digit or punctuation runs) are not cached. A
// piece has at most as many ids as bytes, so the cache holds at most 64 Ki pieces of
// 64 bytes and 64 ids each (24 MiB); natural text's pieces average under 8 bytes.
const maxCachedPieceBytes = 64

type fastPath struct {
	// nextPiece is the pre-tokenizer: the length of the first piece of a non-empty text.
	nextPiece func(string) int
	nfc       bool         // NFC-normalize text outside added tokens first (Qwen2)
	bpe       *byteBPE     // nil: pieces are encoded by the library (m)
	added     []addedToken // longest first
	prefix    []uint32     // ids the post-processor puts before a single sequence
	suffix    []uint32     // and after it
	mu        sync.RWMutex // guards cache
	cache     pieceCache
	misses    sync.Pool // *[]pieceMiss: plain's list of pieces to cache
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
	f := &fastPath{nextPiece: next, nfc: nfc}
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
		f.cache = newPieceCache(f.bpe.whole.seed)
		if f.prefix, f.suffix, err = postProcessorTokens(tj.PostProcessor); err != nil {
			return nil, err
		}
		return f, nil
	}
	// Pieces go through the fast path's own BPE where it implements the model (it is held
	// to the library by TestFastPathMatchesLibrary): the library takes ~100 times longer.
	seed := maphash.MakeSeed()
	if bpe, err := newByteBPE(&tj.Model); err == nil {
		f.bpe, seed = bpe, bpe.whole.seed
	}
	f.cache = newPieceCache(seed)
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

// plain tokenizes text without added tokens, piece by piece, under the cache's read lock;
// the pieces it missed are cached at the end, under the write lock taken once.
func (f *fastPath) plain(dst []uint32, text string, m *Model) ([]uint32, error) {
	if f.nfc {
		text = nfc(text)
	}
	missesp, _ := f.misses.Get().(*[]pieceMiss)
	if missesp == nil {
		missesp = new([]pieceMiss)
	}
	misses := (*missesp)[:0]
	f.mu.RLock()
	for at := 0; at < len(text); {
		n := f.nextPiece(text[at:])
		piece := text[at : at+n]
		h := maphash.String(f.cache.seed, piece)
		if ids, ok := f.cache.get(piece, h); ok {
			dst = append(dst, ids...)
			at += n
			continue
		}
		start := len(dst)
		if f.bpe != nil {
			dst = f.bpe.encodeHashed(dst, piece, h)
		} else {
			f.mu.RUnlock() // the library's path takes a pooled tokenizer: do not hold the lock
			var err error
			dst, err = m.slowEncode(dst, piece, false)
			f.mu.RLock()
			if err != nil {
				f.mu.RUnlock()
				return dst, err
			}
		}
		if n <= maxCachedPieceBytes {
			misses = append(misses, pieceMiss{hash: h, at: int32(at), n: uint8(n), ids: int32(start), nIDs: uint8(len(dst) - start)}) //nolint:gosec // G115: bounded by MaxPromptBytes and maxCachedPieceBytes
		}
		at += n
	}
	f.mu.RUnlock()
	if len(misses) > 0 {
		f.mu.Lock()
		for _, ms := range misses {
			f.cache.put(text[ms.at:ms.at+int32(ms.n)], ms.hash, dst[ms.ids:ms.ids+int32(ms.nIDs)])
		}
		f.mu.Unlock()
	}
	*missesp = misses
	f.misses.Put(missesp)
	return dst, nil
}

// pieceMiss is a piece plain tokenized without the cache: its place in the text and of its
// ids in dst (dst may move as it grows, so offsets).
type pieceMiss struct {
	hash    uint64
	at, ids int32
	n, nIDs uint8 // <= maxCachedPieceBytes
}

// pieceCache maps pieces to their ids without an allocation per piece: the pieces and ids
// are appended to two arrays, and an open-addressing table indexed by the piece's hash
// (one hash per lookup; a Go map keyed by the hash would hash it again) says where. It
// holds at most maxCachedPieces pieces in a table twice that size (2 MiB), and is emptied
// when full, by starting a new generation: a slot of an older one is free (clearing 2 MiB
// would cost a cold prompt ~70 µs). Not safe for concurrent use (fastPath.mu guards it).
type pieceCache struct {
	seed  maphash.Seed
	slots []cachedPiece // len 2*maxCachedPieces, a power of two
	gen   uint16        // the slots of this generation are in use; never 0
	count int
	text  []byte
	ids   []uint32
}

// cachedPiece is a slot: the piece's bytes at text[text:text+n] and its ids at
// ids[ids:ids+nIDs], if its gen is the cache's.
type cachedPiece struct {
	tag       uint32 // the hash's low bits, to skip most comparisons of other pieces' bytes
	text, ids uint32
	gen       uint16
	n, nIDs   uint8
}

// newPieceCache returns a cache whose pieces are hashed with seed (the fast path's BPE
// uses the same, so that a miss is hashed once).
func newPieceCache(seed maphash.Seed) pieceCache {
	return pieceCache{seed: seed, slots: make([]cachedPiece, 2*maxCachedPieces), gen: 1}
}

// find returns the slot holding piece, of hash h (maphash.String with c.seed), or the free
// slot where it belongs, and the piece's tag.
func (c *pieceCache) find(piece string, h uint64) (*cachedPiece, uint32) {
	tag := uint32(h)                 //nolint:gosec // G115: the low bits, meant to be cut
	mask := uint64(len(c.slots) - 1) //nolint:gosec // G115: a positive power of two
	for i := h >> 32 & mask; ; i = (i + 1) & mask {
		s := &c.slots[i]
		if s.gen != c.gen || (s.tag == tag && string(c.text[s.text:s.text+uint32(s.n)]) == piece) {
			return s, tag
		}
	}
}

func (c *pieceCache) get(piece string, h uint64) ([]uint32, bool) {
	s, _ := c.find(piece, h)
	if s.gen != c.gen {
		return nil, false
	}
	return c.ids[s.ids : s.ids+uint32(s.nIDs)], true
}

// put caches a non-empty piece of at most maxCachedPieceBytes bytes, emptying the cache
// first when it holds maxCachedPieces.
func (c *pieceCache) put(piece string, h uint64, ids []uint32) {
	if c.count >= maxCachedPieces {
		c.reset()
	}
	s, tag := c.find(piece, h)
	if s.gen == c.gen {
		return // cached by another request meanwhile
	}
	*s = cachedPiece{tag: tag, text: uint32(len(c.text)), ids: uint32(len(c.ids)), gen: c.gen, n: uint8(len(piece)), nIDs: uint8(len(ids))} //nolint:gosec // G115: bounded by maxCachedPieces * maxCachedPieceBytes
	c.text = append(c.text, piece...)
	c.ids = append(c.ids, ids...)
	c.count++
}

func (c *pieceCache) reset() {
	c.gen++
	if c.gen == 0 { // wrapped: slots of 65,535 generations ago would look current
		clear(c.slots)
		c.gen = 1
	}
	c.text, c.ids, c.count = c.text[:0], c.ids[:0], 0
}

// nfc returns s in Unicode Normalization Form C. ASCII text is in it already, and an
// ASCII character composes with nothing before it: only the text from the character
// before the first non-ASCII one is given to the normalizer.
func nfc(s string) string {
	i := 0
	for i < len(s) && s[i] < utf8.RuneSelf {
		i++
	}
	if i == len(s) {
		return s
	}
	i = max(i-1, 0)
	if norm.NFC.IsNormalString(s[i:]) {
		return s
	}
	return s[:i] + norm.NFC.String(s[i:])
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
		if c, _ := classAt(s, 1); c != classSpace {
			start = 1
		}
	}
	c, size := classAt(s, start)
	if c != classSpace {
		return classRun(s, start+size, c)
	}
	// Whitespace at s[0]: the run, less its last character when a non-space follows
	// (\s+(?!\S)), or a single character when the run is one long (\s+).
	end := classRun(s, size, classSpace)
	if end == len(s) {
		return end
	}
	_, last := utf8.DecodeLastRuneInString(s[:end])
	if end-last > 0 {
		return end - last
	}
	return end
}
