// Package vllm runs infergw in front of two real vLLM servers (the CPU build, a tiny
// model built locally) on real Envoy. It needs what test/vllm/run.sh prepares (a vLLM
// venv, the model, the infergw binary, Envoy) and is skipped without it: run it with
// `make test-vllm`.
package vllm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/infergw/infergw/internal/wirescan"
)

const (
	baseModel   = "tiny"
	loraModel   = "tiny-lora"
	canaryModel = "tiny-canary" // rewritten to loraModel by an InferenceModelRewrite
	poolName    = "default/vllm-tiny"
	// The router's defaults that the staleness check relies on.
	stalenessThreshold = 2 * time.Second
	scrapeTimeout      = time.Second
)

type testEnv struct {
	venv, modelDir, infergw, envoy, testDir string
}

func envOrSkip(t *testing.T) testEnv {
	env := testEnv{
		venv:     os.Getenv("INFERGW_VLLM_VENV"),
		modelDir: os.Getenv("INFERGW_VLLM_MODEL"),
		infergw:  os.Getenv("INFERGW_BIN"),
		envoy:    os.Getenv("ENVOY_BIN"),
	}
	if env.venv == "" || env.modelDir == "" || env.infergw == "" || env.envoy == "" {
		t.Skip("real vLLM test: run `make test-vllm` (needs INFERGW_VLLM_VENV, INFERGW_VLLM_MODEL, INFERGW_BIN, ENVOY_BIN)")
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	env.testDir = wd
	return env
}

// TestRealVLLM is the whole scenario: two vLLM servers, the gateway in front, then the
// checks in order (later ones stop a server, so they come last).
func TestRealVLLM(t *testing.T) {
	env := envOrSkip(t)
	began := time.Now()
	logDir := os.Getenv("INFERGW_VLLM_LOGS")
	if logDir == "" {
		logDir = t.TempDir()
	}
	ipA, ipB, port := loopbackPair(t)
	kvEvents := fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t, "127.0.0.1"))
	progress("starting two vLLM servers on %s and %s port %d (logs in %s)", ipA, ipB, port, logDir)
	servers := []*vllmServer{
		startVLLM(t, env, logDir, "vllm-a", ipA, port, 0, kvEvents),
		startVLLM(t, env, logDir, "vllm-b", ipB, port, 1, kvEvents),
	}
	deadline := time.Now().Add(6 * time.Minute)
	var wg sync.WaitGroup
	errs := make([]error, len(servers))
	for i, s := range servers {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = s.waitHealthy(deadline) }()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if dir := os.Getenv("INFERGW_VLLM_SAVE_METRICS"); dir != "" {
		saveExposition(t, servers[0], filepath.Join(dir, "vllm-0.32-cpu-fresh.txt"))
	}

	manifests := writeManifests(t, []string{ipA, ipB}, port)
	progress("starting infergw up --no-sims in front of them")
	// The picker binds the KV-event endpoint the servers' publishers connect to (they retry
	// until it is up) and tokenizes with the model's own tokenizer directory.
	gw := startGateway(t, env, logDir, manifests, "--kv-events-bind="+kvEvents, "--kv-tokenizer="+filepath.Join(env.modelDir, "model"))
	progress("gateway at %s (picker metrics %s)", gw.url, gw.metricsURL)
	h := &harness{t: t, gw: gw, servers: servers}
	t.Cleanup(func() {
		// The logs live in a temporary directory unless INFERGW_VLLM_LOGS is set: show
		// their ends when something failed (runs before the processes are stopped).
		if t.Failed() {
			for _, p := range []*proc{gw.proc, servers[0].proc, servers[1].proc} {
				t.Logf("--- last lines of %s's log:\n%s", p.name, p.tail(30))
			}
		}
	})

	t.Run("chat and completions, streamed and not", h.checkAPIs)
	t.Run("LoRA adapter by name and through a rewrite", h.checkLoRA)
	t.Run("errors in the gateway's schema", h.checkErrors)
	t.Run("picker sees both servers", h.checkPickerView)
	t.Run("chosen endpoint served the request", h.checkChosenServed)
	t.Run("repeated long prompt hits vLLM's prefix cache on the same server", h.checkPrefixCache)
	t.Run("precise prefix routing follows vLLM's KV events", h.checkPreciseRouting)
	t.Run("a restarted picker rebuilds its index from vLLM's replay endpoint", func(t *testing.T) {
		h.checkReplay(t, filepath.Join(env.modelDir, "model"))
	})
	t.Run("usage accounting matches vLLM's counters", h.checkUsageAccounting)
	if dir := os.Getenv("INFERGW_VLLM_SAVE_METRICS"); dir != "" {
		saveExposition(t, servers[0], filepath.Join(dir, "vllm-0.32-cpu.txt"))
	}
	t.Run("stopped server is avoided", h.checkStoppedServer)
	progress("done in %.0fs", time.Since(began).Seconds())
}

type harness struct {
	t       *testing.T
	gw      *gateway
	servers []*vllmServer
	reqSeq  int
}

// --- requests --------------------------------------------------------------------------

type result struct {
	status    int
	body      []byte
	events    []string // SSE data payloads, for streamed responses
	requestID string
	header    http.Header
}

// post sends a JSON body through the gateway with a fresh x-request-id.
func (h *harness) post(t *testing.T, path, body string) result {
	t.Helper()
	r, err := h.do(path, body, h.nextID())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (h *harness) nextID() string {
	h.reqSeq++
	return fmt.Sprintf("vllm-test-%d-%d", time.Now().UnixNano(), h.reqSeq)
}

// do sends one request; it may run on any goroutine.
func (h *harness) do(path, body, id string) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.gw.url+path, strings.NewReader(body))
	if err != nil {
		return result{}, err
	}
	req.Header.Set("content-type", "application/json")
	req.Header.Set("x-request-id", id)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return result{}, fmt.Errorf("POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	r := result{status: resp.StatusCode, requestID: id, header: resp.Header}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return result{}, fmt.Errorf("POST %s: read body: %w", path, err)
	}
	r.body = buf.Bytes()
	if strings.HasPrefix(resp.Header.Get("content-type"), "text/event-stream") {
		sse := wirescan.NewSSEReader(bytes.NewReader(r.body), 1<<20)
		for {
			ev, err := sse.Next()
			if err != nil {
				break // the body is in memory: only EOF or an over-long line end it
			}
			r.events = append(r.events, string(ev.Data))
		}
	}
	return r, nil
}

func chatBody(model, content string, stream bool, extra string) string {
	b, _ := json.Marshal(content)
	s := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":%s}],"max_tokens":8,"temperature":0,"stream":%t%s}`,
		model, b, stream, extra)
	return s
}

func completionBody(model, prompt string, stream bool, maxTokens int, extra string) string {
	b, _ := json.Marshal(prompt)
	return fmt.Sprintf(`{"model":%q,"prompt":%s,"max_tokens":%d,"temperature":0,"stream":%t%s}`, model, b, maxTokens, stream, extra)
}

type usage struct {
	PromptTokens        int64 `json:"prompt_tokens"`
	CompletionTokens    int64 `json:"completion_tokens"`
	PromptTokensDetails *struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
}

type response struct {
	Model   string `json:"model"`
	Choices []struct {
		Text    string `json:"text"`
		Message *struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"message"`
		Delta *struct {
			Role    *string `json:"role"`
			Content *string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *usage `json:"usage"`
}

func decode(t *testing.T, b []byte) response {
	t.Helper()
	var r response
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("response is not the JSON expected: %v\n%s", err, b)
	}
	return r
}

// checkStream checks an SSE response: every event but the last is a JSON chunk of model,
// the last is [DONE]; it returns the chunks and the usage chunk if any.
func checkStream(t *testing.T, r result, model string) ([]response, *usage) {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if n := len(r.events); n < 3 || r.events[n-1] != "[DONE]" {
		t.Fatalf("stream of %d events, want ≥3 ending in [DONE]:\n%s", n, r.body)
	}
	var chunks []response
	var u *usage
	for _, ev := range r.events[:len(r.events)-1] {
		c := decode(t, []byte(ev))
		if c.Model != model {
			t.Errorf("chunk model %q, want %q", c.Model, model)
		}
		if c.Usage != nil {
			u = c.Usage
		}
		chunks = append(chunks, c)
	}
	return chunks, u
}

// --- checks ----------------------------------------------------------------------------

func (h *harness) checkAPIs(t *testing.T) {
	t.Run("chat", func(t *testing.T) {
		r := h.post(t, "/v1/chat/completions", chatBody(baseModel, "Hello there, how are you?", false, ""))
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		c := decode(t, r.body)
		if c.Model != baseModel || len(c.Choices) != 1 || c.Choices[0].Message == nil || c.Choices[0].Message.Role != "assistant" {
			t.Fatalf("unexpected chat response: %s", r.body)
		}
		if c.Usage == nil || c.Usage.PromptTokens == 0 || c.Usage.CompletionTokens == 0 {
			t.Fatalf("chat response without usage: %s", r.body)
		}
	})
	t.Run("chat streamed, no usage asked", func(t *testing.T) {
		r := h.post(t, "/v1/chat/completions", chatBody(baseModel, "Stream me something", true, ""))
		chunks, u := checkStream(t, r, baseModel)
		// vLLM's first chunk carries the role and an empty content.
		first := chunks[0].Choices
		if len(first) != 1 || first[0].Delta == nil || first[0].Delta.Role == nil || *first[0].Delta.Role != "assistant" ||
			first[0].Delta.Content == nil || *first[0].Delta.Content != "" {
			t.Errorf("first chunk %s, want role assistant and content \"\"", r.events[0])
		}
		// The gateway asks vLLM for usage to count tokens, and must not show the client
		// the chunk it did not ask for.
		if u != nil {
			t.Errorf("client did not ask for usage but got a usage chunk:\n%s", r.body)
		}
		for _, c := range chunks {
			if len(c.Choices) == 0 {
				t.Errorf("chunk without choices reached the client:\n%s", r.body)
			}
		}
	})
	t.Run("chat streamed with include_usage", func(t *testing.T) {
		r := h.post(t, "/v1/chat/completions", chatBody(baseModel, "Stream me with usage", true,
			`,"stream_options":{"include_usage":true}`))
		_, u := checkStream(t, r, baseModel)
		if u == nil || u.PromptTokens == 0 || u.CompletionTokens == 0 {
			t.Fatalf("client asked for usage, got none:\n%s", r.body)
		}
	})
	t.Run("completions", func(t *testing.T) {
		r := h.post(t, "/v1/completions", completionBody(baseModel, "Once upon a time", false, 8, ""))
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		c := decode(t, r.body)
		if c.Model != baseModel || len(c.Choices) != 1 || c.Usage == nil || c.Usage.CompletionTokens == 0 {
			t.Fatalf("unexpected completion: %s", r.body)
		}
	})
	t.Run("completions streamed", func(t *testing.T) {
		r := h.post(t, "/v1/completions", completionBody(baseModel, "Once upon a time", true, 8, ""))
		chunks, u := checkStream(t, r, baseModel)
		if u != nil {
			t.Errorf("client did not ask for usage but got it:\n%s", r.body)
		}
		if len(chunks) < 2 {
			t.Errorf("%d chunks", len(chunks))
		}
	})
	t.Run("models list", func(t *testing.T) {
		status, b, err := getBody(context.Background(), h.gw.url+"/v1/models")
		if err != nil || status != 200 {
			t.Fatalf("GET /v1/models: %d %v %s", status, err, b)
		}
		for _, m := range []string{baseModel, loraModel} {
			if !bytes.Contains(b, []byte(`"`+m+`"`)) {
				t.Errorf("/v1/models lacks %s: %s", m, b)
			}
		}
		// The gateway answers with the union of the servers' lists; vLLM names each
		// adapter's base model in parent, which body-based routing maps adapters by.
		var list struct {
			Data []struct {
				ID     string  `json:"id"`
				Parent *string `json:"parent"`
			} `json:"data"`
		}
		if err := json.Unmarshal(b, &list); err != nil {
			t.Fatalf("GET /v1/models: %v: %s", err, b)
		}
		for _, m := range list.Data {
			if m.ID == loraModel && (m.Parent == nil || *m.Parent != baseModel) {
				t.Errorf("/v1/models lists %s with parent %v, want %s (vLLM's parent)", loraModel, m.Parent, baseModel)
			}
		}
	})
}

func (h *harness) checkLoRA(t *testing.T) {
	t.Run("by name", func(t *testing.T) {
		r := h.post(t, "/v1/chat/completions", chatBody(loraModel, "Hello adapter", false, ""))
		if r.status != 200 || decode(t, r.body).Model != loraModel {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		r = h.post(t, "/v1/completions", completionBody(loraModel, "Hello adapter", true, 4, ""))
		checkStream(t, r, loraModel)
	})
	t.Run("picker sees the adapter running", func(t *testing.T) {
		// A long adapter request; meanwhile the picker's view of the server that runs it
		// must show one adapter running, as vLLM's lora_requests_info does.
		type answer struct {
			r   result
			err error
		}
		done := make(chan answer, 1)
		id := h.nextID()
		go func() {
			r, err := h.do("/v1/completions", completionBody(loraModel, "a long adapter answer", false, 600, `,"ignore_eos":true`), id)
			done <- answer{r, err}
		}()
		seen := ""
		deadline := time.Now().Add(20 * time.Second)
		for seen == "" && time.Now().Before(deadline) {
			pm := scrape(t, h.gw.metricsURL)
			for _, s := range h.servers {
				if endpointGauge(t, pm, "infergw_router_endpoint_lora_adapters_running", s.addr) == 1 {
					seen = s.addr
				}
			}
			select {
			case r := <-done:
				done <- r
				deadline = time.Time{} // finished: stop looking
			default:
				time.Sleep(50 * time.Millisecond)
			}
		}
		a := <-done
		if a.err != nil {
			t.Fatal(a.err)
		}
		r := a.r
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		dest, err := h.gw.pickedDestination(r.requestID)
		if err != nil {
			t.Fatal(err)
		}
		if seen != dest {
			t.Errorf("picker saw an adapter running on %q while %s served the adapter request", seen, dest)
		}
	})
	t.Run("through an InferenceModelRewrite", func(t *testing.T) {
		r := h.post(t, "/v1/chat/completions", chatBody(canaryModel, "Hello canary", false, ""))
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		// The client sees the name it asked for; vLLM served the adapter.
		if m := decode(t, r.body).Model; m != canaryModel {
			t.Errorf("response model %q, want the client's %q", m, canaryModel)
		}
		line, err := h.gw.logLine(r.requestID)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(line, "target_model="+loraModel) {
			t.Errorf("picker did not rewrite to %s: %s", loraModel, line)
		}
		// vLLM's own view: the adapter is one it has run.
		ran := false
		for _, s := range h.servers {
			fams := scrape(t, s.url("/metrics"))
			for _, m := range fams["vllm:lora_requests_info"].GetMetric() {
				if strings.Contains(labelValue(m, "running_lora_adapters"), loraModel) {
					ran = true
				}
			}
		}
		if !ran {
			t.Errorf("no vLLM server lists %s in lora_requests_info", loraModel)
		}
	})
}

type apiError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    any     `json:"code"`
	} `json:"error"`
}

func (h *harness) checkErrors(t *testing.T) {
	check := func(t *testing.T, r result, status int) apiError {
		t.Helper()
		if r.status != status {
			t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
		}
		var e apiError
		var raw map[string]map[string]json.RawMessage
		if err := json.Unmarshal(r.body, &e); err != nil || e.Error.Message == "" || e.Error.Type == "" {
			t.Fatalf("error body not in the OpenAI schema: %v %s", err, r.body)
		}
		_ = json.Unmarshal(r.body, &raw)
		for _, k := range []string{"message", "type", "param", "code"} {
			if _, ok := raw["error"][k]; !ok {
				t.Errorf("error body lacks %q: %s", k, r.body)
			}
		}
		return e
	}
	t.Run("400 body not JSON", func(t *testing.T) {
		check(t, h.post(t, "/v1/chat/completions", `{"model": tiny`), 400)
	})
	t.Run("404 unknown model", func(t *testing.T) {
		e := check(t, h.post(t, "/v1/chat/completions", chatBody("no-such-model", "hi", false, "")), 404)
		if e.Error.Code != "model_not_found" {
			t.Errorf("code %v, want model_not_found", e.Error.Code)
		}
	})
	t.Run("400 from vLLM passes through", func(t *testing.T) {
		e := check(t, h.post(t, "/v1/completions", completionBody(baseModel, "hi", false, 100000, "")), 400)
		if e.Error.Param == nil {
			t.Logf("vLLM's error names no param: %+v", e.Error)
		}
	})
}

func (h *harness) checkPickerView(t *testing.T) {
	// The servers are idle now; the picker's view follows within a scrape or two (the
	// last request's end may not have been scraped yet).
	var pm map[string]*dto.MetricFamily
	deadline := time.Now().Add(5 * time.Second)
	for {
		pm = scrape(t, h.gw.metricsURL)
		idle := true
		for _, s := range h.servers {
			idle = idle && endpointGauge(t, pm, "infergw_router_endpoint_running_requests", s.addr) == 0 &&
				endpointGauge(t, pm, "infergw_router_endpoint_queue_depth", s.addr) == 0
		}
		if idle || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, s := range h.servers {
		vm := scrape(t, s.url("/metrics"))
		cc := vm["vllm:cache_config_info"].GetMetric()
		if len(cc) == 0 {
			t.Fatalf("%s: no vllm:cache_config_info", s.name)
		}
		get := func(name string) float64 { return endpointGauge(t, pm, name, s.addr) }
		if v := get("infergw_router_endpoint_fresh"); v != 1 {
			t.Errorf("%s: fresh %v, want 1", s.name, v)
		}
		if v := get("infergw_router_endpoint_queue_depth"); v != 0 {
			t.Errorf("%s: picker sees queue %v on an idle server", s.name, v)
		}
		if v := get("infergw_router_endpoint_running_requests"); v != 0 {
			t.Errorf("%s: picker sees %v running on an idle server", s.name, v)
		}
		if v := get("infergw_router_endpoint_kv_cache_usage"); math.IsNaN(v) || v < 0 || v > 1 {
			t.Errorf("%s: KV use %v", s.name, v)
		}
		if age := get("infergw_router_endpoint_last_scrape_age_seconds"); math.IsNaN(age) || age > stalenessThreshold.Seconds() {
			t.Errorf("%s: last scrape %v s ago", s.name, age)
		}
		for gauge, label := range map[string]string{
			"infergw_router_endpoint_kv_block_size_tokens": "block_size",
			"infergw_router_endpoint_kv_blocks":            "num_gpu_blocks",
		} {
			want := labelValue(cc[0], label)
			if got := get(gauge); fmt.Sprint(got) != want {
				t.Errorf("%s: picker's %s = %v, vLLM's cache_config_info %s = %s", s.name, gauge, got, label, want)
			}
		}
		// LoRA: the max adapters vLLM reports once it has stepped; every server has served
		// by now (the readiness request and the checks before).
		if v := get("infergw_router_endpoint_lora_max_adapters"); v != 2 {
			t.Errorf("%s: picker's max LoRA adapters %v, want 2 (--max-loras 2)", s.name, v)
		}
		if v := get("infergw_router_endpoint_lora_adapters_waiting"); v != 0 {
			t.Errorf("%s: picker counts %v adapters waiting on an idle server", s.name, v)
		}
	}
}

// checkChosenServed sends requests one at a time and compares the picker's choice (its
// debug log) with the server whose own request counter rose.
func (h *harness) checkChosenServed(t *testing.T) {
	perServer := map[string]int{}
	for i := 0; i < 6; i++ {
		before := h.successCounts(t)
		r := h.post(t, "/v1/chat/completions", chatBody(baseModel, fmt.Sprintf("request %d: pick me", i), i%2 == 0, ""))
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		dest, err := h.gw.pickedDestination(r.requestID)
		if err != nil {
			t.Fatal(err)
		}
		after := h.successCounts(t)
		for _, s := range h.servers {
			d := after[s.addr] - before[s.addr]
			want := 0.0
			if s.addr == dest {
				want = 1
			}
			if d != want {
				t.Errorf("request %d picked %s: %s's vllm:request_success_total rose by %v, want %v", i, dest, s.addr, d, want)
			}
		}
		perServer[dest]++
	}
	t.Logf("picks per server: %v", perServer)
}

// successCounts reads vllm:request_success_total of each server (all finish reasons).
func (h *harness) successCounts(t *testing.T) map[string]float64 {
	out := map[string]float64{}
	for _, s := range h.servers {
		out[s.addr] = sumFamily(scrape(t, s.url("/metrics")), "vllm:request_success_total")
	}
	return out
}

// longPrompt is ~1,100 tokens of the tiny tokenizer's words (about one token per word):
// more than eight of vLLM's 128-token blocks on CPU.
func longPrompt(seed string) string {
	var b strings.Builder
	b.WriteString(seed)
	words := []string{"kalo", "mine", "ruta", "vozi", "pesu", "doba", "gifa", "the", "of", "and"}
	for i := 0; i < 1100; i++ {
		b.WriteByte(' ')
		b.WriteString(words[(i*7+i/3)%len(words)])
	}
	return b.String()
}

func (h *harness) checkPrefixCache(t *testing.T) {
	prompt := longPrompt(fmt.Sprintf("prefix test %d", time.Now().UnixNano()))
	first := h.post(t, "/v1/completions", completionBody(baseModel, prompt, false, 1, ""))
	if first.status != 200 {
		t.Fatalf("status %d: %s", first.status, first.body)
	}
	u := decode(t, first.body).Usage
	if u == nil || u.PromptTokens < 4*128 {
		t.Fatalf("long prompt is only %v tokens, want several 128-token blocks", u)
	}
	destA, err := h.gw.pickedDestination(first.requestID)
	if err != nil {
		t.Fatal(err)
	}
	hitsBefore := h.prefixHits(t)
	second := h.post(t, "/v1/completions", completionBody(baseModel, prompt, false, 1, ""))
	if second.status != 200 {
		t.Fatalf("status %d: %s", second.status, second.body)
	}
	destB, err := h.gw.pickedDestination(second.requestID)
	if err != nil {
		t.Fatal(err)
	}
	if destA != destB {
		t.Fatalf("repeat went to %s, first to %s: the picker lost the prefix affinity", destB, destA)
	}
	hitsAfter := h.prefixHits(t)
	for _, s := range h.servers {
		d := hitsAfter[s.addr] - hitsBefore[s.addr]
		if s.addr == destA && d < 3*128 {
			t.Errorf("%s served the repeat: vllm:prefix_cache_hits rose by %v tokens, want ≥ %d", s.addr, d, 3*128)
		}
		if s.addr != destA && d != 0 {
			t.Errorf("%s did not serve the repeat but its prefix cache hits rose by %v", s.addr, d)
		}
	}
	u2 := decode(t, second.body).Usage
	if u2 == nil || u2.PromptTokensDetails == nil || u2.PromptTokensDetails.CachedTokens < 3*128 {
		t.Errorf("repeat's usage reports no cached tokens (needs --enable-prompt-tokens-details): %s", second.body)
	}
	t.Logf("long prompt %d tokens; repeat on %s: %v cached tokens, prefix_cache_hits +%v", u.PromptTokens, destA,
		u2.PromptTokensDetails, hitsAfter[destA]-hitsBefore[destA])
}

func (h *harness) prefixHits(t *testing.T) map[string]float64 {
	out := map[string]float64{}
	for _, s := range h.servers {
		out[s.addr] = sumFamily(scrape(t, s.url("/metrics")), "vllm:prefix_cache_hits")
	}
	return out
}

// checkUsageAccounting sends a mix of requests (streamed without usage asked included) and
// compares the token totals the picker recorded with vLLM's own counters over the window.
func (h *harness) checkUsageAccounting(t *testing.T) {
	type totals struct{ prompt, gen, cached, requests float64 }
	read := func() (picker, vllm totals) {
		pm := scrape(t, h.gw.metricsURL)
		picker.prompt = histogramSum(pm, "inference_objective_input_tokens")
		picker.gen = histogramSum(pm, "inference_objective_output_tokens")
		picker.cached = histogramSum(pm, "inference_objective_prompt_cached_tokens")
		picker.requests = histogramCount(pm, "inference_objective_input_tokens")
		for _, s := range h.servers {
			vm := scrape(t, s.url("/metrics"))
			vllm.prompt += sumFamily(vm, "vllm:prompt_tokens")
			vllm.gen += sumFamily(vm, "vllm:generation_tokens")
			vllm.cached += sumFamily(vm, "vllm:prefix_cache_hits")
			vllm.requests += sumFamily(vm, "vllm:request_success")
		}
		return picker, vllm
	}
	p0, v0 := read()
	shared := longPrompt("usage window shared prefix")
	bodies := []struct{ path, body string }{
		{"/v1/chat/completions", chatBody(baseModel, "usage one", true, "")},
		{"/v1/chat/completions", chatBody(baseModel, "usage two", false, "")},
		{"/v1/chat/completions", chatBody(loraModel, "usage three", true, "")},
		{"/v1/completions", completionBody(baseModel, "usage four", true, 6, "")},
		{"/v1/completions", completionBody(baseModel, "usage five", true, 6, `,"stream_options":{"include_usage":true}`)},
		{"/v1/completions", completionBody(baseModel, shared, true, 2, "")},
		{"/v1/completions", completionBody(baseModel, shared, false, 2, "")},
	}
	for _, b := range bodies {
		if r := h.post(t, b.path, b.body); r.status != 200 {
			t.Fatalf("%s: status %d: %s", b.path, r.status, r.body)
		}
	}
	time.Sleep(300 * time.Millisecond) // the picker records a request when its response ends
	p1, v1 := read()
	dp := totals{p1.prompt - p0.prompt, p1.gen - p0.gen, p1.cached - p0.cached, p1.requests - p0.requests}
	dv := totals{v1.prompt - v0.prompt, v1.gen - v0.gen, v1.cached - v0.cached, v1.requests - v0.requests}
	t.Logf("window of %d requests: picker %+v, vLLM %+v", len(bodies), dp, dv)
	if dp.requests != float64(len(bodies)) || dv.requests != float64(len(bodies)) {
		t.Errorf("requests with usage: picker %v, vLLM %v, want %d each", dp.requests, dv.requests, len(bodies))
	}
	if dp.prompt != dv.prompt || dp.prompt == 0 {
		t.Errorf("prompt tokens: picker %v, vLLM %v", dp.prompt, dv.prompt)
	}
	if dp.gen != dv.gen || dp.gen == 0 {
		t.Errorf("generated tokens: picker %v, vLLM %v", dp.gen, dv.gen)
	}
	if dp.cached != dv.cached || dp.cached == 0 {
		t.Errorf("cached tokens: picker %v, vLLM prefix_cache_hits %v", dp.cached, dv.cached)
	}
}

func (h *harness) checkStoppedServer(t *testing.T) {
	victim, other := h.servers[0], h.servers[1]
	if err := victim.signalGroup(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = victim.signalGroup(syscall.SIGCONT) }()
	stopped := time.Now()
	// The picker must mark it stale within the staleness threshold (plus the scrape in
	// flight when it stopped, bounded by the scrape timeout, and a scrape interval).
	bound := stalenessThreshold + scrapeTimeout + time.Second
	for {
		if endpointGauge(t, scrape(t, h.gw.metricsURL), "infergw_router_endpoint_fresh", victim.addr) == 0 {
			break
		}
		if time.Since(stopped) > bound {
			t.Fatalf("stopped server still fresh after %v", time.Since(stopped))
		}
		time.Sleep(50 * time.Millisecond)
	}
	progress("stopped %s marked stale after %.2fs", victim.name, time.Since(stopped).Seconds())
	for i := 0; i < 4; i++ {
		r := h.post(t, "/v1/chat/completions", chatBody(baseModel, fmt.Sprintf("while one is stopped %d", i), false, ""))
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		dest, err := h.gw.pickedDestination(r.requestID)
		if err != nil {
			t.Fatal(err)
		}
		if dest != other.addr {
			t.Errorf("request %d went to %s, the stopped server", i, dest)
		}
	}
}

// --- metrics helpers -------------------------------------------------------------------

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	status, b, err := getBody(ctx, url)
	if err != nil || status != 200 {
		t.Fatalf("GET %s: %d %v", url, status, err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return fams
}

func saveExposition(t *testing.T, s *vllmServer, path string) {
	_, b, err := getBody(context.Background(), s.url("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	progress("saved %s's exposition to %s", s.name, path)
}

func labelValue(m *dto.Metric, name string) string {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name {
			return lp.GetValue()
		}
	}
	return ""
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return math.NaN()
}

// sumFamily sums every series of a counter or gauge family. Counter families are named
// without "_total" by the parser when the exposition declares their TYPE that way; both
// names are tried.
func sumFamily(fams map[string]*dto.MetricFamily, name string) float64 {
	mf := fams[name]
	if mf == nil {
		mf = fams[name+"_total"]
	}
	total := 0.0
	for _, m := range mf.GetMetric() {
		total += metricValue(m)
	}
	return total
}

func histogramSum(fams map[string]*dto.MetricFamily, name string) float64 {
	total := 0.0
	for _, m := range fams[name].GetMetric() {
		total += m.GetHistogram().GetSampleSum()
	}
	return total
}

func histogramCount(fams map[string]*dto.MetricFamily, name string) float64 {
	total := 0.0
	for _, m := range fams[name].GetMetric() {
		total += float64(m.GetHistogram().GetSampleCount())
	}
	return total
}

func endpointGauge(t *testing.T, fams map[string]*dto.MetricFamily, name, addr string) float64 {
	t.Helper()
	for _, m := range fams[name].GetMetric() {
		if labelValue(m, "endpoint") == addr && labelValue(m, "pool") == poolName {
			return metricValue(m)
		}
	}
	t.Fatalf("picker's /metrics has no %s{pool=%q,endpoint=%q}", name, poolName, addr)
	return 0
}
