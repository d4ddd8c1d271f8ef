package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/infergw/infergw/internal/wirescan"
)

func TestParseRequests(t *testing.T) {
	cases := []struct {
		name, body, model, prompt string
		stream, usage             bool
	}{
		{"completion string", `{"model":"m1","prompt":"hello world","max_tokens":5}`, "m1", "hello world", false, false},
		{"completion array", `{"prompt":["a","b"],"model":"m2"}`, "m2", "a\nb", false, false},
		{"completion tokens", `{"model":"m","prompt":[1,2,3]}`, "m", "1 2 3 ", false, false},
		{"completion token arrays", `{"model":"m","prompt":[[1,2],[3]]}`, "m", "1 2 3 ", false, false},
		{"chat string", `{"model":"llama","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`,
			"llama", "system\nbe brief\nuser\nhi", true, true},
		{"chat parts", `{"model":"x","messages":[{"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"http://i"}}]}]}`,
			"x", "user\nlook", false, false},
		{"embeddings", `{"input":["e1","e2"],"model":"emb"}`, "emb", "e1\ne2", false, false},
		{"responses", `{"model":"r","instructions":"sys","input":[{"role":"user","content":[{"type":"input_text","text":"q"}]}]}`, "r", "sys\nuser\nq", false, false},
		{"escaped model", `{"model":"a\"b\u00e9"}`, "a\"bé", "", false, false},
		{"other members skipped", `{"n":1,"x":{"model":"inner"},"model":"outer","y":[true,false,null,-1.5e3]}`, "outer", "", false, false},
		{"escaped prompt kept raw", `{"model":"m","prompt":"a\nb"}`, "m", `a\nb`, false, false},
	}
	var r Request
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := Parse([]byte(c.body), &r); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if r.Model != c.model || string(r.Prompt) != c.prompt || r.Stream != c.stream || r.IncludeUsage != c.usage {
				t.Fatalf("got model=%q prompt=%q stream=%v usage=%v; want %q %q %v %v",
					r.Model, r.Prompt, r.Stream, r.IncludeUsage, c.model, c.prompt, c.stream, c.usage)
			}
			var tok string
			if err := json.Unmarshal([]byte(c.body[r.ModelStart:r.ModelEnd]), &tok); err != nil || tok != c.model {
				t.Fatalf("model offsets [%d,%d) give %q (%v)", r.ModelStart, r.ModelEnd, c.body[r.ModelStart:r.ModelEnd], err)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	bad := []string{``, `[]`, `{`, `{"model":"m"`, `{"model":"m",}`, `{"model":"m"} x`, `{"model":"m\x01"}`,
		`{"model":"\q"}`, `{"a":01}`, `{"a":tru}`, `{"a":"\u12G4"}`, strings.Repeat("[", 500), `{"model":"m","x":` + strings.Repeat("[", 300) + strings.Repeat("]", 300) + `}`}
	var r Request
	for _, b := range bad {
		err := Parse([]byte(b), &r)
		if !errors.Is(err, ErrInvalidJSON) {
			t.Errorf("Parse(%.40q) = %v, want ErrInvalidJSON", b, err)
		}
	}
	for _, b := range []string{`{}`, `{"prompt":"x"}`, `{"model":3}`, `{"model":null}`} {
		if err := Parse([]byte(b), &r); !errors.Is(err, ErrNoModel) {
			t.Errorf("Parse(%q) = %v, want ErrNoModel", b, err)
		}
	}
}

func TestRewriteModel(t *testing.T) {
	body := []byte(`{"prompt":"talk about \"llama\" and llama","model" : "llama","n":1}`)
	var r Request
	if err := Parse(body, &r); err != nil {
		t.Fatal(err)
	}
	out, err := RewriteModel(body, r.ModelStart, r.ModelEnd, `llama-"lora"</x>`)
	if err != nil {
		t.Fatal(err)
	}
	var got struct{ Model, Prompt string }
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("rewritten body is not JSON: %v: %s", err, out)
	}
	if got.Model != `llama-"lora"</x>` || got.Prompt != `talk about "llama" and llama` {
		t.Fatalf("rewrite changed the wrong bytes: %+v", got)
	}
	if string(body) != `{"prompt":"talk about \"llama\" and llama","model" : "llama","n":1}` {
		t.Fatal("RewriteModel modified its input")
	}
	if _, err := RewriteModel(body, 5, 2, "x"); err == nil {
		t.Fatal("bad offsets accepted")
	}
}

// FuzzParse checks that Parse never panics, agrees with encoding/json about validity, and
// that its model offsets delimit the model string.
func FuzzParse(f *testing.F) {
	for _, s := range []string{`{"model":"m","prompt":"p"}`, `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"t"}]}]}`,
		`{"model":"a\u0041","input":[1,2,[3]]}`, `{"x":[{"y":null}],"model":""}`, `{`, `"x"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var r Request
		err := Parse(body, &r)
		valid := json.Valid(body)
		if errors.Is(err, ErrInvalidJSON) && valid && depthOK(body) && bytes.HasPrefix(bytes.TrimLeft(body, " \t\r\n"), []byte("{")) {
			t.Fatalf("Parse rejected valid JSON %q: %v", body, err)
		}
		if err == nil {
			if !valid {
				t.Fatalf("Parse accepted invalid JSON %q", body)
			}
			var m string
			if e := json.Unmarshal(body[r.ModelStart:r.ModelEnd], &m); e != nil || m != r.Model {
				t.Fatalf("model token %q does not decode to %q", body[r.ModelStart:r.ModelEnd], r.Model)
			}
			out, e := RewriteModel(body, r.ModelStart, r.ModelEnd, "new")
			if e != nil || !json.Valid(out) {
				t.Fatalf("rewrite of %q gave invalid JSON %q (%v)", body, out, e)
			}
		}
	})
}

// depthOK reports whether nesting stays within the scanner's bound.
func depthOK(b []byte) bool {
	d, inStr, esc := 0, false, false
	for _, c := range b {
		switch {
		case esc:
			esc = false
		case inStr && c == '\\':
			esc = true
		case c == '"':
			inStr = !inStr
		case !inStr && (c == '{' || c == '['):
			d++
			if d > wirescan.DefaultMaxDepth-4 {
				return false
			}
		case !inStr && (c == '}' || c == ']'):
			d--
		}
	}
	return true
}
