package kvprompt

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// preTokenizerJSON is the part of tokenizer.json's pre_tokenizer the fast path reads.
type preTokenizerJSON struct {
	Type           string `json:"type"`
	AddPrefixSpace bool   `json:"add_prefix_space"`
	UseRegex       bool   `json:"use_regex"`
	// Split
	Pattern *struct {
		Regex  string `json:"Regex"`
		String string `json:"String"`
	} `json:"pattern"`
	Behavior string `json:"behavior"`
	Invert   bool   `json:"invert"`
	// Sequence
	PreTokenizers []preTokenizerJSON `json:"pretokenizers"`
}

// The tiktoken-style pre-tokenizer patterns of Llama 3 (cl100k's) and Qwen2 (single
// digits), as their tokenizer.json files spell them.
const (
	llama3Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	qwen2Pattern  = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// scanner returns the piece scanner that pre-tokenizes exactly as p does, or nil when the
// fast path does not implement p.
func (p *preTokenizerJSON) scanner() func(string) int {
	switch {
	case p == nil:
		return nil
	case p.Type == "ByteLevel" && p.UseRegex && !p.AddPrefixSpace:
		return nextPiece
	case p.Type == "Sequence" && len(p.PreTokenizers) == 2:
		split, bl := p.PreTokenizers[0], p.PreTokenizers[1]
		if split.Type != "Split" || split.Pattern == nil || split.Behavior != "Isolated" || split.Invert ||
			bl.Type != "ByteLevel" || bl.UseRegex || bl.AddPrefixSpace {
			return nil
		}
		switch split.Pattern.Regex {
		case llama3Pattern:
			return func(s string) int { return nextPieceTiktoken(s, 3) }
		case qwen2Pattern:
			return func(s string) int { return nextPieceTiktoken(s, 1) }
		}
	}
	return nil
}

// nextPieceTiktoken returns the length of the first piece of a non-empty s under the
// Llama 3 / Qwen2 pattern (maxDigits 3 / 1), whose alternatives are tried in order at each
// position, as Oniguruma (HF tokenizers' regex engine) does:
//
//  1. (?i:'s|'t|'re|'ve|'m|'ll|'d)
//  2. [^\r\n\p{L}\p{N}]?\p{L}+
//  3. \p{N}{1,maxDigits}
//  4. " "?[^\s\p{L}\p{N}]+[\r\n]*
//  5. \s*[\r\n]+
//  6. \s+(?!\S)
//  7. \s+
//
// Go's regexp has no lookahead (6), hence a scanner; tests hold it to HF's ids.
func nextPieceTiktoken(s string, maxDigits int) int {
	if n := contraction(s); n > 0 {
		return n
	}
	c0, n0 := utf8.DecodeRuneInString(s)
	// 2: a letter run, optionally after one character that is no CR, LF, letter or number.
	if unicode.IsLetter(c0) {
		return runLen(s, n0, unicode.IsLetter)
	}
	if c0 != '\r' && c0 != '\n' && !unicode.IsNumber(c0) && len(s) > n0 {
		if c1, n1 := utf8.DecodeRuneInString(s[n0:]); unicode.IsLetter(c1) {
			return n0 + runLen(s[n0:], n1, unicode.IsLetter)
		}
	}
	// 3: up to maxDigits numbers.
	if unicode.IsNumber(c0) {
		i, k := n0, 1
		for k < maxDigits && i < len(s) {
			r, size := utf8.DecodeRuneInString(s[i:])
			if !unicode.IsNumber(r) {
				break
			}
			i += size
			k++
		}
		return i
	}
	// 4: an optional space, a run of other characters, then CRs and LFs.
	start := 0
	if c0 == ' ' && len(s) > 1 {
		if c1, _ := utf8.DecodeRuneInString(s[1:]); isOther(c1) {
			start = 1
		}
	}
	if c, size := utf8.DecodeRuneInString(s[start:]); isOther(c) {
		i := start + runLen(s[start:], size, isOther)
		for i < len(s) && (s[i] == '\r' || s[i] == '\n') {
			i++
		}
		return i
	}
	// c0 is whitespace. 5: the whitespace run up to its last CR or LF, if it has one.
	end := runLen(s, n0, unicode.IsSpace)
	for i := end - 1; i >= 0; i-- {
		if s[i] == '\r' || s[i] == '\n' {
			return i + 1
		}
	}
	// 6: the run, less its last character when a non-space follows; 7: one character.
	if end == len(s) {
		return end
	}
	_, last := utf8.DecodeLastRuneInString(s[:end])
	if end-last > 0 {
		return end - last
	}
	return end
}

// contraction matches (?i:'s|'t|'re|'ve|'m|'ll|'d) at the start of s (0: none).
func contraction(s string) int {
	if len(s) < 2 || s[0] != '\'' {
		return 0
	}
	switch s[1] | 0x20 { // ASCII lower case
	case 's', 't', 'm', 'd':
		return 2
	}
	if strings.HasPrefix(s[1:], "ſ") {
		return 1 + len("ſ") // U+017F LONG S: Unicode case folding makes it an s (HF agrees)
	}
	if len(s) >= 3 {
		a, b := s[1]|0x20, s[2]|0x20
		if (a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l') {
			return 3
		}
	}
	return 0
}
