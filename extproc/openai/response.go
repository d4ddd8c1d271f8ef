package openai

import (
	"strconv"

	"github.com/infergw/infergw/internal/wirescan"
)

// Usage is the token accounting of one response.
type Usage struct {
	PromptTokens     int64
	CompletionTokens int64
	CachedTokens     int64
	// Present is true once a non-null usage object was read.
	Present bool
}

// maxModelTokens bounds how many "model" members of one response are tracked for
// rewriting (the top level and, for the Responses API, the nested "response" object).
const maxModelTokens = 4

// ResponseInfo is what the gateway reads from a response body (or one SSE event payload).
type ResponseInfo struct {
	// Models holds the [start,end) offsets of "model" string tokens, quotes included.
	Models [maxModelTokens][2]int
	NModel int
	Usage  Usage
	// NoChoices is true when the top-level "choices" is an empty array: the usage-only
	// chunk that ends a stream with stream_options.include_usage.
	NoChoices bool
}

// ParseResponse reads the model tokens and usage of a chat/completions/embeddings/responses
// body or SSE event payload. It accepts the Responses API's nesting
// ({"type":"response.completed","response":{"model":…,"usage":…}}).
func ParseResponse(body []byte, info *ResponseInfo) error {
	*info = ResponseInfo{}
	s := wirescan.New(body)
	if s.Peek() != '{' {
		return s.Fail("response is not a JSON object")
	}
	if err := info.object(&s, 0); err != nil {
		return err
	}
	return s.End()
}

func (info *ResponseInfo) object(s *wirescan.Scanner, depth int) error {
	return s.Object(depth, func(ks, ke int, esc bool) error {
		switch {
		case s.KeyIs(ks, ke, esc, "model"):
			if s.Peek() != '"' {
				return s.Skip(depth + 1)
			}
			st, en, _, err := s.Str()
			if err != nil {
				return err
			}
			if info.NModel < maxModelTokens {
				info.Models[info.NModel] = [2]int{st, en}
				info.NModel++
			}
			return nil
		case s.KeyIs(ks, ke, esc, "usage"):
			if s.Peek() != '{' {
				return s.Skip(depth + 1)
			}
			info.Usage.Present = true
			return info.usage(s, depth+1)
		case s.KeyIs(ks, ke, esc, "choices") && depth == 0:
			if s.Peek() != '[' {
				return s.Skip(depth + 1)
			}
			st := s.I
			if err := s.Skip(depth + 1); err != nil {
				return err
			}
			info.NoChoices = isEmptyArray(s.B[st:s.I])
			return nil
		case s.KeyIs(ks, ke, esc, "response") && depth == 0:
			if s.Peek() != '{' {
				return s.Skip(depth + 1)
			}
			return info.object(s, depth+1)
		default:
			return s.Skip(depth + 1)
		}
	})
}

func (info *ResponseInfo) usage(s *wirescan.Scanner, depth int) error {
	u := &info.Usage
	return s.Object(depth, func(ks, ke int, esc bool) error {
		switch {
		case s.KeyIs(ks, ke, esc, "prompt_tokens"), s.KeyIs(ks, ke, esc, "input_tokens"):
			return intValue(s, depth+1, &u.PromptTokens)
		case s.KeyIs(ks, ke, esc, "completion_tokens"), s.KeyIs(ks, ke, esc, "output_tokens"):
			return intValue(s, depth+1, &u.CompletionTokens)
		case s.KeyIs(ks, ke, esc, "prompt_tokens_details"), s.KeyIs(ks, ke, esc, "input_tokens_details"):
			if s.Peek() != '{' {
				return s.Skip(depth + 1)
			}
			return s.Object(depth+1, func(ks, ke int, esc bool) error {
				if s.KeyIs(ks, ke, esc, "cached_tokens") {
					return intValue(s, depth+2, &u.CachedTokens)
				}
				return s.Skip(depth + 2)
			})
		default:
			return s.Skip(depth + 1)
		}
	})
}

// isEmptyArray reports whether tok, a valid JSON array, has no elements.
func isEmptyArray(tok []byte) bool {
	for _, c := range tok[1 : len(tok)-1] {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return false
		}
	}
	return true
}

// intValue reads a non-negative integer; any other value is validated and ignored.
func intValue(s *wirescan.Scanner, depth int, dst *int64) error {
	c := s.Peek()
	if c < '0' || c > '9' {
		return s.Skip(depth)
	}
	num, err := s.Number()
	if err != nil {
		return err
	}
	if v, err := strconv.ParseInt(string(num), 10, 64); err == nil {
		*dst = v
	}
	return nil
}

// replaceTokens writes src to dst with each [start,end) token replaced by enc.
func replaceTokens(dst, src []byte, tokens [][2]int, enc []byte) []byte {
	last := 0
	for _, t := range tokens {
		dst = append(dst, src[last:t[0]]...)
		dst = append(dst, enc...)
		last = t[1]
	}
	return append(dst, src[last:]...)
}
