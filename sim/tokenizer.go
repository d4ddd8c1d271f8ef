package sim

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// vocabSize matches Llama-3's vocabulary so that token ids look plausible.
const vocabSize = 128256

// maxPieceBytes splits long words: real BPE vocabularies rarely hold pieces longer than this.
const maxPieceBytes = 4

// tokenize is a deterministic tokenizer approximation: text is cut into pieces at
// whitespace (the space is kept at the start of the following word, as BPE does), every
// punctuation or symbol rune is a piece of its own, and words longer than maxPieceBytes are
// split every maxPieceBytes bytes (at rune boundaries); a chat-template special token
// like <|eot_id|> is one piece. Each piece becomes the token id
// FNV-1a(piece) mod vocabSize. English prose comes out at roughly one token per 3-4
// characters, close to real tokenizers, and identical text always gives identical ids, which
// is all prefix caching needs. ids is appended to and returned.
func tokenize(text string, ids []uint32) []uint32 {
	start := 0
	flush := func(end int) {
		for start < end {
			n := end - start
			if n > maxPieceBytes {
				n = maxPieceBytes
				for n > 1 && !utf8.RuneStart(text[start+n]) {
					n--
				}
			}
			ids = append(ids, pieceID(text[start:start+n]))
			start += n
		}
	}
	for i := 0; i < len(text); {
		if n := specialTokenLen(text[i:]); n > 0 {
			flush(i)
			ids = append(ids, pieceID(text[i:i+n]))
			i += n
			start = i
			continue
		}
		var class byte
		size := 1
		if c := text[i]; c < utf8.RuneSelf {
			class = asciiClass[c]
		} else {
			var r rune
			r, size = utf8.DecodeRuneInString(text[i:])
			switch {
			case unicode.IsSpace(r):
				class = classSpace
			case unicode.IsPunct(r) || unicode.IsSymbol(r):
				class = classPunct
			}
		}
		switch class {
		case classSpace:
			// The whitespace starts the next piece, like BPE's leading-space tokens.
			flush(i)
		case classPunct:
			flush(i)
			flush(i + size)
		}
		i += size
	}
	flush(len(text))
	return ids
}

const (
	classWord byte = iota
	classSpace
	classPunct
)

// asciiClass classifies ASCII bytes without unicode table lookups (the common case).
var asciiClass = func() (t [utf8.RuneSelf]byte) {
	for c := range rune(utf8.RuneSelf) {
		switch {
		case unicode.IsSpace(c):
			t[c] = classSpace
		case unicode.IsPunct(c) || unicode.IsSymbol(c):
			t[c] = classPunct
		}
	}
	return t
}()

// pieceID maps a piece to a token id with FNV-1a: pieces are a few bytes, where it is much
// cheaper than a general-purpose hash.
func pieceID(piece string) uint32 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(piece); i++ {
		h ^= uint64(piece[i])
		h *= 1099511628211
	}
	return uint32(h % vocabSize)
}

// specialTokenLen is the length of a chat-template special token such as
// <|start_header_id|> at the start of s (one token, as in real tokenizers), else 0.
func specialTokenLen(s string) int {
	if !strings.HasPrefix(s, "<|") {
		return 0
	}
	const maxSpecial = 32
	end := strings.Index(s[2:min(len(s), maxSpecial)], "|>")
	if end < 0 {
		return 0
	}
	return end + 4
}

// outputWords is the vocabulary of generated text; one word is one output token.
var outputWords = [...]string{
	" the", " model", " answers", " with", " a", " simulated", " token", " stream",
	" and", " every", " word", " here", " is", " chosen", " by", " hash",
	" of", " the", " prompt", " so", " that", " runs", " repeat", " exactly",
	" routing", " cache", " prefix", " latency", " batch", " queue", " block", " gateway",
	" Envoy", " picks", " an", " endpoint", " for", " each", " request", " quickly",
	" tokens", " flow", " back", " to", " client", " over", " SSE", " now",
	" speed", " depends", " on", " where", " it", " lands", " in", " fleet",
	" LoRA", " adapter", " slots", " are", " limited", " too", ".", ",",
}

// outputToken returns the text of the i-th generated token of a request whose prompt hashed
// to seed: deterministic for identical requests.
func outputToken(seed uint64, i int) string {
	x := seed + uint64(i)*0x9E3779B97F4A7C15 //nolint:gosec // G115: a non-negative index mixed into a hash
	x ^= x >> 31
	return outputWords[x%uint64(len(outputWords))]
}

// naturalLength is the deterministic number of tokens a request generates before its
// simulated end-of-sequence token when ignore_eos is off: between 16 and 271.
func naturalLength(seed uint64) int {
	return 16 + int((seed>>17)%256)
}
