package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"

	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/infergw/infergw/flowcontrol"
)

// Names of the built-in plugins in infergw's own format (filters[].name, scorers[].name,
// picker), also the names their scores carry in Decision.Scores.
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

// Type names of the built-in plugins (GIE's where the behaviour matches GIE's plugin), as
// an EndpointPickerConfig's plugins[].type and PluginSpec.Type name them.
const (
	TypeQueueScorer          = "queue-scorer"
	TypeKVCacheScorer        = "kv-cache-utilization-scorer"
	TypePrefixScorer         = "prefix-cache-scorer"
	TypeLoRAAffinityScorer   = "lora-affinity-scorer"
	TypeInFlightScorer       = "in-flight-scorer"
	TypePendingPrefillScorer = "pending-prefill-scorer"
	TypeLeastRecentScorer    = "least-recent-scorer"
	TypeLoRAAffinityFilter   = "lora-affinity-filter"
	TypeMaxScorePicker       = "max-score-picker"
	TypeRandomPicker         = "random-picker"
	TypeSingleProfileHandler = "single-profile-handler"
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

// SchedulerConfig is the scheduler's profile: optional filters (the subset, model-serving,
// staleness and ejection filters always run), weighted scorers and a picker, each a plugin
// of a Registry. Read it from infergw's format or GIE's EndpointPickerConfig with
// Registry.ParseSchedulerConfig or Registry.LoadSchedulerConfig.
type SchedulerConfig struct {
	// Filters run in order after the built-in filters.
	Filters []PluginSpec
	// Scorers are summed with their weights (each >= 0; 0 turns the scorer off).
	Scorers []PluginSpec
	// Picker chooses from the ranked candidates (Type "" = the max-score picker).
	Picker PluginSpec
	// Saturation defines when an endpoint is saturated (for ErrSaturated and the LoRA
	// filter).
	Saturation SaturationConfig
	// Other holds plugins an EndpointPickerConfig defines that no scheduling profile wires
	// (a flow-control policy of a kind another package registered, say). They are
	// validated with the config; their package builds them with Registry.Build.
	Other []PluginSpec
	// FlowControl is the queuing of requests at the gateway per pool (flowcontrol.go);
	// the zero value is off.
	FlowControl FlowControlConfig
}

// PluginSpec is one plugin instance of a scheduler config.
type PluginSpec struct {
	// Type is a registered type name or alias (e.g. TypeQueueScorer).
	Type string
	// Name names the instance (its scores in Decision.Scores, errors); "" = Type.
	Name string
	// Weight is a scorer's weight (>= 0, 0 = off); filters and pickers take none.
	Weight float64
	// Parameters are nil (the type's defaults), JSON (json.RawMessage, decoded strictly
	// over the defaults) or the type's parameter struct (e.g. PrefixParams).
	Parameters any
}

func (s PluginSpec) displayName() string {
	if s.Name != "" {
		return s.Name
	}
	return s.Type
}

// SaturationConfig holds the thresholds of the saturation detector: an endpoint is
// saturated when its scraped waiting queue >= QueueDepthThreshold or its KV-cache use >=
// KVCacheThreshold (or its metrics are stale).
type SaturationConfig struct {
	QueueDepthThreshold float64 `json:"queueDepthThreshold"`
	KVCacheThreshold    float64 `json:"kvCacheThreshold"`
}

func (s SaturationConfig) validate() error {
	q, kv := s.QueueDepthThreshold, s.KVCacheThreshold
	if math.IsNaN(q) || q <= 0 {
		return fmt.Errorf("saturation queueDepthThreshold %v must be > 0", q)
	}
	if math.IsNaN(kv) || kv <= 0 || kv > 1 {
		return fmt.Errorf("saturation kvCacheThreshold %v must be in (0, 1]", kv)
	}
	return nil
}

// DefaultSchedulerConfig returns the default plugins: the LoRA-affinity filter; scorers
// queue 2, kv-cache 2, prefix 3, lora-affinity 1, in-flight 1, pending-prefill 3,
// least-recent 1; the max-score picker.
func DefaultSchedulerConfig() SchedulerConfig {
	return SchedulerConfig{
		Filters: []PluginSpec{{Type: TypeLoRAAffinityFilter, Name: FilterLoRAAffinity}},
		Scorers: []PluginSpec{
			{Type: TypeQueueScorer, Name: ScorerQueue, Weight: DefaultQueueWeight},
			{Type: TypeKVCacheScorer, Name: ScorerKVCache, Weight: DefaultKVCacheWeight},
			{Type: TypePrefixScorer, Name: ScorerPrefix, Weight: DefaultPrefixWeight},
			{Type: TypeLoRAAffinityScorer, Name: ScorerLoRAAffinity, Weight: DefaultLoRAAffinityWeight},
			{Type: TypeInFlightScorer, Name: ScorerInFlight, Weight: DefaultInFlightWeight},
			{Type: TypePendingPrefillScorer, Name: ScorerPendingPrefill, Weight: DefaultPendingPrefillWeight},
			{Type: TypeLeastRecentScorer, Name: ScorerLeastRecent, Weight: DefaultLeastRecentWeight},
		},
		Picker:     PluginSpec{Type: TypeMaxScorePicker, Name: PickerMaxScore},
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
		return SchedulerConfig{Picker: PluginSpec{Type: TypeRandomPicker, Name: PickerRandom}, Saturation: defaultSaturation()}, nil
	case "least-queue":
		return SchedulerConfig{
			Scorers: []PluginSpec{
				{Type: TypeQueueScorer, Name: ScorerQueue, Weight: 1},
				{Type: TypeInFlightScorer, Name: ScorerInFlight, Weight: 1},
			},
			Picker:     PluginSpec{Type: TypeMaxScorePicker, Name: PickerMaxScore},
			Saturation: defaultSaturation(),
		}, nil
	case "precise":
		// The default with the precise-prefix scorer in the prefix scorer's place: the
		// picker's default where model servers' KV events arrive (it falls back to the
		// approximate scorer per endpoint without them). Needs the scorer registered
		// (PrecisePrefixType).
		c := DefaultSchedulerConfig()
		for i := range c.Scorers {
			if c.Scorers[i].Type == TypePrefixScorer {
				c.Scorers[i] = PluginSpec{Type: TypePrecisePrefixScorer, Name: ScorerPrecisePrefix, Weight: DefaultPrefixWeight}
			}
		}
		return c, nil
	case "default-v0":
		// The default before pending-prefill and least-recent (issue 23), for A/B runs.
		c := DefaultSchedulerConfig()
		c.Scorers = slices.DeleteFunc(c.Scorers, func(s PluginSpec) bool {
			return s.Type == TypePendingPrefillScorer || s.Type == TypeLeastRecentScorer
		})
		return c, nil
	case "default-fixed":
		// The default with the prefix scorer sized as GIE ships its approximate scorer
		// (autoTune false: 64-character blocks, 31,250 per endpoint, whatever the engine
		// reports), for benchmarks: the guess that believes a pod still holds what it evicted.
		c := DefaultSchedulerConfig()
		for i := range c.Scorers {
			if c.Scorers[i].Type == TypePrefixScorer {
				c.Scorers[i].Parameters = PrefixParams{BlockSize: DefaultPrefixBlockSize, LRUCapacity: DefaultPrefixLRUCapacity}
			}
		}
		return c, nil
	}
	return SchedulerConfig{}, fmt.Errorf("unknown routing policy %q (want default, default-v0, default-fixed, precise, random or least-queue)", name)
}

func (c SchedulerConfig) isZero() bool {
	return c.Filters == nil && c.Scorers == nil && c.Picker.Type == "" && c.Picker.Parameters == nil &&
		c.Saturation == (SaturationConfig{}) && c.Other == nil &&
		c.FlowControl.Default == (flowcontrol.Config{}) && c.FlowControl.Pools == nil
}

// Validate builds every plugin of the config (and throws them away) and reports the first
// problem, naming the plugin and, for parameters, the field.
func (r *Registry) Validate(c SchedulerConfig) error {
	_, err := r.newScheduler(c)
	return err
}

// The shape of infergw's own format; see README.md.
type rawSchedulerConfig struct {
	Filters    []rawPlugin    `json:"filters"`
	Scorers    []rawPlugin    `json:"scorers"`
	Picker     *string        `json:"picker"`
	Saturation *rawSaturation `json:"saturation"`
	// FlowControl is decoded strictly by the same decoder (flowcontrol.go).
	FlowControl *rawFlowControl `json:"flowControl"`
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

// ParseSchedulerConfig reads a scheduler config in infergw's format or, recognised by its
// kind, GIE's EndpointPickerConfig (ParseEndpointPickerConfig), and validates it.
func (r *Registry) ParseSchedulerConfig(data []byte) (SchedulerConfig, error) {
	if IsEndpointPickerConfig(data) {
		return r.ParseEndpointPickerConfig(data)
	}
	return r.parseNative(data)
}

// parseNative reads infergw's format. Unknown or miscased fields, unknown plugins,
// negative weights and bad parameters are errors. A scorer without a weight gets its type's
// default weight; omitted sections get their defaults; an omitted scorers list means the
// default scorers; `filters: []` turns the default filter off.
func (r *Registry) parseNative(data []byte) (SchedulerConfig, error) {
	var raw rawSchedulerConfig
	if err := decodeYAMLStrict(data, &raw); err != nil {
		return SchedulerConfig{}, fmt.Errorf("scheduler config: %w", err)
	}
	def := DefaultSchedulerConfig()
	cfg := SchedulerConfig{Picker: def.Picker, Saturation: def.Saturation}
	if raw.Picker != nil {
		t, ok := r.lookupNative(KindPicker, *raw.Picker)
		if !ok {
			return SchedulerConfig{}, fmt.Errorf("scheduler config: unknown picker %q (known: %s)", *raw.Picker, r.names(KindPicker, true))
		}
		cfg.Picker = PluginSpec{Type: t.Type, Name: *raw.Picker}
	}
	if raw.Filters == nil {
		cfg.Filters = def.Filters
	}
	for i, f := range raw.Filters {
		t, ok := r.lookupNative(KindFilter, f.Name)
		if !ok {
			return SchedulerConfig{}, fmt.Errorf("scheduler config: filters[%d]: unknown filter %q (known: %s)", i, f.Name, r.names(KindFilter, true))
		}
		if f.Weight != nil {
			return SchedulerConfig{}, fmt.Errorf("scheduler config: filters[%d] (%s): filters take no weight", i, f.Name)
		}
		cfg.Filters = append(cfg.Filters, PluginSpec{Type: t.Type, Name: f.Name, Parameters: rawOrNil(f.Params)})
	}
	if raw.Scorers == nil {
		cfg.Scorers = def.Scorers
	}
	for i, s := range raw.Scorers {
		t, ok := r.lookupNative(KindScorer, s.Name)
		if !ok {
			return SchedulerConfig{}, fmt.Errorf("scheduler config: scorers[%d]: unknown scorer %q (known: %s)", i, s.Name, r.names(KindScorer, true))
		}
		w := t.DefaultWeight
		if s.Weight != nil {
			w = *s.Weight
		}
		cfg.Scorers = append(cfg.Scorers, PluginSpec{Type: t.Type, Name: s.Name, Weight: w, Parameters: rawOrNil(s.Params)})
	}
	if raw.Saturation != nil {
		if raw.Saturation.QueueDepthThreshold != nil {
			cfg.Saturation.QueueDepthThreshold = *raw.Saturation.QueueDepthThreshold
		}
		if raw.Saturation.KVCacheThreshold != nil {
			cfg.Saturation.KVCacheThreshold = *raw.Saturation.KVCacheThreshold
		}
	}
	if err := r.Validate(cfg); err != nil {
		return SchedulerConfig{}, fmt.Errorf("scheduler config: %w", err)
	}
	fc, err := r.compileFlowControl(raw.FlowControl, cfg.Saturation)
	if err != nil {
		return SchedulerConfig{}, fmt.Errorf("scheduler config: %w", err)
	}
	cfg.FlowControl = fc
	return cfg, nil
}

// rawOrNil keeps absent parameters nil (the type's defaults).
func rawOrNil(m json.RawMessage) any {
	if len(bytes.TrimSpace(m)) == 0 {
		return nil
	}
	return m
}

// decodeYAMLStrict decodes YAML through JSON with sigs.k8s.io/json's strict mode: unknown,
// duplicate and miscased fields are errors (YAML's own strict decoder matches keys
// case-insensitively).
func decodeYAMLStrict(data []byte, dst any) error {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return err
	}
	if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
		js = []byte("{}") // an empty file is an empty config
	}
	strict, err := kjson.UnmarshalStrict(js, dst, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	if len(strict) > 0 {
		return errors.Join(strict...)
	}
	return nil
}

// LoadSchedulerConfig reads and parses a scheduler config file: infergw's format, or GIE's
// EndpointPickerConfig (recognised by its kind).
func (r *Registry) LoadSchedulerConfig(path string) (SchedulerConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return SchedulerConfig{}, fmt.Errorf("scheduler config: %w", err)
	}
	cfg, err := r.ParseSchedulerConfig(data)
	if err != nil {
		return SchedulerConfig{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}
