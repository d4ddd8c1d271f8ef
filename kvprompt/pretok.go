package kvprompt

import (
	"strings"
	"sync"
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
	c0, n0 := classAt(s, 0)
	// 2: a letter run, optionally after one character that is no CR, LF, letter or number.
	if c0 == classLetter {
		return classRun(s, n0, classLetter)
	}
	if c0 != classNumber && s[0] != '\r' && s[0] != '\n' && n0 < len(s) {
		if c1, n1 := classAt(s, n0); c1 == classLetter {
			return classRun(s, n0+n1, classLetter)
		}
	}
	// 3: up to maxDigits numbers.
	if c0 == classNumber {
		i := n0
		for k := 1; k < maxDigits && i < len(s); k++ {
			c, size := classAt(s, i)
			if c != classNumber {
				break
			}
			i += size
		}
		return i
	}
	// 4: an optional space, a run of other characters, then CRs and LFs.
	start := 0
	if s[0] == ' ' && len(s) > 1 {
		if c1, _ := classAt(s, 1); c1 == classOther {
			start = 1
		}
	}
	if c, size := classAt(s, start); c == classOther {
		i := classRun(s, start+size, classOther)
		for i < len(s) && (s[i] == '\r' || s[i] == '\n') {
			i++
		}
		return i
	}
	// c0 is whitespace. 5: the whitespace run up to its last CR or LF, if it has one.
	end := classRun(s, n0, classSpace)
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

// charClass partitions characters as the pre-tokenizer patterns see them: \p{L}, \p{N},
// \s (Unicode White_Space, which has no letter or number) and the rest.
type charClass uint8

const (
	classOther charClass = iota
	classLetter
	classNumber
	classSpace
)

// bmpClass is runeClass for the Basic Multilingual Plane (64 KiB), built on first use:
// text in any script is mostly BMP characters, and a table lookup there is several times
// cheaper than asking package unicode (a binary search of its range tables per call).
var bmpClass = sync.OnceValue(func() *[1 << 16]charClass {
	var t [1 << 16]charClass
	for r := range rune(len(t)) {
		t[r] = runeClass(r)
	}
	return &t
})

func runeClass(r rune) charClass {
	switch {
	case unicode.IsLetter(r):
		return classLetter
	case unicode.IsNumber(r):
		return classNumber
	case unicode.IsSpace(r):
		return classSpace
	}
	return classOther
}

// asciiClass is charClass for the ASCII bytes, the most common characters, without the
// call to bmpClass.
var asciiClass = func() (t [utf8.RuneSelf]charClass) {
	for c := range rune(utf8.RuneSelf) {
		t[c] = runeClass(c)
	}
	return t
}()

// classOf returns r's class.
func classOf(r rune) charClass {
	if r < 1<<16 {
		return bmpClass()[r]
	}
	return runeClass(r)
}

// classAt returns the class and byte size of the character at s[i] (i < len(s)).
func classAt(s string, i int) (charClass, int) {
	if c := s[i]; c < utf8.RuneSelf {
		return asciiClass[c], 1
	}
	r, size := utf8.DecodeRuneInString(s[i:])
	return classOf(r), size
}

// classRun returns the end of the run of class c characters starting at s[i].
func classRun(s string, i int, c charClass) int {
	for i < len(s) {
		if b := s[i]; b < utf8.RuneSelf {
			if asciiClass[b] != c {
				return i
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if classOf(r) != c {
			return i
		}
		i += size
	}
	return i
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
