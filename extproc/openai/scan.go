package openai

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// maxDepth bounds nesting so that a hostile body cannot exhaust the stack.
const maxDepth = 128

// errSyntax is wrapped by every syntax error so callers can tell bad JSON from other failures.
var errSyntax = errors.New("invalid JSON")

// scanner walks a JSON document in place. It validates what it skips, so a body the
// scanner accepts is valid JSON, and it never allocates except for decoded strings.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) fail(what string) error {
	return fmt.Errorf("%w: %s at offset %d", errSyntax, what, s.i)
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next non-space byte without consuming it (0 at the end).
func (s *scanner) peek() byte {
	s.ws()
	if s.i >= len(s.b) {
		return 0
	}
	return s.b[s.i]
}

func (s *scanner) expect(c byte) error {
	if s.peek() != c {
		return s.fail(fmt.Sprintf("expected %q", c))
	}
	s.i++
	return nil
}

// str consumes a string token. start is the offset of the opening quote, end the offset
// just after the closing quote; escaped reports whether the content holds backslashes.
func (s *scanner) str() (start, end int, escaped bool, err error) {
	if s.peek() != '"' {
		return 0, 0, false, s.fail("expected string")
	}
	start = s.i
	s.i++
	for s.i < len(s.b) {
		// Skip 8 plain bytes at a time; fall back to one byte when a word holds a quote,
		// a backslash or a control character.
		for s.i+8 <= len(s.b) && !hasSpecial(binary.LittleEndian.Uint64(s.b[s.i:])) {
			s.i += 8
		}
		if s.i >= len(s.b) {
			break
		}
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return start, s.i, escaped, nil
		case c == '\\':
			escaped = true
			if s.i+1 >= len(s.b) {
				return 0, 0, false, s.fail("truncated escape")
			}
			switch s.b[s.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i += 2
			case 'u':
				if s.i+6 > len(s.b) {
					return 0, 0, false, s.fail("truncated \\u escape")
				}
				for _, h := range s.b[s.i+2 : s.i+6] {
					if !isHex(h) {
						return 0, 0, false, s.fail("bad \\u escape")
					}
				}
				s.i += 6
			default:
				return 0, 0, false, s.fail("bad escape")
			}
		case c < 0x20:
			return 0, 0, false, s.fail("control character in string")
		default:
			s.i++
		}
	}
	return 0, 0, false, s.fail("unterminated string")
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// number consumes a JSON number and returns its bytes.
func (s *scanner) number() ([]byte, error) {
	s.ws()
	start := s.i
	if s.i < len(s.b) && s.b[s.i] == '-' {
		s.i++
	}
	if s.i >= len(s.b) {
		return nil, s.fail("truncated number")
	}
	if s.b[s.i] == '0' {
		s.i++
	} else if s.b[s.i] >= '1' && s.b[s.i] <= '9' {
		s.digits()
	} else {
		return nil, s.fail("bad number")
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if s.digits() == 0 {
			return nil, s.fail("bad fraction")
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if s.digits() == 0 {
			return nil, s.fail("bad exponent")
		}
	}
	return s.b[start:s.i], nil
}

func (s *scanner) digits() int {
	n := 0
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
		n++
	}
	return n
}

func (s *scanner) literal(word string) error {
	if len(s.b)-s.i < len(word) || string(s.b[s.i:s.i+len(word)]) != word {
		return s.fail("bad literal")
	}
	s.i += len(word)
	return nil
}

// skip consumes and validates any value.
func (s *scanner) skip(depth int) error {
	if depth > maxDepth {
		return s.fail("nesting too deep")
	}
	switch c := s.peek(); {
	case c == '"':
		_, _, _, err := s.str()
		return err
	case c == '{':
		return s.object(depth, func(int, int, bool) error { return s.skip(depth + 1) })
	case c == '[':
		return s.array(depth, func(int) error { return s.skip(depth + 1) })
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		_, err := s.number()
		return err
	case c == 0:
		return s.fail("unexpected end of input")
	default:
		return s.fail("unexpected character")
	}
}

// object consumes an object, calling member for each key (offsets of the key token) with
// the scanner positioned at the value; member must consume the value.
func (s *scanner) object(depth int, member func(keyStart, keyEnd int, escaped bool) error) error {
	if depth > maxDepth {
		return s.fail("nesting too deep")
	}
	if err := s.expect('{'); err != nil {
		return err
	}
	if s.peek() == '}' {
		s.i++
		return nil
	}
	for {
		ks, ke, esc, err := s.str()
		if err != nil {
			return err
		}
		if err := s.expect(':'); err != nil {
			return err
		}
		if err := member(ks, ke, esc); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		default:
			return s.fail("expected ',' or '}'")
		}
	}
}

// array consumes an array, calling elem for each element with the scanner at its start.
func (s *scanner) array(depth int, elem func(index int) error) error {
	if depth > maxDepth {
		return s.fail("nesting too deep")
	}
	if err := s.expect('['); err != nil {
		return err
	}
	if s.peek() == ']' {
		s.i++
		return nil
	}
	for n := 0; ; n++ {
		if err := elem(n); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			return nil
		default:
			return s.fail("expected ',' or ']'")
		}
	}
}

// keyIs compares a key token (with quotes) against a plain name. Escaped keys never
// match: OpenAI clients do not escape these ASCII names, and treating an escaped key as
// unknown only makes us skip it.
func (s *scanner) keyIs(ks, ke int, escaped bool, name string) bool {
	return !escaped && ke-ks-2 == len(name) && string(s.b[ks+1:ke-1]) == name
}

// end checks that only whitespace follows the top-level value. It tests the offset, not
// peek's 0, because a NUL byte after the value is data too (and invalid JSON).
func (s *scanner) end() error {
	if s.ws(); s.i < len(s.b) {
		return s.fail("data after top-level value")
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
