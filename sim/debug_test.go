package sim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
)

// TestDebugPrefix: /debug/prefix reports what the engine holds of a prompt: nothing before
// it ran, every full block after (for chat and completion bodies alike), nothing of another
// adapter's (the adapter is in the block hashes), and a 400 for a bad body.
func TestDebugPrefix(t *testing.T) {
	s := startSim(t, func(c *Config) { c.LoRAAdapters = []string{"ad1"} })
	view := func(body map[string]any) (PrefixView, int) {
		t.Helper()
		resp := post(t, "http://"+s.Addr()+"/debug/prefix", body)
		defer resp.Body.Close()
		var v PrefixView
		if resp.StatusCode == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
				t.Fatal(err)
			}
		}
		return v, resp.StatusCode
	}
	prompt := words(400, "oracle")
	chat := func(model string) map[string]any {
		return map[string]any{"model": model, "max_tokens": 2, "messages": []map[string]any{{"role": "user", "content": prompt}}}
	}
	v, code := view(chat(s.cfg.Model))
	if code != http.StatusOK || v.Blocks < 10 || v.Cached != 0 || v.Held != 0 {
		t.Fatalf("before: %d %+v, want many blocks, none held", code, v)
	}
	stream(t, s, "/v1/chat/completions", chat(s.cfg.Model))
	if v, _ := view(chat(s.cfg.Model)); v.Cached != v.Blocks || v.Held != v.Blocks {
		t.Errorf("after the request ran: %+v, want every block cached", v)
	}
	if v, _ := view(chat("ad1")); v.Cached != 0 || v.Blocks == 0 {
		t.Errorf("another adapter: %+v, want none cached", v)
	}
	comp := map[string]any{"model": s.cfg.Model, "prompt": words(200, "other")}
	if v, code := view(comp); code != http.StatusOK || v.Blocks == 0 || v.Held != 0 {
		t.Errorf("completion never run: %d %+v", code, v)
	}
	if _, code := view(map[string]any{"prompt": "x"}); code != http.StatusBadRequest {
		t.Errorf("no model: %d, want 400", code)
	}
}

// First-token traces: a request queued behind another one records its queue time apart
// from its prefill, and every trace lands in its header's class;
// classes past maxTraceClasses share "other", so a client cannot grow the map.
func TestFirstTokenTracesByClass(t *testing.T) {
	s := startSim(t, func(c *Config) { c.MaxNumSeqs = 1 })
	url := "http://" + s.Addr() + "/v1/completions"
	send := func(class, prompt string, maxTokens int) *http.Response {
		body, _ := json.Marshal(map[string]any{"model": s.cfg.Model, "prompt": prompt, "max_tokens": maxTokens, "ignore_eos": true})
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("x-gateway-inference-fairness-id", class)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	// One slot: "long" takes it (1,000-word prompt, 200 tokens), "short" waits behind it.
	done := make(chan *http.Response, 1)
	go func() { done <- send("long", words(1000, "a"), 200) }()
	deadline := time.Now().Add(10 * time.Second)
	for s.View().Running == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	short := send("short", "hello", 1)
	drain(short)
	drain(<-done)
	for i := 0; i < maxTraceClasses+3; i++ {
		drain(send(fmt.Sprint("c", i), "hi", 1))
	}
	v := s.View()
	if n := len(v.FirstTokens); n > maxTraceClasses+1 {
		t.Fatalf("%d trace classes, bound %d (+ other)", n, maxTraceClasses)
	}
	if len(v.FirstTokens["other"]) == 0 {
		t.Fatal("classes past the bound were not kept under other")
	}
	st := v.FirstTokens["short"]
	if len(st) != 1 {
		t.Fatalf("short: %d traces, want 1", len(st))
	}
	lt := v.FirstTokens["long"][0]
	// "short" waited for the whole long request in the queue (one slot): its queue time
	// exceeds the long request's prefill-to-first-token time.
	if st[0].QueueUS <= lt.PrefillUS || st[0].PrefillUS <= 0 {
		t.Fatalf("short %+v, long %+v: short should have queued behind long", st[0], lt)
	}
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
}
