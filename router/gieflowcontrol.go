package router

// GIE's flowControl section of an EndpointPickerConfig, read into infergw's flow control
// (issue 19). GIE's shape:
//
//	featureGates: [flowControl]
//	plugins:
//	- {type: round-robin-fairness-policy}
//	- {type: concurrency-detector, parameters: {maxConcurrency: 4}}
//	flowControl:
//	  maxRequests: "1k"            # Kubernetes quantities
//	  maxBytes: "1Gi"
//	  defaultRequestTTL: 30s
//	  saturationDetector: {pluginRef: concurrency-detector}
//	  defaultPriorityBand: {fairnessPolicyRef: round-robin-fairness-policy, orderingPolicyRef: fcfs-ordering-policy}
//	  priorityBands: [{priority: 100, fairnessPolicyRef: ..., orderingPolicyRef: ...}]
//
// infergw runs one fairness and one ordering policy per pool, bounds the pool and each
// flow rather than each band: bands that name different policies, or bound themselves,
// are refused with a message, never silently flattened.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/infergw/infergw/flowcontrol"
)

// gieFeatureFlowControl is the feature gate GIE's flowControl section needs.
const gieFeatureFlowControl = "flowControl"

type gieFlowControl struct {
	MaxRequests         json.RawMessage `json:"maxRequests"`
	MaxBytes            json.RawMessage `json:"maxBytes"`
	DefaultRequestTTL   *duration       `json:"defaultRequestTTL"`
	SaturationDetector  *gieRef         `json:"saturationDetector"`
	DefaultPriorityBand *gieBand        `json:"defaultPriorityBand"`
	PriorityBands       []gieBand       `json:"priorityBands"`
}

type gieRef struct {
	PluginRef string `json:"pluginRef"`
}

type gieBand struct {
	Priority          *int            `json:"priority"`
	MaxRequests       json.RawMessage `json:"maxRequests"`
	MaxBytes          json.RawMessage `json:"maxBytes"`
	FairnessPolicyRef string          `json:"fairnessPolicyRef"`
	OrderingPolicyRef string          `json:"orderingPolicyRef"`
}

// present reports whether a raw section is set (not absent, not null).
func present(raw json.RawMessage) bool {
	return len(raw) > 0 && !bytes.Equal(raw, []byte("null"))
}

// gieFlowControlConfig reads featureGates and flowControl. plugins are the config's
// plugins by name (built: their parameters are checked). Without the flowControl gate
// flow control is off; the section without the gate is an error (GIE would ignore it
// silently). Defaults are GIE's: global-strict fairness, FCFS, the utilization detector
// with sat's thresholds.
func (r *Registry) gieFlowControlConfig(gates, section json.RawMessage, plugins map[string]PluginSpec, kinds map[string]Kind,
	sat SaturationConfig,
) (FlowControlConfig, error) {
	var gateList []string
	if present(gates) {
		if err := decodeStrict(gates, &gateList); err != nil {
			return FlowControlConfig{}, fmt.Errorf("featureGates: %w", err)
		}
		for _, g := range gateList {
			if g != gieFeatureFlowControl {
				return FlowControlConfig{}, fmt.Errorf("featureGates: %q is not supported by infergw (supported: %s)", g, gieFeatureFlowControl)
			}
		}
	}
	on := slices.Contains(gateList, gieFeatureFlowControl)
	if !on {
		if present(section) {
			return FlowControlConfig{}, errors.New("flowControl is set but featureGates lacks flowControl (GIE ignores the section then; infergw refuses it)")
		}
		return FlowControlConfig{}, nil
	}
	var fc gieFlowControl
	if present(section) {
		if err := decodeStrict(section, &fc); err != nil {
			return FlowControlConfig{}, fmt.Errorf("flowControl: %w", err)
		}
	}
	c := flowcontrol.Config{Enabled: true, Fairness: flowcontrol.FairnessGlobalStrict, Ordering: flowcontrol.OrderingFCFS,
		Saturation: flowcontrol.SaturationConfig{QueueDepthThreshold: sat.QueueDepthThreshold, KVCacheUtilThreshold: sat.KVCacheThreshold}}
	var err error
	if c.MaxRequests, err = quantity("flowControl.maxRequests", fc.MaxRequests); err != nil {
		return FlowControlConfig{}, err
	}
	maxBytes, err := quantity("flowControl.maxBytes", fc.MaxBytes)
	if err != nil {
		return FlowControlConfig{}, err
	}
	c.MaxBytes = int64(maxBytes)
	if fc.DefaultRequestTTL != nil {
		c.RequestTTL = time.Duration(*fc.DefaultRequestTTL)
	}
	built := func(ref string, kind Kind, where string) (any, error) {
		spec, ok := plugins[ref]
		if !ok {
			return nil, fmt.Errorf("%s: pluginRef %q names no plugin", where, ref)
		}
		if kinds[ref] != kind {
			return nil, fmt.Errorf("%s: pluginRef %q is a %s plugin, want a %s", where, ref, kinds[ref], kind)
		}
		return r.Build(spec)
	}
	if fc.SaturationDetector != nil {
		d, err := asFlowPlugin[detectorPlugin](built(fc.SaturationDetector.PluginRef, KindSaturationDetector, "flowControl.saturationDetector"))
		if err != nil {
			return FlowControlConfig{}, err
		}
		d.apply(&c.Saturation)
	}
	bands := fc.PriorityBands
	if fc.DefaultPriorityBand != nil {
		if fc.DefaultPriorityBand.Priority != nil {
			return FlowControlConfig{}, errors.New("flowControl.defaultPriorityBand: priority is not a field of the default band")
		}
		bands = append([]gieBand{*fc.DefaultPriorityBand}, bands...)
	}
	fairness, ordering := "", ""
	for i, b := range bands {
		where := fmt.Sprintf("flowControl.priorityBands[%d]", i-btoi(fc.DefaultPriorityBand != nil))
		if fc.DefaultPriorityBand != nil && i == 0 {
			where = "flowControl.defaultPriorityBand"
		}
		if present(b.MaxRequests) || present(b.MaxBytes) {
			return FlowControlConfig{}, fmt.Errorf("%s: per-band maxRequests/maxBytes are not supported by infergw: it bounds the pool (flowControl.maxRequests, maxBytes) and each flow", where)
		}
		if b.FairnessPolicyRef != "" {
			p, err := asFlowPlugin[fairnessPlugin](built(b.FairnessPolicyRef, KindFairnessPolicy, where+".fairnessPolicyRef"))
			if err != nil {
				return FlowControlConfig{}, err
			}
			if fairness != "" && p.policy != fairness {
				return FlowControlConfig{}, fmt.Errorf("%s: fairness policy %s differs from another band's %s: infergw runs one per pool", where, p.policy, fairness)
			}
			fairness, c.Fairness = p.policy, p.policy
			if p.outputTokenWeight != 0 {
				c.OutputTokenWeight = p.outputTokenWeight
			}
		}
		if b.OrderingPolicyRef != "" {
			p, err := asFlowPlugin[orderingPlugin](built(b.OrderingPolicyRef, KindOrderingPolicy, where+".orderingPolicyRef"))
			if err != nil {
				return FlowControlConfig{}, err
			}
			if ordering != "" && p.policy != ordering {
				return FlowControlConfig{}, fmt.Errorf("%s: ordering policy %s differs from another band's %s: infergw runs one per pool", where, p.policy, ordering)
			}
			ordering, c.Ordering = p.policy, p.policy
		}
	}
	out := FlowControlConfig{Default: c.WithDefaults()}
	if err := out.Default.Validate(); err != nil {
		return FlowControlConfig{}, fmt.Errorf("flowControl: %w", err)
	}
	return out, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// quantity reads a Kubernetes quantity ("1k", "1Gi", or a number) as a whole number >= 0;
// absent = 0 (the default).
func quantity(where string, raw json.RawMessage) (int, error) {
	if !present(raw) {
		return 0, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		s = string(raw) // a bare number
	}
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a quantity: %w", where, s, err)
	}
	v, ok := q.AsInt64()
	if !ok || v < 0 || v > math.MaxInt32 {
		return 0, fmt.Errorf("%s: %s must be a whole number from 0 to %d", where, q.String(), math.MaxInt32)
	}
	return int(v), nil
}
