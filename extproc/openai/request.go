// Package openai extracts what routing needs from OpenAI-style request and response bodies
// (model, prompt text, stream flags, usage) with a validating single-pass scanner over the
// bytes: no map[string]any, no copy of the body.
package openai

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// ErrInvalidJSON is wrapped by Parse when the body is not valid JSON or not an object.
var ErrInvalidJSON = errSyntax

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
}

// Reset clears r, keeping the Prompt buffer.
func (r *Request) Reset() {
	*r = Request{Prompt: r.Prompt[:0], ModelStart: -1, ModelEnd: -1}
}

// Parse reads body into r. It understands /v1/completions (prompt: string, array of
// strings, array of token ids or of token arrays), /v1/chat/completions (messages with
// string or content-part content), /v1/embeddings (input) and /v1/responses (input,
// instructions); other members are validated and skipped. The path is not needed: each API's
// members have distinct names.
func Parse(body []byte, r *Request) error {
	r.Reset()
	s := scanner{b: body}
	if s.peek() != '{' {
		return s.fail("body is not a JSON object")
	}
	err := s.object(0, func(ks, ke int, esc bool) error {
		switch {
		case s.keyIs(ks, ke, esc, "model"):
			return r.model(&s)
		case s.keyIs(ks, ke, esc, "prompt"), s.keyIs(ks, ke, esc, "input"):
			return r.promptValue(&s, 1)
		case s.keyIs(ks, ke, esc, "instructions"):
			return r.promptValue(&s, 1)
		case s.keyIs(ks, ke, esc, "messages"):
			return s.array(1, func(int) error { return r.message(&s) })
		case s.keyIs(ks, ke, esc, "stream"):
			return r.boolValue(&s, &r.Stream)
		case s.keyIs(ks, ke, esc, "stream_options"):
			return r.streamOptions(&s)
		default:
			return s.skip(1)
		}
	})
	if err != nil {
		return err
	}
	if err := s.end(); err != nil {
		return err
	}
	if r.ModelStart < 0 {
		return ErrNoModel
	}
	return nil
}

func (r *Request) model(s *scanner) error {
	if s.peek() != '"' {
		// A non-string model is treated as absent; the value must still be valid JSON.
		return s.skip(1)
	}
	st, en, esc, err := s.str()
	if err != nil {
		return err
	}
	m, err := decodeString(s.b[st:en], esc)
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
		return "", fmt.Errorf("%w: %v", errSyntax, err)
	}
	return v, nil
}

func (r *Request) appendText(s *scanner, st, en int) {
	if len(r.Prompt) > 0 {
		r.Prompt = append(r.Prompt, '\n')
	}
	r.Prompt = append(r.Prompt, s.b[st+1:en-1]...)
}

// promptValue reads a prompt-like value: a string, a number (token id), or an array of
// those, of token arrays, or of message objects (the Responses API input items).
func (r *Request) promptValue(s *scanner, depth int) error {
	if depth > maxDepth {
		return s.fail("nesting too deep")
	}
	switch c := s.peek(); {
	case c == '"':
		st, en, _, err := s.str()
		if err != nil {
			return err
		}
		r.appendText(s, st, en)
		return nil
	case c == '[':
		return s.array(depth, func(int) error { return r.promptValue(s, depth+1) })
	case c == '{':
		return r.messageAt(s, depth)
	case c == '-' || (c >= '0' && c <= '9'):
		num, err := s.number()
		if err != nil {
			return err
		}
		// Token ids: keep their decimal form, space separated, so equal token prefixes hash equal.
		r.Prompt = append(r.Prompt, num...)
		r.Prompt = append(r.Prompt, ' ')
		return nil
	default:
		return s.skip(depth)
	}
}

func (r *Request) message(s *scanner) error { return r.messageAt(s, 2) }

// messageAt reads a chat message or Responses input item: role and content (string or
// parts) count as prompt text; "text" members of parts too; everything else is skipped.
func (r *Request) messageAt(s *scanner, depth int) error {
	if s.peek() != '{' {
		return s.skip(depth)
	}
	return s.object(depth, func(ks, ke int, esc bool) error {
		switch {
		case s.keyIs(ks, ke, esc, "role"), s.keyIs(ks, ke, esc, "text"):
			if s.peek() == '"' {
				st, en, _, err := s.str()
				if err != nil {
					return err
				}
				r.appendText(s, st, en)
				return nil
			}
			return s.skip(depth + 1)
		case s.keyIs(ks, ke, esc, "content"):
			return r.promptValue(s, depth+1)
		default:
			return s.skip(depth + 1)
		}
	})
}

func (r *Request) boolValue(s *scanner, dst *bool) error {
	switch s.peek() {
	case 't':
		*dst = true
		return s.literal("true")
	case 'f':
		*dst = false
		return s.literal("false")
	default:
		return s.skip(1)
	}
}

func (r *Request) streamOptions(s *scanner) error {
	if s.peek() != '{' {
		return s.skip(1)
	}
	return s.object(1, func(ks, ke int, esc bool) error {
		if s.keyIs(ks, ke, esc, "include_usage") {
			return r.boolValue(s, &r.IncludeUsage)
		}
		return s.skip(2)
	})
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
