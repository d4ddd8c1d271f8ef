package chart

import (
	"strings"
	"testing"
)

// TestKVEvents: with picker.kvEvents on, each picker replica dials the pods' publishers at
// podPort, asks their replay endpoints at replayPort after a restart, and reads the tokenizer from the given volume, mounted where --kv-tokenizer
// points; without a tokenizer volume the chart refuses to render.
func TestKVEvents(t *testing.T) {
	o := renderObjects(t, valueSetByName(t, "kvevents"))
	deploy := o.deploymentByComponent(t, "picker")
	pk := container(t, deploy, "picker", false)
	if v, _ := flagValue(pk.Args, "--kv-events-pod-port"); v != "5600" {
		t.Errorf("--kv-events-pod-port %q, want 5600 (args %v)", v, pk.Args)
	}
	if v, _ := flagValue(pk.Args, "--kv-events-replay-port"); v != "5601" {
		t.Errorf("--kv-events-replay-port %q, want 5601 (args %v)", v, pk.Args)
	}
	dir, ok := flagValue(pk.Args, "--kv-tokenizer")
	if !ok {
		t.Fatalf("no --kv-tokenizer in %v", pk.Args)
	}
	vol := podVolume(deploy, volumeMountedAt(pk, dir))
	if vol == nil || vol.ConfigMap == nil || vol.ConfigMap.Name != "llama-tokenizer" {
		t.Fatalf("--kv-tokenizer %s is not the llama-tokenizer ConfigMap: %+v", dir, vol)
	}
	if _, ok := flagValue(container(t, renderObjects(t, valueSetByName(t, "default")).deploymentByComponent(t, "picker"), "picker", false).Args, "--kv-events-pod-port"); ok {
		t.Error("KV events on by default")
	}
	_, err := tryRender(loadChart(t), parseValues(t, valueSet{name: "no-tokenizer", yaml: "picker: {kvEvents: {enabled: true}}"}))
	if err == nil || !strings.Contains(err.Error(), "tokenizerVolume") {
		t.Fatalf("rendered without a tokenizer volume: %v", err)
	}
}
