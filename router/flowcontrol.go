package router

// The flow-control hook-up of the router (issue 19), kept in this one file: its section of
// the scheduler config, the endpoint signals its saturation detector reads, and the scrape
// notification that wakes its dispatcher.

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/infergw/infergw/flowcontrol"
)

// FlowControlConfig is the scheduler config's flowControl section: the defaults for every
// pool, and per-pool overrides ("namespace/name"). Disabled (the zero value) = no queuing.
type FlowControlConfig struct {
	Default flowcontrol.Config
	Pools   map[string]flowcontrol.Config
}

// For is the flow-control config of a pool.
func (c FlowControlConfig) For(pool string) flowcontrol.Config {
	if pc, ok := c.Pools[pool]; ok {
		return pc
	}
	return c.Default
}

// FlowControlConfig is the flow-control config of a pool from the router's scheduler
// config, with defaults filled in. The detector's thresholds default to the scheduler's
// saturation section.
func (r *Router) FlowControlConfig(pool string) flowcontrol.Config {
	return r.cfg.Scheduler.FlowControl.For(pool)
}

// EndpointSignals appends the saturation signals of every endpoint of a pool to dst
// (nothing for an unknown pool): freshness, scraped queue, running and KV-cache use, and
// the gateway's in-flight picks. Ejected endpoints count as stale: no request goes there.
func (r *Router) EndpointSignals(pool string, dst []flowcontrol.EndpointSignal) []flowcontrol.EndpointSignal {
	p := r.lookup(pool)
	if p == nil {
		return dst
	}
	now := time.Now()
	for _, e := range p.view.Load().endpoints {
		m := e.loadMetrics()
		dst = append(dst, signalOf(e, m, e.isFresh(m, now, r.cfg.StalenessThreshold) && !e.out.ejected.Load()))
	}
	return dst
}

// OnScrape sets fn to be called (from the scrape loops, so it must not block) after each
// successful scrape of an endpoint of pool: flow control dispatches when a scrape shows
// room. nil removes it.
func (r *Router) OnScrape(fn func(pool string)) {
	if fn == nil {
		r.onScrape.Store(nil)
		return
	}
	r.onScrape.Store(&fn)
}

func (r *Router) notifyScrape(pool string) {
	if fn := r.onScrape.Load(); fn != nil {
		(*fn)(pool)
	}
}

// --- YAML ------------------------------------------------------------------------------

// rawFlowControl is the flowControl section; every field optional. Pools' entries take
// the same fields (but pools) and override the section's.
type rawFlowControl struct {
	rawFlowParams
	Pools map[string]rawFlowParams `json:"pools"`
}

type rawFlowParams struct {
	Enabled           *bool              `json:"enabled"`
	MaxRequests       *int               `json:"maxRequests"`
	MaxBytes          *int64             `json:"maxBytes"`
	MaxFlowRequests   *int               `json:"maxFlowRequests"`
	MaxFlowBytes      *int64             `json:"maxFlowBytes"`
	MaxFlows          *int               `json:"maxFlows"`
	RequestTTL        *duration          `json:"requestTTL"`
	FairnessPolicy    *string            `json:"fairnessPolicy"`
	OrderingPolicy    *string            `json:"orderingPolicy"`
	OutputTokenWeight *float64           `json:"outputTokenWeight"`
	PollInterval      *duration          `json:"pollInterval"`
	RetryAfter        *duration          `json:"retryAfter"`
	SheddableHeadroom *int               `json:"sheddableHeadroom"`
	Reservation       *string            `json:"reservation"`
	DemandWindow      *duration          `json:"demandWindow"`
	DemandQuantile    *float64           `json:"demandQuantile"`
	Saturation        *rawFlowSaturation `json:"saturation"`
}

type rawFlowSaturation struct {
	QueueDepthThreshold    *float64 `json:"queueDepthThreshold"`
	KVCacheUtilThreshold   *float64 `json:"kvCacheUtilThreshold"`
	MaxRunningRequests     *float64 `json:"maxRunningRequests"`
	MaxInFlightPerEndpoint *int     `json:"maxInFlightPerEndpoint"`
	BatchLimit             *string  `json:"batchLimit"`
}

// duration is a Go duration string ("30s", "250ms") in YAML.
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string such as \"30s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = duration(v)
	return nil
}

// compileFlowControl turns the section into per-pool configs (defaults filled, validated).
// sat is the scheduler's saturation section, the detector's default thresholds. Policies
// are named by infergw's short names or GIE's plugin type names (flowcontrolplugins.go).
func (r *Registry) compileFlowControl(raw *rawFlowControl, sat SaturationConfig) (FlowControlConfig, error) {
	base := flowcontrol.Config{Saturation: flowcontrol.SaturationConfig{
		QueueDepthThreshold:  sat.QueueDepthThreshold,
		KVCacheUtilThreshold: sat.KVCacheThreshold,
	}}
	if raw == nil {
		return FlowControlConfig{}, nil // off for every pool, like a config built in Go
	}
	def, err := raw.rawFlowParams.apply(r, base)
	if err != nil {
		return FlowControlConfig{}, fmt.Errorf("flowControl: %w", err)
	}
	out := FlowControlConfig{Default: def.WithDefaults()}
	if err := out.Default.Validate(); err != nil {
		return FlowControlConfig{}, err
	}
	for name, p := range raw.Pools {
		if name == "" {
			return FlowControlConfig{}, errors.New("flowControl.pools: empty pool name")
		}
		if out.Pools == nil {
			out.Pools = make(map[string]flowcontrol.Config, len(raw.Pools))
		}
		pc, err := p.apply(r, def)
		if err == nil {
			pc = pc.WithDefaults()
			err = pc.Validate()
		}
		if err != nil {
			return FlowControlConfig{}, fmt.Errorf("flowControl.pools[%q]: %w", name, err)
		}
		out.Pools[name] = pc
	}
	return out, nil
}

// apply returns base with the fields set in p.
func (p rawFlowParams) apply(r *Registry, base flowcontrol.Config) (flowcontrol.Config, error) {
	c := base
	set := func(dst *int, v *int) {
		if v != nil {
			*dst = *v
		}
	}
	set64 := func(dst *int64, v *int64) {
		if v != nil {
			*dst = *v
		}
	}
	setDur := func(dst *time.Duration, v *duration) {
		if v != nil {
			*dst = time.Duration(*v)
		}
	}
	if p.Enabled != nil {
		c.Enabled = *p.Enabled
	}
	set(&c.MaxRequests, p.MaxRequests)
	set64(&c.MaxBytes, p.MaxBytes)
	set(&c.MaxFlowRequests, p.MaxFlowRequests)
	set64(&c.MaxFlowBytes, p.MaxFlowBytes)
	set(&c.MaxFlows, p.MaxFlows)
	set(&c.SheddableHeadroom, p.SheddableHeadroom)
	setDur(&c.RequestTTL, p.RequestTTL)
	setDur(&c.PollInterval, p.PollInterval)
	setDur(&c.RetryAfter, p.RetryAfter)
	if p.FairnessPolicy != nil {
		pl, err := flowPlugin[fairnessPlugin](r, KindFairnessPolicy, *p.FairnessPolicy)
		if err != nil {
			return c, err
		}
		c.Fairness = pl.policy
	}
	if p.OrderingPolicy != nil {
		pl, err := flowPlugin[orderingPlugin](r, KindOrderingPolicy, *p.OrderingPolicy)
		if err != nil {
			return c, err
		}
		c.Ordering = pl.policy
	}
	if p.Reservation != nil {
		c.Reservation = *p.Reservation
	}
	setDur(&c.DemandWindow, p.DemandWindow)
	if p.DemandQuantile != nil {
		c.DemandQuantile = *p.DemandQuantile
	}
	if p.OutputTokenWeight != nil {
		c.OutputTokenWeight = *p.OutputTokenWeight
	}
	if s := p.Saturation; s != nil {
		if s.QueueDepthThreshold != nil {
			c.Saturation.QueueDepthThreshold = *s.QueueDepthThreshold
		}
		if s.KVCacheUtilThreshold != nil {
			c.Saturation.KVCacheUtilThreshold = *s.KVCacheUtilThreshold
		}
		if s.MaxRunningRequests != nil {
			c.Saturation.MaxRunningRequests = *s.MaxRunningRequests
		}
		if s.MaxInFlightPerEndpoint != nil {
			c.Saturation.MaxInFlightPerEndpoint = *s.MaxInFlightPerEndpoint
		}
		if s.BatchLimit != nil {
			c.Saturation.BatchLimit = *s.BatchLimit
		}
	}
	return c, nil
}

// filterRoom keeps the candidates flow control's detector says have room, when there are
// any: a request dispatched because the pool has room must not be bound to a full endpoint
// (late binding is only worth it if the binding goes where the room is).
func filterRoom(pc *PickContext, hasRoom func(flowcontrol.EndpointSignal) bool) {
	room := 0
	for i, e := range pc.eps {
		if hasRoom(signalOf(e, pc.ms[i], true)) {
			room++
		}
	}
	if room == 0 || room == len(pc.eps) {
		return
	}
	pc.keep(func(i int) bool { return hasRoom(signalOf(pc.eps[i], pc.ms[i], true)) })
}

func signalOf(e *endpoint, m *metricsState, fresh bool) flowcontrol.EndpointSignal {
	return flowcontrol.EndpointSignal{Key: e.spec.Address, Fresh: fresh, Waiting: m.waiting, Running: m.running,
		KVCacheUsage: m.kvUsage, InFlight: e.inflight.Load()}
}
