package cli

import (
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// delayServer streams one content chunk after delay, then usage and [DONE].
func delayServer(t *testing.T, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		time.Sleep(delay)
		fmt.Fprint(w, "data: {\"choices\":[{\"delta\":{\"content\":\"tok\"}}]}\n\n")
		fmt.Fprint(w, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":8,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n")
	})}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return "http://" + ln.Addr().String()
}

// TestCompareRuns runs the load tester against a fast and a slow server, then compares the
// two summaries: the slow run's TTFT is marked worse (its interval is far from the fast
// one's), and the HTML page holds both runs' CDFs as well-formed SVG.
func TestCompareRuns(t *testing.T) {
	dir := t.TempDir()
	fast, slow := filepath.Join(dir, "fast.json"), filepath.Join(dir, "slow.json")
	for path, url := range map[string]string{fast: delayServer(t, 5*time.Millisecond), slow: delayServer(t, 60*time.Millisecond)} {
		if _, err := execute(t, "--url", url, "--model", "m", "--vus", "4", "--requests", "40", "-q", "--summary-export", path); err != nil {
			t.Fatal(err)
		}
	}
	report := filepath.Join(dir, "cmp.html")
	out, err := execute(t, "compare", fast, slow, "--report", report)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(out)
	ttft := regexp.MustCompile(`(?m)^  ttft p50 .*$`).FindString(out)
	if !strings.Contains(out, "baseline: fast") || !strings.Contains(ttft, "worse") || !strings.Contains(ttft, "%") {
		t.Errorf("ttft p50 row %q: want the slow run marked worse against the fast baseline", ttft)
	}
	if rr := regexp.MustCompile(`(?m)^  requests .*$`).FindString(out); !strings.Contains(rr, "40") || !strings.Contains(rr, "+0.0%") {
		t.Errorf("requests row %q", rr)
	}
	html, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	svgs := wellFormedSVGs(t, string(html))
	if len(svgs) != 2 {
		t.Fatalf("%d SVG charts in the compare page, want 2 (TTFT and E2E CDFs)", len(svgs))
	}
	for i, svg := range svgs {
		if n := strings.Count(svg, `class="cdf"`); n != 2 {
			t.Errorf("chart %d has %d CDF curves, want one per run", i, n)
		}
		if !strings.Contains(svg, " ms</text>") {
			t.Errorf("chart %d: latency axis not labelled in ms", i)
		}
	}

	if _, err := execute(t, "compare", fast); err == nil {
		t.Error("compare with one summary succeeded")
	}
	notSummary := filepath.Join(dir, "x.json")
	if err := os.WriteFile(notSummary, []byte(`[1,2]`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := execute(t, "compare", fast, notSummary); err == nil || !strings.Contains(err.Error(), "not a loadtest summary") {
		t.Errorf("compare with a non-summary: %v", err)
	}
}

// wellFormedSVGs returns every <svg>…</svg> element of a page, failing the test when one is
// not well-formed XML.
func wellFormedSVGs(t *testing.T, page string) []string {
	t.Helper()
	var out []string
	for _, m := range regexp.MustCompile(`(?s)<svg .*?</svg>`).FindAllString(page, -1) {
		d := xml.NewDecoder(strings.NewReader(m))
		for {
			_, err := d.Token()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("SVG not well-formed: %v\n%.300s", err, m)
			}
		}
		out = append(out, m)
	}
	return out
}

// TestReportCharts runs a two-step sweep whose second step saturates (4 requests in flight
// at most, 200 ms each, so 20 req/s; 40 are offered) and checks the HTML report's charts:
// every SVG well-formed, the sweep's latency and throughput against offered rate with the
// knee marked at 40 req/s, the TTFT histogram's bars and the CDFs' millisecond axis.
func TestReportCharts(t *testing.T) {
	url := delayServer(t, 200*time.Millisecond)
	report := filepath.Join(t.TempDir(), "r.html")
	out, err := execute(t, "--url", url, "--model", "m", "--sweep", "5,40", "--duration", "1s", "--max-inflight", "4", "-q", "--report", report)
	if err != nil {
		t.Fatal(err)
	}
	html, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	page := string(html)
	svgs := wellFormedSVGs(t, page)
	if len(svgs) != 6 { // sweep latency, sweep throughput, TTFT over time, histogram, CDFs, throughput
		t.Errorf("%d charts, want 6\n%s", len(svgs), out)
	}
	if !strings.Contains(page, "Sweep: latency and throughput against offered rate") ||
		strings.Count(page, `class="knee"`) != 2 || !strings.Contains(page, "saturated at 40 req/s") {
		t.Errorf("sweep charts without the knee at 40 req/s\n%s", out)
	}
	if strings.Count(page, `class="sweep"`) != 4 {
		t.Errorf("%d sweep curves, want 4 (ttft p50, ttft p99, tpot p50, achieved rate)", strings.Count(page, `class="sweep"`))
	}
	if strings.Count(page, `class="bar"`) == 0 {
		t.Error("TTFT histogram has no bars")
	}
	if !strings.Contains(page, "latency (ms, log scale)") {
		t.Error("CDF axis not in milliseconds")
	}
}
