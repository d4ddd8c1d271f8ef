package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

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
	// saturationDetector is read in part; the other sections infergw does not implement
	// in this form: present means refused.
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

// IsEndpointPickerConfig reports whether data is a GIE EndpointPickerConfig (by its kind).
func IsEndpointPickerConfig(data []byte) bool {
	var head struct {
		Kind string `json:"kind"`
	}
	return yaml.Unmarshal(data, &head) == nil && head.Kind == gieKind
}

// gieSaturation is GIE's saturationDetector section.
type gieSaturation struct {
	QueueDepthThreshold       *float64        `json:"queueDepthThreshold"`
	KVCacheUtilThreshold      *float64        `json:"kvCacheUtilThreshold"`
	MetricsStalenessThreshold json.RawMessage `json:"metricsStalenessThreshold"`
}

// ParseEndpointPickerConfig reads GIE's EndpointPickerConfig: plugins by type (looked up
// in the registry, GIE's type names included) with their parameters, and one scheduling
// profile whose pluginRefs choose the filters, the weighted scorers (weight 1 when
// omitted, as in GIE) and the picker (max-score when none). With no profile, one profile
// references every plugin, as GIE does. The saturationDetector's queueDepthThreshold and
// kvCacheUtilThreshold set the saturation thresholds. Unknown fields, unknown types,
// unsupported parameters, several profiles and sections infergw does not implement are
// errors that name them.
func (r *Registry) ParseEndpointPickerConfig(data []byte) (SchedulerConfig, error) {
	var raw gieConfig
	if err := decodeYAMLStrict(data, &raw); err != nil {
		return SchedulerConfig{}, fmt.Errorf("EndpointPickerConfig: %w", err)
	}
	if raw.Kind != gieKind {
		return SchedulerConfig{}, fmt.Errorf("EndpointPickerConfig: kind %q, want %s", raw.Kind, gieKind)
	}
	if !slices.Contains(gieAPIVersions, raw.APIVersion) {
		return SchedulerConfig{}, fmt.Errorf("EndpointPickerConfig: apiVersion %q (known: %s)", raw.APIVersion, strings.Join(gieAPIVersions, ", "))
	}
	for _, sec := range []struct {
		name string
		raw  json.RawMessage
	}{{"dataLayer", raw.DataLayer}, {"parser", raw.Parser}, {"requestHandler", raw.RequestHandler}} {
		if len(sec.raw) > 0 && !bytes.Equal(sec.raw, []byte("null")) {
			return SchedulerConfig{}, fmt.Errorf("EndpointPickerConfig: %s is not supported by infergw", sec.name)
		}
	}

	cfg := SchedulerConfig{Picker: PluginSpec{Type: TypeMaxScorePicker, Name: PickerMaxScore}, Scorers: []PluginSpec{}, Saturation: defaultSaturation()}
	if len(raw.SaturationDetector) > 0 && !bytes.Equal(raw.SaturationDetector, []byte("null")) {
		var sd gieSaturation
		if err := decodeStrict(raw.SaturationDetector, &sd); err != nil {
			return SchedulerConfig{}, fmt.Errorf("EndpointPickerConfig: saturationDetector: %w", err)
		}
		if len(sd.MetricsStalenessThreshold) > 0 {
			return SchedulerConfig{}, errors.New("EndpointPickerConfig: saturationDetector.metricsStalenessThreshold is not supported here: set the picker's --staleness-threshold")
		}
		if sd.QueueDepthThreshold != nil {
			cfg.Saturation.QueueDepthThreshold = *sd.QueueDepthThreshold
		}
		if sd.KVCacheUtilThreshold != nil {
			cfg.Saturation.KVCacheThreshold = *sd.KVCacheUtilThreshold
		}
	}

	specs := map[string]PluginSpec{}
	kinds := map[string]Kind{}
	var names []string
	for i, p := range raw.Plugins {
		t, ok := r.Lookup(p.Type)
		if !ok {
			return SchedulerConfig{}, fmt.Errorf("EndpointPickerConfig: plugins[%d]: type %q is not supported by infergw (supported: %s)", i, p.Type, r.allTypeNames())
		}
		name := p.Name
		if name == "" {
			name = p.Type
		}
		if _, dup := specs[name]; dup {
			return SchedulerConfig{}, fmt.Errorf("EndpointPickerConfig: plugins[%d]: name %q used twice", i, name)
		}
		spec := PluginSpec{Type: p.Type, Name: name, Parameters: rawOrNil(p.Parameters)}
		if _, err := r.Build(spec); err != nil {
			return SchedulerConfig{}, fmt.Errorf("EndpointPickerConfig: plugins[%d]: %w", i, err)
		}
		specs[name], kinds[name] = spec, t.Kind
		names = append(names, name)
	}
	var prof gieProfile
	switch len(raw.SchedulingProfiles) {
	case 0: // GIE: one profile referencing every plugin (of the kinds a profile holds)
		for _, n := range names {
			if !isFlowControlKind(kinds[n]) {
				prof.Plugins = append(prof.Plugins, gieProfilePlugin{PluginRef: n})
			}
		}
	case 1:
		prof = raw.SchedulingProfiles[0]
	default:
		return SchedulerConfig{}, fmt.Errorf("EndpointPickerConfig: %d scheduling profiles: infergw runs one (prefill/decode disaggregation is not supported)", len(raw.SchedulingProfiles))
	}
	wired := map[string]bool{}
	pickers := 0
	for i, ref := range prof.Plugins {
		spec, ok := specs[ref.PluginRef]
		if !ok {
			return SchedulerConfig{}, fmt.Errorf("EndpointPickerConfig: schedulingProfiles[0].plugins[%d]: pluginRef %q names no plugin", i, ref.PluginRef)
		}
		kind := kinds[ref.PluginRef]
		if ref.Weight != nil && kind != KindScorer {
			return SchedulerConfig{}, fmt.Errorf("EndpointPickerConfig: schedulingProfiles[0].plugins[%d] (%s): only scorers take a weight", i, ref.PluginRef)
		}
		wired[ref.PluginRef] = true
		switch kind {
		case KindScorer:
			spec.Weight = 1 // GIE's weight when the profile gives none
			if ref.Weight != nil {
				spec.Weight = *ref.Weight
			}
			cfg.Scorers = append(cfg.Scorers, spec)
		case KindFilter:
			cfg.Filters = append(cfg.Filters, spec)
		case KindPicker:
			pickers++
			cfg.Picker = spec
		case KindProfileHandler:
		default:
			return SchedulerConfig{}, fmt.Errorf("EndpointPickerConfig: schedulingProfiles[0].plugins[%d] (%s): a %s plugin is not part of a scheduling profile", i, ref.PluginRef, kind)
		}
	}
	if pickers > 1 {
		return SchedulerConfig{}, errors.New("EndpointPickerConfig: the profile references more than one picker")
	}
	for _, n := range names {
		if !wired[n] && kinds[n] != KindProfileHandler && !isFlowControlKind(kinds[n]) {
			cfg.Other = append(cfg.Other, specs[n])
		}
	}
	fc, err := r.gieFlowControlConfig(raw.FeatureGates, raw.FlowControl, specs, kinds, cfg.Saturation)
	if err != nil {
		return SchedulerConfig{}, fmt.Errorf("EndpointPickerConfig: %w", err)
	}
	cfg.FlowControl = fc
	if err := r.Validate(cfg); err != nil {
		return SchedulerConfig{}, fmt.Errorf("EndpointPickerConfig: %w", err)
	}
	return cfg, nil
}
