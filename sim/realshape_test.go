package sim

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// realVLLMExposition was saved from a real vLLM 0.32 (CPU build) with a LoRA request
// running (test/vllm); the router's unit tests read it too.
const realVLLMExposition = "../router/testdata/vllm-0.32-cpu-lora-running.txt"

// TestExpositionShapeMatchesRealVLLM diffs the sim's /metrics against a real vLLM's: the
// content type, and for every family the sim exports the type and label names; the
// histogram "le" formatting; the families the router reads are in both.
func TestExpositionShapeMatchesRealVLLM(t *testing.T) {
	realText, err := os.ReadFile(realVLLMExposition)
	if err != nil {
		t.Fatal(err)
	}
	s := startSim(t, func(c *Config) { c.LoRAAdapters = []string{"sql-lora"} })
	// One adapter request so that lora_requests_info has a sample, as it has in the file.
	stream(t, s, "/v1/completions", map[string]any{"model": "sql-lora", "prompt": "hi", "max_tokens": 2})
	resp, err := http.Get("http://" + s.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	simText, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	// Recorded from vLLM 0.32's response header.
	if ct := resp.Header.Get("Content-Type"); ct != "text/plain; version=1.0.0; charset=utf-8" {
		t.Errorf("content type %q, want vLLM's", ct)
	}
	realFams, simFams := parseText(t, realText), parseText(t, simText)
	for name, sf := range simFams {
		if !strings.HasPrefix(name, "vllm:") {
			continue
		}
		rf, ok := realFams[name]
		if !ok {
			t.Errorf("the sim exports %s, which vLLM 0.32 does not", name)
			continue
		}
		if sf.GetType() != rf.GetType() {
			t.Errorf("%s: type %v, vLLM's %v", name, sf.GetType(), rf.GetType())
		}
		if len(rf.GetMetric()) == 0 || len(sf.GetMetric()) == 0 {
			continue
		}
		if sl, rl := labelNames(sf.GetMetric()[0]), labelNames(rf.GetMetric()[0]); !slices.Equal(sl, rl) {
			t.Errorf("%s: labels %v, vLLM's %v", name, sl, rl)
		}
	}
	for _, name := range []string{"vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc",
		"vllm:lora_requests_info", "vllm:cache_config_info", "vllm:prefix_cache_hits_total", "vllm:prompt_tokens_total",
		"vllm:generation_tokens_total", "vllm:request_success_total", "vllm:time_to_first_token_seconds"} {
		if simFams[name] == nil || realFams[name] == nil {
			t.Errorf("%s: in the sim %v, in vLLM %v", name, simFams[name] != nil, realFams[name] != nil)
		}
	}
	// Histogram bounds as Python writes them: 1.0, not 1.
	le := regexp.MustCompile(`le="([^"]*)"`)
	for _, m := range le.FindAllSubmatch(simText, -1) {
		v := string(m[1])
		if v != "+Inf" && !strings.ContainsAny(v, ".e") {
			t.Errorf("sim writes le=%q; vLLM writes integral bounds with .0", v)
			break
		}
	}
	if !bytes.Contains(realText, []byte(`le="1.0"`)) || !bytes.Contains(simText, []byte(`le="1.0"`)) {
		t.Error(`le="1.0" missing from one of the expositions`)
	}
}

func parseText(t *testing.T, text []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

func labelNames(m *dto.Metric) []string {
	var out []string
	for _, lp := range m.GetLabel() {
		out = append(out, lp.GetName())
	}
	slices.Sort(out)
	return out
}

// TestLoRAInfoBeforeFirstStep: like vLLM, no lora_requests_info sample before the engine
// ran a step.
func TestLoRAInfoBeforeFirstStep(t *testing.T) {
	s := startSim(t, func(c *Config) { c.LoRAAdapters = []string{"sql-lora"} })
	if n := len(scrape(t, s)["vllm:lora_requests_info"].GetMetric()); n != 0 {
		t.Fatalf("%d lora_requests_info samples before any request, want 0", n)
	}
	stream(t, s, "/v1/completions", map[string]any{"model": "sql-lora", "prompt": "hi", "max_tokens": 2})
	ms := scrape(t, s)["vllm:lora_requests_info"].GetMetric()
	if len(ms) == 0 {
		t.Fatal("no lora_requests_info sample after a request")
	}
}

func TestPythonLe(t *testing.T) {
	in := `a_bucket{le="1"} 0` + "\n" + `a_bucket{le="0.005"} 0` + "\n" + `a_bucket{le="+Inf"} 0` + "\n" + `b{le="2560",x="1"} 1` + "\n"
	want := `a_bucket{le="1.0"} 0` + "\n" + `a_bucket{le="0.005"} 0` + "\n" + `a_bucket{le="+Inf"} 0` + "\n" + `b{le="2560.0",x="1"} 1` + "\n"
	if got := string(pythonLe(nil, []byte(in))); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}
