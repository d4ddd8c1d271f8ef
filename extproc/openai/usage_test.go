package openai

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// decodeStreamOptions decodes a body the way vLLM's Python decoder does for our purpose:
// the last of repeated members wins (Go's encoding/json does the same into a struct).
func decodeStreamOptions(t *testing.T, body []byte) (stream bool, includeUsage *bool, others map[string]json.RawMessage) {
	t.Helper()
	var v struct {
		Stream        bool                       `json:"stream"`
		StreamOptions map[string]json.RawMessage `json:"stream_options"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("edited body is not JSON: %v\n%s", err, body)
	}
	if raw, ok := v.StreamOptions["include_usage"]; ok {
		var b bool
		if err := json.Unmarshal(raw, &b); err != nil {
			t.Fatal(err)
		}
		includeUsage = &b
	}
	delete(v.StreamOptions, "include_usage")
	return v.Stream, includeUsage, v.StreamOptions
}

func TestIncludeUsageEdit(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		edit       bool
		keep       string // another stream_options member that must survive
	}{
		{name: "streamed, no stream_options", body: `{"model":"m","stream":true,"messages":[]}`, edit: true},
		{name: "trailing space", body: "{\"model\":\"m\",\"stream\":true} \n", edit: true},
		{name: "include_usage false", body: `{"model":"m","stream":true,"stream_options":{"include_usage":false}}`, edit: true},
		{name: "other option kept", body: `{"model":"m","stream_options":{"continuous_usage_stats":true},"stream":true}`, edit: true, keep: "continuous_usage_stats"},
		{name: "empty stream_options", body: `{"stream":true,"stream_options":{ },"model":"m"}`, edit: true},
		{name: "null stream_options", body: `{"stream":true,"stream_options":null,"model":"m"}`, edit: true},
		{name: "already asked", body: `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`},
		{name: "repeated stream_options, last false", body: `{"model":"m","stream":true,"stream_options":{"include_usage":true},"stream_options":{"include_usage":false}}`, edit: true},
		{name: "not streamed", body: `{"model":"m","stream":false}`},
		{name: "no stream flag", body: `{"model":"m","prompt":"x"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r Request
			if err := Parse([]byte(tc.body), &r); err != nil {
				t.Fatal(err)
			}
			e, ok := r.IncludeUsageEdit([]byte(tc.body))
			if ok != tc.edit {
				t.Fatalf("edit %v, want %v", ok, tc.edit)
			}
			if !ok {
				return
			}
			out, err := ApplyEdits([]byte(tc.body), e)
			if err != nil {
				t.Fatal(err)
			}
			stream, inc, others := decodeStreamOptions(t, out)
			if !stream || inc == nil || !*inc {
				t.Fatalf("edited body %s does not ask for usage", out)
			}
			if tc.keep != "" {
				if _, ok := others[tc.keep]; !ok {
					t.Errorf("edited body %s lost %s", out, tc.keep)
				}
			}
			var again Request
			if err := Parse(out, &again); err != nil || !again.IncludeUsage {
				t.Errorf("re-parse of %s: include_usage %v, err %v", out, again.IncludeUsage, err)
			}
		})
	}
}

func TestApplyEditsWithModelRewrite(t *testing.T) {
	body := []byte(`{"stream":true,"model":"food","messages":[{"role":"user","content":"hi"}]}`)
	var r Request
	if err := Parse(body, &r); err != nil {
		t.Fatal(err)
	}
	usage, ok := r.IncludeUsageEdit(body)
	if !ok {
		t.Fatal("no usage edit")
	}
	out, err := ApplyEdits(body, usage, Edit{Start: r.ModelStart, End: r.ModelEnd, With: []byte(`"food-lora"`)})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"stream":true,"model":"food-lora","messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":true}}`
	if string(out) != want {
		t.Fatalf("got  %s\nwant %s", out, want)
	}
	if _, err := ApplyEdits(body, Edit{Start: 2, End: 5}, Edit{Start: 4, End: 6}); err == nil {
		t.Fatal("overlapping edits accepted")
	}
	if _, err := ApplyEdits(body, Edit{Start: 2, End: len(body) + 1}); err == nil {
		t.Fatal("edit past the end accepted")
	}
}

// vLLM's stream as the gateway receives it after adding include_usage (shape saved from
// vLLM 0.32): the usage chunk has "choices":[] and comes before [DONE].
const vllmUsageStream = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"tiny\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n" +
	"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"tiny\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ka\"},\"logprobs\":null,\"finish_reason\":\"length\",\"stop_reason\":null}]}\n\n" +
	"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"tiny\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"total_tokens\":10,\"completion_tokens\":1,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n" +
	"data: [DONE]\n\n"

func TestDropUsageChunk(t *testing.T) {
	i := strings.Index(vllmUsageStream, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"tiny\",\"choices\":[],")
	want := vllmUsageStream[:i] + "data: [DONE]\n\n"
	for _, model := range []string{"", "asked"} {
		for _, n := range []int{1, 5, 64, len(vllmUsageStream)} {
			p, _ := NewResponseProcessor("text/event-stream", model)
			p.DropUsageChunk()
			got := feedSplit(t, p, vllmUsageStream, n)
			w := want
			if model != "" {
				w = strings.ReplaceAll(want, `"model":"tiny"`, `"model":"asked"`)
			}
			if got != w {
				t.Fatalf("model %q chunk %d: got\n%q\nwant\n%q", model, n, got, w)
			}
			if u := p.Usage; !u.Present || u.PromptTokens != 9 || u.CompletionTokens != 1 {
				t.Fatalf("usage %+v", u)
			}
		}
	}
	// A client that asked for usage keeps the chunk: without DropUsageChunk nothing changes.
	p, _ := NewResponseProcessor("text/event-stream", "")
	if got := feedSplit(t, p, vllmUsageStream, 7); got != vllmUsageStream {
		t.Fatalf("pass-through changed the stream: %q", got)
	}
	// A chunk with choices and usage (continuous usage stats) is not the final usage chunk.
	cont := "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n"
	p, _ = NewResponseProcessor("text/event-stream", "")
	p.DropUsageChunk()
	if got := feedSplit(t, p, cont, 4); got != cont {
		t.Fatalf("dropped a chunk with choices: %q", got)
	}
}

func FuzzIncludeUsageEdit(f *testing.F) {
	for _, s := range []string{`{"model":"m","stream":true}`, `{"stream":true,"stream_options":{},"model":"m"}`,
		`{"stream":true,"stream_options":null,"model":"m"}`, `{"model":"m","stream":true,"stream_options":{"a":[1,{}]}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var r Request
		if Parse(body, &r) != nil {
			return
		}
		e, ok := r.IncludeUsageEdit(body)
		if !ok {
			return
		}
		out, err := ApplyEdits(body, e)
		if err != nil {
			t.Fatalf("edit of %q: %v", body, err)
		}
		if !json.Valid(out) {
			t.Fatalf("edit of %q gave invalid JSON %q", body, out)
		}
		var again Request
		if err := Parse(out, &again); err != nil {
			t.Fatalf("edited body %q does not parse: %v", out, err)
		}
		if again.Stream != r.Stream || again.Model != r.Model || !bytes.Equal(again.Prompt, r.Prompt) {
			t.Fatalf("edit of %q changed the request: %q", body, out)
		}
		if r.StreamOptionsStart < 0 || body[r.StreamOptionsStart] == '{' {
			if !again.IncludeUsage {
				t.Fatalf("edited body %q does not ask for usage", out)
			}
		}
	})
}
