// Package kvprompt turns an OpenAI-style request body into the token ids a vLLM server
// computes for it, as vLLM does: completions' "prompt" through the model's Hugging Face
// tokenizer (tokenizer.json, special tokens added as its post-processor says), chat
// "messages" through the model's chat template (tokenizer_config.json's chat_template,
// rendered as transformers renders it: Jinja with trim_blocks and lstrip_blocks, bos_token,
// eos_token, add_generation_prompt) and then the tokenizer without special tokens.
// Prompts given as token ids are taken as they are.
//
// Libraries: github.com/sugarme/tokenizer (a pure-Go port of HF tokenizers; already the
// load tester's), github.com/nikolalohinski/gonja/v2 (a maintained pure-Go Jinja2
// implementation; HF chat templates are Jinja2) and github.com/go-json-experiment/json
// (the prototype of encoding/json/v2, by its authors: request bodies in one pass).
package kvprompt

import (
	"bytes"
	stdjson "encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/nikolalohinski/gonja/v2/builtins"
	"github.com/nikolalohinski/gonja/v2/config"
	"github.com/nikolalohinski/gonja/v2/exec"
	"github.com/nikolalohinski/gonja/v2/loaders"
	"github.com/sugarme/tokenizer"
	"github.com/sugarme/tokenizer/pretrained"
)

// MaxPromptBytes bounds the text tokenized per request (the picker's body limit bounds it
// too; this keeps the tokenizer's work bounded whoever calls it).
const MaxPromptBytes = 1 << 20

// ErrNoPrompt: the body has neither a usable "prompt" nor "messages".
var ErrNoPrompt = errors.New("kvprompt: no prompt or messages in the body")

// Model tokenizes requests for one model. Safe for concurrent use: the library's
// tokenizer is not documented as safe for it, so each concurrent call takes its own
// instance from a bounded pool.
type Model struct {
	dir      string
	pool     chan *tokenizer.Tokenizer
	tmpl     *exec.Template // nil: the model has no chat template
	bos, eos string
	fast     *fastPath // nil: the library's path only (see fast.go)
	// bodyOptions are the JSON decoder's options for request bodies (see body).
	bodyOptions json.Options
}

// ResetCache empties the fast path's piece cache, as if no prompt had been tokenized yet:
// the next prompts take the cold path (benchmarks of it use this).
func (m *Model) ResetCache() {
	if m.fast == nil {
		return
	}
	m.fast.mu.Lock()
	m.fast.cache.reset()
	m.fast.mu.Unlock()
}

// Fast reports whether the model's tokenizer takes the fast path.
func (m *Model) Fast() bool { return m.fast != nil }

// Load reads DIR/tokenizer.json and DIR/tokenizer_config.json (optional: without it, chat
// requests cannot be tokenized). instances is the number of tokenizer copies kept for
// concurrent calls (>= 1; each is a parsed tokenizer.json in memory).
func Load(dir string, instances int) (*Model, error) {
	instances = max(instances, 1)
	m := &Model{dir: dir, bodyOptions: json.JoinOptions(jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))}
	file := filepath.Join(dir, "tokenizer.json")
	tj, err := readTokenizerJSON(file)
	if err != nil {
		return nil, err
	}
	if tj.native() {
		// Llama 3 / Qwen2 style: the library cannot load these (see bpe.go), so the
		// fast path is the only path, with its own BPE.
		if m.fast, err = newFastPath(tj, nil); err != nil {
			return nil, fmt.Errorf("kvprompt: tokenizer %s: %w", dir, err)
		}
		if m.fast == nil {
			return nil, fmt.Errorf("kvprompt: tokenizer %s: a pre-tokenizer sequence infergw does not implement", dir)
		}
	} else {
		m.pool = make(chan *tokenizer.Tokenizer, instances)
		for range instances {
			tk, err := loadLibrary(file)
			if err != nil {
				return nil, fmt.Errorf("kvprompt: tokenizer %s: %w", dir, err)
			}
			m.pool <- tk
		}
		if m.fast, err = newFastPath(tj, m); err != nil {
			return nil, err
		}
	}
	raw, err := os.ReadFile(filepath.Join(dir, "tokenizer_config.json"))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return m, nil
	case err != nil:
		return nil, fmt.Errorf("kvprompt: %w", err)
	}
	var tc struct {
		ChatTemplate stdjson.RawMessage `json:"chat_template"`
		BOS          stdjson.RawMessage `json:"bos_token"`
		EOS          stdjson.RawMessage `json:"eos_token"`
	}
	if err := stdjson.Unmarshal(raw, &tc); err != nil {
		return nil, fmt.Errorf("kvprompt: %s/tokenizer_config.json: %w", dir, err)
	}
	m.bos, m.eos = tokenString(tc.BOS), tokenString(tc.EOS)
	src := templateString(tc.ChatTemplate)
	if src == "" {
		// Newer transformers save the template in chat_template.jinja.
		if b, err := os.ReadFile(filepath.Join(dir, "chat_template.jinja")); err == nil {
			src = string(b)
		}
	}
	if src != "" {
		if m.tmpl, err = compile(src); err != nil {
			return nil, fmt.Errorf("kvprompt: %s chat template: %w", dir, err)
		}
	}
	return m, nil
}

// tokenString reads a special token given as a string or as an AddedToken object.
func tokenString(raw stdjson.RawMessage) string {
	var s string
	if stdjson.Unmarshal(raw, &s) == nil {
		return s
	}
	var obj struct {
		Content string `json:"content"`
	}
	_ = stdjson.Unmarshal(raw, &obj)
	return obj.Content
}

// templateString reads chat_template: a string, or a list of named templates (the
// "default" one).
func templateString(raw stdjson.RawMessage) string {
	var s string
	if stdjson.Unmarshal(raw, &s) == nil {
		return s
	}
	var named []struct{ Name, Template string }
	_ = stdjson.Unmarshal(raw, &named)
	for _, n := range named {
		if n.Name == "default" {
			return n.Template
		}
	}
	return ""
}

// compile parses a chat template with transformers' settings: trim_blocks and
// lstrip_blocks on, and raise_exception available to the template.
func compile(src string) (*exec.Template, error) {
	cfg := config.New()
	cfg.TrimBlocks, cfg.LeftStripBlocks = true, true
	cfg.KeepTrailingNewline = false
	env := &exec.Environment{
		Context: exec.EmptyContext().Update(builtins.GlobalFunctions).Update(builtins.GlobalVariables).Update(exec.NewContext(map[string]any{
			"raise_exception": func(msg string) (string, error) { return "", fmt.Errorf("chat template: %s", msg) },
		})),
		Filters:           builtins.Filters,
		Tests:             builtins.Tests,
		ControlStructures: builtins.ControlStructures,
		Methods:           builtins.Methods,
	}
	loader, err := loaders.NewMemoryLoader(map[string]string{"/chat_template": src})
	if err != nil {
		return nil, err
	}
	return exec.NewTemplate("/chat_template", cfg, loader, env)
}

// body is the part of a request body that decides its tokens. It is decoded with
// github.com/go-json-experiment/json (the prototype of Go's encoding/json/v2, by its
// authors): one pass over the body, and the prompt string unquoted as it is read, where
// encoding/json validated the body, scanned it again to decode, then validated and
// unquoted the prompt (three passes: ~45 % of an 8 KB prompt's tokenization). Names are
// case-sensitive, as vLLM's (Python's) parser has them; as before (encoding/json) and as
// Python, a repeated name's last value wins, and invalid UTF-8 in strings is taken as
// U+FFFD (vLLM rejects such a body, so its tokens do not matter; bodyOptions).
type body struct {
	Prompt              promptField `json:"prompt"`
	Messages            []message   `json:"messages"`
	AddGenerationPrompt *bool       `json:"add_generation_prompt"`
	AddSpecialTokens    *bool       `json:"add_special_tokens"`
}

type message struct {
	Role    string         `json:"role"`
	Content jsontext.Value `json:"content"`
}

// promptField is "prompt": a string (decoded as it is read), or else its raw value.
type promptField struct {
	text   string
	isText bool
	raw    jsontext.Value // not a string: token ids, a batch, or not a prompt
}

// UnmarshalJSONFrom implements json.UnmarshalerFrom.
func (p *promptField) UnmarshalJSONFrom(d *jsontext.Decoder) error {
	*p = promptField{}
	if d.PeekKind() == '"' {
		tok, err := d.ReadToken()
		if err != nil {
			return err
		}
		p.text, p.isText = tok.String(), true
		return nil
	}
	raw, err := d.ReadValue()
	if err != nil {
		return err
	}
	if string(raw) != "null" {
		p.raw = slices.Clone(raw) // the decoder's buffer is reused
	}
	return nil
}

// Tokens returns the token ids vLLM computes for the request body, appended to dst.
func (m *Model) Tokens(dst []uint32, reqBody []byte) ([]uint32, error) {
	var b body
	if err := json.Unmarshal(reqBody, &b, m.bodyOptions); err != nil {
		return dst, fmt.Errorf("kvprompt: body: %w", err)
	}
	special := b.AddSpecialTokens == nil || *b.AddSpecialTokens
	switch {
	case len(b.Messages) > 0:
		text, err := m.render(&b)
		if err != nil {
			return dst, err
		}
		// vLLM tokenizes a rendered chat without adding special tokens (the template
		// writes them), unless the request asks otherwise.
		return m.encode(dst, text, b.AddSpecialTokens != nil && *b.AddSpecialTokens)
	case b.Prompt.isText:
		return m.encode(dst, b.Prompt.text, special)
	case len(b.Prompt.raw) > 0:
		return m.prompt(dst, b.Prompt.raw, special)
	}
	return dst, ErrNoPrompt
}

// prompt reads a "prompt" that is not a string: token ids, or a batch of strings or of
// token ids (its first element: vLLM serves a batch as separate requests and the gateway
// routes the whole body once).
func (m *Model) prompt(dst []uint32, raw jsontext.Value, special bool) ([]uint32, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return m.encode(dst, s, special)
	}
	var ids []int64
	if json.Unmarshal(raw, &ids) == nil {
		for _, id := range ids {
			if id < 0 || id > 1<<32-1 {
				return dst, fmt.Errorf("kvprompt: token id %d out of range", id)
			}
			dst = append(dst, uint32(id))
		}
		return dst, nil
	}
	var batch []jsontext.Value
	if json.Unmarshal(raw, &batch) == nil && len(batch) > 0 {
		if bytes.HasPrefix(bytes.TrimSpace(batch[0]), []byte("[[")) {
			return dst, ErrNoPrompt // nested deeper than a batch
		}
		return m.prompt(dst, batch[0], special)
	}
	return dst, ErrNoPrompt
}

// render applies the chat template. Content given as parts is joined as vLLM's "string"
// content format does: the text parts, newline-separated.
func (m *Model) render(b *body) (string, error) {
	if m.tmpl == nil {
		return "", fmt.Errorf("kvprompt: %s has no chat template", m.dir)
	}
	msgs := make([]map[string]any, 0, len(b.Messages))
	size := 0
	for _, msg := range b.Messages {
		text, err := contentText(msg.Content)
		if err != nil {
			return "", err
		}
		size += len(text)
		if size > MaxPromptBytes {
			return "", fmt.Errorf("kvprompt: messages over %d bytes", MaxPromptBytes)
		}
		msgs = append(msgs, map[string]any{"role": msg.Role, "content": text})
	}
	gen := b.AddGenerationPrompt == nil || *b.AddGenerationPrompt
	out, err := m.tmpl.ExecuteToString(exec.NewContext(map[string]any{
		"messages": msgs, "add_generation_prompt": gen, "bos_token": m.bos, "eos_token": m.eos,
	}))
	if err != nil {
		return "", fmt.Errorf("kvprompt: chat template: %w", err)
	}
	return out, nil
}

func contentText(raw jsontext.Value) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", fmt.Errorf("kvprompt: message content: %w", err)
	}
	var sb strings.Builder
	for _, p := range parts {
		if p.Type != "text" {
			continue
		}
		if sb.Len() > 0 {
			sb.WriteByte('\n')
		}
		sb.WriteString(p.Text)
	}
	return sb.String(), nil
}

func (m *Model) encode(dst []uint32, text string, special bool) ([]uint32, error) {
	if len(text) > MaxPromptBytes {
		return dst, fmt.Errorf("kvprompt: prompt over %d bytes", MaxPromptBytes)
	}
	if m.fast != nil {
		return m.fast.encode(dst, text, special, m)
	}
	return m.slowEncode(dst, text, special)
}

// loadLibrary loads tokenizer.json with the library, which panics on some files (a Split
// pattern Go's regexp cannot compile): that is an error here, not a crash of the picker.
func loadLibrary(file string) (tk *tokenizer.Tokenizer, err error) {
	defer func() {
		if r := recover(); r != nil {
			tk, err = nil, fmt.Errorf("the tokenizer library cannot load it: %v", r)
		}
	}()
	return pretrained.FromFile(file)
}

// slowEncode tokenizes with the library alone.
func (m *Model) slowEncode(dst []uint32, text string, special bool) ([]uint32, error) {
	if m.pool == nil {
		return dst, errors.New("kvprompt: this tokenizer has no library path")
	}
	tk := <-m.pool
	defer func() { m.pool <- tk }()
	enc, err := tk.EncodeSingle(text, special)
	if err != nil {
		return dst, fmt.Errorf("kvprompt: tokenize: %w", err)
	}
	for _, id := range enc.Ids {
		dst = append(dst, uint32(id)) //nolint:gosec // G115: vocabulary ids are small and non-negative
	}
	return dst, nil
}
