package router

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseSchedulerConfig(t *testing.T) {
	reg := NewRegistry()
	cfg, err := reg.ParseSchedulerConfig([]byte(`
scorers:
  - {name: queue, weight: 2}
  - {name: kv-cache, weight: 2}
  - {name: prefix, weight: 3, params: {blockSize: 128, lruCapacity: 1000}}
  - {name: lora-affinity}
  - {name: in-flight, weight: 0.5}
saturation: {queueDepthThreshold: 8, kvCacheThreshold: 0.9}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := SchedulerConfig{
		Filters: []PluginSpec{{Type: TypeLoRAAffinityFilter, Name: "lora-affinity"}},
		Scorers: []PluginSpec{
			{Type: TypeQueueScorer, Name: "queue", Weight: 2},
			{Type: TypeKVCacheScorer, Name: "kv-cache", Weight: 2},
			{Type: TypePrefixScorer, Name: "prefix", Weight: 3, Parameters: json.RawMessage(`{"blockSize":128,"lruCapacity":1000}`)},
			{Type: TypeLoRAAffinityScorer, Name: "lora-affinity", Weight: DefaultLoRAAffinityWeight},
			{Type: TypeInFlightScorer, Name: "in-flight", Weight: 0.5},
		},
		Picker:     PluginSpec{Type: TypeMaxScorePicker, Name: PickerMaxScore},
		Saturation: SaturationConfig{QueueDepthThreshold: 8, KVCacheThreshold: 0.9},
	}
	if diff := cmp.Diff(want, cfg); diff != "" {
		t.Fatalf("config (-want +got):\n%s", diff)
	}
	sched := testScheduler(cfg)
	if !sched.usePrefix || sched.blockSize != 128 || sched.prefixLRUCapacity != 1000 || sched.prefixMaxBlocks != 0 {
		t.Fatalf("prefix parameters not applied: %+v", sched)
	}
	empty, err := reg.ParseSchedulerConfig([]byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(DefaultSchedulerConfig(), empty); diff != "" {
		t.Fatalf("empty config is not the default (-want +got):\n%s", diff)
	}
	noFilters, err := reg.ParseSchedulerConfig([]byte("filters: []\npicker: random\n"))
	if err != nil || len(noFilters.Filters) != 0 || noFilters.Picker.Type != TypeRandomPicker {
		t.Fatalf("filters: [] / picker random: %+v %v", noFilters, err)
	}
}

func TestParseSchedulerConfigErrors(t *testing.T) {
	tests := []struct{ name, yaml, wantErr string }{
		{"unknown scorer", "scorers: [{name: latency}]", `unknown scorer "latency"`},
		{"negative weight", "scorers: [{name: queue, weight: -1}]", "weight -1 must be"},
		{"unknown field", "scorer: []", `unknown field "scorer"`},
		{"key case", "Scorers: [{name: queue}]", `unknown field "Scorers"`},
		{"plugin key case", "scorers: [{Name: queue}]", `unknown field "scorers[0].Name"`},
		{"saturation key case", "saturation: {KVCacheThreshold: 0.5}", `unknown field "saturation.KVCacheThreshold"`},
		{"unknown plugin field", "scorers: [{name: queue, wieght: 2}]", `unknown field "scorers[0].wieght"`},
		{"unknown param", "scorers: [{name: prefix, params: {blocksize: 4}}]", `scorers[0]: plugin prefix (prefix-cache-scorer): parameters: unknown field "blocksize"`},
		{"param of the wrong type", "scorers: [{name: prefix, params: {blockSize: big}}]", `scorers[0]: plugin prefix (prefix-cache-scorer): parameters: json: cannot unmarshal string into Go struct field PrefixParams.blockSize of type int`},
		{"params on queue", "scorers: [{name: queue, params: {x: 1}}]", `plugin queue (queue-scorer): parameters: unknown field "x"`},
		{"negative block size", "scorers: [{name: prefix, params: {blockSize: -1}}]", "blockSize -1 must be >= 0"},
		{"negative lru", "scorers: [{name: prefix, params: {lruCapacity: -5}}]", "lruCapacity -5"},
		{"both names of a parameter", "scorers: [{name: prefix, params: {lruCapacity: 5, lruCapacityPerServer: 6}}]", "lruCapacity and lruCapacityPerServer are the same parameter"},
		{"duplicate scorer", "scorers: [{name: queue}, {name: queue}]", "listed twice"},
		{"duplicate scorer by type name", "scorers: [{name: kv-cache}, {name: kv-cache-utilization-scorer}]", "listed twice"},
		{"unknown filter", "filters: [{name: gpu}]", `unknown filter "gpu"`},
		{"filter weight", "filters: [{name: lora-affinity, weight: 1}]", "take no weight"},
		{"scorer as filter", "filters: [{name: queue-scorer}]", `unknown filter "queue-scorer"`},
		{"probabilistic LoRA filter", "filters: [{name: lora-affinity, params: {threshold: 0.5}}]", "threshold 0.5"},
		{"unknown picker", "picker: best", `unknown picker "best"`},
		{"kv threshold above 1", "saturation: {kvCacheThreshold: 1.5}", "kvCacheThreshold 1.5"},
		{"queue threshold zero", "saturation: {queueDepthThreshold: 0}", "queueDepthThreshold 0"},
		{"weight not a number", "scorers: [{name: queue, weight: lots}]", "scheduler config"},
		{"not yaml", "scorers: [", "scheduler config"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewRegistry().ParseSchedulerConfig([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestLoadSchedulerConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sched.yaml")
	if err := os.WriteFile(path, []byte("scorers: [{name: queue, weight: 4}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := NewRegistry()
	cfg, err := reg.LoadSchedulerConfig(path)
	if err != nil || len(cfg.Scorers) != 1 || cfg.Scorers[0].Weight != 4 {
		t.Fatalf("LoadSchedulerConfig = %+v, %v", cfg, err)
	}
	if _, err := reg.LoadSchedulerConfig(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Fatal("missing file accepted")
	}
	if err := os.WriteFile(path, []byte("scorers: [{name: nope}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.LoadSchedulerConfig(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("error %v does not name the file", err)
	}
}

func TestPolicyConfig(t *testing.T) {
	for _, name := range []string{"default", "random", "least-queue"} {
		cfg, err := PolicyConfig(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := NewRegistry().Validate(cfg); err != nil {
			t.Fatalf("%s invalid: %v", name, err)
		}
	}
	lq, _ := PolicyConfig("least-queue")
	if diff := cmp.Diff([]PluginSpec{{Type: TypeQueueScorer, Name: ScorerQueue, Weight: 1}, {Type: TypeInFlightScorer, Name: ScorerInFlight, Weight: 1}}, lq.Scorers); diff != "" {
		t.Fatalf("least-queue scorers: %s", diff)
	}
	if _, err := PolicyConfig("fastest"); err == nil {
		t.Fatal("unknown policy accepted")
	}
	// default-fixed: the default scorers, the prefix scorer sized as GIE ships it (not
	// from the engine's KV cache).
	fixed, err := PolicyConfig("default-fixed")
	if err != nil {
		t.Fatal(err)
	}
	if sched := testScheduler(fixed); !sched.usePrefix || sched.blockSize != DefaultPrefixBlockSize || sched.prefixLRUCapacity != DefaultPrefixLRUCapacity {
		t.Fatalf("default-fixed prefix settings: block %d, capacity %d", sched.blockSize, sched.prefixLRUCapacity)
	}
	if def := testScheduler(DefaultSchedulerConfig()); def.prefixLRUCapacity != 0 {
		t.Fatalf("the default must size the LRU from the engine, has %d", def.prefixLRUCapacity)
	}
}

func FuzzParseSchedulerConfig(f *testing.F) {
	f.Add([]byte("scorers: [{name: prefix, weight: 3, params: {blockSize: 64}}]\nsaturation: {kvCacheThreshold: 0.8}\n"))
	f.Add([]byte("filters: [{name: lora-affinity}]\npicker: random\n"))
	reg := NewRegistry()
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := reg.ParseSchedulerConfig(b)
		if err != nil {
			return
		}
		if err := reg.Validate(cfg); err != nil {
			t.Fatalf("parsed config fails validation: %v", err)
		}
	})
}
