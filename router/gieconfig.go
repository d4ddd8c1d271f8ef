package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// GIE's EndpointPickerConfig (the Gateway API Inference Extension's and llm-d's EPP
// configuration file) read into a SchedulerConfig: the plugins a GIE user already runs,
// mapped by type to infergw's plugins where the behaviour matches. Anything else is refused
// with a message naming it, never silently dropped.

// gieKind is the kind of GIE's file, whatever its apiVersion.
const gieKind = "EndpointPickerConfig"

// gieAPIVersions are the apiVersions GIE and llm-d have published the file under.
var gieAPIVersions = []string{
	"inference.networking.x-k8s.io/v1alpha1",
	"config.apix.gateway-api-inference-extension.sigs.k8s.io/v1alpha1",
	"llm-d.ai/v1alpha1",
	"llm-d.ai/v1",
}

type gieConfig struct {
	APIVersion         string       `json:"apiVersion"`
	Kind               string       `json:"kind"`
	Plugins            []giePlugin  `json:"plugins"`
	SchedulingProfiles []gieProfile `json:"schedulingProfiles"`
	// Sections infergw does not implement in this form: present means refused.
	FeatureGates       json.RawMessage `json:"featureGates"`
	SaturationDetector json.RawMessage `json:"saturationDetector"`
	DataLayer          json.RawMessage `json:"dataLayer"`
	FlowControl        json.RawMessage `json:"flowControl"`
	Parser             json.RawMessage `json:"parser"`
	RequestHandler     json.RawMessage `json:"requestHandler"`
}

type giePlugin struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Parameters json.RawMessage `json:"parameters"`
}

type gieProfile struct {
	Name    string             `json:"name"`
	Plugins []gieProfilePlugin `json:"plugins"`
}

type gieProfilePlugin struct {
	PluginRef string   `json:"pluginRef"`
	Weight    *float64 `json:"weight"`
}

// giePluginKind says what a GIE plugin type becomes here.
type giePluginKind struct {
	role   string // "scorer", "filter", "picker", "profile-handler"
	ours   string // infergw's plugin name ("" for the profile handler)
	params func(raw json.RawMessage, cfg *SchedulerConfig) error
}

// giePluginTypes maps GIE's plugin types (and infergw's own scorers, so that a GIE-format
// file can use them) to infergw's plugins. Only types whose behaviour matches are here.
var giePluginTypes = map[string]giePluginKind{
	"queue-scorer":                {role: "scorer", ours: ScorerQueue, params: noParams},
	"kv-cache-scorer":             {role: "scorer", ours: ScorerKVCache, params: noParams},
	"kv-cache-utilization-scorer": {role: "scorer", ours: ScorerKVCache, params: noParams},
	"prefix-cache-scorer":         {role: "scorer", ours: ScorerPrefix, params: giePrefixParams},
	"lora-affinity-scorer":        {role: "scorer", ours: ScorerLoRAAffinity, params: noParams},
	"in-flight-scorer":            {role: "scorer", ours: ScorerInFlight, params: noParams},
	"pending-prefill-scorer":      {role: "scorer", ours: ScorerPendingPrefill, params: noParams},
	"least-recent-scorer":         {role: "scorer", ours: ScorerLeastRecent, params: noParams},
	"lora-affinity-filter":        {role: "filter", ours: FilterLoRAAffinity, params: gieLoRAFilterParams},
	"max-score-picker":            {role: "picker", ours: PickerMaxScore, params: giePickerParams},
	"random-picker":               {role: "picker", ours: PickerRandom, params: giePickerParams},
	"single-profile-handler":      {role: "profile-handler", params: noParams},
}

// IsEndpointPickerConfig reports whether data is a GIE EndpointPickerConfig (by its kind).
func IsEndpointPickerConfig(data []byte) bool {
	var head struct {
		Kind string `json:"kind"`
	}
	return yaml.Unmarshal(data, &head) == nil && head.Kind == gieKind
}

// ParseEndpointPickerConfig reads GIE's EndpointPickerConfig: plugins by type with their
// parameters, and one scheduling profile whose pluginRefs choose the filters, the weighted
// scorers and the picker. Unknown fields, unknown or unsupported plugin types and
// parameters, several profiles and sections infergw does not implement are errors that
// name them. Saturation thresholds keep infergw's defaults.
func ParseEndpointPickerConfig(data []byte) (SchedulerConfig, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return SchedulerConfig{}, fmt.Errorf("EndpointPickerConfig: %w", err)
	}
	var raw gieConfig
	strict, err := kjson.UnmarshalStrict(js, &raw)
	if err != nil {
		return SchedulerConfig{}, fmt.Errorf("EndpointPickerConfig: %w", err)
	}
	if len(strict) > 0 {
		return SchedulerConfig{}, fmt.Errorf("EndpointPickerConfig: %w", errors.Join(strict...))
	}
	if raw.Kind != gieKind {
		return SchedulerConfig{}, fmt.Errorf("EndpointPickerConfig: kind %q, want %s", raw.Kind, gieKind)
	}
	if !slices.Contains(gieAPIVersions, raw.APIVersion) {
		return SchedulerConfig{}, fmt.Errorf("EndpointPickerConfig: apiVersion %q (known: %s)", raw.APIVersion, strings.Join(gieAPIVersions, ", "))
	}
	for name, section := range map[string]json.RawMessage{"featureGates": raw.FeatureGates, "saturationDetector": raw.SaturationDetector,
		"dataLayer": raw.DataLayer, "flowControl": raw.FlowControl, "parser": raw.Parser, "requestHandler": raw.RequestHandler} {
		if len(section) > 0 && !bytes.Equal(section, []byte("null")) {
			return SchedulerConfig{}, fmt.Errorf("EndpointPickerConfig: %s is not supported by infergw (its saturation thresholds are set in its own scheduler config)", name)
		}
	}

	cfg := SchedulerConfig{Picker: PickerMaxScore, Scorers: []ScorerSpec{}, Saturation: defaultSaturation()}
	byName := map[string]giePluginKind{}
	for i, p := range raw.Plugins {
		kind, ok := giePluginTypes[p.Type]
		if !ok {
			return SchedulerConfig{}, fmt.Errorf("EndpointPickerConfig: plugins[%d]: type %q is not supported by infergw (supported: %s)", i, p.Type, strings.Join(gieTypeNames(), ", "))
		}
		name := p.Name
		if name == "" {
			name = p.Type
		}
		if _, dup := byName[name]; dup {
			return SchedulerConfig{}, fmt.Errorf("EndpointPickerConfig: plugins[%d]: name %q used twice", i, name)
		}
		if err := kind.params(p.Parameters, &cfg); err != nil {
			return SchedulerConfig{}, fmt.Errorf("EndpointPickerConfig: plugins[%d] (%s): %w", i, p.Type, err)
		}
		byName[name] = kind
	}
	switch len(raw.SchedulingProfiles) {
	case 0:
		return SchedulerConfig{}, errors.New("EndpointPickerConfig: no schedulingProfiles")
	case 1:
	default:
		return SchedulerConfig{}, fmt.Errorf("EndpointPickerConfig: %d scheduling profiles: infergw runs one (prefill/decode disaggregation is not supported)", len(raw.SchedulingProfiles))
	}
	prof := raw.SchedulingProfiles[0]
	pickers := 0
	for i, ref := range prof.Plugins {
		kind, ok := byName[ref.PluginRef]
		if !ok {
			return SchedulerConfig{}, fmt.Errorf("EndpointPickerConfig: schedulingProfiles[0].plugins[%d]: pluginRef %q names no plugin", i, ref.PluginRef)
		}
		if ref.Weight != nil && kind.role != "scorer" {
			return SchedulerConfig{}, fmt.Errorf("EndpointPickerConfig: schedulingProfiles[0].plugins[%d] (%s): only scorers take a weight", i, ref.PluginRef)
		}
		switch kind.role {
		case "scorer":
			w := 1.0 // GIE's weight when the profile gives none
			if ref.Weight != nil {
				w = *ref.Weight
			}
			if slices.ContainsFunc(cfg.Scorers, func(s ScorerSpec) bool { return s.Name == kind.ours }) {
				return SchedulerConfig{}, fmt.Errorf("EndpointPickerConfig: schedulingProfiles[0].plugins[%d]: a second %s scorer", i, kind.ours)
			}
			cfg.Scorers = append(cfg.Scorers, ScorerSpec{Name: kind.ours, Weight: w})
		case "filter":
			cfg.Filters = append(cfg.Filters, kind.ours)
		case "picker":
			pickers++
			cfg.Picker = kind.ours
		}
	}
	if pickers > 1 {
		return SchedulerConfig{}, errors.New("EndpointPickerConfig: the profile references more than one picker")
	}
	if err := cfg.Validate(); err != nil {
		return SchedulerConfig{}, fmt.Errorf("EndpointPickerConfig: %w", err)
	}
	return cfg, nil
}

func gieTypeNames() []string {
	names := make([]string, 0, len(giePluginTypes))
	for n := range giePluginTypes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func noParams(raw json.RawMessage, _ *SchedulerConfig) error {
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) || bytes.Equal(raw, []byte("{}")) {
		return nil
	}
	return errors.New("parameters are not supported for this plugin in infergw")
}

// strictParams decodes parameters exactly (unknown or miscased keys are errors).
func strictParams(raw json.RawMessage, dst any) error {
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil
	}
	strict, err := kjson.UnmarshalStrict(raw, dst)
	if err != nil {
		return fmt.Errorf("parameters: %w", err)
	}
	if len(strict) > 0 {
		return fmt.Errorf("parameters: %w (not supported by infergw)", errors.Join(strict...))
	}
	return nil
}

// giePrefixParams: hashBlockSize (prompt characters per block, as GIE's), lruCapacityPerServer
// and maxPrefixBlocksToMatch.
func giePrefixParams(raw json.RawMessage, cfg *SchedulerConfig) error {
	var p struct {
		HashBlockSize          *int `json:"hashBlockSize"`
		LRUCapacityPerServer   *int `json:"lruCapacityPerServer"`
		MaxPrefixBlocksToMatch *int `json:"maxPrefixBlocksToMatch"`
	}
	if err := strictParams(raw, &p); err != nil {
		return err
	}
	if p.HashBlockSize != nil {
		cfg.Prefix.BlockSize = *p.HashBlockSize
	}
	if p.LRUCapacityPerServer != nil {
		cfg.Prefix.LRUCapacity = *p.LRUCapacityPerServer
	}
	if p.MaxPrefixBlocksToMatch != nil {
		cfg.Prefix.MaxBlocks = *p.MaxPrefixBlocksToMatch
	}
	return nil
}

// gieLoRAFilterParams: GIE's lora-affinity-filter keeps endpoints with the adapter with a
// probability (threshold); infergw's filter is deterministic, so only threshold 1 (or none)
// means the same.
func gieLoRAFilterParams(raw json.RawMessage, _ *SchedulerConfig) error {
	var p struct {
		Threshold *float64 `json:"threshold"`
	}
	if err := strictParams(raw, &p); err != nil {
		return err
	}
	if p.Threshold != nil && *p.Threshold != 1 {
		return fmt.Errorf("threshold %v: infergw's LoRA filter is deterministic (threshold 1); drop the parameter or set 1", *p.Threshold)
	}
	return nil
}

// giePickerParams: maxNumOfEndpoints 1 (one primary); infergw sends fallbacks after it as
// --fallbacks says.
func giePickerParams(raw json.RawMessage, _ *SchedulerConfig) error {
	var p struct {
		MaxNumOfEndpoints *int `json:"maxNumOfEndpoints"`
	}
	if err := strictParams(raw, &p); err != nil {
		return err
	}
	if p.MaxNumOfEndpoints != nil && *p.MaxNumOfEndpoints != 1 {
		return fmt.Errorf("maxNumOfEndpoints %d: infergw picks one primary; fallbacks after it are set with --fallbacks", *p.MaxNumOfEndpoints)
	}
	return nil
}
