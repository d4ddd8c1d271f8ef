package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"

	"sigs.k8s.io/yaml"
)

// Plugin names accepted in a SchedulerConfig.
const (
	ScorerQueue        = "queue"
	ScorerKVCache      = "kv-cache"
	ScorerPrefix       = "prefix"
	ScorerLoRAAffinity = "lora-affinity"
	ScorerInFlight     = "in-flight"
	// ScorerPendingPrefill scores the prompt bytes the gateway sent an endpoint that have
	// not produced a first token yet.
	ScorerPendingPrefill = "pending-prefill"
	// ScorerLeastRecent scores the time since the endpoint was last picked.
	ScorerLeastRecent = "least-recent"

	FilterLoRAAffinity = "lora-affinity"

	PickerMaxScore = "max-score"
	PickerRandom   = "random"
)

// Defaults of the scheduler (queue 2, KV 2, prefix 3 as published by GIE; LoRA 1 and
// in-flight 1 are ours).
const (
	DefaultQueueWeight          = 2
	DefaultKVCacheWeight        = 2
	DefaultPrefixWeight         = 3
	DefaultLoRAAffinityWeight   = 1
	DefaultInFlightWeight       = 1
	DefaultPendingPrefillWeight = 3
	DefaultLeastRecentWeight    = 1

	// DefaultPrefixBlockSize is the prefix block size in characters (bytes of prompt text):
	// 64 characters are about 16 tokens at ~4 characters per token.
	DefaultPrefixBlockSize = 64
	// DefaultPrefixLRUCapacity is the per-endpoint number of prefix blocks remembered when
	// the engine's cache size is unknown (GIE's lruCapacityPerServer default).
	DefaultPrefixLRUCapacity = 31250
	// DefaultQueueDepthThreshold and DefaultKVCacheThreshold define saturation.
	DefaultQueueDepthThreshold = 5
	DefaultKVCacheThreshold    = 0.8
)

var (
	knownScorers = []string{ScorerQueue, ScorerKVCache, ScorerPrefix, ScorerLoRAAffinity, ScorerInFlight, ScorerPendingPrefill, ScorerLeastRecent, ScorerPrecisePrefix}
	knownFilters = []string{FilterLoRAAffinity}
	knownPickers = []string{PickerMaxScore, PickerRandom}
)

// SchedulerConfig is the plugin list of the scheduler: optional filters (the subset,
// model-serving and staleness filters always run), weighted scorers and a picker.
// Load it from YAML with ParseSchedulerConfig or LoadSchedulerConfig.
type SchedulerConfig struct {
	// Filters lists optional filters by name ("lora-affinity").
	Filters []string
	// Scorers lists scorers with their weights (each >= 0).
	Scorers []ScorerSpec
	// Picker is "max-score" (default: highest weighted sum, ties broken randomly) or
	// "random" (uniformly random order, scorers ignored).
	Picker string
	// Prefix holds the parameters of the prefix scorer.
	Prefix PrefixParams
	// Saturation defines when an endpoint is saturated (for ErrSaturated and the LoRA
	// filter).
	Saturation SaturationConfig
}

// ScorerSpec is one scorer with its weight.
type ScorerSpec struct {
	Name   string
	Weight float64
}

// PrefixParams parameterise the prefix-cache scorer.
type PrefixParams struct {
	// BlockSize is the number of prompt characters per hashed block. 0 (the default)
	// derives it per endpoint from the engine's KV block size (vllm:cache_config_info
	// block_size tokens × 4 characters: 512 for vLLM's 128-token CPU blocks), so that a
	// prefix counts only in whole engine blocks, the unit the engine caches; until the
	// engine reports it, and for engines that do not, DefaultPrefixBlockSize.
	BlockSize int `json:"blockSize"`
	// LRUCapacity is the number of blocks remembered per endpoint. 0 derives it from the
	// engine's vllm:cache_config_info (num_gpu_blocks × block_size tokens ÷ tokens per
	// block, at 4 characters per token) and uses DefaultPrefixLRUCapacity until known.
	LRUCapacity int `json:"lruCapacity"`
	// MaxBlocks caps the blocks of a prompt that are hashed and matched (0: 32768, the
	// hard cap). GIE's maxPrefixBlocksToMatch.
	MaxBlocks int `json:"maxBlocks"`
}

// SaturationConfig holds the thresholds of the saturation detector: an endpoint is
// saturated when its scraped waiting queue >= QueueDepthThreshold or its KV-cache use >=
// KVCacheThreshold (or its metrics are stale).
type SaturationConfig struct {
	QueueDepthThreshold float64 `json:"queueDepthThreshold"`
	KVCacheThreshold    float64 `json:"kvCacheThreshold"`
}

// DefaultSchedulerConfig returns the default plugins: the LoRA-affinity filter; scorers
// queue 2, kv-cache 2, prefix 3, lora-affinity 1, in-flight 1, pending-prefill 3; the
// max-score picker.
func DefaultSchedulerConfig() SchedulerConfig {
	return SchedulerConfig{
		Filters: []string{FilterLoRAAffinity},
		Scorers: []ScorerSpec{
			{Name: ScorerQueue, Weight: DefaultQueueWeight},
			{Name: ScorerKVCache, Weight: DefaultKVCacheWeight},
			{Name: ScorerPrefix, Weight: DefaultPrefixWeight},
			{Name: ScorerLoRAAffinity, Weight: DefaultLoRAAffinityWeight},
			{Name: ScorerInFlight, Weight: DefaultInFlightWeight},
			{Name: ScorerPendingPrefill, Weight: DefaultPendingPrefillWeight},
			{Name: ScorerLeastRecent, Weight: DefaultLeastRecentWeight},
		},
		Picker:     PickerMaxScore,
		Saturation: defaultSaturation(),
	}
}

func defaultSaturation() SaturationConfig {
	return SaturationConfig{QueueDepthThreshold: DefaultQueueDepthThreshold, KVCacheThreshold: DefaultKVCacheThreshold}
}

// PolicyConfig returns a ready-made scheduler config by name, for routing benchmarks:
// "default" (DefaultSchedulerConfig), "random" (uniformly random endpoint) and
// "least-queue" (queue and in-flight scorers only, weight 1 each).
func PolicyConfig(name string) (SchedulerConfig, error) {
	switch name {
	case "default", "":
		return DefaultSchedulerConfig(), nil
	case "random":
		return SchedulerConfig{Picker: PickerRandom, Prefix: PrefixParams{BlockSize: DefaultPrefixBlockSize}, Saturation: defaultSaturation()}, nil
	case "least-queue":
		return SchedulerConfig{
			Scorers:    []ScorerSpec{{Name: ScorerQueue, Weight: 1}, {Name: ScorerInFlight, Weight: 1}},
			Picker:     PickerMaxScore,
			Prefix:     PrefixParams{BlockSize: DefaultPrefixBlockSize},
			Saturation: defaultSaturation(),
		}, nil
	case "precise":
		// The default with the precise-prefix scorer in the prefix scorer's place: the
		// picker's default where model servers' KV events arrive (it falls back to the
		// approximate scorer per endpoint without them).
		c := DefaultSchedulerConfig()
		for i := range c.Scorers {
			if c.Scorers[i].Name == ScorerPrefix {
				c.Scorers[i].Name = ScorerPrecisePrefix
			}
		}
		return c, nil
	case "default-v0":
		// The default before pending-prefill and least-recent (issue 23), for A/B runs.
		c := DefaultSchedulerConfig()
		c.Scorers = slices.DeleteFunc(c.Scorers, func(s ScorerSpec) bool {
			return s.Name == ScorerPendingPrefill || s.Name == ScorerLeastRecent
		})
		return c, nil
	}
	return SchedulerConfig{}, fmt.Errorf("unknown routing policy %q (want default, default-v0, precise, random or least-queue)", name)
}

func (c SchedulerConfig) isZero() bool {
	return c.Filters == nil && c.Scorers == nil && c.Picker == "" && c.Prefix == (PrefixParams{}) && c.Saturation == (SaturationConfig{})
}

// Validate reports the first problem of the config with a clear message.
func (c SchedulerConfig) Validate() error {
	for _, f := range c.Filters {
		if !slices.Contains(knownFilters, f) {
			return fmt.Errorf("scheduler: unknown filter %q (known: %v)", f, knownFilters)
		}
	}
	seen := make(map[string]bool, len(c.Scorers))
	for i, s := range c.Scorers {
		if !slices.Contains(knownScorers, s.Name) {
			return fmt.Errorf("scheduler: scorers[%d]: unknown scorer %q (known: %v)", i, s.Name, knownScorers)
		}
		if seen[s.Name] {
			return fmt.Errorf("scheduler: scorers[%d]: scorer %q listed twice", i, s.Name)
		}
		seen[s.Name] = true
		if math.IsNaN(s.Weight) || math.IsInf(s.Weight, 0) || s.Weight < 0 {
			return fmt.Errorf("scheduler: scorers[%d] (%s): weight %v must be a finite number >= 0", i, s.Name, s.Weight)
		}
	}
	if !slices.Contains(knownPickers, c.Picker) {
		return fmt.Errorf("scheduler: unknown picker %q (known: %v)", c.Picker, knownPickers)
	}
	if c.Prefix.BlockSize < 0 {
		return fmt.Errorf("scheduler: prefix blockSize %d must be >= 0 (0 = derive from the engine)", c.Prefix.BlockSize)
	}
	if c.Prefix.MaxBlocks < 0 || c.Prefix.MaxBlocks > maxPrefixBlocks {
		return fmt.Errorf("scheduler: prefix maxBlocks %d must be in [0, %d] (0 = %d)", c.Prefix.MaxBlocks, maxPrefixBlocks, maxPrefixBlocks)
	}
	if c.Prefix.LRUCapacity < 0 {
		return fmt.Errorf("scheduler: prefix lruCapacity %d must be >= 0 (0 = derive from the engine)", c.Prefix.LRUCapacity)
	}
	q, kv := c.Saturation.QueueDepthThreshold, c.Saturation.KVCacheThreshold
	if math.IsNaN(q) || q <= 0 {
		return fmt.Errorf("scheduler: saturation queueDepthThreshold %v must be > 0", q)
	}
	if math.IsNaN(kv) || kv <= 0 || kv > 1 {
		return fmt.Errorf("scheduler: saturation kvCacheThreshold %v must be in (0, 1]", kv)
	}
	return nil
}

// The YAML shape; see README.md.
type rawSchedulerConfig struct {
	Filters    []rawPlugin    `json:"filters"`
	Scorers    []rawPlugin    `json:"scorers"`
	Picker     *string        `json:"picker"`
	Saturation *rawSaturation `json:"saturation"`
}

type rawPlugin struct {
	Name   string          `json:"name"`
	Weight *float64        `json:"weight"`
	Params json.RawMessage `json:"params"`
}

type rawSaturation struct {
	QueueDepthThreshold *float64 `json:"queueDepthThreshold"`
	KVCacheThreshold    *float64 `json:"kvCacheThreshold"`
}

// ParseSchedulerConfig parses and validates a YAML scheduler config. Unknown fields,
// unknown plugins, negative weights and bad parameters are errors. A scorer without a
// weight gets its default weight; omitted sections get their defaults; an omitted
// scorers list means the default scorers.
func ParseSchedulerConfig(data []byte) (SchedulerConfig, error) {
	var raw rawSchedulerConfig
	if err := yaml.UnmarshalStrict(data, &raw); err != nil {
		return SchedulerConfig{}, fmt.Errorf("scheduler config: %w", err)
	}
	if err := checkKeyCase(data); err != nil {
		return SchedulerConfig{}, fmt.Errorf("scheduler config: %w", err)
	}
	def := DefaultSchedulerConfig()
	cfg := SchedulerConfig{Picker: PickerMaxScore, Prefix: def.Prefix, Saturation: def.Saturation}
	if raw.Picker != nil {
		cfg.Picker = *raw.Picker
	}
	if raw.Filters == nil {
		cfg.Filters = def.Filters
	}
	for i, f := range raw.Filters {
		if f.Weight != nil || len(f.Params) > 0 && !bytes.Equal(f.Params, []byte("null")) {
			return SchedulerConfig{}, fmt.Errorf("scheduler config: filters[%d] (%s): filters take no weight or params", i, f.Name)
		}
		cfg.Filters = append(cfg.Filters, f.Name)
	}
	if raw.Scorers == nil {
		cfg.Scorers = def.Scorers
	}
	for i, s := range raw.Scorers {
		w, ok := defaultWeight(s.Name)
		if !ok {
			return SchedulerConfig{}, fmt.Errorf("scheduler config: scorers[%d]: unknown scorer %q (known: %v)", i, s.Name, knownScorers)
		}
		if s.Weight != nil {
			w = *s.Weight
		}
		if err := parseScorerParams(s, &cfg); err != nil {
			return SchedulerConfig{}, fmt.Errorf("scheduler config: scorers[%d] (%s): %w", i, s.Name, err)
		}
		cfg.Scorers = append(cfg.Scorers, ScorerSpec{Name: s.Name, Weight: w})
	}
	if raw.Saturation != nil {
		if raw.Saturation.QueueDepthThreshold != nil {
			cfg.Saturation.QueueDepthThreshold = *raw.Saturation.QueueDepthThreshold
		}
		if raw.Saturation.KVCacheThreshold != nil {
			cfg.Saturation.KVCacheThreshold = *raw.Saturation.KVCacheThreshold
		}
	}
	if err := cfg.Validate(); err != nil {
		return SchedulerConfig{}, fmt.Errorf("scheduler config: %w", err)
	}
	return cfg, nil
}

func defaultWeight(name string) (float64, bool) {
	switch name {
	case ScorerQueue:
		return DefaultQueueWeight, true
	case ScorerKVCache:
		return DefaultKVCacheWeight, true
	case ScorerPrefix, ScorerPrecisePrefix:
		return DefaultPrefixWeight, true
	case ScorerLoRAAffinity:
		return DefaultLoRAAffinityWeight, true
	case ScorerInFlight:
		return DefaultInFlightWeight, true
	case ScorerPendingPrefill:
		return DefaultPendingPrefillWeight, true
	case ScorerLeastRecent:
		return DefaultLeastRecentWeight, true
	}
	return 0, false
}

// parseScorerParams decodes the params of a scorer strictly; only prefix takes params.
func parseScorerParams(s rawPlugin, cfg *SchedulerConfig) error {
	if len(s.Params) == 0 || bytes.Equal(s.Params, []byte("null")) {
		return nil
	}
	if s.Name != ScorerPrefix {
		return errors.New("this scorer takes no params")
	}
	// Keys are checked exactly: encoding/json alone would match them case-insensitively.
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(s.Params, &fields); err != nil {
		return fmt.Errorf("params: %w", err)
	}
	for key, v := range fields {
		var dst *int
		switch key {
		case "blockSize":
			dst = &cfg.Prefix.BlockSize
		case "lruCapacity":
			dst = &cfg.Prefix.LRUCapacity
		case "maxBlocks":
			dst = &cfg.Prefix.MaxBlocks
		default:
			return fmt.Errorf("params: unknown field %q (known: blockSize, lruCapacity, maxBlocks)", key)
		}
		if err := json.Unmarshal(v, dst); err != nil {
			return fmt.Errorf("params: %s: %w", key, err)
		}
	}
	return nil
}

// LoadSchedulerConfig reads and parses a YAML scheduler config file: infergw's format, or
// GIE's EndpointPickerConfig (recognised by its kind).
func LoadSchedulerConfig(path string) (SchedulerConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return SchedulerConfig{}, fmt.Errorf("scheduler config: %w", err)
	}
	parse := ParseSchedulerConfig
	if IsEndpointPickerConfig(data) {
		parse = ParseEndpointPickerConfig // GIE's format, by its kind
	}
	cfg, err := parse(data)
	if err != nil {
		return SchedulerConfig{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Exact field names of the YAML shape. The strict YAML decoder matches keys
// case-insensitively ("Scorers" would pass); a config is checked against these too.
var (
	topLevelKeys   = []string{"filters", "scorers", "picker", "saturation"}
	pluginKeys     = []string{"name", "weight", "params"}
	saturationKeys = []string{"queueDepthThreshold", "kvCacheThreshold"}
)

// checkKeyCase rejects keys that differ from the documented ones only by case.
func checkKeyCase(data []byte) error {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return err
	}
	var top, saturation map[string]json.RawMessage
	if err := json.Unmarshal(js, &top); err != nil || top == nil {
		return nil //nolint:nilerr // not a mapping: the strict decoder has already judged it
	}
	if err := exactKeys("", top, topLevelKeys); err != nil {
		return err
	}
	for _, section := range []string{"filters", "scorers"} {
		var list []map[string]json.RawMessage
		if json.Unmarshal(top[section], &list) != nil {
			continue
		}
		for i, p := range list {
			if err := exactKeys(fmt.Sprintf("%s[%d].", section, i), p, pluginKeys); err != nil {
				return err
			}
		}
	}
	if json.Unmarshal(top["saturation"], &saturation) == nil {
		if err := exactKeys("saturation.", saturation, saturationKeys); err != nil {
			return err
		}
	}
	return nil
}

func exactKeys(prefix string, m map[string]json.RawMessage, known []string) error {
	for k := range m {
		if !slices.Contains(known, k) {
			return fmt.Errorf("unknown field %q (known: %v)", prefix+k, known)
		}
	}
	return nil
}
