package sim

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func decodeJSON(t *testing.T, resp *http.Response, v any) {
	t.Helper()
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("decode: %v", err)
	}
}

func TestModelsListsBaseAndAdaptersWithParent(t *testing.T) {
	s := startSim(t, func(c *Config) { c.Model = "base-8b"; c.LoRAAdapters = []string{"sql", "chat"} })
	resp, err := http.Get("http://" + s.Addr() + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Header.Get("x-sim-instance"); got != "test-sim" {
		t.Errorf("x-sim-instance = %q", got)
	}
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID     string  `json:"id"`
			Object string  `json:"object"`
			Parent *string `json:"parent"`
		} `json:"data"`
	}
	decodeJSON(t, resp, &list)
	if list.Object != "list" || len(list.Data) != 3 {
		t.Fatalf("models = %+v", list)
	}
	if list.Data[0].ID != "base-8b" || list.Data[0].Parent != nil {
		t.Errorf("first model %+v, want base-8b without parent", list.Data[0])
	}
	for _, m := range list.Data[1:] {
		if m.Parent == nil || *m.Parent != "base-8b" || m.Object != "model" {
			t.Errorf("adapter %s parent %v, want base-8b", m.ID, m.Parent)
		}
	}
}

func TestErrorsAreVLLMShaped(t *testing.T) {
	s := startSim(t, func(c *Config) { c.MaxModelLen = 64; c.KVBlocks = 8; c.BlockSize = 16 })
	base := "http://" + s.Addr()
	cases := []struct {
		name, path, body string
		status           int
		errType          string
		msgPart          string
	}{
		{"unknown model", "/v1/completions", `{"model":"nope","prompt":"hi"}`, 404, "NotFoundError", "The model `nope` does not exist."},
		{"not json", "/v1/chat/completions", `{"model":`, 400, "BadRequestError", "invalid JSON"},
		{"no model", "/v1/completions", `{"prompt":"hi"}`, 400, "BadRequestError", "model"},
		{"no messages", "/v1/chat/completions", `{"model":"` + s.cfg.Model + `"}`, 400, "BadRequestError", "messages"},
		{"bad prompt type", "/v1/completions", `{"model":"` + s.cfg.Model + `","prompt":{"a":1}}`, 400, "BadRequestError", "prompt"},
		{"zero max_tokens", "/v1/completions", `{"model":"` + s.cfg.Model + `","prompt":"hi","max_tokens":0}`, 400, "BadRequestError", "max_tokens"},
		{"context too long", "/v1/completions", `{"model":"` + s.cfg.Model + `","prompt":"hi there how are you","max_tokens":62}`, 400, "BadRequestError", "maximum context length is 64"},
		{"max_tokens over max_model_len", "/v1/completions", `{"model":"` + s.cfg.Model + `","prompt":"hi","max_tokens":100}`, 400, "BadRequestError", "cannot be greater than max_model_len=64"},
		{"options without stream", "/v1/completions", `{"model":"` + s.cfg.Model + `","prompt":"hi","stream_options":{"include_usage":true}}`, 400, "BadRequestError", "stream"},
		{"unload unknown", "/v1/unload_lora_adapter", `{"lora_name":"x"}`, 404, "NotFoundError", "cannot be found"},
		{"load without path", "/v1/load_lora_adapter", `{"lora_name":"x"}`, 400, "BadRequestError", "lora_path"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Post(base+tc.path, "application/json", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if resp.Header.Get("x-sim-instance") != "test-sim" {
				t.Errorf("missing x-sim-instance on an error response")
			}
			var body struct {
				Error struct {
					Message string  `json:"message"`
					Type    string  `json:"type"`
					Param   *string `json:"param"`
					Code    int     `json:"code"`
				} `json:"error"`
			}
			decodeJSON(t, resp, &body)
			if body.Error.Type != tc.errType || body.Error.Code != tc.status || !strings.Contains(body.Error.Message, tc.msgPart) {
				t.Errorf("error body %+v, want type %s, code %d, message containing %q", body.Error, tc.errType, tc.status, tc.msgPart)
			}
		})
	}
}

func TestLoadAndUnloadAdapter(t *testing.T) {
	s := startSim(t, nil)
	base := "http://" + s.Addr()
	req := map[string]any{"model": "tuned", "prompt": "hello", "max_tokens": 2}
	if resp := post(t, base+"/v1/completions", req); resp.StatusCode != 404 {
		t.Fatalf("before load: status %d, want 404", resp.StatusCode)
	} else {
		resp.Body.Close()
	}
	resp := post(t, base+"/v1/load_lora_adapter", map[string]string{"lora_name": "tuned", "lora_path": "/adapters/tuned"})
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "tuned") {
		t.Fatalf("load: %d %s", resp.StatusCode, b)
	}
	if resp := post(t, base+"/v1/load_lora_adapter", map[string]string{"lora_name": "tuned", "lora_path": "/adapters/tuned"}); resp.StatusCode != 400 {
		t.Errorf("second load: status %d, want 400", resp.StatusCode)
	} else {
		resp.Body.Close()
	}
	var out completionResponse
	resp = post(t, base+"/v1/completions", req)
	if resp.StatusCode != 200 {
		t.Fatalf("after load: status %d", resp.StatusCode)
	}
	decodeJSON(t, resp, &out)
	if out.Model != "tuned" || out.Usage.CompletionTokens != 2 || out.Choices[0].FinishReason != "length" {
		t.Errorf("response %+v", out)
	}
	resp = post(t, base+"/v1/unload_lora_adapter", map[string]string{"lora_name": "tuned"})
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("unload: %d", resp.StatusCode)
	}
	if resp := post(t, base+"/v1/completions", req); resp.StatusCode != 404 {
		t.Errorf("after unload: status %d, want 404", resp.StatusCode)
	} else {
		resp.Body.Close()
	}
}

func TestChatJSONAndDeterministicOutput(t *testing.T) {
	s := startSim(t, nil)
	body := map[string]any{"model": s.cfg.Model, "max_completion_tokens": 500,
		"messages": []map[string]any{{"role": "system", "content": "be brief"},
			{"role": "user", "content": []map[string]any{{"type": "text", "text": "what is a gateway?"}}}}}
	var a, b chatResponse
	decodeJSON(t, post(t, "http://"+s.Addr()+"/v1/chat/completions", body), &a)
	decodeJSON(t, post(t, "http://"+s.Addr()+"/v1/chat/completions", body), &b)
	if a.Object != "chat.completion" || len(a.Choices) != 1 || a.Choices[0].Message.Role != "assistant" {
		t.Fatalf("response %+v", a)
	}
	if a.Choices[0].Message.Content == "" || a.Choices[0].Message.Content != b.Choices[0].Message.Content {
		t.Errorf("output not deterministic: %q vs %q", a.Choices[0].Message.Content, b.Choices[0].Message.Content)
	}
	// Without ignore_eos the sim stops at its deterministic natural length (16..271 < 500).
	if a.Choices[0].FinishReason != "stop" || a.Usage.CompletionTokens < 16 || a.Usage.CompletionTokens > 271 {
		t.Errorf("finish %q after %d tokens, want stop within [16,271]", a.Choices[0].FinishReason, a.Usage.CompletionTokens)
	}
	if a.Usage.TotalTokens != a.Usage.PromptTokens+a.Usage.CompletionTokens || a.Usage.PromptTokens == 0 {
		t.Errorf("usage %+v", a.Usage)
	}
	if b.Usage.PromptTokensDetails.CachedTokens == 0 {
		t.Errorf("identical second prompt of %d tokens reported no cached tokens", b.Usage.PromptTokens)
	}
}

func TestChatStreamShape(t *testing.T) {
	s := startSim(t, nil)
	res := stream(t, s, "/v1/chat/completions", map[string]any{"model": s.cfg.Model, "max_tokens": 5, "ignore_eos": true,
		"messages": []map[string]any{{"role": "user", "content": "hi"}}})
	// role chunk + 5 content chunks + usage chunk
	if len(res.chunks) != 7 || !res.done {
		t.Fatalf("got %d chunks, done=%v", len(res.chunks), res.done)
	}
	first := res.chunks[0]["choices"].([]any)[0].(map[string]any)["delta"].(map[string]any)
	// vLLM's first chunk: the role and an empty content.
	if len(first) != 2 || first["role"] != "assistant" || first["content"] != "" {
		t.Errorf("first chunk delta %v, want role assistant and content \"\"", first)
	}
	last := res.chunks[6]
	if choices := last["choices"].([]any); len(choices) != 0 {
		t.Errorf("usage chunk has choices %v", choices)
	}
	if res.usage["completion_tokens"] != 5.0 || res.finish != "length" {
		t.Errorf("usage %v finish %q", res.usage, res.finish)
	}
	for _, c := range res.chunks[:6] {
		if u, present := c["usage"]; present {
			t.Errorf("content chunk has usage %v; vLLM 0.32 writes none before the usage chunk", u)
		}
		if c["object"] != "chat.completion.chunk" || c["id"] != res.chunks[0]["id"] {
			t.Errorf("chunk %v", c)
		}
	}
	// Without include_usage: no usage field, no usage chunk.
	res = stream(t, s, "/v1/completions", map[string]any{"model": s.cfg.Model, "prompt": "hi", "max_tokens": 3,
		"ignore_eos": true, "stream_options": map[string]any{"include_usage": false}})
	if len(res.chunks) != 3 || res.usage != nil || res.text == "" {
		t.Errorf("completions stream without usage: %d chunks, usage %v, text %q", len(res.chunks), res.usage, res.text)
	}
	if _, present := res.chunks[0]["usage"]; present {
		t.Errorf("usage present without include_usage")
	}
}

func TestHealthAndInstanceHeader(t *testing.T) {
	s := startSim(t, func(c *Config) { c.Name = "" })
	resp, err := http.Get("http://" + s.Addr() + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("x-sim-instance") != s.Addr() {
		t.Errorf("health %d, instance %q (want the listen address %s)", resp.StatusCode, resp.Header.Get("x-sim-instance"), s.Addr())
	}
}

// Close ends in-flight streams promptly and leaves no goroutine (startSim checks the count).
func TestCloseEndsInFlightStreams(t *testing.T) {
	s := startSim(t, func(c *Config) { c.TimeScale = 1 })
	resp := post(t, "http://"+s.Addr()+"/v1/completions",
		map[string]any{"model": s.cfg.Model, "prompt": "long story", "max_tokens": 5000, "ignore_eos": true, "stream": true})
	defer resp.Body.Close()
	buf := make([]byte, 256)
	if _, err := resp.Body.Read(buf); err != nil {
		t.Fatalf("first read: %v", err)
	}
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stream ended %v after Close", d)
	}
}

// A client that disconnects mid-stream frees its sequence.
func TestClientDisconnectAbortsRequest(t *testing.T) {
	s := startSim(t, func(c *Config) { c.TimeScale = 1 })
	resp := post(t, "http://"+s.Addr()+"/v1/completions",
		map[string]any{"model": s.cfg.Model, "prompt": "long story", "max_tokens": 5000, "ignore_eos": true, "stream": true})
	buf := make([]byte, 256)
	if _, err := resp.Body.Read(buf); err != nil {
		t.Fatalf("first read: %v", err)
	}
	resp.Body.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		fams := scrape(t, s)
		if metricValue(t, fams, "vllm:request_success_total", "finished_reason", "abort") == 1 &&
			metricValue(t, fams, "vllm:num_requests_running") == 0 && metricValue(t, fams, "vllm:kv_cache_usage_perc") == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("disconnected request still running after 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOversizedBodyIs413WithErrorBody(t *testing.T) {
	s := startSim(t, func(c *Config) { c.MaxBodyBytes = 1024 })
	big := `{"model":"` + s.cfg.Model + `","prompt":"` + strings.Repeat("a", 4096) + `"}`
	resp, err := http.Post("http://"+s.Addr()+"/v1/completions", "application/json", strings.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	var body errorBody
	decodeJSON(t, resp, &body)
	if resp.StatusCode != 413 || body.Error.Code != 413 || resp.Header.Get("x-sim-instance") != "test-sim" {
		t.Errorf("status %d, body %+v, instance %q", resp.StatusCode, body, resp.Header.Get("x-sim-instance"))
	}
}
