package loadtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// scanChunk extracts what parseChunk does (generated-text presence and size, usage counts,
// an error event) with a purpose-built JSON walker: no reflection and no allocation, because
// a 5,000 req/s run decodes ~100,000 chunks a second. It follows encoding/json's semantics
// for the fields it reads (case-insensitive keys, last duplicate wins, null leaves a string
// unchanged and clears a pointer) so that FuzzScanChunkMatchesJSON can hold it to them.
// contentBytes counts raw (still escaped) bytes; only "is it empty" and rough size matter.
func scanChunk(data []byte) (chunkInfo, error) {
	s := scanner{b: data}
	var ci chunkInfo
	if s.null() { // encoding/json accepts a top-level null as "nothing"
		s.ws()
		if s.i != len(s.b) {
			return chunkInfo{}, errors.New("decode chunk: trailing data")
		}
		return ci, nil
	}
	var errMessage, errType int
	err := s.object(func(key []byte) error {
		switch {
		case keyIs(key, "choices"):
			if s.null() {
				ci.contentBytes = 0 // null slice: choices cleared
				return nil
			}
			ci.contentBytes = 0 // a later "choices" replaces an earlier one
			return s.array(func() error {
				var text, content, reasoning, message int
				if s.null() {
					return nil
				}
				err := s.object(func(k []byte) error {
					switch {
					case keyIs(k, "text"):
						return s.optString(&text)
					case keyIs(k, "delta"):
						if s.null() {
							return nil
						}
						return s.object(func(k2 []byte) error {
							switch {
							case keyIs(k2, "content"):
								return s.optString(&content)
							case keyIs(k2, "reasoning_content"):
								return s.optString(&reasoning)
							}
							return s.skip()
						})
					case keyIs(k, "message"):
						if s.null() {
							return nil
						}
						return s.object(func(k2 []byte) error {
							if keyIs(k2, "content") {
								return s.optString(&message)
							}
							return s.skip()
						})
					}
					return s.skip()
				})
				ci.contentBytes += text + content + reasoning + message
				return err
			})
		case keyIs(key, "usage"):
			if s.null() {
				ci.hasUsage, ci.usage = false, usage{}
				return nil
			}
			ci.hasUsage = true
			return s.object(func(k []byte) error {
				switch {
				case keyIs(k, "prompt_tokens"):
					return s.optInt(&ci.usage.PromptTokens)
				case keyIs(k, "completion_tokens"):
					return s.optInt(&ci.usage.CompletionTokens)
				case keyIs(k, "prompt_tokens_details"):
					if s.null() {
						ci.usage.PromptTokensDetails = nil
						return nil
					}
					if ci.usage.PromptTokensDetails == nil {
						ci.usage.PromptTokensDetails = &struct {
							CachedTokens int `json:"cached_tokens"`
						}{}
					}
					d := ci.usage.PromptTokensDetails
					return s.object(func(k2 []byte) error {
						if keyIs(k2, "cached_tokens") {
							return s.optInt(&d.CachedTokens)
						}
						return s.skip()
					})
				}
				return s.skip()
			})
		case keyIs(key, "error"):
			if s.null() {
				ci.errMsg = ""
				errMessage, errType = 0, 0
				return nil
			}
			ci.errMsg = "error event"
			return s.object(func(k []byte) error {
				switch {
				case keyIs(k, "message"):
					return s.optString(&errMessage)
				case keyIs(k, "type"):
					return s.optString(&errType)
				}
				return s.skip()
			})
		}
		return s.skip()
	})
	if err != nil {
		return chunkInfo{}, fmt.Errorf("decode chunk: %w", err)
	}
	if ci.errMsg != "" && errMessage+errType > 0 {
		ci.errMsg = "server error event" // the text itself is not needed, only that it came
	}
	s.ws()
	if s.i != len(s.b) {
		return chunkInfo{}, errors.New("decode chunk: trailing data")
	}
	return ci, nil
}

// keyIs compares an (unescaped, ASCII) key case-insensitively like encoding/json.
func keyIs(key []byte, name string) bool { return bytes.EqualFold(key, []byte(name)) }

var errSyntax = errors.New("invalid JSON")

type scanner struct {
	b []byte
	i int
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

// null consumes a null literal if one is next.
func (s *scanner) null() bool {
	s.ws()
	if bytes.HasPrefix(s.b[s.i:], []byte("null")) {
		s.i += 4
		return true
	}
	return false
}

// object walks {"key": value, ...}; field must consume the value.
func (s *scanner) object(field func(key []byte) error) error {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return errSyntax
	}
	s.i++
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return nil
	}
	for {
		s.ws()
		key, err := s.str()
		if err != nil {
			return err
		}
		if bytes.IndexByte(key, '\\') >= 0 { // rare: decode escapes so that keys compare right
			var k string
			if json.Unmarshal(s.b[s.i-len(key)-2:s.i], &k) == nil {
				key = []byte(k)
			}
		}
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return errSyntax
		}
		s.i++
		if err := field(key); err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.b) {
			return errSyntax
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		default:
			return errSyntax
		}
	}
}

func (s *scanner) array(elem func() error) error {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '[' {
		return errSyntax
	}
	s.i++
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		return nil
	}
	for {
		if err := elem(); err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.b) {
			return errSyntax
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case ']':
			s.i++
			return nil
		default:
			return errSyntax
		}
	}
}

// str reads a string and returns its raw contents (escapes validated, not decoded).
func (s *scanner) str() ([]byte, error) {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, errSyntax
	}
	start := s.i + 1
	for i := start; i < len(s.b); i++ {
		switch c := s.b[i]; {
		case c == '"':
			s.i = i + 1
			return s.b[start:i], nil
		case c == '\\':
			if i+1 >= len(s.b) {
				return nil, errSyntax
			}
			switch s.b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				if i+5 >= len(s.b) || !isHex4(s.b[i+2:i+6]) {
					return nil, errSyntax
				}
				i += 5
			default:
				return nil, errSyntax
			}
		case c < 0x20:
			return nil, errSyntax
		}
	}
	return nil, errSyntax
}

func isHex4(b []byte) bool {
	for _, c := range b {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// optString stores the raw length of a string value; null leaves it unchanged.
func (s *scanner) optString(n *int) error {
	if s.null() {
		return nil
	}
	raw, err := s.str()
	if err != nil {
		return err
	}
	*n = len(raw)
	return nil
}

// optInt reads a JSON integer; null leaves it unchanged.
func (s *scanner) optInt(v *int) error {
	if s.null() {
		return nil
	}
	s.ws()
	start := s.i
	if err := s.number(); err != nil {
		return err
	}
	n, neg, digits := 0, false, s.b[start:s.i]
	if len(digits) > 0 && digits[0] == '-' {
		neg, digits = true, digits[1:]
	}
	if len(digits) == 0 {
		return errSyntax
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return errors.New("usage count is not an integer")
		}
	}
	if len(digits) > 18 { // rare: let strconv check int64 range
		x, err := strconv.ParseInt(string(s.b[start:s.i]), 10, 64)
		if err != nil {
			return fmt.Errorf("usage count: %w", err)
		}
		*v = int(x)
		return nil
	}
	for _, c := range digits {
		n = n*10 + int(c-'0')
	}
	if neg {
		n = -n
	}
	*v = n
	return nil
}

func (s *scanner) number() error {
	start := s.i
	if s.i < len(s.b) && s.b[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i < len(s.b) && s.b[s.i] == '0':
		s.i++
	case s.i < len(s.b) && s.b[s.i] >= '1' && s.b[s.i] <= '9':
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
		}
	default:
		s.i = start
		return errSyntax
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if !s.digits() {
			return errSyntax
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if !s.digits() {
			return errSyntax
		}
	}
	return nil
}

func (s *scanner) digits() bool {
	start := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	return s.i > start
}

// skip consumes any JSON value.
func (s *scanner) skip() error {
	s.ws()
	if s.i >= len(s.b) {
		return errSyntax
	}
	switch c := s.b[s.i]; {
	case c == '{':
		return s.object(func([]byte) error { return s.skip() })
	case c == '[':
		return s.array(s.skip)
	case c == '"':
		_, err := s.str()
		return err
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	}
	for _, lit := range []string{"true", "false", "null"} {
		if bytes.HasPrefix(s.b[s.i:], []byte(lit)) {
			s.i += len(lit)
			return nil
		}
	}
	return errSyntax
}
