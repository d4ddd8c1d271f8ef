package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/infergw/infergw/loadtest"
)

func cell(workload, policy string, p90, tput float64, failed int64) *runResult {
	s := &loadtest.Summary{Requests: 100, Succeeded: 100 - failed, Failed: failed, OutputTokensPerS: tput,
		CachedTokenRatio: 0.5, RequestRate: 10}
	s.TTFT = loadtest.Latency{P50: p90 / 2, P90: p90, P99: p90 * 2}
	s.TPOT = loadtest.Latency{P50: 5, P99: 9}
	if failed > 0 {
		s.ErrorsByStatus = map[string]int64{"http_503": failed}
	}
	return &runResult{Workload: workload, Policy: policy, Summary: s, Recipe: "infergw loadtest --url http://127.0.0.1:1"}
}

func testReport() *report {
	p, _ := buildPlan(options{Pods: 8, TimeScale: 1, KVBlocks: 2048, Adapters: 12, Seed: 1, RateFactor: 1})
	return &report{StartedAt: time.Unix(0, 0), Command: "go run ./bench/routing", Took: "1s", Statement: fairness, Plan: p,
		Results: []*runResult{
			cell("shared-prefix", "round-robin", 4000, 2000, 0),
			cell("shared-prefix", "default", 100, 3000, 3),
		}}
}

func TestMarkdownComparesEachPolicyWithRoundRobin(t *testing.T) {
	var b bytes.Buffer
	if err := writeMarkdown(&b, testReport()); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"| shared-prefix | default | 10.0 | 50.0 | 100 | 200 | 5.00 | 9.00 | 3000 | 0.500 | 3 (http_503 3) | ÷40.0 |",
		"| shared-prefix | round-robin |",
		"p90 TTFT 4000 → 100 ms (÷40.0), output 2000 → 3000 tok/s (1.5×)",
		"The policies differ only in routing",
		"```sh\ninfergw loadtest --url http://127.0.0.1:1\n```",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestJSONAndHTMLOutputs(t *testing.T) {
	rep := testReport()
	var j bytes.Buffer
	if err := writeJSON(&j, rep); err != nil {
		t.Fatal(err)
	}
	var back report
	if err := json.Unmarshal(j.Bytes(), &back); err != nil {
		t.Fatalf("results.json does not parse: %v", err)
	}
	if len(back.Results) != 2 || back.Results[1].Summary.TTFT.P90 != 100 {
		t.Errorf("results.json lost data: %+v", back.Results)
	}
	var h bytes.Buffer
	if err := writeIndexHTML(&h, rep, "table", func(res *runResult) string { return cellReportName(res, 1) }); err != nil {
		t.Fatal(err)
	}
	html := h.String()
	if n := strings.Count(html, "<svg"); n != 4 {
		t.Errorf("index.html has %d charts, want 4 for one workload", n)
	}
	// p90 4000 vs 100 ms spans more than 20x: the TTFT charts use a log scale.
	for _, want := range []string{`href="shared-prefix-default.html"`, `href="shared-prefix-round-robin.html"`, "(log)"} {
		if !strings.Contains(html, want) {
			t.Errorf("index.html lacks %q", want)
		}
	}
}

func TestRecipeLengthsParseBack(t *testing.T) {
	for _, d := range []loadtest.LengthDist{{Kind: "fixed", Mean: 64}, {Kind: "normal", Mean: 256, StdDev: 64}, {Kind: "uniform", Min: 3, Max: 9, Mean: 6}} {
		got, err := loadtest.ParseLengthDist(lengthFlag(d))
		if err != nil {
			t.Fatalf("%+v: %v", d, err)
		}
		if got != d {
			t.Errorf("round trip %+v -> %q -> %+v", d, lengthFlag(d), got)
		}
	}
	p, err := buildPlan(options{Pods: 2, TimeScale: 0.5, KVBlocks: 2048, Adapters: 3, Seed: 7, RateFactor: 1})
	if err != nil {
		t.Fatal(err)
	}
	r := &runner{plan: p, tmp: "/tmp/x"}
	byName := map[string]workloadSpec{}
	for _, wl := range p.Workloads {
		byName[wl.Name] = wl
	}
	cmd := recipe(r.loadConfig(byName["lora-mix"], "http://127.0.0.1:1", 1))
	if round3 := recipe(r.loadConfig(byName["lora-mix"], "http://127.0.0.1:1", 3)); !strings.Contains(round3, "--seed 9") {
		t.Errorf("round 3 of seed 7 should send seed 9's sequence: %q", round3)
	}
	for _, want := range []string{"--model bench-lora-00=1", "--model bench-lora-02=1", "--seed 7",
		"--rate 24.00", "--input-tokens normal:256:64", "--output-tokens 128"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("recipe %q lacks %q", cmd, want)
		}
	}
	// The unique cell is issue 23's workload: 5 requests per modelled second per pod.
	cmd = recipe(r.loadConfig(byName["unique"], "http://127.0.0.1:1", 1))
	for _, want := range []string{"--rate 20.00", "--workload synthetic", "--input-tokens uniform:64:1024", "--output-tokens 128"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("recipe %q lacks %q", cmd, want)
		}
	}
}

func TestSelectors(t *testing.T) {
	p, _ := buildPlan(options{Pods: 1, TimeScale: 1, KVBlocks: 2048, Adapters: 3, Seed: 1, RateFactor: 1})
	if _, err := selectWorkloads(p.Workloads, p.DefaultWorkloads, "shared-prefix,nope"); err == nil {
		t.Error("unknown workload: want an error")
	}
	if w, err := selectWorkloads(p.Workloads, p.DefaultWorkloads, "lora-mix"); err != nil || len(w) != 1 || w[0].Name != "lora-mix" {
		t.Errorf("selectWorkloads(lora-mix) = %v, %v", w, err)
	}
	if _, err := selectPolicies("default,fastest"); err == nil {
		t.Error("unknown policy: want an error")
	}
	if _, err := buildPlan(options{Pods: 0, TimeScale: 1, KVBlocks: 1, Adapters: 1, RateFactor: 1}); err == nil {
		t.Error("zero pods: want an error")
	}
}

func TestMarkdownFlagsContendedCells(t *testing.T) {
	rep := testReport()
	rep.Results[0].CPU.MachineBusy = 0.95
	var b bytes.Buffer
	if err := writeMarkdown(&b, rep); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "95% ⚠") || !strings.Contains(b.String(), "CPU contention") {
		t.Errorf("a 95%%-busy cell is not flagged:\n%s", b.String())
	}
	rep.Results[0].CPU.MachineBusy = 0.5
	b.Reset()
	if err := writeMarkdown(&b, rep); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "⚠") {
		t.Errorf("a 50%%-busy run is flagged:\n%s", b.String())
	}
}
