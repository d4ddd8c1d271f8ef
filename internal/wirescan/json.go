// Package wirescan reads the wire formats the gateway and the load tester both parse, in
// place and without allocating: JSON documents (Scanner, a validating single-pass walker)
// and server-sent event streams (SSEReader over an io.Reader; EventEnd and ForEachData over
// bytes already in hand). It imports nothing of the gateway, so the load tester can use it.
package wirescan

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
)

// DefaultMaxDepth bounds nesting so that a hostile body cannot exhaust the stack (a
// Scanner's MaxDepth, when 0).
const DefaultMaxDepth = 128

// ErrSyntax is wrapped by every syntax error so callers can tell bad JSON from other failures.
var ErrSyntax = errors.New("invalid JSON")

// Scanner walks a JSON document in place. It validates what it skips, so a document the
// scanner accepts is valid JSON, and it never allocates (callers decode the strings they
// need). Values are visited through Object and Array callbacks that must consume the value
// they are positioned at.
type Scanner struct {
	// B is the document; I the offset of the next byte to read.
	B []byte
	I int
	// MaxDepth bounds nesting (0 = DefaultMaxDepth); deeper input is a syntax error.
	MaxDepth int
}

// New returns a scanner at the start of b.
func New(b []byte) Scanner { return Scanner{B: b} }

// Fail returns a syntax error about what was expected at the current offset.
func (s *Scanner) Fail(what string) error {
	return fmt.Errorf("%w: %s at offset %d", ErrSyntax, what, s.I)
}

func (s *Scanner) tooDeep(depth int) bool {
	if s.MaxDepth > 0 {
		return depth > s.MaxDepth
	}
	return depth > DefaultMaxDepth
}

// SkipSpace skips JSON whitespace.
func (s *Scanner) SkipSpace() {
	for s.I < len(s.B) {
		switch s.B[s.I] {
		case ' ', '\t', '\n', '\r':
			s.I++
		default:
			return
		}
	}
}

// Peek returns the next non-space byte without consuming it (0 at the end).
func (s *Scanner) Peek() byte {
	s.SkipSpace()
	if s.I >= len(s.B) {
		return 0
	}
	return s.B[s.I]
}

// Expect consumes the byte c (after whitespace) or fails.
func (s *Scanner) Expect(c byte) error {
	if s.Peek() != c {
		return s.Fail(fmt.Sprintf("expected %q", c))
	}
	s.I++
	return nil
}

// Str consumes a string token. start is the offset of the opening quote, end the offset
// just after the closing quote; escaped reports whether the content holds backslashes.
func (s *Scanner) Str() (start, end int, escaped bool, err error) {
	if s.Peek() != '"' {
		return 0, 0, false, s.Fail("expected string")
	}
	start = s.I
	s.I++
	for s.I < len(s.B) {
		// Skip 8 plain bytes at a time. A word that holds a quote, a backslash or a
		// control character is then read byte by byte up to that byte, not rechecked as a
		// word after each byte (short strings such as keys would pay for both).
		for s.I+8 <= len(s.B) && !hasSpecial(binary.LittleEndian.Uint64(s.B[s.I:])) {
			s.I += 8
		}
		for s.I < len(s.B) && !isSpecial(s.B[s.I]) {
			s.I++
		}
		if s.I >= len(s.B) {
			break
		}
		c := s.B[s.I]
		switch {
		case c == '"':
			s.I++
			return start, s.I, escaped, nil
		case c == '\\':
			escaped = true
			if s.I+1 >= len(s.B) {
				return 0, 0, false, s.Fail("truncated escape")
			}
			switch s.B[s.I+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.I += 2
			case 'u':
				if s.I+6 > len(s.B) {
					return 0, 0, false, s.Fail("truncated \\u escape")
				}
				for _, h := range s.B[s.I+2 : s.I+6] {
					if !isHex(h) {
						return 0, 0, false, s.Fail("bad \\u escape")
					}
				}
				s.I += 6
			default:
				return 0, 0, false, s.Fail("bad escape")
			}
		case c < 0x20:
			return 0, 0, false, s.Fail("control character in string")
		default:
			s.I++
		}
	}
	return 0, 0, false, s.Fail("unterminated string")
}

func isSpecial(c byte) bool { return c == '"' || c == '\\' || c < 0x20 }

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// Number consumes a JSON number and returns its bytes.
func (s *Scanner) Number() ([]byte, error) {
	s.SkipSpace()
	start := s.I
	if s.I < len(s.B) && s.B[s.I] == '-' {
		s.I++
	}
	if s.I >= len(s.B) {
		return nil, s.Fail("truncated number")
	}
	if s.B[s.I] == '0' {
		s.I++
	} else if s.B[s.I] >= '1' && s.B[s.I] <= '9' {
		s.digits()
	} else {
		return nil, s.Fail("bad number")
	}
	if s.I < len(s.B) && s.B[s.I] == '.' {
		s.I++
		if s.digits() == 0 {
			return nil, s.Fail("bad fraction")
		}
	}
	if s.I < len(s.B) && (s.B[s.I] == 'e' || s.B[s.I] == 'E') {
		s.I++
		if s.I < len(s.B) && (s.B[s.I] == '+' || s.B[s.I] == '-') {
			s.I++
		}
		if s.digits() == 0 {
			return nil, s.Fail("bad exponent")
		}
	}
	return s.B[start:s.I], nil
}

func (s *Scanner) digits() int {
	n := 0
	for s.I < len(s.B) && s.B[s.I] >= '0' && s.B[s.I] <= '9' {
		s.I++
		n++
	}
	return n
}

// Literal consumes the literal word (true, false, null) or fails.
func (s *Scanner) Literal(word string) error {
	if len(s.B)-s.I < len(word) || string(s.B[s.I:s.I+len(word)]) != word {
		return s.Fail("bad literal")
	}
	s.I += len(word)
	return nil
}

// Skip consumes and validates any value.
func (s *Scanner) Skip(depth int) error {
	if s.tooDeep(depth) {
		return s.Fail("nesting too deep")
	}
	switch c := s.Peek(); {
	case c == '"':
		_, _, _, err := s.Str()
		return err
	case c == '{':
		return s.Object(depth, func(int, int, bool) error { return s.Skip(depth + 1) })
	case c == '[':
		return s.Array(depth, func(int) error { return s.Skip(depth + 1) })
	case c == 't':
		return s.Literal("true")
	case c == 'f':
		return s.Literal("false")
	case c == 'n':
		return s.Literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		_, err := s.Number()
		return err
	case c == 0:
		return s.Fail("unexpected end of input")
	default:
		return s.Fail("unexpected character")
	}
}

// Object consumes an object, calling member for each key (offsets of the key token) with
// the scanner positioned at the value; member must consume the value.
func (s *Scanner) Object(depth int, member func(keyStart, keyEnd int, escaped bool) error) error {
	if s.tooDeep(depth) {
		return s.Fail("nesting too deep")
	}
	if err := s.Expect('{'); err != nil {
		return err
	}
	if s.Peek() == '}' {
		s.I++
		return nil
	}
	for {
		ks, ke, esc, err := s.Str()
		if err != nil {
			return err
		}
		if err := s.Expect(':'); err != nil {
			return err
		}
		if err := member(ks, ke, esc); err != nil {
			return err
		}
		switch s.Peek() {
		case ',':
			s.I++
		case '}':
			s.I++
			return nil
		default:
			return s.Fail("expected ',' or '}'")
		}
	}
}

// Array consumes an array, calling elem for each element with the scanner at its start.
func (s *Scanner) Array(depth int, elem func(index int) error) error {
	if s.tooDeep(depth) {
		return s.Fail("nesting too deep")
	}
	if err := s.Expect('['); err != nil {
		return err
	}
	if s.Peek() == ']' {
		s.I++
		return nil
	}
	for n := 0; ; n++ {
		if err := elem(n); err != nil {
			return err
		}
		switch s.Peek() {
		case ',':
			s.I++
		case ']':
			s.I++
			return nil
		default:
			return s.Fail("expected ',' or ']'")
		}
	}
}

// KeyIs compares a key token (with quotes) against a plain name. Escaped keys never
// match: OpenAI clients do not escape these ASCII names, and treating an escaped key as
// unknown only makes us skip it.
func (s *Scanner) KeyIs(ks, ke int, escaped bool, name string) bool {
	return !escaped && ke-ks-2 == len(name) && string(s.B[ks+1:ke-1]) == name
}

// End checks that only whitespace follows the top-level value. It tests the offset, not
// peek's 0, because a NUL byte after the value is data too (and invalid JSON).
func (s *Scanner) End() error {
	if s.SkipSpace(); s.I < len(s.B) {
		return s.Fail("data after top-level value")
	}
	return nil
}

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// hasSpecial reports whether any byte of w is '"', '\\' or below 0x20 (SWAR: a byte
// b < n sets its high bit in (w - n*ones) &^ w; equality is "less than 1" after XOR).
func hasSpecial(w uint64) bool {
	lt20 := (w - 0x20*ones) &^ w
	q := w ^ ('"' * ones)
	bs := w ^ ('\\' * ones)
	return ((lt20 | ((q - ones) &^ q) | ((bs - ones) &^ bs)) & highs) != 0
}

// Null consumes a null literal when one is next.
func (s *Scanner) Null() bool {
	s.SkipSpace()
	if bytes.HasPrefix(s.B[s.I:], []byte("null")) {
		s.I += 4
		return true
	}
	return false
}

// Key returns a key token's name (the offsets Object passes): its raw contents, or, when
// escaped (rare; that costs an allocation), its decoded value. For readers that must match
// keys as encoding/json does (see KeyFold).
func (s *Scanner) Key(ks, ke int, escaped bool) []byte {
	if !escaped {
		return s.B[ks+1 : ke-1]
	}
	var k string
	if json.Unmarshal(s.B[ks:ke], &k) != nil {
		return nil
	}
	return []byte(k)
}

// KeyFold compares a key name (from Key) against an ASCII name as encoding/json matches
// struct fields: ASCII case ignored.
func KeyFold(key []byte, name string) bool { return bytes.EqualFold(key, []byte(name)) }
