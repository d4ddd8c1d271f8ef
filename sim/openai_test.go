package sim

import (
	"encoding/json"
	"testing"
)

func TestParseGenerateRequestForms(t *testing.T) {
	p, err := parseGenerateRequest([]byte(`{"model":"m","prompt":[1,2,3],"max_tokens":7,"stream":true,"stream_options":{"include_usage":true},"ignore_eos":true}`), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.promptIDs) != 3 || p.maxTokens != 7 || !p.stream || !p.includeUsage || !p.ignoreEOS {
		t.Errorf("parsed %+v", p)
	}
	p, err = parseGenerateRequest([]byte(`{"model":"m","prompt":["only one"],"max_tokens":3,"max_completion_tokens":9}`), false)
	if err != nil || p.promptText != "only one" || p.maxTokens != 9 {
		t.Errorf("parsed %+v err %v (max_completion_tokens wins)", p, err)
	}
	if _, err := parseGenerateRequest([]byte(`{"model":"m","prompt":["a","b"]}`), false); err == nil || err.status != 400 {
		t.Errorf("batched prompt: err %v", err)
	}
	if _, err := parseGenerateRequest([]byte(`{"model":"m","prompt":[-1]}`), false); err == nil {
		t.Errorf("negative token id accepted")
	}
	if _, err := parseGenerateRequest([]byte(`{"model":"m","prompt":"x","n":2}`), false); err == nil {
		t.Errorf("n=2 accepted")
	}
	if _, err := parseGenerateRequest([]byte(`{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}`), true); err == nil {
		t.Errorf("image content accepted")
	}
	if _, err := parseGenerateRequest([]byte(`{"model":"m","prompt":"x"} {}`), false); err == nil {
		t.Errorf("trailing data accepted")
	}
}

func FuzzParseGenerateRequest(f *testing.F) {
	f.Add([]byte(`{"model":"m","prompt":"hello","max_tokens":5,"stream":true}`), false)
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":true},"stream":true}`), true)
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"}]}]}`), true)
	f.Add([]byte(`{"model":"m","prompt":[1,2,3]}`), false)
	f.Add([]byte(`{"model":`), false)
	f.Add([]byte(`null`), true)
	f.Fuzz(func(t *testing.T, body []byte, chat bool) {
		p, err := parseGenerateRequest(body, chat)
		if (p == nil) == (err == nil) {
			t.Fatalf("want exactly one of request/error, got %v / %v", p, err)
		}
		if err != nil {
			if err.status != 400 || err.message == "" {
				t.Fatalf("error %+v is not a 400 with a message", err)
			}
			if _, mErr := json.Marshal(err.body()); mErr != nil {
				t.Fatalf("error body does not encode: %v", mErr)
			}
			return
		}
		if p.model == "" || p.maxTokens == 0 || p.maxTokens < -1 {
			t.Fatalf("accepted invalid request %+v", p)
		}
		if p.includeUsage && !p.stream {
			t.Fatalf("include_usage without stream accepted")
		}
		for _, id := range p.promptIDs {
			if id >= vocabSize {
				t.Fatalf("token id %d accepted", id)
			}
		}
	})
}

func TestAppendJSONStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"plain", `quote " and \ slash`, "ctl \x01\n\t", "ünïcödé"} {
		var back string
		if err := json.Unmarshal(appendJSONString(nil, s), &back); err != nil || back != s {
			t.Errorf("%q round-tripped to %q (err %v)", s, back, err)
		}
	}
}
