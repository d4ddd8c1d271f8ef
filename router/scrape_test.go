package router

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func readTestdata(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatalf("read testdata: %v", err)
	}
	return string(b)
}

const vllmModels = `{"object":"list","data":[
 {"id":"meta-llama/Llama-3.1-8B-Instruct","object":"model","owned_by":"vllm","root":"meta-llama/Llama-3.1-8B-Instruct","parent":null},
 {"id":"sql-lora","object":"model","owned_by":"vllm","root":"/adapters/sql-lora","parent":"meta-llama/Llama-3.1-8B-Instruct"}]}`

// TestScrapeEngines serves realistic exposition text of every engine from a real HTTP
// server and checks what the router reads from it.
func TestScrapeEngines(t *testing.T) {
	tests := []struct {
		file, engine                  string
		waiting, running, kv          float64
		loraRunning, loraWaiting      []string
		maxLoRA, blockSize, gpuBlocks int
	}{
		{file: "vllm.txt", engine: "vllm", waiting: 3, running: 7, kv: 0.4375,
			loraRunning: []string{"sql-lora", "chat-lora"}, loraWaiting: []string{"tool-lora"}, maxLoRA: 4, blockSize: 16, gpuBlocks: 27113},
		{file: "vllm-0.9.txt", engine: "", waiting: 11, running: 2, kv: 0.91},
		{file: "sglang.txt", engine: "sglang", waiting: 4, running: 12, kv: 0.62},
		{file: "trtllm.txt", engine: "trtllm", waiting: 1, running: 9, kv: 0.25},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			srv := newModelServer(t, readTestdata(t, tc.file), vllmModels)
			r, reg := newTestRouter(t, nil)
			labels := map[string]string{}
			if tc.engine != "" {
				labels[EngineTypeLabel] = tc.engine
			}
			r.SetPool("ns/p", []EndpointSpec{{Name: "pod-a", Address: srv.addr(), Labels: labels}})
			e := r.lookup("ns/p").view.Load().endpoints[0]
			eventually(t, 3*time.Second, "first scrape", func() bool { return e.metrics.Load() != nil })
			m := e.metrics.Load()
			if m.waiting != tc.waiting || m.running != tc.running || m.kvUsage != tc.kv {
				t.Errorf("waiting/running/kv = %v/%v/%v, want %v/%v/%v", m.waiting, m.running, m.kvUsage, tc.waiting, tc.running, tc.kv)
			}
			if !slices.Equal(m.loraRunning, tc.loraRunning) || !slices.Equal(m.loraWaiting, tc.loraWaiting) || m.maxLoRA != tc.maxLoRA {
				t.Errorf("lora running=%q waiting=%q max=%d, want %q %q %d", m.loraRunning, m.loraWaiting, m.maxLoRA, tc.loraRunning, tc.loraWaiting, tc.maxLoRA)
			}
			if m.blockSize != tc.blockSize || m.numGPUBlocks != tc.gpuBlocks {
				t.Errorf("block size %d blocks %d, want %d %d", m.blockSize, m.numGPUBlocks, tc.blockSize, tc.gpuBlocks)
			}
			eventually(t, 3*time.Second, "model list", func() bool { return e.models.Load() != nil })
			if got := (*e.models.Load())["sql-lora"]; got != "meta-llama/Llama-3.1-8B-Instruct" {
				t.Errorf("sql-lora parent = %q", got)
			}
			eventually(t, 3*time.Second, "stale gauge 0", func() bool {
				v, ok := gaugeValue(t, reg, "infergw_router_endpoint_stale", map[string]string{"pool": "ns/p", "endpoint": srv.addr()})
				return ok && v == 0
			})
		})
	}
}

// TestScrapePrefixLRUSizedFromEngine: the LRU capacity follows vllm:cache_config_info
// (27113 blocks × 16 tokens ÷ 16 tokens per 64-character block).
func TestScrapePrefixLRUSizedFromEngine(t *testing.T) {
	srv := newModelServer(t, readTestdata(t, "vllm.txt"), "")
	r, _ := newTestRouter(t, nil)
	r.SetPool("ns/p", []EndpointSpec{{Name: "a", Address: srv.addr()}})
	e := r.lookup("ns/p").view.Load().endpoints[0]
	eventually(t, 3*time.Second, "LRU resized", func() bool {
		e.prefix.mu.Lock()
		defer e.prefix.mu.Unlock()
		return e.prefix.capacity == 27113*16/16
	})
}

// TestScrapeWrongEngineFails: a vLLM exposition read as SGLang has none of the SGLang
// metrics, which counts as a failed scrape rather than an idle endpoint.
func TestScrapeWrongEngineFails(t *testing.T) {
	srv := newModelServer(t, readTestdata(t, "vllm.txt"), "")
	r, reg := newTestRouter(t, nil)
	r.SetPool("ns/p", []EndpointSpec{{Name: "a", Address: srv.addr(), Labels: map[string]string{EngineTypeLabel: "sglang"}}})
	eventually(t, 3*time.Second, "scrape errors counted", func() bool {
		v, ok := gaugeValue(t, reg, "infergw_router_scrape_errors_total", map[string]string{"endpoint": srv.addr()})
		return ok && v >= 2
	})
	if st := r.PoolStats("ns/p"); st.Ready != 0 || st.Failed != 1 {
		t.Fatalf("stats = %+v, want 0 ready, 1 failed", st)
	}
}

func TestExtractMetricsTable(t *testing.T) {
	tests := []struct {
		name    string
		eng     engine
		text    string
		ok      bool
		waiting float64
		kv      float64
		running []string
	}{
		{"vllm current name wins over legacy", engineVLLM,
			"vllm:num_requests_waiting 2\nvllm:kv_cache_usage_perc 0.5\nvllm:gpu_cache_usage_perc 0.9\n", true, 2, 0.5, nil},
		{"vllm legacy only", engineVLLM, "vllm:num_requests_waiting 1\nvllm:gpu_cache_usage_perc 0.3\n", true, 1, 0.3, nil},
		{"series summed per model", engineVLLM,
			"vllm:num_requests_waiting{model_name=\"a\"} 2\nvllm:num_requests_waiting{model_name=\"b\"} 3\n", true, 5, 0, nil},
		{"kv clamped", engineSGLang, "sglang:num_queue_reqs 0\nsglang:token_usage 1.7\n", true, 0, 1, nil},
		{"negative queue ignored", engineTRTLLM, "trtllm_num_requests_waiting -3\n", true, 0, 0, nil},
		{"no engine metric", engineVLLM, "process_cpu_seconds_total 12\n", false, 0, 0, nil},
		{"lora newest value wins", engineVLLM,
			"vllm:num_requests_waiting 0\n" +
				"vllm:lora_requests_info{max_lora=\"2\",running_lora_adapters=\"new\",waiting_lora_adapters=\"\"} 200\n" +
				"vllm:lora_requests_info{max_lora=\"2\",running_lora_adapters=\"old\",waiting_lora_adapters=\"\"} 100\n", true, 0, 0, []string{"new"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := expfmt.NewTextParser(model.UTF8Validation)
			fams, err := p.TextToMetricFamilies(strings.NewReader(tc.text))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			var m metricsState
			if ok := extractMetrics(tc.eng, fams, &m); ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if m.waiting != tc.waiting || m.kvUsage != tc.kv || !slices.Equal(m.loraRunning, tc.running) {
				t.Fatalf("got waiting %v kv %v running %q, want %v %v %q", m.waiting, m.kvUsage, m.loraRunning, tc.waiting, tc.kv, tc.running)
			}
		})
	}
}

func TestParseModelList(t *testing.T) {
	ms, err := parseModelList([]byte(vllmModels))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms["meta-llama/Llama-3.1-8B-Instruct"] != "" || ms["sql-lora"] != "meta-llama/Llama-3.1-8B-Instruct" {
		t.Fatalf("models = %v", ms)
	}
	for _, bad := range []string{`not json`, `{"object":"list"}`, `{"data":{"id":1}}`} {
		if _, err := parseModelList([]byte(bad)); err == nil {
			t.Errorf("parseModelList(%q) = nil error", bad)
		}
	}
}

func FuzzParseModelList(f *testing.F) {
	f.Add([]byte(vllmModels))
	f.Add([]byte(`{"data":[{"id":"","parent":"x"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ms, err := parseModelList(b)
		if err == nil && ms == nil {
			t.Fatal("nil set without error")
		}
	})
}

func FuzzExtractMetrics(f *testing.F) {
	for _, name := range []string{"vllm.txt", "vllm-0.9.txt", "sglang.txt", "trtllm.txt"} {
		b, err := os.ReadFile("testdata/" + name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint8(0))
	}
	f.Fuzz(func(t *testing.T, text []byte, eng uint8) {
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(strings.NewReader(string(text)))
		if err != nil {
			return
		}
		var m metricsState
		if !extractMetrics(engine(eng%3), fams, &m) {
			return
		}
		if m.kvUsage < 0 || m.kvUsage > 1 || m.waiting < 0 || m.waiting != m.waiting {
			t.Fatalf("out of range: %+v", m)
		}
	})
}

// TestUntilNextTick: every loop of a slot sleeps to the same wall-clock instants, whatever
// instant it starts from, never for zero or more than one interval; slots split the
// interval evenly.
func TestUntilNextTick(t *testing.T) {
	const iv = 50 * time.Millisecond
	base := time.Date(2026, 11, 28, 1, 0, 0, 0, time.UTC) // a multiple of 50 ms
	for _, tc := range []struct {
		offset      time.Duration
		slot, slots int64
		want        time.Duration
	}{
		{0, 0, 1, iv}, // on a tick: the next one, not now
		{time.Nanosecond, 0, 1, iv - time.Nanosecond},
		{20 * time.Millisecond, 0, 1, 30 * time.Millisecond},
		{iv - time.Nanosecond, 0, 1, time.Nanosecond},
		{3*iv + 7*time.Millisecond, 0, 1, 43 * time.Millisecond},
		// Four slots: instants at +0, +12.5, +25 and +37.5 ms of each interval.
		{0, 1, 4, 12500 * time.Microsecond},
		{20 * time.Millisecond, 1, 4, 42500 * time.Microsecond},
		{20 * time.Millisecond, 2, 4, 5 * time.Millisecond},
		{37500 * time.Microsecond, 3, 4, iv},
		{49 * time.Millisecond, 3, 4, 38500 * time.Microsecond},
	} {
		now := base.Add(tc.offset)
		got := untilNextTick(now, iv, tc.slot, tc.slots)
		if got != tc.want {
			t.Errorf("from +%v, slot %d/%d: %v, want %v", tc.offset, tc.slot, tc.slots, got, tc.want)
		}
		if got <= 0 || got > iv {
			t.Errorf("from +%v, slot %d/%d: sleep %v outside (0, %v]", tc.offset, tc.slot, tc.slots, got, iv)
		}
		slotStart := time.Duration(tc.slot) * iv / time.Duration(tc.slots)
		if (now.Add(got).Sub(base)-slotStart)%iv != 0 {
			t.Errorf("from +%v, slot %d/%d: next instant %v is not on the slot", tc.offset, tc.slot, tc.slots, now.Add(got))
		}
	}
}
