package sim

import (
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// Every vLLM metric the sim exports parses with the Prometheus text parser, has vLLM's type
// and labels, and moves the right way under load.
func TestMetricsParseAndMove(t *testing.T) {
	s := startSim(t, func(c *Config) { c.LoRAAdapters = []string{"sql"}; c.MaxLoRAs = 2; c.TimeScale = 0.5 })
	before := scrape(t, s)

	want := map[string]dto.MetricType{
		"vllm:num_requests_running": dto.MetricType_GAUGE,
		"vllm:num_requests_waiting": dto.MetricType_GAUGE,
		"vllm:kv_cache_usage_perc":  dto.MetricType_GAUGE,
		// vllm:lora_requests_info has no sample before the first step (as in vLLM): see
		// TestLoRAInfoBeforeFirstStep and the LoRA tests.
		"vllm:cache_config_info":           dto.MetricType_GAUGE,
		"vllm:prefix_cache_queries_total":  dto.MetricType_COUNTER,
		"vllm:prefix_cache_hits_total":     dto.MetricType_COUNTER,
		"vllm:prompt_tokens_total":         dto.MetricType_COUNTER,
		"vllm:generation_tokens_total":     dto.MetricType_COUNTER,
		"vllm:request_success_total":       dto.MetricType_COUNTER,
		"vllm:time_to_first_token_seconds": dto.MetricType_HISTOGRAM,
		"vllm:inter_token_latency_seconds": dto.MetricType_HISTOGRAM,
		"vllm:e2e_request_latency_seconds": dto.MetricType_HISTOGRAM,
		"vllm:request_queue_time_seconds":  dto.MetricType_HISTOGRAM,
		"vllm:num_preemptions_total":       dto.MetricType_COUNTER,
	}
	for name, typ := range want {
		fam, ok := before[name]
		if !ok {
			t.Errorf("metric %s missing", name)
			continue
		}
		if fam.GetType() != typ {
			t.Errorf("metric %s type %v, want %v", name, fam.GetType(), typ)
		}
		for _, m := range fam.GetMetric() {
			switch name {
			case "vllm:lora_requests_info":
				if !hasLabels(m, "max_lora", "2") || len(m.GetLabel()) != 3 {
					t.Errorf("lora_requests_info labels %v", m.GetLabel())
				}
			case "vllm:cache_config_info":
				if !hasLabels(m, "block_size", "16", "num_gpu_blocks", "4096") {
					t.Errorf("cache_config_info labels %v", m.GetLabel())
				}
			default:
				if !hasLabels(m, "model_name", s.cfg.Model, "engine", "0") {
					t.Errorf("%s labels %v, want model_name and engine", name, m.GetLabel())
				}
			}
		}
	}

	// Load: long prompts sharing a prefix, some on the adapter; scrape while they run.
	prefix := words(300, "m")
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			model := s.cfg.Model
			if i%2 == 1 {
				model = "sql"
			}
			if i >= 2 {
				time.Sleep(20 * time.Millisecond) // let the first two fill the prefix cache
			}
			stream(t, s, "/v1/completions", map[string]any{"model": model, "prompt": prefix + words(5, string(rune('A'+i))),
				"max_tokens": 30, "ignore_eos": true})
		}()
	}
	var peakRunning, peakKV float64
	sawRunningLoRA := false
	for range 30 {
		fams := scrape(t, s)
		peakRunning = max(peakRunning, metricValue(t, fams, "vllm:num_requests_running"))
		peakKV = max(peakKV, metricValue(t, fams, "vllm:kv_cache_usage_perc"))
		for _, m := range fams["vllm:lora_requests_info"].GetMetric() {
			if hasLabels(m, "running_lora_adapters", "sql") && m.GetGauge().GetValue() > float64(time.Now().Add(-time.Minute).Unix()) {
				sawRunningLoRA = true
			}
		}
		time.Sleep(3 * time.Millisecond)
	}
	wg.Wait()
	after := scrape(t, s)

	if peakRunning < 1 || peakKV <= 0 {
		t.Errorf("under load: peak running %v, peak kv %v; want > 0", peakRunning, peakKV)
	}
	if !sawRunningLoRA {
		t.Errorf("lora_requests_info never listed sql as running with a current timestamp")
	}
	grew := func(name string, by float64, labels ...string) {
		t.Helper()
		if d := metricValue(t, after, name, labels...) - metricValue(t, before, name, labels...); d < by {
			t.Errorf("%s grew by %v, want >= %v", name, d, by)
		}
	}
	grew("vllm:request_success_total", 6, "finished_reason", "length")
	grew("vllm:generation_tokens_total", 6*30)
	grew("vllm:prompt_tokens_total", 6*300)
	grew("vllm:prefix_cache_queries_total", 6*300)
	grew("vllm:prefix_cache_hits_total", 16) // at least one block reused
	grew("vllm:time_to_first_token_seconds", 6)
	grew("vllm:inter_token_latency_seconds", 6*29)
	grew("vllm:e2e_request_latency_seconds", 6)
	grew("vllm:request_queue_time_seconds", 6)
	for _, name := range []string{"vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"} {
		if v := metricValue(t, after, name); v != 0 {
			t.Errorf("%s = %v after the load, want 0", name, v)
		}
	}
	if ttftSum := after["vllm:time_to_first_token_seconds"].GetMetric()[0].GetHistogram().GetSampleSum(); ttftSum <= 0 {
		t.Errorf("ttft sum %v", ttftSum)
	}
}
