package loadtest

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func readAllEvents(t testing.TB, r io.Reader, maxLine int) ([]string, error) {
	t.Helper()
	s := NewSSEReader(r, maxLine)
	var out []string
	for {
		ev, err := s.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, string(ev.Event)+"|"+string(ev.Data))
	}
}

func TestSSEReader(t *testing.T) {
	in := ": keep-alive\n\n" +
		"data: {\"a\":1}\n\n" +
		"data:no-space\r\n\r\n" +
		"event: ping\ndata: x\n\n" +
		"data: line1\ndata: line2\n\n" +
		"id: 7\nretry: 100\n\n" + // no data: no event
		"data: [DONE]" // no trailing blank line
	want := []string{`|{"a":1}`, "|no-space", "ping|x", "|line1\nline2", "|[DONE]"}
	for name, r := range map[string]io.Reader{
		"whole":    strings.NewReader(in),
		"one byte": iotest.OneByteReader(strings.NewReader(in)),
	} {
		got, err := readAllEvents(t, r, 0)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if strings.Join(got, "\n#\n") != strings.Join(want, "\n#\n") {
			t.Errorf("%s: got %q, want %q", name, got, want)
		}
	}
}

func TestSSEReaderLongLines(t *testing.T) {
	long := strings.Repeat("x", 10000) // longer than the 4 KiB buffer
	got, err := readAllEvents(t, strings.NewReader("data: "+long+"\n\n"), 0)
	if err != nil || len(got) != 1 || got[0] != "|"+long {
		t.Fatalf("long line: %v, %d events", err, len(got))
	}
	_, err = readAllEvents(t, strings.NewReader("data: "+long+"\n\n"), 5000)
	if !errors.Is(err, ErrSSELineTooLong) {
		t.Fatalf("over-long line: err %v, want ErrSSELineTooLong", err)
	}
}

func TestSSEReaderReadError(t *testing.T) {
	r := io.MultiReader(strings.NewReader("data: a\n\n"), iotest.ErrReader(errors.New("boom")))
	got, err := readAllEvents(t, r, 0)
	if len(got) != 1 || err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("events %q err %v: want one event then the wrapped read error", got, err)
	}
}

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

// FuzzSSEReader: any byte stream parses without panic, within the line bound, and reading
// it in one-byte pieces gives the same events as reading it whole.
func FuzzSSEReader(f *testing.F) {
	f.Add([]byte("data: {\"a\":1}\n\n: ping\n\ndata: [DONE]\n\n"))
	f.Add([]byte("event: x\r\ndata: a\r\ndata: b\r\n\r\n"))
	f.Add([]byte("data"))
	f.Add([]byte("\n\n\ndata:\n\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		a, errA := readAllEvents(t, bytes.NewReader(in), 256)
		b, errB := readAllEvents(t, iotest.OneByteReader(bytes.NewReader(in)), 256)
		if (errA == nil) != (errB == nil) || len(a) != len(b) {
			t.Fatalf("whole vs one-byte: %q %v / %q %v", a, errA, b, errB)
		}
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("event %d differs: %q vs %q", i, a[i], b[i])
			}
		}
	})
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
