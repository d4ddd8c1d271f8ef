package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// tenantServer answers chat completions (SSE) and rejects every request of the fairness ID
// "noisy" with 429; it counts requests per (fairness ID, objective) and prompt length.
type tenantServer struct {
	mu     sync.Mutex
	seen   map[string]int
	prompt map[string]int // fairness ID → words of the last prompt
}

func (s *tenantServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req struct {
		Messages []struct {
			Content string `json:"content"`
		} `json:"messages"`
		MaxTokens int `json:"max_tokens"`
	}
	_ = json.Unmarshal(body, &req)
	id, obj := r.Header.Get(HeaderFairnessID), r.Header.Get(HeaderObjective)
	s.mu.Lock()
	s.seen[id+"/"+obj]++
	if len(req.Messages) > 0 {
		s.prompt[id] = len(strings.Fields(req.Messages[0].Content))
	}
	s.mu.Unlock()
	if id == "noisy" {
		w.Header().Set("retry-after", "1")
		w.WriteHeader(http.StatusTooManyRequests)
		fmt.Fprint(w, `{"error":{"message":"queue full","type":"rate_limit_error","code":"flow_control_queue_full"}}`)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	for i := 0; i < req.MaxTokens; i++ {
		fmt.Fprintf(w, "data: %s\n\n", chatChunk("tok "))
	}
	fmt.Fprintf(w, "data: %s\n\n", chatChunkUsage("", req.MaxTokens))
	fmt.Fprint(w, "data: [DONE]\n\n")
}

func startTenantServer(t *testing.T) (*tenantServer, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &tenantServer{seen: map[string]int{}, prompt: map[string]int{}}
	srv := &http.Server{Handler: ts, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ts, "http://" + ln.Addr().String()
}

// Two tenants at their own rates, headers and prompt lengths: each one's requests carry
// its headers and lengths, the report counts each one's offered, served and rejected
// requests (adding up), and every output format shows them.
func TestTenantsRunAndReport(t *testing.T) {
	srv, url := startTenantServer(t)
	cfg := testConfig(url)
	cfg.Duration = time.Second
	noisyIn, quietIn := LengthDist{Kind: "fixed", Mean: 40}, LengthDist{Kind: "fixed", Mean: 5}
	tenants := []Tenant{
		{Name: "noisy", Rate: 40, FairnessID: "noisy", Objective: "batch", Input: &noisyIn},
		{Name: "quiet", Rate: 10, FairnessID: "quiet", Objective: "critical", Input: &quietIn},
	}
	ts, err := RunTenants(context.Background(), cfg, tenants, nil)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]TenantSummary{}
	for _, tr := range ts.Tenants {
		byName[tr.Tenant.Name] = tr
		if tr.Offered != tr.Served+tr.Rejected+tr.OtherFailed+tr.Interrupted+tr.Dropped {
			t.Errorf("%s: offered %d ≠ served %d + rejected %d + other %d + interrupted %d + dropped %d", tr.Tenant.Name,
				tr.Offered, tr.Served, tr.Rejected, tr.OtherFailed, tr.Interrupted, tr.Dropped)
		}
	}
	noisy, quiet := byName["noisy"], byName["quiet"]
	// Open loops at 40/s and 10/s for 1 s.
	if noisy.Offered < 36 || noisy.Offered > 44 || quiet.Offered < 8 || quiet.Offered > 12 {
		t.Fatalf("offered noisy %d (want ~40), quiet %d (want ~10)", noisy.Offered, quiet.Offered)
	}
	if noisy.Served != 0 || noisy.Rejected != noisy.Offered || quiet.Rejected != 0 || quiet.Served != quiet.Offered {
		t.Fatalf("noisy served %d rejected %d; quiet served %d rejected %d", noisy.Served, noisy.Rejected, quiet.Served, quiet.Rejected)
	}
	srv.mu.Lock()
	if srv.seen["noisy/batch"] != int(noisy.Offered) || srv.seen["quiet/critical"] != int(quiet.Offered) || len(srv.seen) != 2 {
		t.Errorf("server saw %v", srv.seen)
	}
	if srv.prompt["noisy"] < 35 || srv.prompt["quiet"] > 10 {
		t.Errorf("prompt words: noisy %d (want ~40), quiet %d (want ~5)", srv.prompt["noisy"], srv.prompt["quiet"])
	}
	srv.mu.Unlock()
	if quiet.Summary.TTFT.Count != quiet.Served {
		t.Errorf("quiet TTFT count %d, served %d", quiet.Summary.TTFT.Count, quiet.Served)
	}

	var text, md, js, html bytes.Buffer
	for _, w := range []struct {
		fn  func(io.Writer, *TenantsSummary) error
		buf *bytes.Buffer
	}{{WriteTenantsText, &text}, {WriteTenantsMarkdown, &md}, {WriteTenantsJSON, &js}, {WriteTenantsHTML, &html}} {
		if err := w.fn(w.buf, ts); err != nil {
			t.Fatal(err)
		}
	}
	for name, out := range map[string]string{"text": text.String(), "markdown": md.String(), "html": html.String()} {
		for _, want := range []string{"noisy", "quiet", "critical", fmt.Sprint(noisy.Rejected)} {
			if !strings.Contains(out, want) {
				t.Errorf("%s report lacks %q", name, want)
			}
		}
	}
	var back TenantsSummary
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Tenants) != 2 || back.Tenants[0].Rejected != ts.Tenants[0].Rejected {
		t.Fatalf("json round trip: %v %+v", err, back.Tenants)
	}
	if !strings.Contains(html.String(), "<svg") {
		t.Error("html report has no CDF plot")
	}
}

func TestParseTenant(t *testing.T) {
	tn, err := ParseTenant("name=a,rate=2.5,fairness=team-a,objective=batch,input=uniform:10:20,output=64,header=x-k:v")
	if err != nil {
		t.Fatal(err)
	}
	if tn.Name != "a" || tn.Rate != 2.5 || tn.FairnessID != "team-a" || tn.Objective != "batch" ||
		tn.Input == nil || tn.Input.Kind != "uniform" || tn.Output == nil || tn.Output.Mean != 64 ||
		len(tn.Headers) != 1 || tn.Headers[0] != (Header{"x-k", "v"}) {
		t.Fatalf("parsed %+v", tn)
	}
	for _, bad := range []string{"rate=1", "name=a", "name=a,rate=0", "name=a,rate=x", "name=a,rate=1,color=red",
		"name=a,rate=1,header=novalue", "name=a,rate=1,input=-3", "name=a,rate=1e9"} {
		if _, err := ParseTenant(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := RunTenants(context.Background(), Config{URL: "http://127.0.0.1:1"}, []Tenant{{Name: "a", Rate: 1}, {Name: "a", Rate: 1}}, nil); err == nil {
		t.Error("duplicate tenant names accepted")
	}
	if _, err := RunTenants(context.Background(), Config{URL: "http://127.0.0.1:1"}, nil, nil); err == nil {
		t.Error("no tenants accepted")
	}
}

// FuzzParseTenant: any string parses to a valid tenant or fails with an error, never a panic.
func FuzzParseTenant(f *testing.F) {
	f.Add("name=a,rate=2.5,fairness=team-a,objective=batch,input=uniform:10:20,output=64,header=x-k:v")
	f.Add("name=,rate=NaN")
	f.Fuzz(func(t *testing.T, s string) {
		tn, err := ParseTenant(s)
		if err != nil {
			return
		}
		if err := validateTenant(tn); err != nil {
			t.Fatalf("parsed tenant %+v is invalid: %v", tn, err)
		}
	})
}
