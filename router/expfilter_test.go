package router

import (
	"reflect"
	"strings"
	"testing"
)

var expositionFiles = []string{"vllm.txt", "vllm-0.9.txt", "vllm-sim.txt", "sglang.txt", "trtllm.txt"}

// parseFiltered is what a scrape does: keep the engine's families, then parse.
func parseFiltered(eng engine, text string) (*metricsState, error) {
	return parseExposition(eng, string(keepFamilies(nil, []byte(text), eng.families())))
}

// TestKeepFamiliesReadsWhatTheFullParseReads: on every engine's real exposition, the
// filtered parse yields the same state as parsing everything, from far fewer bytes.
func TestKeepFamiliesReadsWhatTheFullParseReads(t *testing.T) {
	for _, file := range expositionFiles {
		text := readTestdata(t, file)
		for _, eng := range []engine{engineVLLM, engineSGLang, engineTRTLLM} {
			full, ferr := parseExposition(eng, text)
			filtered, err := parseFiltered(eng, text)
			if (ferr == nil) != (err == nil) {
				t.Fatalf("%s as %s: full parse error %v, filtered %v", file, eng, ferr, err)
			}
			if ferr == nil && !reflect.DeepEqual(full, filtered) {
				t.Fatalf("%s as %s: full %+v, filtered %+v", file, eng, full, filtered)
			}
		}
	}
	sim := readTestdata(t, "vllm-sim.txt")
	kept := keepFamilies(nil, []byte(sim), engineVLLM.families())
	if len(kept)*5 > len(sim) {
		t.Fatalf("kept %d of %d bytes of the simulator's exposition; histograms should be dropped", len(kept), len(sim))
	}
	for _, want := range []string{"vllm:num_requests_waiting{", "# TYPE vllm:kv_cache_usage_perc gauge\n", "vllm:lora_requests_info{", "vllm:cache_config_info{"} {
		if !strings.Contains(string(kept), want) {
			t.Errorf("kept text lacks %q:\n%s", want, kept)
		}
	}
	if strings.Contains(string(kept), "# HELP") {
		t.Errorf("kept text has # HELP lines, which the router never reads:\n%s", kept)
	}
}

func TestLineFamily(t *testing.T) {
	for line, want := range map[string]string{
		"vllm:num_requests_waiting{model_name=\"m\"} 3\n": "vllm:num_requests_waiting",
		"up 1":                                  "up",
		"  spaced\t2\n":                         "spaced",
		"# TYPE vllm:kv_cache_usage_perc gauge": "vllm:kv_cache_usage_perc",
		"#HELP  x  help text":                   "x",
		"# TYPEx y":                             "",
		"# a comment":                           "",
		"\n":                                    "",
		"{\"quoted.name\"} 1":                   "",
	} {
		if got := string(lineFamily([]byte(line))); got != want {
			t.Errorf("lineFamily(%q) = %q, want %q", line, got, want)
		}
	}
}

// FuzzKeepFamilies: whatever the exposition, when the full parse reads a state the
// filtered parse reads the same one.
func FuzzKeepFamilies(f *testing.F) {
	// Small seeds only: the fuzzer minimizes every input that finds new coverage, and
	// minimizing the simulator's 14 KB exposition stalls it for minutes.
	for _, file := range []string{"vllm.txt", "vllm-0.9.txt", "sglang.txt", "trtllm.txt"} {
		f.Add(readTestdata(f, file))
	}
	f.Fuzz(func(t *testing.T, text string) {
		for _, eng := range []engine{engineVLLM, engineSGLang, engineTRTLLM} {
			full, err := parseExposition(eng, text)
			filtered, ferr := parseFiltered(eng, text)
			if err != nil {
				continue // the filtered parse may accept what other families break
			}
			if ferr != nil || !reflect.DeepEqual(full, filtered) {
				t.Fatalf("%s: full %+v, filtered %+v (%v)", eng, full, filtered, ferr)
			}
		}
	})
}
