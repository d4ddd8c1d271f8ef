package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/infergw/infergw/loadtest"
	"github.com/infergw/infergw/sim"
)

// policies are the routing policies compared, in table order. Only routing differs between
// them: the same manifests, sims, Envoy, seed and offered load.
var policies = []string{"round-robin", "random", "least-queue", "default"}

// extraPolicies run only when named: default-v0 is the default scorer set before issue 23
// (no pending-prefill, no least-recent), for A/B runs against the current default;
// default-fixed the default with the prefix LRU sized as GIE ships its approximate scorer
// (31,250 blocks per pod whatever the engine's KV cache), the guess llm-d compares with.
var extraPolicies = []string{"default-v0", "default-fixed", "precise", "oracle"}

// policySpec is a policy name parsed: its scorer set (Base) and how its routing layer runs.
// "precise-x2" runs two picker replicas as processes of their own behind the one Envoy (a
// picker Service with two endpoints); "precise-x2-restart" also restarts the first replica
// in the middle of the measured window. Without -xN the picker runs in `infergw up`'s
// process. "oracle" is the precise scorer answered by the sims' own cache state
// (kvroute.Oracle): the upper bound of what knowing every pod's cache gives.
type policySpec struct {
	Base    string
	Pickers int  // picker replicas run apart (0: in the up process)
	Restart bool // restart replica 0 halfway through the measured window
	// Shadow (precise-shadow): precise routing whose every answer is also compared with
	// the oracle's (the picker's infergw_precise_prefix_shadow_* metrics): where and why
	// the events' view of the pods departs from the pods' own.
	Shadow bool
}

// parsePolicy reads BASE[-xN][-restart].
func parsePolicy(name string) (policySpec, error) {
	s := policySpec{Base: name}
	if name == "precise-shadow" {
		return policySpec{Base: "precise", Shadow: true}, nil
	}
	if b, ok := strings.CutSuffix(s.Base, "-restart"); ok {
		s.Base, s.Restart = b, true
	}
	if i := strings.LastIndex(s.Base, "-x"); i > 0 {
		n, err := strconv.Atoi(s.Base[i+2:])
		if err != nil || n < 1 || n > 8 {
			return s, fmt.Errorf("policy %q: -xN wants 1 to 8 picker replicas", name)
		}
		s.Base, s.Pickers = s.Base[:i], n
	}
	if !slices.Contains(policies, s.Base) && !slices.Contains(extraPolicies, s.Base) {
		return s, fmt.Errorf("policy %q: unknown scorer set %q", name, s.Base)
	}
	if s.Restart && s.Pickers == 0 {
		return s, fmt.Errorf("policy %q: -restart needs picker replicas run apart (-xN)", name)
	}
	if s.Pickers > 0 && (s.Base == "round-robin" || s.Base == "oracle" || s.Base == "default-fixed" || s.Base == "default-v0") {
		return s, fmt.Errorf("policy %q: %s runs no separate picker replicas (replicas run the built-in default or precise scorers)", name, s.Base)
	}
	return s, nil
}

// workloadSpec is one benchmark workload. ModelRate is in requests per second of modelled
// GPU time; the load tester sends ModelRate / TimeScale per wall-clock second, so the load
// relative to the fleet's capacity does not depend on the time scale.
type workloadSpec struct {
	Name        string                   `json:"name"`
	Description string                   `json:"description"`
	ModelRate   float64                  `json:"model_rate"`
	Warmup      time.Duration            `json:"warmup"`
	Duration    time.Duration            `json:"duration"`
	Models      []loadtest.WeightedModel `json:"models"`
	Workload    loadtest.WorkloadConfig  `json:"workload"`
	// HeavyTail, when set, generates the ShareGPT file the workload reads.
	HeavyTail *heavyTail `json:"heavy_tail,omitempty"`
}

// plan is everything a benchmark run depends on.
type plan struct {
	Pods      int            `json:"pods"`
	TimeScale float64        `json:"time_scale"`
	Seed      uint64         `json:"seed"`
	Arrival   string         `json:"arrival"`
	Sim       sim.Config     `json:"-"`
	SimInfo   simSummary     `json:"sim"`
	Workloads []workloadSpec `json:"workloads"`
	// DefaultWorkloads run when --workloads is not given (kv-pressure only with --kv-pressure).
	DefaultWorkloads []workloadSpec `json:"-"`
	Policies         []string       `json:"policies"`
	// Repeat is the number of rounds: each runs every workload × policy once, with the
	// request sequence's seed Seed+round-1 (the same for every policy of the round).
	Repeat int `json:"repeat"`
}

// simSummary is the part of the sim config the report shows.
type simSummary struct {
	KVBlocks     int     `json:"kv_blocks"`
	BlockSize    int     `json:"block_size"`
	KVTokens     int     `json:"kv_tokens"`
	MaxLoRAs     int     `json:"max_loras"`
	Adapters     int     `json:"lora_adapters"`
	MaxNumSeqs   int     `json:"max_num_seqs"`
	BatchTokens  int     `json:"max_num_batched_tokens"`
	StepOverhead string  `json:"step_overhead"`
	PrefillTok   string  `json:"prefill_per_token"`
	DecodeSeq    string  `json:"decode_per_seq"`
	LoRALoad     string  `json:"lora_load_cost"`
	TimeScale    float64 `json:"time_scale"`
}

const baseModel = "meta-llama/Llama-3.1-8B-Instruct"

func adapterNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("bench-lora-%02d", i)
	}
	return out
}

// simConfig is the fleet's per-pod model: the sim defaults (an 8B model on one H100-class
// GPU) with a KV cache of kvBlocks×blockSize tokens and two LoRA slots.
func simConfig(kvBlocks, blockSize, adapters int, timeScale float64) sim.Config {
	c := sim.DefaultConfig()
	c.Model = baseModel
	c.KVBlocks = kvBlocks
	c.BlockSize = blockSize
	c.MaxLoRAs = 2
	c.LoRAAdapters = adapterNames(adapters)
	c.TimeScale = timeScale
	return c
}

func summarizeSim(c sim.Config) simSummary {
	return simSummary{
		KVBlocks: c.KVBlocks, BlockSize: c.BlockSize, KVTokens: c.KVBlocks * c.BlockSize,
		MaxLoRAs: c.MaxLoRAs, Adapters: len(c.LoRAAdapters), MaxNumSeqs: c.MaxNumSeqs,
		BatchTokens: c.MaxNumBatchedTokens, StepOverhead: c.StepOverhead.String(),
		PrefillTok: c.PrefillPerToken.String(), DecodeSeq: c.DecodePerSeq.String(),
		LoRALoad: c.LoRALoadCost.String(), TimeScale: c.TimeScale,
	}
}

// options are the command-line knobs that shape a plan.
type options struct {
	Quick      bool
	Pods       int
	TimeScale  float64
	KVBlocks   int
	BlockSize  int
	Adapters   int
	Seed       uint64
	RateFactor float64
	Duration   time.Duration
	Warmup     time.Duration
	// KVPressure adds the kv-pressure workload to the default set.
	KVPressure bool
	// Repeat: rounds of every cell (>= 1), policies interleaved within a round.
	Repeat int
	// Tokenizer: every sim of the run tokenizes with this model's tokenizer.json (the
	// precise policy needs the picker and the sims to agree on tokens).
	Tokenizer string
}

// buildPlan returns the full benchmark, or the smoke version with --quick: fewer pods,
// shorter runs, same shapes.
func buildPlan(o options) (plan, error) {
	if o.Pods < 1 || o.TimeScale <= 0 || o.KVBlocks < 1 || o.Adapters < 1 || o.RateFactor <= 0 {
		return plan{}, fmt.Errorf("plan: pods, time scale, kv blocks, adapters and rate factor must be positive")
	}
	if o.Repeat > maxRepeat {
		return plan{}, fmt.Errorf("plan: --repeat %d: at most %d rounds", o.Repeat, maxRepeat)
	}
	if o.BlockSize == 0 {
		o.BlockSize = sim.DefaultConfig().BlockSize
	}
	sc := simConfig(o.KVBlocks, o.BlockSize, o.Adapters, o.TimeScale)
	sc.Tokenizer = o.Tokenizer
	p := plan{Pods: o.Pods, TimeScale: o.TimeScale, Seed: o.Seed, Arrival: "poisson", Sim: sc,
		SimInfo: summarizeSim(sc), Policies: policies, Repeat: max(o.Repeat, 1)}
	warm, dur := 10*time.Second, 30*time.Second
	if o.Quick {
		warm, dur = 5*time.Second, 6*time.Second
	}
	if o.Warmup > 0 {
		warm = o.Warmup
	}
	if o.Duration > 0 {
		dur = o.Duration
	}
	// Per-pod rates are scaled by the fleet size so that --pods keeps the load per pod.
	perPod := func(r float64) float64 { return r * float64(o.Pods) * o.RateFactor }
	lora := make([]loadtest.WeightedModel, 0, o.Adapters)
	for _, a := range sc.LoRAAdapters {
		lora = append(lora, loadtest.WeightedModel{Name: a, Weight: 1})
	}
	p.Workloads = []workloadSpec{
		{
			Name: "shared-prefix",
			Description: "64 groups, each a 1,500-word system prompt (~2,650 sim tokens), a 32-word unique " +
				"question, 64 output tokens",
			ModelRate: perPod(sharedPrefixPerPodRate), Warmup: warm, Duration: dur,
			Models: []loadtest.WeightedModel{{Name: baseModel, Weight: 1}},
			Workload: loadtest.WorkloadConfig{Kind: "shared-prefix", Groups: 64, PrefixTokens: sharedPrefixTokens,
				SuffixTokens: 32, Output: loadtest.LengthDist{Kind: "fixed", Mean: 64}},
		},
		{
			Name: "kv-pressure",
			Description: fmt.Sprintf("the shared-prefix shape with %d groups: a working set of ~%d prompt tokens, "+
				"about twice the fleet's KV cache (%d tokens), so pods evict", kvPressureGroups(sc, o.Pods),
				kvPressureGroups(sc, o.Pods)*prefixTokens(sc), sc.KVBlocks*sc.BlockSize*o.Pods),
			ModelRate: perPod(sharedPrefixPerPodRate), Warmup: warm, Duration: dur,
			Models: []loadtest.WeightedModel{{Name: baseModel, Weight: 1}},
			Workload: loadtest.WorkloadConfig{Kind: "shared-prefix", Groups: kvPressureGroups(sc, o.Pods), PrefixTokens: sharedPrefixTokens,
				SuffixTokens: 32, Output: loadtest.LengthDist{Kind: "fixed", Mean: 64}},
		},
		{
			Name: "mixed-lengths",
			Description: "unique prompts, log-normal lengths: prompt median 300 words (σ 1.0, ≤ 3,000), " +
				"output median 100 (σ 0.9, ≤ 1,000)",
			ModelRate: perPod(mixedPerPodRate), Warmup: warm, Duration: dur,
			Models: []loadtest.WeightedModel{{Name: baseModel, Weight: 1}},
			HeavyTail: &heavyTail{Conversations: 4000, PromptMedian: 300, PromptSigma: 1.0, PromptMax: 3000,
				OutputMedian: 100, OutputSigma: 0.9, OutputMax: 1000},
			Workload: loadtest.WorkloadConfig{Kind: "sharegpt"},
		},
		{
			Name: "unique",
			Description: "unique prompts (no shared prefix), 64–1,024 words uniform, 128 output tokens, " +
				"moderate load",
			ModelRate: perPod(uniquePerPodRate), Warmup: warm, Duration: dur,
			Models: []loadtest.WeightedModel{{Name: baseModel, Weight: 1}},
			Workload: loadtest.WorkloadConfig{Kind: "synthetic",
				Input:  loadtest.LengthDist{Kind: "uniform", Min: 64, Max: 1024, Mean: 544},
				Output: loadtest.LengthDist{Kind: "fixed", Mean: 128}},
		},
		{
			Name:        "unique-high",
			Description: "the unique workload at high load",
			ModelRate:   perPod(uniqueHighPerPodRate), Warmup: warm, Duration: dur,
			Models: []loadtest.WeightedModel{{Name: baseModel, Weight: 1}},
			Workload: loadtest.WorkloadConfig{Kind: "synthetic",
				Input:  loadtest.LengthDist{Kind: "uniform", Min: 64, Max: 1024, Mean: 544},
				Output: loadtest.LengthDist{Kind: "fixed", Mean: 128}},
		},
		{
			Name: "lora-mix",
			Description: fmt.Sprintf("%d adapters, equal traffic, 2 adapter slots per pod; prompts 256±64 "+
				"words, 128 output tokens", o.Adapters),
			ModelRate: perPod(loraPerPodRate), Warmup: warm, Duration: dur,
			Models: lora,
			Workload: loadtest.WorkloadConfig{Kind: "synthetic",
				Input:  loadtest.LengthDist{Kind: "normal", Mean: 256, StdDev: 64},
				Output: loadtest.LengthDist{Kind: "fixed", Mean: 128}},
		},
	}
	if !o.KVPressure {
		// Named with --workloads it still runs (selectWorkloads reads from the full list).
		p.DefaultWorkloads = slices.DeleteFunc(slices.Clone(p.Workloads), func(w workloadSpec) bool { return w.Name == "kv-pressure" })
	} else {
		p.DefaultWorkloads = p.Workloads
	}
	return p, nil
}

// sharedPrefixSimTokens is the sim's token count of one shared-prefix group's system prompt
// (1,500 words; the sim's tokenizer counts ~1.77 tokens per generated word).
const sharedPrefixSimTokens = 2650

// sharedPrefixTokens is the shared-prefix workloads' PrefixTokens: model tokens when the
// sims and the load tester share a tokenizer, words otherwise.
const sharedPrefixTokens = 1500

// prefixTokens is the sims' token count of one shared-prefix group's system prompt: exactly
// sharedPrefixTokens when the load tester writes prompts in the model's tokens
// (--tokenizer), sharedPrefixSimTokens when it writes words.
func prefixTokens(sc sim.Config) int {
	if sc.Tokenizer != "" {
		return sharedPrefixTokens
	}
	return sharedPrefixSimTokens
}

// kvPressureGroups is the number of shared-prefix groups whose prompts add up to twice the
// fleet's KV cache: every pod must evict to serve them all.
func kvPressureGroups(sc sim.Config, pods int) int {
	return max(1, 2*sc.KVBlocks*sc.BlockSize*pods/prefixTokens(sc))
}

// Offered load per pod, in requests per modelled second; see README.md for how each was
// chosen (near the round-robin fleet's saturation).
const (
	sharedPrefixPerPodRate = 6.0
	mixedPerPodRate        = 9.6
	loraPerPodRate         = 6.0
	uniquePerPodRate       = 5.0
	uniqueHighPerPodRate   = 10.0
)
