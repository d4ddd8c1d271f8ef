package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/infergw/infergw/loadtest"
)

// startServer is a real streaming server on 127.0.0.1: a role-only chunk, then 4 content
// chunks 5 ms apart, usage, [DONE]; it names itself in x-sim-instance.
func startServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer k" || r.Header.Get("x-gateway-inference-objective") != "gold" {
			http.Error(w, `{"error":{"message":"bad auth or header"}}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("x-sim-instance", "sim-a")
		fl := w.(http.Flusher)
		fmt.Fprint(w, "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n")
		fl.Flush()
		for i := 0; i < 4; i++ {
			time.Sleep(5 * time.Millisecond)
			fmt.Fprint(w, "data: {\"choices\":[{\"delta\":{\"content\":\"tok\"}}]}\n\n")
			fl.Flush()
		}
		fmt.Fprint(w, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":8,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n")
	})}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return "http://" + ln.Addr().String()
}

func execute(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := NewCommand()
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetArgs(args)
	cmd.SilenceUsage = true
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestCommandWritesEveryOutput(t *testing.T) {
	url := startServer(t)
	dir := t.TempDir()
	ndjson, csvPath := filepath.Join(dir, "r.ndjson"), filepath.Join(dir, "r.csv")
	summary, report := filepath.Join(dir, "s.json"), filepath.Join(dir, "r.html")
	out, err := execute(t, "--url", url, "--model", "a=3,b", "--vus", "2", "--requests", "8",
		"--api-key", "k", "-H", "x-gateway-inference-objective: gold", "--input-tokens", "uniform:4:8",
		"--output-tokens", "4", "--slo", "ttft=1s,tpot=1s", "--threshold", "ttft_p95<10s",
		"--out", "json="+ndjson, "--out", "csv="+csvPath, "--summary-export", summary, "--report", report)
	if err != nil {
		t.Fatalf("command failed: %v\n%s", err, out)
	}
	for _, want := range []string{"ttft", "tpot", "itl (per token)", "THRESHOLDS", "✓ ttft_p95<10s", "BY ENDPOINT", "sim-a", "goodput"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	var s loadtest.Summary
	b, err := os.ReadFile(summary)
	if err != nil || json.Unmarshal(b, &s) != nil {
		t.Fatalf("summary export: %v", err)
	}
	if s.Requests != 8 || s.Failed != 0 || s.ByEndpoint["sim-a"] == nil || s.ByEndpoint["sim-a"].Requests != 8 ||
		s.OutputTokens != 32 || s.Goodput == nil || s.Goodput.Requests != 8 || len(s.ByModel) != 2 {
		t.Errorf("summary %+v", s)
	}
	f, err := os.Open(ndjson)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lines := 0
	for sc := bufio.NewScanner(f); sc.Scan(); lines++ {
		var r loadtest.Result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil || r.Endpoint != "sim-a" || r.TTFTMs < 4 {
			t.Errorf("ndjson line %q: %v", sc.Text(), err)
		}
	}
	if lines != 8 {
		t.Errorf("%d ndjson lines, want 8", lines)
	}
	cf, err := os.Open(csvPath)
	if err != nil {
		t.Fatal(err)
	}
	defer cf.Close()
	rows, err := csv.NewReader(cf).ReadAll()
	if err != nil || len(rows) != 9 || rows[0][0] != "seq" {
		t.Errorf("csv: %d rows, %v", len(rows), err)
	}
	html, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<svg", "TTFT over time", "Latency CDFs", "Throughput"} {
		if !bytes.Contains(html, []byte(want)) {
			t.Errorf("report lacks %q", want)
		}
	}
	for _, banned := range []string{"<script src", "<link", "http://cdn", "https://"} {
		if bytes.Contains(html, []byte(banned)) {
			t.Errorf("report is not self-contained: has %q", banned)
		}
	}
}

func TestFailedThresholdExits99(t *testing.T) {
	url := startServer(t)
	out, err := execute(t, "--url", url, "--model", "m", "--requests", "2", "--api-key", "k",
		"-H", "x-gateway-inference-objective: gold", "--threshold", "ttft_p95<1us", "--threshold", "error_rate<0.01")
	ec, ok := err.(interface{ ExitCode() int })
	if !ok || ec.ExitCode() != 99 {
		t.Fatalf("err %v (%T), want an ExitCode() 99 error", err, err)
	}
	if !strings.Contains(out, "✗ ttft_p95<1us") || !strings.Contains(out, "✓ error_rate<0.01") {
		t.Errorf("summary does not show the threshold results:\n%s", out)
	}
}

func TestErrorsCountedByStatus(t *testing.T) {
	url := startServer(t)
	// No API key: the server answers 401 to every request.
	out, err := execute(t, "--url", url, "--model", "m", "--requests", "3", "--api-key", "", "--threshold", "error_rate<0.5")
	if ec, ok := err.(interface{ ExitCode() int }); !ok || ec.ExitCode() != 99 {
		t.Fatalf("err %v, want exit 99", err)
	}
	if !strings.Contains(out, "http_401") {
		t.Errorf("summary lacks http_401:\n%s", out)
	}
}

func TestBadFlags(t *testing.T) {
	t.Chdir(t.TempDir()) // a bad flag must not leave files behind; if one did, it lands here
	for _, args := range [][]string{
		{"--model", "m"},
		{"--url", "http://127.0.0.1:1"},
		{"--url", "http://127.0.0.1:1", "--model", "m", "--threshold", "bogus<1"},
		{"--url", "http://127.0.0.1:1", "--model", "m", "--stage", "10"},
		{"--url", "http://127.0.0.1:1", "--model", "m", "-H", "novalue"},
		{"--url", "http://127.0.0.1:1", "--model", "m", "--out", "xml=f"},
		{"--url", "http://127.0.0.1:1", "--model", "m", "--vus", "2", "--rate", "3"},
		{"--url", "ftp://x", "--model", "m"},
		{"--url", "http://127.0.0.1:1", "--model", "m", "--sweep", "a,b"},
		{"--url", "http://127.0.0.1:1", "--model", "m", "--slo", "ttft=fast"},
	} {
		if _, err := execute(t, args...); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
	if entries, _ := os.ReadDir("."); len(entries) != 0 {
		t.Errorf("bad flags created files: %v", entries)
	}
}

func TestHelpShowsExamplesFirst(t *testing.T) {
	cmd := NewCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--help"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	h := out.String()
	ex, meas, flags := strings.Index(h, "Examples:"), strings.Index(h, "TPOT          (E2E - TTFT)"), strings.Index(h, "Flags:")
	if ex < 0 || meas < 0 || flags < 0 || ex > meas || ex > 200 {
		t.Errorf("help layout: examples at %d, formulas at %d, flags at %d", ex, meas, flags)
	}
}

// TestInterruptPrintsSummaryAndExits130 cancels the command's context mid-run (what Ctrl-C
// does through main's signal.NotifyContext): the summary is still printed and the error
// carries exit code 130.
func TestInterruptPrintsSummaryAndExits130(t *testing.T) {
	url := startServer(t)
	cmd := NewCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&bytes.Buffer{})
	cmd.SetArgs([]string{"--url", url, "--model", "m", "--rate", "20", "--duration", "30s", "--api-key", "k",
		"-H", "x-gateway-inference-objective: gold"})
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := cmd.ExecuteContext(ctx)
	if time.Since(start) > 5*time.Second {
		t.Errorf("took %v to stop", time.Since(start))
	}
	ec, ok := err.(interface{ ExitCode() int })
	if !ok || ec.ExitCode() != 130 {
		t.Fatalf("err %v, want exit code 130", err)
	}
	if !strings.Contains(out.String(), "LATENCY") || !strings.Contains(out.String(), "requests") {
		t.Errorf("no summary after interrupt:\n%s", out.String())
	}
}

// --tenant runs one open loop per tenant with its own headers; the text report has a row per
// tenant, and --summary-export / --report write the per-tenant JSON and HTML.
func TestTenantsFromTheCommandLine(t *testing.T) {
	url := startServer(t) // answers only objective "gold": the other tenant gets 401s
	dir := t.TempDir()
	summary, report := filepath.Join(dir, "t.json"), filepath.Join(dir, "t.html")
	out, err := execute(t, "--url", url, "--model", "m", "--api-key", "k", "--duration", "1s", "--output-tokens", "4",
		"--tenant", "name=gold-team,rate=10,objective=gold,fairness=team-g",
		"--tenant", "name=other,rate=5,objective=silver",
		"--summary-export", summary, "--report", report)
	if err != nil {
		t.Fatalf("command failed: %v\n%s", err, out)
	}
	if !strings.Contains(out, "gold-team") || !strings.Contains(out, "=== tenant other ===") {
		t.Fatalf("text report lacks the tenants:\n%s", out)
	}
	b, err := os.ReadFile(summary)
	if err != nil {
		t.Fatal(err)
	}
	var ts struct {
		Tenants []struct {
			Tenant      struct{ Name string }
			Served      int64 `json:"served"`
			OtherFailed int64 `json:"other_failed"`
			Offered     int64 `json:"offered"`
		} `json:"tenants"`
	}
	if err := json.Unmarshal(b, &ts); err != nil || len(ts.Tenants) != 2 {
		t.Fatalf("summary json: %v %s", err, b)
	}
	gold, other := ts.Tenants[0], ts.Tenants[1]
	if gold.Served < 8 || gold.Served != gold.Offered || other.Served != 0 || other.OtherFailed != other.Offered || other.Offered < 3 {
		t.Fatalf("gold served %d of %d, other served %d failed %d of %d", gold.Served, gold.Offered, other.Served, other.OtherFailed, other.Offered)
	}
	if html, err := os.ReadFile(report); err != nil || !strings.Contains(string(html), "gold-team") {
		t.Fatalf("html report: %v", err)
	}
	if _, err := execute(t, "--url", url, "--model", "m", "--tenant", "name=a,rate=1", "--threshold", "ttft_p95<1s"); err == nil {
		t.Error("--tenant with --threshold accepted")
	}
	if _, err := execute(t, "--url", url, "--model", "m", "--tenant", "rate=1"); err == nil {
		t.Error("a tenant without a name accepted")
	}
}
