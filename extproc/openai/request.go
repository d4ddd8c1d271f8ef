// Package openai extracts what routing needs from OpenAI-style request and response bodies
// (model, prompt text, stream flags, usage) with a validating single-pass scanner over the
// bytes: no map[string]any, no copy of the body.
package openai

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/infergw/infergw/internal/wirescan"
)

// ErrInvalidJSON is wrapped by Parse when the body is not valid JSON or not an object.
var ErrInvalidJSON = wirescan.ErrSyntax

// ErrNoModel is returned by Parse when the body has no string "model" member.
var ErrNoModel = errors.New("request body has no \"model\" string")

// Request is what routing needs from a request body. Reuse one value across requests to
// keep Prompt's buffer.
type Request struct {
	// Model is the decoded value of the top-level "model" member.
	Model string
	// ModelStart and ModelEnd delimit the model string token, quotes included, in the
	// body; -1 when there is no model.
	ModelStart, ModelEnd int
	// Prompt is the prompt text for prefix hashing: the raw (still JSON-escaped) contents of
	// every prompt string in order, separated by '\n'. Raw bytes are enough for hashing,
	// since equal prompts give equal bytes, and avoid decoding.
	Prompt []byte
	// Stream is the "stream" flag; IncludeUsage is stream_options.include_usage.
	Stream       bool
	IncludeUsage bool
	// StreamOptionsStart and StreamOptionsEnd delimit the stream_options value (-1 when
	// absent); ObjectEnd is the offset of the body's closing '}'. IncludeUsageEdit uses them.
	StreamOptionsStart, StreamOptionsEnd int
	ObjectEnd                            int
}

// Reset clears r, keeping the Prompt buffer.
func (r *Request) Reset() {
	*r = Request{Prompt: r.Prompt[:0], ModelStart: -1, ModelEnd: -1, StreamOptionsStart: -1, StreamOptionsEnd: -1}
}

// Parse reads body into r. It understands /v1/completions (prompt: string, array of
// strings, array of token ids or of token arrays), /v1/chat/completions (messages with
// string or content-part content), /v1/embeddings (input) and /v1/responses (input,
// instructions); other members are validated and skipped. The path is not needed: each API's
// members have distinct names.
func Parse(body []byte, r *Request) error {
	r.Reset()
	s := wirescan.New(body)
	if s.Peek() != '{' {
		return s.Fail("body is not a JSON object")
	}
	err := s.Object(0, func(ks, ke int, esc bool) error {
		switch {
		case s.KeyIs(ks, ke, esc, "model"):
			return r.model(&s)
		case s.KeyIs(ks, ke, esc, "prompt"), s.KeyIs(ks, ke, esc, "input"):
			return r.promptValue(&s, 1)
		case s.KeyIs(ks, ke, esc, "instructions"):
			return r.promptValue(&s, 1)
		case s.KeyIs(ks, ke, esc, "messages"):
			return s.Array(1, func(int) error { return r.message(&s) })
		case s.KeyIs(ks, ke, esc, "stream"):
			return r.boolValue(&s, &r.Stream)
		case s.KeyIs(ks, ke, esc, "stream_options"):
			return r.streamOptions(&s)
		default:
			return s.Skip(1)
		}
	})
	if err != nil {
		return err
	}
	r.ObjectEnd = s.I - 1
	if err := s.End(); err != nil {
		return err
	}
	if r.ModelStart < 0 {
		return ErrNoModel
	}
	return nil
}

func (r *Request) model(s *wirescan.Scanner) error {
	if s.Peek() != '"' {
		// A non-string model is treated as absent; the value must still be valid JSON.
		return s.Skip(1)
	}
	st, en, esc, err := s.Str()
	if err != nil {
		return err
	}
	m, err := decodeString(s.B[st:en], esc)
	if err != nil {
		return err
	}
	r.Model, r.ModelStart, r.ModelEnd = m, st, en
	return nil
}

// decodeString returns the Go value of a string token (quotes included). Invalid UTF-8
// takes the slow path too, so that the value is what encoding/json (and so the model
// server) reads: each invalid byte becomes U+FFFD.
func decodeString(tok []byte, escaped bool) (string, error) {
	if !escaped && utf8.Valid(tok) {
		return string(tok[1 : len(tok)-1]), nil
	}
	var v string
	if err := json.Unmarshal(tok, &v); err != nil {
		return "", fmt.Errorf("%w: %w", wirescan.ErrSyntax, err)
	}
	return v, nil
}

func (r *Request) appendText(s *wirescan.Scanner, st, en int) {
	if len(r.Prompt) > 0 {
		r.Prompt = append(r.Prompt, '\n')
	}
	r.Prompt = append(r.Prompt, s.B[st+1:en-1]...)
}

// promptValue reads a prompt-like value: a string, a number (token id), or an array of
// those, of token arrays, or of message objects (the Responses API input items).
func (r *Request) promptValue(s *wirescan.Scanner, depth int) error {
	if depth > wirescan.DefaultMaxDepth {
		return s.Fail("nesting too deep")
	}
	switch c := s.Peek(); {
	case c == '"':
		st, en, _, err := s.Str()
		if err != nil {
			return err
		}
		r.appendText(s, st, en)
		return nil
	case c == '[':
		return s.Array(depth, func(int) error { return r.promptValue(s, depth+1) })
	case c == '{':
		return r.messageAt(s, depth)
	case c == '-' || (c >= '0' && c <= '9'):
		num, err := s.Number()
		if err != nil {
			return err
		}
		// Token ids: keep their decimal form, space separated, so equal token prefixes hash equal.
		r.Prompt = append(r.Prompt, num...)
		r.Prompt = append(r.Prompt, ' ')
		return nil
	default:
		return s.Skip(depth)
	}
}

func (r *Request) message(s *wirescan.Scanner) error { return r.messageAt(s, 2) }

// messageAt reads a chat message or Responses input item: role and content (string or
// parts) count as prompt text; "text" members of parts too; everything else is skipped.
func (r *Request) messageAt(s *wirescan.Scanner, depth int) error {
	if s.Peek() != '{' {
		return s.Skip(depth)
	}
	return s.Object(depth, func(ks, ke int, esc bool) error {
		switch {
		case s.KeyIs(ks, ke, esc, "role"), s.KeyIs(ks, ke, esc, "text"):
			if s.Peek() == '"' {
				st, en, _, err := s.Str()
				if err != nil {
					return err
				}
				r.appendText(s, st, en)
				return nil
			}
			return s.Skip(depth + 1)
		case s.KeyIs(ks, ke, esc, "content"):
			return r.promptValue(s, depth+1)
		default:
			return s.Skip(depth + 1)
		}
	})
}

func (r *Request) boolValue(s *wirescan.Scanner, dst *bool) error {
	switch s.Peek() {
	case 't':
		*dst = true
		return s.Literal("true")
	case 'f':
		*dst = false
		return s.Literal("false")
	default:
		return s.Skip(1)
	}
}

func (r *Request) streamOptions(s *wirescan.Scanner) error {
	s.SkipSpace()
	r.StreamOptionsStart = s.I
	defer func() { r.StreamOptionsEnd = s.I }()
	if s.Peek() != '{' {
		return s.Skip(1)
	}
	r.IncludeUsage = false // a repeated member: the last one counts, as in the server's decoder
	return s.Object(1, func(ks, ke int, esc bool) error {
		if s.KeyIs(ks, ke, esc, "include_usage") {
			return r.boolValue(s, &r.IncludeUsage)
		}
		return s.Skip(2)
	})
}

// Edit replaces body[Start:End] with With.
type Edit struct {
	Start, End int
	With       []byte
}

// includeUsageMember is what the gateway adds so that a streamed response reports usage.
const includeUsageMember = `"include_usage":true`

// IncludeUsageEdit returns the edit of the parsed body that makes a streamed chat or
// completions response end with a usage chunk (stream_options.include_usage true), and
// false when none is needed: the request is not streamed or already asks for usage.
// A member added to an existing stream_options object goes last, and a stream_options
// added to the body goes last: JSON decoders that accept repeated names (Python's, which
// vLLM uses) take the last one, so the edit wins over an explicit false.
func (r *Request) IncludeUsageEdit(body []byte) (Edit, bool) {
	if !r.Stream || r.IncludeUsage {
		return Edit{}, false
	}
	st, en := r.StreamOptionsStart, r.StreamOptionsEnd
	switch {
	case st < 0:
		return Edit{Start: r.ObjectEnd, End: r.ObjectEnd, With: []byte(`,"stream_options":{` + includeUsageMember + `}`)}, true
	case body[st] == '{':
		closing := en - 1 // the object's '}'
		for i := st + 1; i < closing; i++ {
			if c := body[i]; c != ' ' && c != '\t' && c != '\n' && c != '\r' {
				return Edit{Start: closing, End: closing, With: []byte("," + includeUsageMember)}, true
			}
		}
		return Edit{Start: st, End: en, With: []byte("{" + includeUsageMember + "}")}, true
	default: // null (or another non-object the server would reject anyway)
		return Edit{Start: st, End: en, With: []byte("{" + includeUsageMember + "}")}, true
	}
}

// ApplyEdits returns a new body with the edits applied. Edits must not overlap; they may
// come in any order.
func ApplyEdits(body []byte, edits ...Edit) ([]byte, error) {
	slices.SortFunc(edits, func(a, b Edit) int { return a.Start - b.Start })
	size, last := len(body), 0
	for _, e := range edits {
		if e.Start < last || e.End < e.Start || e.End > len(body) {
			return nil, fmt.Errorf("edit body: bad or overlapping edit [%d,%d) of a %d-byte body", e.Start, e.End, len(body))
		}
		size += len(e.With) - (e.End - e.Start)
		last = e.End
	}
	out := make([]byte, 0, size)
	last = 0
	for _, e := range edits {
		out = append(out, body[last:e.Start]...)
		out = append(out, e.With...)
		last = e.End
	}
	return append(out, body[last:]...), nil
}

// RewriteModel returns body with the model string token at [start,end) replaced by the JSON
// encoding of model. It re-encodes just that value, so a model name that occurs elsewhere
// in the body (in a prompt, say) is untouched. The result is a new slice; body is unchanged.
func RewriteModel(body []byte, start, end int, model string) ([]byte, error) {
	if start < 0 || end > len(body) || start >= end {
		return nil, fmt.Errorf("rewrite model: bad offsets [%d,%d) for a %d-byte body", start, end, len(body))
	}
	enc, err := json.Marshal(model)
	if err != nil {
		return nil, fmt.Errorf("rewrite model: encode %q: %w", model, err)
	}
	out := make([]byte, 0, len(body)-(end-start)+len(enc))
	out = append(out, body[:start]...)
	out = append(out, enc...)
	out = append(out, body[end:]...)
	return out, nil
}
