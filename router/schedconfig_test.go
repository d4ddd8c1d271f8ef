package router

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseSchedulerConfig(t *testing.T) {
	cfg, err := ParseSchedulerConfig([]byte(`
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
		Filters: []string{FilterLoRAAffinity},
		Scorers: []ScorerSpec{{"queue", 2}, {"kv-cache", 2}, {"prefix", 3}, {"lora-affinity", DefaultLoRAAffinityWeight}, {"in-flight", 0.5}},
		Picker:  PickerMaxScore, Prefix: PrefixParams{BlockSize: 128, LRUCapacity: 1000},
		Saturation: SaturationConfig{QueueDepthThreshold: 8, KVCacheThreshold: 0.9},
	}
	if diff := cmp.Diff(want, cfg); diff != "" {
		t.Fatalf("config (-want +got):\n%s", diff)
	}
	empty, err := ParseSchedulerConfig([]byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(DefaultSchedulerConfig(), empty); diff != "" {
		t.Fatalf("empty config is not the default (-want +got):\n%s", diff)
	}
	noFilters, err := ParseSchedulerConfig([]byte("filters: []\npicker: random\n"))
	if err != nil || len(noFilters.Filters) != 0 || noFilters.Picker != PickerRandom {
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
		{"unknown plugin field", "scorers: [{name: queue, wieght: 2}]", `unknown field "wieght"`},
		{"unknown param", "scorers: [{name: prefix, params: {blocksize: 4}}]", `unknown field "blocksize"`},
		{"params on queue", "scorers: [{name: queue, params: {x: 1}}]", "takes no params"},
		{"negative block size", "scorers: [{name: prefix, params: {blockSize: -1}}]", "blockSize -1 must be >= 0"},
		{"negative lru", "scorers: [{name: prefix, params: {lruCapacity: -5}}]", "lruCapacity -5"},
		{"duplicate scorer", "scorers: [{name: queue}, {name: queue}]", "listed twice"},
		{"unknown filter", "filters: [{name: gpu}]", `unknown filter "gpu"`},
		{"filter weight", "filters: [{name: lora-affinity, weight: 1}]", "take no weight"},
		{"unknown picker", "picker: best", `unknown picker "best"`},
		{"kv threshold above 1", "saturation: {kvCacheThreshold: 1.5}", "kvCacheThreshold 1.5"},
		{"queue threshold zero", "saturation: {queueDepthThreshold: 0}", "queueDepthThreshold 0"},
		{"weight not a number", "scorers: [{name: queue, weight: lots}]", "scheduler config"},
		{"not yaml", "scorers: [", "scheduler config"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSchedulerConfig([]byte(tc.yaml))
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
	cfg, err := LoadSchedulerConfig(path)
	if err != nil || len(cfg.Scorers) != 1 || cfg.Scorers[0].Weight != 4 {
		t.Fatalf("LoadSchedulerConfig = %+v, %v", cfg, err)
	}
	if _, err := LoadSchedulerConfig(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Fatal("missing file accepted")
	}
	if err := os.WriteFile(path, []byte("scorers: [{name: nope}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSchedulerConfig(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("error %v does not name the file", err)
	}
}

func TestPolicyConfig(t *testing.T) {
	for _, name := range []string{"default", "random", "least-queue"} {
		cfg, err := PolicyConfig(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("%s invalid: %v", name, err)
		}
	}
	lq, _ := PolicyConfig("least-queue")
	if diff := cmp.Diff([]ScorerSpec{{ScorerQueue, 1}, {ScorerInFlight, 1}}, lq.Scorers); diff != "" {
		t.Fatalf("least-queue scorers: %s", diff)
	}
	if _, err := PolicyConfig("fastest"); err == nil {
		t.Fatal("unknown policy accepted")
	}
}

func FuzzParseSchedulerConfig(f *testing.F) {
	f.Add([]byte("scorers: [{name: prefix, weight: 3, params: {blockSize: 64}}]\nsaturation: {kvCacheThreshold: 0.8}\n"))
	f.Add([]byte("filters: [{name: lora-affinity}]\npicker: random\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := ParseSchedulerConfig(b)
		if err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("parsed config fails validation: %v", err)
		}
	})
}
