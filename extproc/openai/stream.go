package openai

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/infergw/infergw/internal/wirescan"
)

// maxJSONResponse bounds how much of a non-streamed response is kept for reading usage
// (and for rewriting the model back). Larger responses pass through unread.
const maxJSONResponse = 8 << 20

// ResponseProcessor follows one response body chunk by chunk: it reads usage from a JSON
// body or from SSE events, and, when the request's model was rewritten, writes the client's
// model name back into every "model" member. Without a rewrite the bytes pass through
// unchanged and unheld; with one, SSE passes whole events (an event split across chunks is
// held until its end) and JSON is held until the end of the body.
type ResponseProcessor struct {
	sse     bool
	rewrite []byte // JSON encoding of the client's model; nil = no rewrite
	// dropUsage: the gateway asked for the usage chunk the client did not ask for; it is
	// read and removed (SSE only), so events pass whole.
	dropUsage bool
	buf       []byte // SSE: partial event; JSON: body so far
	over      bool   // JSON body exceeded maxJSONResponse
	info      ResponseInfo
	Usage     Usage
}

// NewResponseProcessor starts processing a response with the given content-type.
// clientModel, when non-empty, is written back into the response's model members.
func NewResponseProcessor(contentType, clientModel string) (*ResponseProcessor, error) {
	p := &ResponseProcessor{sse: IsSSE(contentType)}
	if clientModel != "" {
		enc, err := json.Marshal(clientModel)
		if err != nil {
			return nil, fmt.Errorf("encode client model: %w", err)
		}
		p.rewrite = enc
	}
	return p, nil
}

// DropUsageChunk makes the processor remove the usage-only chunk (an event whose payload
// has "choices":[] and a usage object) from an event stream after reading its usage: the
// gateway added stream_options.include_usage for its token metrics and the client must
// see exactly the stream it asked for.
func (p *ResponseProcessor) DropUsageChunk() { p.dropUsage = true }

// IsSSE reports whether a content-type is text/event-stream. Only the media type before
// any parameters matters, so it is compared directly: mime.ParseMediaType would build a
// parameter map for every response.
func IsSSE(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "text/event-stream")
}

// SSE reports whether the response is an event stream.
func (p *ResponseProcessor) SSE() bool { return p.sse }

// Feed consumes the next chunk and returns the bytes to send on. At eos every held byte is
// returned. The returned slice may alias chunk.
func (p *ResponseProcessor) Feed(chunk []byte, eos bool) []byte {
	if p.sse {
		return p.feedSSE(chunk, eos)
	}
	return p.feedJSON(chunk, eos)
}

func (p *ResponseProcessor) feedJSON(chunk []byte, eos bool) []byte {
	if !p.over {
		if len(p.buf)+len(chunk) > maxJSONResponse {
			p.over = true
			held := p.buf
			p.buf = nil
			if p.rewrite != nil {
				// Too large to rewrite: release what was held, unchanged.
				return append(held, chunk...)
			}
			return chunk
		}
		p.buf = append(p.buf, chunk...)
	}
	if p.over {
		return chunk
	}
	if !eos {
		if p.rewrite != nil {
			return nil
		}
		return chunk
	}
	body := p.buf
	if err := ParseResponse(body, &p.info); err != nil {
		// Not JSON we understand (an error page, say): pass it on untouched.
		if p.rewrite != nil {
			return body
		}
		return chunk
	}
	p.Usage = p.info.Usage
	if p.rewrite == nil {
		return chunk
	}
	return replaceTokens(make([]byte, 0, len(body)+len(p.rewrite)), body, p.info.Models[:p.info.NModel], p.rewrite)
}

func (p *ResponseProcessor) feedSSE(chunk []byte, eos bool) []byte {
	held := p.rewrite != nil || p.dropUsage // events pass whole, possibly changed
	data := chunk
	if len(p.buf) > 0 {
		p.buf = append(p.buf, chunk...)
		data = p.buf
	}
	var out []byte
	rest := data
	for {
		n := wirescan.EventEnd(rest)
		if n < 0 {
			break
		}
		ev := rest[:n]
		rest = rest[n:]
		out = p.event(out, ev, held)
	}
	if eos && len(rest) > 0 {
		out = p.event(out, rest, held)
		rest = nil
	}
	if len(rest) > maxJSONResponse {
		// One event larger than the bound: stop holding it. It passes on unchanged and
		// unread; parsing resumes at the next event boundary.
		if held {
			out = append(out, rest...)
		}
		rest = nil
	}
	// Keep the partial tail for the next chunk (copy: data may alias chunk or p.buf).
	tail := append([]byte(nil), rest...)
	p.buf = tail[:len(tail):len(tail)]
	if len(p.buf) == 0 {
		p.buf = nil
	}
	if !held {
		return chunk
	}
	return out
}

// event handles one whole event: reads its usage and, when held, appends what goes on.
func (p *ResponseProcessor) event(out, ev []byte, held bool) []byte {
	switch {
	case p.dropUsage && p.usageOnly(ev):
		return out // read (usageOnly recorded the usage) and removed
	case p.rewrite != nil:
		return p.rewriteEvent(out, ev)
	case held:
		p.readEvent(ev)
		return append(out, ev...)
	default:
		p.readEvent(ev)
		return out
	}
}

// usageOnly reports whether ev is the usage-only chunk, recording its usage if so.
func (p *ResponseProcessor) usageOnly(ev []byte) bool {
	if !bytes.Contains(ev, []byte(`"usage"`)) {
		return false
	}
	only := false
	wirescan.ForEachData(ev, func(st, en int) {
		if err := ParseResponse(ev[st:en], &p.info); err == nil && p.info.Usage.Present && p.info.NoChoices {
			p.Usage = p.info.Usage
			only = true
		}
	})
	return only
}

// readEvent reads usage from an event without changing it. Only events that mention usage
// are parsed, so token chunks cost a substring search.
func (p *ResponseProcessor) readEvent(ev []byte) {
	if !bytes.Contains(ev, []byte(`"usage"`)) {
		return
	}
	wirescan.ForEachData(ev, func(st, en int) {
		if err := ParseResponse(ev[st:en], &p.info); err == nil && p.info.Usage.Present {
			p.Usage = p.info.Usage
		}
	})
}

// rewriteEvent appends ev to out with the model members of its data payloads rewritten.
func (p *ResponseProcessor) rewriteEvent(out, ev []byte) []byte {
	last := 0
	wirescan.ForEachData(ev, func(st, en int) {
		if err := ParseResponse(ev[st:en], &p.info); err != nil {
			return // "[DONE]" or a payload we do not understand: unchanged
		}
		if p.info.Usage.Present {
			p.Usage = p.info.Usage
		}
		out = append(out, ev[last:st]...)
		out = replaceTokens(out, ev[st:en], p.info.Models[:p.info.NModel], p.rewrite)
		last = en
	})
	return append(out, ev[last:]...)
}
