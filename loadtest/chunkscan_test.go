package loadtest

import (
	"testing"
)

func TestScanChunk(t *testing.T) {
	for _, tc := range []struct {
		in           string
		contentBytes int
		usage        bool
		errMsg       bool
	}{
		{`{"choices":[{"delta":{"role":"assistant"}}]}`, 0, false, false},
		{`{"choices":[{"delta":{"content":""}}]}`, 0, false, false},
		{`{"choices":[{"delta":{"content":"hi"}}]}`, 2, false, false},
		{`{"choices":[{"text":"abc"}]}`, 3, false, false},
		{`{"choices":[{"delta":{"reasoning_content":"hm"}}]}`, 2, false, false},
		{`{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}`, 0, true, false},
		{`{"error":{"message":"overloaded"}}`, 0, false, true},
	} {
		ci, err := scanChunk([]byte(tc.in))
		if err != nil || ci.contentBytes != tc.contentBytes || ci.hasUsage != tc.usage || (ci.errMsg != "") != tc.errMsg {
			t.Errorf("%s: %+v %v", tc.in, ci, err)
		}
	}
	for _, bad := range []string{`{"choices":[{"delta":`, `{"usage":{"prompt_tokens":1.5}}`, `{}x`, `[]`, `{"a":tru}`} {
		if _, err := scanChunk([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	ci, err := scanChunk([]byte(`{"usage":{"prompt_tokens":7,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":5}}}`))
	if err != nil || ci.usage.PromptTokens != 7 || ci.usage.CompletionTokens != 3 || ci.usage.PromptTokensDetails.CachedTokens != 5 {
		t.Errorf("usage %+v %v", ci.usage, err)
	}
}

// FuzzScanChunkMatchesJSON holds the hand-written chunk scanner to encoding/json: on any
// input that encoding/json decodes, the scanner must agree on whether there is content,
// on the usage counts and on whether an error event came. Non-ASCII input is skipped, as
// encoding/json's Unicode case folding of keys is not mirrored (OpenAI keys are ASCII).
func FuzzScanChunkMatchesJSON(f *testing.F) {
	for _, s := range []string{
		`{"choices":[{"delta":{"content":"hi"}}],"usage":{"prompt_tokens":1,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":1}}}`,
		`{"error":{}}`, `{"error":{"message":"x"},"error":null}`, `null`,
		`{"Choices":[{"Text":"a"},null,{"delta":null}],"choices":[]}`,
		`{"choices":[{"delta":{"content":"a"},"delta":{}}]}`,
		`{"usage":{"prompt_tokens":1},"usage":{"completion_tokens":2}}`,
		`{"cho\u0069ces":[{"text":"\u0041"}],"x":[1,{"y":-2.5e3},true,false,"s"]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got, gotErr := scanChunk(in) // must never panic, whatever the input
		for _, c := range in {
			if c >= 0x80 {
				return
			}
		}
		var c streamChunk
		want, wantErr := parseChunk(in, &c)
		if wantErr != nil {
			return // encoding/json rejects it; the scanner may be more lenient on types
		}
		if gotErr != nil {
			t.Fatalf("%s: scanner error %v, encoding/json accepted it", in, gotErr)
		}
		if (got.contentBytes > 0) != (want.contentBytes > 0) || got.hasUsage != want.hasUsage ||
			got.usage.PromptTokens != want.usage.PromptTokens || got.usage.CompletionTokens != want.usage.CompletionTokens ||
			(got.usage.PromptTokensDetails == nil) != (want.usage.PromptTokensDetails == nil) ||
			(got.errMsg != "") != (want.errMsg != "") {
			t.Fatalf("%s:\nscanner  %+v\njson     %+v", in, got, want)
		}
		if d := got.usage.PromptTokensDetails; d != nil && d.CachedTokens != want.usage.PromptTokensDetails.CachedTokens {
			t.Fatalf("%s: cached %d vs %d", in, d.CachedTokens, want.usage.PromptTokensDetails.CachedTokens)
		}
	})
}
