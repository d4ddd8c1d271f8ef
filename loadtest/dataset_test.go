package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
)

func datasetGen(t *testing.T, c DatasetConfig) []Request {
	t.Helper()
	g, err := newGenerator(WorkloadConfig{Kind: "dataset", Dataset: c, Output: LengthDist{Kind: "fixed", Mean: 16}},
		[]WeightedModel{{Name: "m", Weight: 1}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	var out []Request
	for range g.dataset {
		out = append(out, g.Next())
	}
	return out
}

// byFirstContent indexes requests by their first message's content (the order is shuffled).
func byFirstContent(reqs []Request) map[string]Request {
	m := map[string]Request{}
	for _, r := range reqs {
		m[r.Messages[0].Content] = r
	}
	return m
}

func TestDatasetJSONLAndJSON(t *testing.T) {
	jsonl := `{"prompt": "tell me a story", "max_tokens": 40}
{"id": 7}
{"prompt": "  "}
{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}], "max_tokens": 3}

{"prompt": "no length given"}
`
	reqs := datasetGen(t, DatasetConfig{File: writeFile(t, "d.jsonl", jsonl), OutputColumn: "max_tokens"})
	if len(reqs) != 3 {
		t.Fatalf("%d usable records, want 3 (no prompt and a blank prompt are skipped)", len(reqs))
	}
	m := byFirstContent(reqs)
	if r := m["tell me a story"]; r.MaxTokens != 40 || r.InputTokens != 4 || len(r.Messages) != 1 || r.Messages[0].Role != "user" {
		t.Errorf("string prompt: %+v", r)
	}
	if r := m["be brief"]; r.MaxTokens != 3 || len(r.Messages) != 2 || r.Messages[1].Content != "hi there" || r.InputTokens != 4 {
		t.Errorf("chat messages: %+v", r)
	}
	if r := m["no length given"]; r.MaxTokens != 16 {
		t.Errorf("without an output column value max_tokens = %d, want --output-tokens' 16", r.MaxTokens)
	}

	js := `[{"text": "alpha beta"}, {"text": "gamma", "n": 5}]`
	reqs = datasetGen(t, DatasetConfig{File: writeFile(t, "d.json", js), OutputColumn: "n"})
	m = byFirstContent(reqs)
	if len(reqs) != 2 || m["gamma"].MaxTokens != 5 || m["alpha beta"].InputTokens != 2 {
		t.Errorf("json array: %+v", reqs)
	}

	for name, tc := range map[string]struct{ file, content, want string }{
		"bad role":      {"e.jsonl", `{"messages": [{"role": "wizard", "content": "x"}]}`, `line 1: messages: role "wizard"`},
		"bad output":    {"e.jsonl", `{"prompt": "x", "max_tokens": -2}`, "line 1: column max_tokens"},
		"not json":      {"e.jsonl", `{"prompt": "x"}` + "\n" + `prompt: x`, "line 2"},
		"number prompt": {"e.jsonl", `{"prompt": 42}`, "want a string or a list of chat messages"},
		"not an array":  {"e.json", `{"prompt": "x"}`, "want a JSON array"},
		"nothing":       {"e.jsonl", `{"id": 1}`, "no usable record"},
		"unknown ext":   {"e.txt", `x`, `format "txt"`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := loadDataset(DatasetConfig{File: writeFile(t, tc.file, tc.content), OutputColumn: "max_tokens"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestDatasetParquet(t *testing.T) {
	type row struct {
		Question string `parquet:"question"`
		Messages string `parquet:"messages,optional"`
		Out      int64  `parquet:"out"`
	}
	rows := []row{
		{Question: "what is two plus two", Out: 9},
		{Question: "", Out: 1},
		{Question: "why", Messages: `[{"role":"user","content":"from messages"}]`, Out: 4},
	}
	var buf bytes.Buffer
	if err := parquet.Write(&buf, rows); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "d.parquet")
	if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	reqs := datasetGen(t, DatasetConfig{File: p, PromptColumn: "question", OutputColumn: "out"})
	m := byFirstContent(reqs)
	if len(reqs) != 2 || m["what is two plus two"].MaxTokens != 9 || m["why"].MaxTokens != 4 {
		t.Errorf("question column: %+v", reqs)
	}
	// The default column order prefers messages (a JSON string of chat messages here).
	reqs = datasetGen(t, DatasetConfig{File: p})
	if len(reqs) != 1 || reqs[0].Messages[0].Content != "from messages" || reqs[0].MaxTokens != 16 {
		t.Errorf("messages column: %+v", reqs)
	}
	if _, err := loadDataset(DatasetConfig{File: p, PromptColumn: "nope"}); err == nil || !strings.Contains(err.Error(), "no prompt column nope") {
		t.Errorf("missing column: %v", err)
	}
	if _, err := loadDataset(DatasetConfig{File: p, OutputColumn: "question"}); err == nil || !strings.Contains(err.Error(), "want an integer column") {
		t.Errorf("string output column: %v", err)
	}
}

// bodyServer answers every request from a handler and keeps the request bodies.
type bodyServer struct {
	mu     sync.Mutex
	paths  []string
	bodies [][]byte
}

func startBodyServer(t *testing.T, handle func(w http.ResponseWriter, body []byte)) (*bodyServer, string) {
	t.Helper()
	bs := &bodyServer{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bs.mu.Lock()
		bs.paths, bs.bodies = append(bs.paths, r.URL.Path), append(bs.bodies, b)
		bs.mu.Unlock()
		handle(w, b)
	})}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return bs, "http://" + ln.Addr().String()
}

// TestEmbeddingsAPI: --api embeddings posts {"model","input"} to /v1/embeddings, not
// streamed, and counts the prompt tokens the server reports; there is no TTFT.
func TestEmbeddingsAPI(t *testing.T) {
	bs, url := startBodyServer(t, func(w http.ResponseWriter, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-0.2,0.3]}],"model":"e","usage":{"prompt_tokens":9,"total_tokens":9}}`)
	})
	cfg := testConfig(url)
	cfg.API, cfg.Requests, cfg.VUs = "embeddings", 5, 1
	s, err := Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Requests != 5 || s.Failed != 0 || s.PromptTokens != 45 || s.OutputTokens != 0 || s.TTFT.Count != 0 || s.E2E.Count != 5 || s.Setup.Stream {
		t.Errorf("requests %d failed %d prompt %d output %d ttft %d e2e %d stream %v",
			s.Requests, s.Failed, s.PromptTokens, s.OutputTokens, s.TTFT.Count, s.E2E.Count, s.Setup.Stream)
	}
	bs.mu.Lock()
	defer bs.mu.Unlock()
	for i, b := range bs.bodies {
		var body map[string]any
		if err := json.Unmarshal(b, &body); err != nil {
			t.Fatalf("body %d: %v", i, err)
		}
		if bs.paths[i] != "/v1/embeddings" || body["model"] != "m" || body["input"] == nil || len(body) != 2 {
			t.Errorf("request %d to %s: %s, want only model and input to /v1/embeddings", i, bs.paths[i], b)
		}
	}
}

// TestDatasetChatRun sends a dataset's conversations as they are.
func TestDatasetChatRun(t *testing.T) {
	bs, url := startBodyServer(t, func(w http.ResponseWriter, _ []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: "+chatChunk("ok")+"\n\ndata: [DONE]\n\n")
	})
	file := writeFile(t, "chat.jsonl", `{"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "q1"}]}`+"\n")
	cfg := testConfig(url)
	cfg.Requests, cfg.VUs = 2, 1
	cfg.Workload = WorkloadConfig{Kind: "dataset", Dataset: DatasetConfig{File: file}}
	s, err := Run(context.Background(), cfg, nil)
	if err != nil || s.Failed != 0 || s.Requests != 2 {
		t.Fatalf("run: %v, %+v", err, s)
	}
	bs.mu.Lock()
	defer bs.mu.Unlock()
	var body struct {
		Messages []Message `json:"messages"`
	}
	if err := json.Unmarshal(bs.bodies[0], &body); err != nil {
		t.Fatal(err)
	}
	if len(body.Messages) != 2 || body.Messages[0] != (Message{Role: "system", Content: "sys"}) || body.Messages[1].Content != "q1" {
		t.Errorf("sent messages %+v", body.Messages)
	}
}

func FuzzDatasetJSONL(f *testing.F) {
	f.Add([]byte(`{"prompt": "x", "n": 3}` + "\n" + `{"messages": [{"role": "user", "content": "y"}]}`))
	f.Add([]byte(`{"messages": [{"role": "user", "content": ""}], "n": -1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		items, err := readJSONLDataset(bytes.NewReader(b), DatasetConfig{OutputColumn: "n"})
		if err != nil {
			return
		}
		for i, it := range items {
			if len(it.msgs) == 0 || it.outputTokens < 0 || it.outputTokens > maxTraceTokens {
				t.Fatalf("item %d accepted with %d messages, output %d", i, len(it.msgs), it.outputTokens)
			}
			for _, m := range it.msgs {
				if m.Content == "" {
					t.Fatalf("item %d: an empty message was kept", i)
				}
			}
		}
	})
}
