package sim

import (
	"encoding/json"
	"net/http"
	"testing"
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
