package openai

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

const sseBody = "data: {\"id\":\"1\",\"model\":\"target-lora\",\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n" +
	"data: {\"id\":\"1\",\"model\":\"target-lora\",\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n" +
	"data: {\"id\":\"1\",\"model\":\"target-lora\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":2,\"prompt_tokens_details\":{\"cached_tokens\":8}}}\n\n" +
	"data: [DONE]\n\n"

// feedSplit feeds body in chunks of n bytes and returns everything emitted.
func feedSplit(t *testing.T, p *ResponseProcessor, body string, n int) string {
	t.Helper()
	var out bytes.Buffer
	for i := 0; i < len(body); i += n {
		end := min(i+n, len(body))
		out.Write(p.Feed([]byte(body[i:end]), end == len(body)))
	}
	return out.String()
}

func TestSSEPassThroughReadsUsage(t *testing.T) {
	for _, n := range []int{1, 7, 50, len(sseBody)} {
		p, err := NewResponseProcessor("text/event-stream; charset=utf-8", "")
		if err != nil {
			t.Fatal(err)
		}
		if got := feedSplit(t, p, sseBody, n); got != sseBody {
			t.Fatalf("chunk %d: bytes changed:\n%q", n, got)
		}
		if u := p.Usage; !u.Present || u.PromptTokens != 12 || u.CompletionTokens != 2 || u.CachedTokens != 8 {
			t.Fatalf("chunk %d: usage %+v", n, u)
		}
	}
}

func TestSSERewriteBackAcrossChunks(t *testing.T) {
	want := strings.ReplaceAll(sseBody, `"model":"target-lora"`, `"model":"asked\"for"`)
	for _, n := range []int{1, 3, 64, len(sseBody)} {
		p, err := NewResponseProcessor("text/event-stream", `asked"for`)
		if err != nil {
			t.Fatal(err)
		}
		if got := feedSplit(t, p, sseBody, n); got != want {
			t.Fatalf("chunk %d: got\n%q\nwant\n%q", n, got, want)
		}
		if p.Usage.CompletionTokens != 2 {
			t.Fatalf("usage %+v", p.Usage)
		}
	}
}

func TestJSONResponse(t *testing.T) {
	body := `{"id":"c","object":"chat.completion","model":"target","choices":[{"message":{"content":"model \"target\""}}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`
	p, _ := NewResponseProcessor("application/json", "")
	if got := feedSplit(t, p, body, 10); got != body {
		t.Fatalf("pass-through changed bytes: %q", got)
	}
	if p.Usage.PromptTokens != 3 || p.Usage.CompletionTokens != 4 {
		t.Fatalf("usage %+v", p.Usage)
	}
	p, _ = NewResponseProcessor("application/json", "client-model")
	got := feedSplit(t, p, body, 10)
	var v struct {
		Model   string
		Choices []struct{ Message struct{ Content string } }
	}
	if err := json.Unmarshal([]byte(got), &v); err != nil {
		t.Fatalf("rewritten JSON invalid: %v", err)
	}
	if v.Model != "client-model" || v.Choices[0].Message.Content != `model "target"` {
		t.Fatalf("rewrite wrong: %+v", v)
	}
	// Responses API nesting and a non-JSON error body.
	var info ResponseInfo
	if err := ParseResponse([]byte(`{"type":"response.completed","response":{"model":"m","usage":{"input_tokens":5,"output_tokens":6,"input_tokens_details":{"cached_tokens":1}}}}`), &info); err != nil {
		t.Fatal(err)
	}
	if info.NModel != 1 || info.Usage.PromptTokens != 5 || info.Usage.CompletionTokens != 6 || info.Usage.CachedTokens != 1 {
		t.Fatalf("responses API info %+v", info)
	}
	p, _ = NewResponseProcessor("application/json", "x")
	if got := feedSplit(t, p, "upstream connect error", 4); got != "upstream connect error" {
		t.Fatalf("non-JSON body changed: %q", got)
	}
}

// FuzzResponseProcessor feeds arbitrary bodies split at an arbitrary point: no panic; without
// a rewrite the bytes pass through unchanged; with one, nothing is lost or invented outside
// model values (the output is the input when the input has no parseable model member).
func FuzzResponseProcessor(f *testing.F) {
	f.Add([]byte(sseBody), uint16(17), true)
	f.Add([]byte(`{"model":"m","usage":{"prompt_tokens":1}}`), uint16(3), false)
	f.Add([]byte("data: {\"x\":1}\r\n\r\ndata: [DONE]\n\n"), uint16(5), true)
	f.Fuzz(func(t *testing.T, body []byte, split uint16, sse bool) {
		ct := "application/json"
		if sse {
			ct = "text/event-stream"
		}
		cut := int(split) % (len(body) + 1)
		for _, model := range []string{"", "client"} {
			p, err := NewResponseProcessor(ct, model)
			if err != nil {
				t.Fatal(err)
			}
			out := append(append([]byte{}, p.Feed(body[:cut], false)...), p.Feed(body[cut:], true)...)
			if model == "" && !bytes.Equal(out, body) {
				t.Fatalf("pass-through changed %q into %q", body, out)
			}
			if model != "" && !bytes.Contains(body, []byte(`"model"`)) && !bytes.Equal(out, body) {
				t.Fatalf("rewrite without a model member changed %q into %q", body, out)
			}
		}
		if !sse {
			return
		}
		// Dropping the usage chunk: the output does not depend on where the chunks split,
		// and only removes bytes.
		drop := func(parts ...[]byte) []byte {
			p, _ := NewResponseProcessor(ct, "")
			p.DropUsageChunk()
			var out []byte
			for i, part := range parts {
				out = append(out, p.Feed(part, i == len(parts)-1)...)
			}
			return out
		}
		whole, halves := drop(body), drop(body[:cut], body[cut:])
		if !bytes.Equal(whole, halves) || len(whole) > len(body) {
			t.Fatalf("drop mode: whole %q, split at %d %q, input %q", whole, cut, halves, body)
		}
	})
}
