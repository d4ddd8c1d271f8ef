package router

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/infergw/infergw/flowcontrol"
)

// gieDocConfig is an EndpointPickerConfig as GIE's documentation writes one: queue,
// kv-cache, prefix (with GIE's parameters) and LoRA-affinity scorers, a max-score picker
// and the single-profile handler.
const gieDocConfig = `apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: prefix-cache-scorer
  parameters:
    hashBlockSize: 64
    maxPrefixBlocksToMatch: 256
    lruCapacityPerServer: 31250
- type: lora-affinity-scorer
- type: max-score-picker
  parameters:
    maxNumOfEndpoints: 1
- type: single-profile-handler
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
    weight: 2
  - pluginRef: kv-cache-utilization-scorer
    weight: 2
  - pluginRef: prefix-cache-scorer
    weight: 3
  - pluginRef: lora-affinity-scorer
  - pluginRef: max-score-picker
`

// nativeEquivalent is the same scheduler in infergw's own format.
const nativeEquivalent = `filters: []
scorers:
  - {name: queue, weight: 2}
  - {name: kv-cache, weight: 2}
  - {name: prefix, weight: 3, params: {blockSize: 64, lruCapacity: 31250, maxBlocks: 256}}
  - {name: lora-affinity, weight: 1}
picker: max-score
`

func TestEndpointPickerConfigLoadsLikeOurs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "epp.yaml")
	if err := os.WriteFile(path, []byte(gieDocConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := NewRegistry()
	gie, err := reg.LoadSchedulerConfig(path) // recognised by its kind
	if err != nil {
		t.Fatal(err)
	}
	ours, err := reg.ParseSchedulerConfig([]byte(nativeEquivalent))
	if err != nil {
		t.Fatal(err)
	}
	// The same scheduler: the same plugins (GIE's types resolve to the same instances,
	// GIE's prefix parameters to the same values) with the same weights, in the same order.
	// Only the scorers' names differ (each file's own names).
	sg, so := testScheduler(gie), testScheduler(ours)
	for _, s := range []*scheduler{sg, so} {
		for i := range s.scorers {
			s.scorers[i].name = ""
		}
	}
	if !reflect.DeepEqual(sg, so) {
		t.Fatalf("GIE config builds %+v\nours builds       %+v", sg, so)
	}
	if !sg.usePrefix || sg.blockSize != 64 || sg.prefixLRUCapacity != 31250 || sg.prefixMaxBlocks != 256 || len(sg.scorers) != 4 || len(sg.filters) != 0 {
		t.Fatalf("GIE config read wrong: %+v", sg)
	}

	// And it schedules like ours: two routers, one per config, over the same endpoints
	// (each best on a different signal) pick the same primary for every request, including
	// one with a prefix cached on one endpoint and one for a loaded adapter.
	eps := func() []*endpoint {
		return []*endpoint{
			withModels(staticEndpoint("10.0.0.1:8000", metricsState{waiting: 0, kvUsage: 0.9, maxLoRA: 2}), map[string]string{"base": ""}),
			withModels(staticEndpoint("10.0.0.2:8000", metricsState{waiting: 6, kvUsage: 0.1, maxLoRA: 2, loraRunning: []string{"ad"}}), map[string]string{"base": "", "ad": "base"}),
			withModels(staticEndpoint("10.0.0.3:8000", metricsState{waiting: 3, kvUsage: 0.5, maxLoRA: 2}), map[string]string{"base": ""}),
		}
	}
	rg, _ := newTestRouter(t, func(c *Config) { c.Scheduler = gie; c.Fallbacks = 0 })
	ro, _ := newTestRouter(t, func(c *Config) { c.Scheduler = ours; c.Fallbacks = 0 })
	installPool(rg, "p", eps())
	installPool(ro, "p", eps())
	prompt := []byte(strings.Repeat("You are a helpful assistant. ", 40))
	for i, req := range []*Request{
		{Pool: "p", Model: "base"},
		{Pool: "p", Model: "ad"},
		{Pool: "p", Model: "base", Prompt: prompt},
		{Pool: "p", Model: "base", Prompt: prompt}, // the prefix is now cached on the first pick's endpoint
		{Pool: "p", Model: "base", Prompt: []byte(fmt.Sprintf("%s and more %d", prompt, 1))},
	} {
		dg, do := mustPick(t, rg, req), mustPick(t, ro, req)
		if dg.Endpoints[0] != do.Endpoints[0] {
			t.Errorf("request %d: GIE config picked %s, ours %s", i, dg.Endpoints[0], do.Endpoints[0])
		}
		dg.Done()
		do.Done()
	}
}

func TestEndpointPickerConfigRefusals(t *testing.T) {
	base := func(plugins, profile string) string {
		return "apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\nplugins:\n" + plugins +
			"schedulingProfiles:\n- name: default\n  plugins:\n" + profile
	}
	for name, tc := range map[string]struct{ doc, want string }{
		"unknown type": {base("- type: decode-filter\n", "  - pluginRef: decode-filter\n"), `type "decode-filter" is not supported`},
		"unknown prefix parameter": {base("- type: prefix-cache-scorer\n  parameters:\n    mode: cache_tracking\n", "  - pluginRef: prefix-cache-scorer\n"),
			`unknown field "mode"`},
		"probabilistic LoRA filter": {base("- type: lora-affinity-filter\n  parameters:\n    threshold: 0.999\n", "  - pluginRef: lora-affinity-filter\n"),
			"threshold 0.999"},
		"several endpoints": {base("- type: max-score-picker\n  parameters:\n    maxNumOfEndpoints: 3\n", "  - pluginRef: max-score-picker\n"), "--fallbacks"},
		"dangling ref":      {base("- type: queue-scorer\n", "  - pluginRef: kv-scorer\n"), `pluginRef "kv-scorer" names no plugin`},
		"weight on picker":  {base("- type: max-score-picker\n", "  - pluginRef: max-score-picker\n    weight: 2\n"), "only scorers take a weight"},
		"two profiles": {base("- type: queue-scorer\n", "  - pluginRef: queue-scorer\n") + "- name: prefill\n  plugins:\n  - pluginRef: queue-scorer\n",
			"2 scheduling profiles"},
		"flow control without its gate": {base("- type: queue-scorer\n", "  - pluginRef: queue-scorer\n") + "flowControl: {}\n", "featureGates lacks flowControl"},
		"unknown feature gate":          {base("- type: queue-scorer\n", "  - pluginRef: queue-scorer\n") + "featureGates: [prepareDataPlugins]\n", `"prepareDataPlugins" is not supported`},
		"bands with different fairness": {base("- type: queue-scorer\n- type: round-robin-fairness-policy\n- type: global-strict-fairness-policy\n", "  - pluginRef: queue-scorer\n") +
			"featureGates: [flowControl]\nflowControl:\n  priorityBands:\n  - {priority: 1, fairnessPolicyRef: round-robin-fairness-policy}\n  - {priority: 0, fairnessPolicyRef: global-strict-fairness-policy}\n",
			"one per pool"},
		"a band bound": {base("- type: queue-scorer\n", "  - pluginRef: queue-scorer\n") +
			"featureGates: [flowControl]\nflowControl:\n  priorityBands:\n  - {priority: 1, maxRequests: \"10\"}\n", "per-band maxRequests"},
		"a policy ref of the wrong kind": {base("- type: queue-scorer\n- type: fcfs-ordering-policy\n", "  - pluginRef: queue-scorer\n") +
			"featureGates: [flowControl]\nflowControl:\n  defaultPriorityBand: {fairnessPolicyRef: fcfs-ordering-policy}\n", "want a fairness-policy"},
		"a dangling detector": {base("- type: queue-scorer\n", "  - pluginRef: queue-scorer\n") +
			"featureGates: [flowControl]\nflowControl:\n  saturationDetector: {pluginRef: concurrency-detector}\n", `"concurrency-detector" names no plugin`},
		"a concurrency headroom": {base("- type: queue-scorer\n- type: concurrency-detector\n  parameters: {headroom: 0.2}\n", "  - pluginRef: queue-scorer\n") +
			"featureGates: [flowControl]\nflowControl:\n  saturationDetector: {pluginRef: concurrency-detector}\n", "headroom is not supported"},
		"a bad quantity": {base("- type: queue-scorer\n", "  - pluginRef: queue-scorer\n") +
			"featureGates: [flowControl]\nflowControl: {maxRequests: lots}\n", "not a quantity"},
		"staleness in the saturation detector": {base("- type: queue-scorer\n", "  - pluginRef: queue-scorer\n") + "saturationDetector: {metricsStalenessThreshold: 150ms}\n",
			"--staleness-threshold"},
		"unknown saturation field": {base("- type: queue-scorer\n", "  - pluginRef: queue-scorer\n") + "saturationDetector: {kvCacheThreshold: 0.5}\n",
			`saturationDetector: parameters: unknown field "kvCacheThreshold"`},
		"GIE's token block size": {base("- type: prefix-cache-scorer\n  parameters:\n    blockSizeTokens: 16\n", "  - pluginRef: prefix-cache-scorer\n"),
			`unknown field "blockSizeTokens"`},
		"autoTune with a block size": {base("- type: prefix-cache-scorer\n  parameters:\n    autoTune: true\n    blockSize: 128\n", "  - pluginRef: prefix-cache-scorer\n"),
			"autoTune: true derives"},
		"a profile handler with a weight": {base("- type: single-profile-handler\n", "  - pluginRef: single-profile-handler\n    weight: 1\n"), "only scorers take a weight"},
		"unknown field":                   {base("- type: queue-scorer\n", "  - pluginRef: queue-scorer\n") + "schedulingProfile: []\n", `unknown field "schedulingProfile"`},
		"miscased field":                  {strings.Replace(base("- type: queue-scorer\n", "  - pluginRef: queue-scorer\n"), "plugins:\n- type", "Plugins:\n- type", 1), "Plugins"},
		"bad apiVersion":                  {strings.Replace(base("- type: queue-scorer\n", "  - pluginRef: queue-scorer\n"), "x-k8s.io/v1alpha1", "x-k8s.io/v9", 1), "apiVersion"},
		"negative weight":                 {base("- type: queue-scorer\n", "  - pluginRef: queue-scorer\n    weight: -1\n"), "weight -1"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := NewRegistry().ParseEndpointPickerConfig([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func FuzzEndpointPickerConfig(f *testing.F) {
	f.Add([]byte(gieDocConfig))
	f.Add([]byte("kind: EndpointPickerConfig\nplugins: [{type: random-picker}]\n"))
	f.Add([]byte("apiVersion: llm-d.ai/v1\nkind: EndpointPickerConfig\nfeatureGates: [flowControl]\nplugins: [{type: queue-scorer}, " +
		"{type: round-robin-fairness-policy}, {type: concurrency-detector, parameters: {maxConcurrency: 2}}]\n" +
		"flowControl: {maxRequests: 1k, maxBytes: 1Mi, defaultRequestTTL: 3s, saturationDetector: {pluginRef: concurrency-detector}, " +
		"priorityBands: [{priority: 1, fairnessPolicyRef: round-robin-fairness-policy}]}\n"))
	reg := NewRegistry()
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := reg.ParseEndpointPickerConfig(b)
		if err != nil {
			return
		}
		if err := reg.Validate(cfg); err != nil {
			t.Fatalf("accepted a config that does not validate: %v", err)
		}
		if fc := cfg.FlowControl.Default; fc.Enabled {
			if err := fc.Validate(); err != nil {
				t.Fatalf("accepted a flow-control config that does not validate: %v", err)
			}
		}
	})
}

// GIE's flowControl section: the gate turns flow control on with GIE's defaults
// (global-strict, FCFS); the section's quantities, TTL, detector plugin and the bands'
// policy refs (GIE type names, plugins declared in plugins:) map onto one pool config,
// and the flow-control plugins stay out of the scheduling profile.
func TestEndpointPickerConfigFlowControl(t *testing.T) {
	head := "apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\n"
	cfg, err := NewRegistry().ParseEndpointPickerConfig([]byte(head + "featureGates: [flowControl]\nplugins:\n- type: queue-scorer\n"))
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.FlowControl.Default
	if !d.Enabled || d.Fairness != flowcontrol.FairnessGlobalStrict || d.Ordering != flowcontrol.OrderingFCFS || d.Saturation.BatchLimit != flowcontrol.BatchLimitLearned {
		t.Fatalf("the gate alone: %+v", d)
	}
	cfg, err = NewRegistry().ParseEndpointPickerConfig([]byte(head + `featureGates: [flowControl]
plugins:
- type: queue-scorer
- {name: fair, type: token-weighted-fairness-policy, parameters: {outputTokenWeight: 3}}
- type: slo-deadline-ordering-policy
- {type: concurrency-detector, parameters: {maxConcurrency: 4}}
flowControl:
  maxRequests: 1k
  maxBytes: 1Mi
  defaultRequestTTL: 30s
  saturationDetector: {pluginRef: concurrency-detector}
  defaultPriorityBand: {fairnessPolicyRef: fair, orderingPolicyRef: slo-deadline-ordering-policy}
  priorityBands:
  - {priority: 100, fairnessPolicyRef: fair}
`))
	if err != nil {
		t.Fatal(err)
	}
	d = cfg.FlowControl.Default
	if !d.Enabled || d.MaxRequests != 1000 || d.MaxBytes != 1<<20 || d.RequestTTL != 30*time.Second ||
		d.Fairness != flowcontrol.FairnessTokenWeighted || d.OutputTokenWeight != 3 || d.Ordering != flowcontrol.OrderingEDF ||
		d.Saturation.MaxInFlightPerEndpoint != 4 || d.Saturation.BatchLimit != flowcontrol.BatchLimitNone {
		t.Fatalf("mapped config: %+v", d)
	}
	if len(cfg.Scorers) != 1 || len(cfg.Other) != 0 {
		t.Fatalf("flow-control plugins leaked into the profile: scorers %+v, other %+v", cfg.Scorers, cfg.Other)
	}
	// Without the gate, off.
	cfg, err = NewRegistry().ParseEndpointPickerConfig([]byte(head + "plugins:\n- type: queue-scorer\n"))
	if err != nil || cfg.FlowControl.Default.Enabled {
		t.Fatalf("no gate: %+v, %v", cfg.FlowControl.Default, err)
	}
}
