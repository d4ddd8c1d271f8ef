package router

// Flow control's policies and saturation detectors as registry plugins (issue 19), under
// the type names GIE's EPP gives them, so that an EndpointPickerConfig's flowControl
// section (gieflowcontrol.go) and infergw's own flowControl section (flowcontrol.go) name
// them the same way. The plugins only carry a policy's name and parameters into
// flowcontrol.Config: the queues and the detector live in the flowcontrol package.

import (
	"errors"
	"fmt"
	"math"

	"github.com/infergw/infergw/flowcontrol"
)

// Kinds of the flow-control plugins: referenced from a flowControl section, never part of
// a scheduling profile.
const (
	KindFairnessPolicy     Kind = "fairness-policy"
	KindOrderingPolicy     Kind = "ordering-policy"
	KindSaturationDetector Kind = "saturation-detector"
)

// Type names of the flow-control plugins (GIE's where GIE has the policy).
const (
	TypeRoundRobinFairness    = "round-robin-fairness-policy"
	TypeGlobalStrictFairness  = "global-strict-fairness-policy"
	TypeTokenWeightedFairness = "token-weighted-fairness-policy"
	TypeFCFSOrdering          = "fcfs-ordering-policy"
	TypeEDFOrdering           = "edf-ordering-policy"
	TypeUtilizationDetector   = "utilization-detector"
	TypeConcurrencyDetector   = "concurrency-detector"
)

// isFlowControlKind reports whether plugins of kind k belong to a flowControl section.
func isFlowControlKind(k Kind) bool {
	return k == KindFairnessPolicy || k == KindOrderingPolicy || k == KindSaturationDetector
}

// fairnessPlugin is a built fairness-policy plugin: the flowcontrol policy and, for the
// token-weighted one, the weight of an output token.
type fairnessPlugin struct {
	policy            string
	outputTokenWeight float64 // 0 = the config's
}

// orderingPlugin is a built ordering-policy plugin.
type orderingPlugin struct{ policy string }

// detectorPlugin is a built saturation-detector plugin: what it sets in the detector's config.
type detectorPlugin struct {
	apply func(*flowcontrol.SaturationConfig)
}

// TokenWeightedParams are the token-weighted fairness policy's parameters.
type TokenWeightedParams struct {
	// OutputTokenWeight is an output token's cost relative to a prompt token (VTC's w_q).
	OutputTokenWeight float64 `json:"outputTokenWeight" doc:"an output token's cost relative to a prompt token"`
}

// Validate rejects a weight that is not a finite number >= 0.
func (p TokenWeightedParams) Validate() error {
	if math.IsNaN(p.OutputTokenWeight) || math.IsInf(p.OutputTokenWeight, 0) || p.OutputTokenWeight < 0 {
		return fmt.Errorf("outputTokenWeight %v must be a finite number >= 0", p.OutputTokenWeight)
	}
	return nil
}

// UtilizationDetectorParams are GIE's utilization detector's thresholds.
type UtilizationDetectorParams struct {
	QueueDepthThreshold  float64 `json:"queueDepthThreshold" doc:"waiting requests at which an endpoint is full"`
	KVCacheUtilThreshold float64 `json:"kvCacheUtilThreshold" doc:"KV-cache use at which an endpoint is full"`
}

// Validate checks the thresholds' ranges (flow control's own check).
func (p UtilizationDetectorParams) Validate() error {
	return flowcontrol.SaturationConfig{QueueDepthThreshold: p.QueueDepthThreshold, KVCacheUtilThreshold: p.KVCacheUtilThreshold,
		BatchLimit: flowcontrol.BatchLimitLearned}.Validate()
}

// ConcurrencyDetectorParams are GIE's concurrency detector's parameters.
type ConcurrencyDetectorParams struct {
	// MaxConcurrency is the requests in flight one endpoint takes from this gateway.
	MaxConcurrency int `json:"maxConcurrency" doc:"requests in flight from this gateway at which an endpoint is full"`
	// Headroom (GIE: a burst above MaxConcurrency allowed for one pod's pick) is not
	// implemented: it must be 0.
	Headroom float64 `json:"headroom" doc:"must be 0 (not supported)"`
}

// Validate checks the limit and refuses a headroom.
func (p ConcurrencyDetectorParams) Validate() error {
	if p.MaxConcurrency < 1 {
		return fmt.Errorf("maxConcurrency %d must be >= 1", p.MaxConcurrency)
	}
	if p.Headroom != 0 {
		return errors.New("headroom is not supported by infergw: an endpoint takes at most maxConcurrency")
	}
	return nil
}

func flowControlPlugins() []PluginType {
	fairness := func(typ, short, doc string) PluginType {
		return NewPluginType(PluginInfo{Type: typ, Kind: KindFairnessPolicy, ShortName: short, Doc: doc},
			NoParams{}, func(NoParams) (any, error) { return fairnessPlugin{policy: short}, nil })
	}
	ordering := func(typ, short string, aliases []string, doc string) PluginType {
		return NewPluginType(PluginInfo{Type: typ, Kind: KindOrderingPolicy, ShortName: short, Aliases: aliases, Doc: doc},
			NoParams{}, func(NoParams) (any, error) { return orderingPlugin{policy: short}, nil })
	}
	return []PluginType{
		fairness(TypeRoundRobinFairness, flowcontrol.FairnessRoundRobin,
			"Flow control: the backlogged flows (fairness IDs) of a priority band in turn, one request each."),
		fairness(TypeGlobalStrictFairness, flowcontrol.FairnessGlobalStrict,
			"Flow control: no fairness between flows; a band is served in one arrival (or deadline) order. GIE's default."),
		NewPluginType(PluginInfo{Type: TypeTokenWeightedFairness, Kind: KindFairnessPolicy, ShortName: flowcontrol.FairnessTokenWeighted,
			Doc: "Flow control: the backlogged flow that consumed the fewest weighted tokens (prompt + `outputTokenWeight` × output) " +
				"goes next, in the spirit of VTC (Sheng et al., OSDI 2024); a flow that becomes backlogged starts at the least " +
				"counter of the backlogged ones, so idle time banks no credit. infergw's; GIE has no such policy.",
		}, TokenWeightedParams{OutputTokenWeight: flowcontrol.DefaultOutputTokenWeight}, func(p TokenWeightedParams) (any, error) {
			return fairnessPlugin{policy: flowcontrol.FairnessTokenWeighted, outputTokenWeight: p.OutputTokenWeight}, nil
		}),
		ordering(TypeFCFSOrdering, flowcontrol.OrderingFCFS, nil, "Flow control: a flow's requests in arrival order. GIE's default."),
		ordering(TypeEDFOrdering, flowcontrol.OrderingEDF, []string{"slo-deadline-ordering-policy"},
			"Flow control: a flow's requests by earliest deadline: arrival + the request's `x-slo-ttft-ms`, or arrival + the "+
				"request TTL without one (so requests with a latency target overtake those without). Also accepted as GIE's "+
				"`slo-deadline-ordering-policy`."),
		NewPluginType(PluginInfo{Type: TypeUtilizationDetector, Kind: KindSaturationDetector,
			Doc: "Flow control's saturation detector from scraped signals: an endpoint is full at `queueDepthThreshold` waiting " +
				"requests (scraped, or estimated from this gateway's in-flight ones) or `kvCacheUtilThreshold` KV-cache use, or " +
				"with stale metrics; and, infergw's addition, at its batch size learned from its metrics (flowcontrol/README.md).",
		}, UtilizationDetectorParams{QueueDepthThreshold: flowcontrol.DefaultQueueDepthThreshold, KVCacheUtilThreshold: flowcontrol.DefaultKVCacheUtilThreshold},
			func(p UtilizationDetectorParams) (any, error) {
				return detectorPlugin{apply: func(s *flowcontrol.SaturationConfig) {
					s.QueueDepthThreshold, s.KVCacheUtilThreshold = p.QueueDepthThreshold, p.KVCacheUtilThreshold
				}}, nil
			}),
		NewPluginType(PluginInfo{Type: TypeConcurrencyDetector, Kind: KindSaturationDetector,
			Doc: "Flow control's saturation detector from this gateway's own in-flight counts: an endpoint is full at " +
				"`maxConcurrency` requests in flight (no batch size is learned; stale endpoints and the KV-cache threshold still " +
				"count). GIE's `headroom` is not supported.",
		}, ConcurrencyDetectorParams{MaxConcurrency: 100}, func(p ConcurrencyDetectorParams) (any, error) {
			return detectorPlugin{apply: func(s *flowcontrol.SaturationConfig) {
				s.MaxInFlightPerEndpoint, s.BatchLimit = p.MaxConcurrency, flowcontrol.BatchLimitNone
			}}, nil
		}),
	}
}

// flowPlugin builds, with its default parameters, the flow-control plugin of a kind named
// in a flowControl section: an infergw short name (round-robin, edf, ...) or a GIE type
// name.
func flowPlugin[T any](r *Registry, kind Kind, name string) (T, error) {
	var zero T
	t, ok := r.lookupNative(kind, name)
	if !ok {
		return zero, fmt.Errorf("unknown %s %q (known: %s)", kind, name, r.names(kind, true))
	}
	return asFlowPlugin[T](t.build(nil))
}

// asFlowPlugin checks a built plugin's type.
func asFlowPlugin[T any](v any, err error) (T, error) {
	var zero T
	if err != nil {
		return zero, err
	}
	p, ok := v.(T)
	if !ok {
		return zero, fmt.Errorf("plugin built a %T, want a %T", v, zero)
	}
	return p, nil
}
