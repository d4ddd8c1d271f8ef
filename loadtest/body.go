package loadtest

import (
	"strconv"
	"unicode/utf8"
)

// appendBody encodes req as an OpenAI request body without reflection: at thousands of
// requests per second encoding/json's map/struct walk would be a visible cost.
func appendBody(b []byte, cfg *Config, req *Request) []byte {
	b = append(b, `{"model":`...)
	b = appendJSONString(b, req.Model)
	if cfg.API == "embeddings" {
		// Embeddings are one response, not a stream, and generate nothing: no max_tokens.
		b = append(b, `,"input":`...)
		b = appendJSONString(b, joinConversation(req.Messages))
		return append(b, '}')
	}
	if cfg.API == "completions" {
		b = append(b, `,"prompt":`...)
		b = appendJSONString(b, joinConversation(req.Messages))
	} else {
		b = append(b, `,"messages":[`...)
		for i, m := range req.Messages {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"role":`...)
			b = appendJSONString(b, m.Role)
			b = append(b, `,"content":`...)
			b = appendJSONString(b, m.Content)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if req.MaxTokens > 0 {
		b = append(b, `,"max_tokens":`...)
		b = strconv.AppendInt(b, int64(req.MaxTokens), 10)
	}
	if cfg.IgnoreEOS {
		b = append(b, `,"ignore_eos":true`...)
	}
	if cfg.NoStream {
		b = append(b, `,"stream":false`...)
	} else {
		b = append(b, `,"stream":true`...)
		if !cfg.NoUsage {
			b = append(b, `,"stream_options":{"include_usage":true}`...)
		}
	}
	return append(b, '}')
}

func joinConversation(msgs []Message) string {
	if len(msgs) == 1 {
		return msgs[0].Content
	}
	n := 0
	for _, m := range msgs {
		n += len(m.Content) + 1
	}
	out := make([]byte, 0, n)
	for i, m := range msgs {
		if i > 0 {
			out = append(out, '\n')
		}
		out = append(out, m.Content...)
	}
	return string(out)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string literal; invalid UTF-8 becomes U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
