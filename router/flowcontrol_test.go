package router

import (
	"strings"
	"testing"
	"time"

	"github.com/infergw/infergw/flowcontrol"
)

// The flowControl section: defaults from the scheduler's saturation section, per-pool
// overrides on top of the section's values, strict keys.
func TestFlowControlConfigParse(t *testing.T) {
	cfg, err := ParseSchedulerConfig([]byte(`
saturation: {queueDepthThreshold: 3, kvCacheThreshold: 0.7}
flowControl:
  enabled: true
  maxRequests: 100
  requestTTL: 5s
  fairnessPolicy: token-weighted
  saturation: {maxInFlightPerEndpoint: 4}
  pools:
    default/batch: {orderingPolicy: edf, maxRequests: 10, saturation: {kvCacheUtilThreshold: 0.9}}
    default/off: {enabled: false}
`))
	if err != nil {
		t.Fatal(err)
	}
	def := cfg.FlowControl.For("default/other")
	want := flowcontrol.Config{Enabled: true, MaxRequests: 100, RequestTTL: 5 * time.Second, Fairness: flowcontrol.FairnessTokenWeighted,
		Saturation: flowcontrol.SaturationConfig{QueueDepthThreshold: 3, KVCacheUtilThreshold: 0.7, MaxInFlightPerEndpoint: 4}}.WithDefaults()
	if def != want {
		t.Fatalf("default pool:\n got %+v\nwant %+v", def, want)
	}
	batch := cfg.FlowControl.For("default/batch")
	if !batch.Enabled || batch.Ordering != flowcontrol.OrderingEDF || batch.MaxRequests != 10 || batch.MaxFlowRequests != 10 ||
		batch.Fairness != flowcontrol.FairnessTokenWeighted || batch.Saturation.KVCacheUtilThreshold != 0.9 ||
		batch.Saturation.QueueDepthThreshold != 3 || batch.Saturation.MaxInFlightPerEndpoint != 4 {
		t.Fatalf("batch pool override: %+v", batch)
	}
	if cfg.FlowControl.For("default/off").Enabled {
		t.Fatal("default/off is enabled")
	}
}

// Without the section, flow control is off for every pool (today's behaviour).
func TestFlowControlOffByDefault(t *testing.T) {
	cfg, err := ParseSchedulerConfig([]byte(`picker: max-score`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.FlowControl.For("any/pool").Enabled || DefaultSchedulerConfig().FlowControl.For("any/pool").Enabled {
		t.Fatal("flow control on without being asked for")
	}
}

func TestFlowControlConfigRejects(t *testing.T) {
	bad := map[string]string{
		"unknown key":         "flowControl: {enabled: true, maxQueue: 3}",
		"key case":            "flowControl: {Enabled: true}",
		"nested key case":     "flowControl: {saturation: {QueueDepthThreshold: 3}}",
		"pool key case":       "flowControl: {pools: {a/b: {MaxRequests: 3}}}",
		"pools in pools":      "flowControl: {pools: {a/b: {pools: {}}}}",
		"bad policy":          "flowControl: {fairnessPolicy: lottery}",
		"bad pool policy":     "flowControl: {pools: {a/b: {orderingPolicy: lifo}}}",
		"bad duration":        "flowControl: {requestTTL: 5}",
		"negative ttl":        "flowControl: {requestTTL: -1s}",
		"flow over pool":      "flowControl: {maxRequests: 2, maxFlowRequests: 3}",
		"kv threshold over 1": "flowControl: {saturation: {kvCacheUtilThreshold: 2}}",
	}
	for name, y := range bad {
		if _, err := ParseSchedulerConfig([]byte(y)); err == nil {
			t.Errorf("%s: %q accepted", name, y)
		} else if !strings.Contains(err.Error(), "scheduler config") {
			t.Errorf("%s: error without context: %v", name, err)
		}
	}
}
