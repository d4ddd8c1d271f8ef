package flowcontrol

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"time"
)

// Fairness policies between the flows of one priority band.
const (
	// FairnessRoundRobin serves the backlogged flows of a band in turn, one request each.
	FairnessRoundRobin = "round-robin"
	// FairnessTokenWeighted serves the backlogged flow that consumed the fewest weighted
	// tokens (prompt + OutputTokenWeight × output), in the spirit of VTC (Sheng et al.,
	// "Fairness in Serving Large Language Models", OSDI 2024): a flow that sends long
	// prompts or asks for long answers gets fewer requests through, not the same count.
	FairnessTokenWeighted = "token-weighted"
	// FairnessGlobalStrict ignores flows: the band is served in one global order (GIE's
	// global-strict-fairness-policy, the behaviour closest to having no flow control).
	FairnessGlobalStrict = "global-strict"
)

// Ordering policies within one flow.
const (
	// OrderingFCFS serves a flow's requests in arrival order.
	OrderingFCFS = "fcfs"
	// OrderingEDF serves a flow's requests by earliest deadline: arrival + the request's
	// latency target, or arrival + its TTL when it has none.
	OrderingEDF = "edf"
)

// Reservation policies: what a flow may take of the pool's last free room.
const (
	// ReservationDemand (default) keeps free, for the flows of higher bands and for the
	// flows of the same band that hold less than their fair share, the room their recent
	// arrivals say they will need (the 95th percentile of what they held at arrival): a flow takes the last free room beyond its
	// share only when nobody it would shut out was recently busy. Without it, a flow that
	// arrives just after a backlogged one took the freed room waits for the next
	// completion, however light or critical it is.
	ReservationDemand = "demand"
	// ReservationNone: strict priority and fairness decide only the order of the queue;
	// any request may take the last free room.
	ReservationNone = "none"
)

// Batch-limit modes of the saturation detector.
const (
	// BatchLimitLearned (default): an endpoint's batch size is learned from its metrics (the
	// most requests it was seen running while others waited) and it gets no more requests
	// from this gateway than that, so that its own queue stays empty and the order is
	// decided by the gateway's queue, not by the model server's first-come queue.
	BatchLimitLearned = "learned"
	// BatchLimitNone: only the configured thresholds bound an endpoint.
	BatchLimitNone = "none"
)

// Defaults of Config.
const (
	DefaultMaxRequests       = 1024
	DefaultMaxBytes          = 512 << 20
	DefaultMaxFlows          = 1024
	DefaultRequestTTL        = 15 * time.Second
	DefaultPollInterval      = 20 * time.Millisecond
	DefaultOutputTokenWeight = 2 // VTC's w_q: an output token costs twice a prompt token
	DefaultBytesPerToken     = 4 // prompt bytes per token when no token count is known
	DefaultDemandWindow      = 5 * time.Second
	DefaultDemandQuantile    = 0.95
)

// Config is the flow control of one pool. The zero value is disabled; Enabled with every
// other field zero takes the defaults.
type Config struct {
	// Enabled turns queuing on. Off, requests go straight to the scheduler as before.
	Enabled bool
	// MaxRequests and MaxBytes bound what is queued in the pool (all bands and flows);
	// MaxFlowRequests and MaxFlowBytes bound one flow (0 = the pool's bound). A request that
	// would pass a bound is rejected at once (RejectedCapacity).
	MaxRequests     int
	MaxBytes        int64
	MaxFlowRequests int
	MaxFlowBytes    int64
	// MaxFlows bounds the flows with queued requests: the fairness ID comes from a client
	// header, so a client could otherwise create flows (and metric series) without end.
	MaxFlows int
	// RequestTTL is how long a request may wait; then it is evicted (EvictedTTL).
	RequestTTL time.Duration
	// Fairness is the policy between the flows of a band (FairnessRoundRobin default).
	Fairness string
	// Ordering is the policy within a flow (OrderingFCFS default).
	Ordering string
	// OutputTokenWeight is the cost of an output token relative to a prompt token in the
	// token-weighted policy.
	OutputTokenWeight float64
	// PollInterval is how often a backlogged, saturated pool is checked for room when no
	// release or scrape has woken the dispatcher (a safety net, not the trigger).
	PollInterval time.Duration
	// SheddableHeadroom keeps this many requests' room for non-sheddable bands: a sheddable
	// request (priority < 0) is dispatched only while the pool has more room than this. 0
	// (default) = strict priority alone, where sheddable work may take every free slot and
	// a critical request arriving just after must wait for the next one to free.
	SheddableHeadroom int
	// Reservation is the policy for the pool's last free room (ReservationDemand default).
	Reservation string
	// DemandWindow scales the demand reservation's memory: a flow's expected demand is
	// estimated from its arrivals of the last six windows (the 95th percentile of the room
	// it needed at them, from at least 20 arrivals; the largest before), and a flow that
	// sent nothing for two windows is no longer counted.
	DemandWindow time.Duration
	// DemandQuantile is the share of a flow's recent arrivals the room kept for it should
	// cover (default 0.95): an arrival that finds its room taken waits for the next
	// completion in the pool, so this bounds the share of a light or critical flow's
	// requests that wait. Lower keeps less room idle (the flood gets more) and lets more of
	// the flow's requests wait: at 0.9 its p90 sits at the edge.
	DemandQuantile float64
	// RetryAfter is the retry-after (seconds, rounded up) advertised with rejections; 0 =
	// one second.
	RetryAfter time.Duration
	// Saturation is the detector's thresholds.
	Saturation SaturationConfig
}

// SaturationConfig is when an endpoint has no room for one more request. Names follow
// GIE's utilization detector where they mean the same.
type SaturationConfig struct {
	// QueueDepthThreshold: an endpoint whose waiting queue (scraped, or estimated from the
	// gateway's in-flight requests when larger) reaches it is full.
	QueueDepthThreshold float64
	// KVCacheUtilThreshold: an endpoint whose KV-cache use reaches it is full.
	KVCacheUtilThreshold float64
	// MaxRunningRequests (0 = no limit): an endpoint running this many requests is full.
	MaxRunningRequests float64
	// MaxInFlightPerEndpoint (0 = no limit): an endpoint with this many requests in flight
	// from this gateway is full. It reacts within a request, where scrapes lag.
	MaxInFlightPerEndpoint int
	// BatchLimit is BatchLimitLearned (default) or BatchLimitNone.
	BatchLimit string
}

// Defaults of SaturationConfig (GIE's utilization detector defaults).
const (
	DefaultQueueDepthThreshold  = 5
	DefaultKVCacheUtilThreshold = 0.8
)

// WithDefaults fills zero fields with their defaults (cmp.Or: the first non-zero value).
func (c Config) WithDefaults() Config {
	c.MaxRequests = cmp.Or(c.MaxRequests, DefaultMaxRequests)
	c.MaxBytes = cmp.Or(c.MaxBytes, DefaultMaxBytes)
	c.MaxFlowRequests = cmp.Or(c.MaxFlowRequests, c.MaxRequests)
	c.MaxFlowBytes = cmp.Or(c.MaxFlowBytes, c.MaxBytes)
	c.MaxFlows = cmp.Or(c.MaxFlows, DefaultMaxFlows)
	c.RequestTTL = cmp.Or(c.RequestTTL, DefaultRequestTTL)
	c.Fairness = cmp.Or(c.Fairness, FairnessRoundRobin)
	c.Ordering = cmp.Or(c.Ordering, OrderingFCFS)
	c.OutputTokenWeight = cmp.Or(c.OutputTokenWeight, DefaultOutputTokenWeight)
	c.PollInterval = cmp.Or(c.PollInterval, DefaultPollInterval)
	c.RetryAfter = cmp.Or(c.RetryAfter, time.Second)
	c.Reservation = cmp.Or(c.Reservation, ReservationDemand)
	c.DemandWindow = cmp.Or(c.DemandWindow, DefaultDemandWindow)
	c.DemandQuantile = cmp.Or(c.DemandQuantile, DefaultDemandQuantile)
	c.Saturation.BatchLimit = cmp.Or(c.Saturation.BatchLimit, BatchLimitLearned)
	c.Saturation.QueueDepthThreshold = cmp.Or(c.Saturation.QueueDepthThreshold, DefaultQueueDepthThreshold)
	c.Saturation.KVCacheUtilThreshold = cmp.Or(c.Saturation.KVCacheUtilThreshold, DefaultKVCacheUtilThreshold)
	return c
}

// Validate checks a config after WithDefaults.
func (c Config) Validate() error {
	switch {
	case c.MaxRequests < 0 || c.MaxBytes < 0 || c.MaxFlowRequests < 0 || c.MaxFlowBytes < 0 || c.MaxFlows < 0:
		return errors.New("flow control: capacities must be >= 0")
	case c.MaxFlowRequests > c.MaxRequests || c.MaxFlowBytes > c.MaxBytes:
		return fmt.Errorf("flow control: a flow's bound (%d requests, %d bytes) exceeds the pool's (%d, %d)",
			c.MaxFlowRequests, c.MaxFlowBytes, c.MaxRequests, c.MaxBytes)
	case c.RequestTTL < 0:
		return fmt.Errorf("flow control: requestTTL %v is negative", c.RequestTTL)
	case c.PollInterval < 0:
		return fmt.Errorf("flow control: pollInterval %v is negative", c.PollInterval)
	case c.SheddableHeadroom < 0:
		return fmt.Errorf("flow control: sheddableHeadroom %d is negative", c.SheddableHeadroom)
	case c.RetryAfter < 0:
		return fmt.Errorf("flow control: retryAfter %v is negative", c.RetryAfter)
	case c.Fairness != FairnessRoundRobin && c.Fairness != FairnessTokenWeighted && c.Fairness != FairnessGlobalStrict:
		return fmt.Errorf("flow control: unknown fairness policy %q (known: %s, %s, %s)", c.Fairness,
			FairnessRoundRobin, FairnessTokenWeighted, FairnessGlobalStrict)
	case c.Reservation != ReservationDemand && c.Reservation != ReservationNone:
		return fmt.Errorf("flow control: unknown reservation policy %q (known: %s, %s)", c.Reservation, ReservationDemand, ReservationNone)
	case c.DemandWindow < 0:
		return fmt.Errorf("flow control: demandWindow %v is negative", c.DemandWindow)
	case math.IsNaN(c.DemandQuantile) || c.DemandQuantile <= 0 || c.DemandQuantile > 1:
		return fmt.Errorf("flow control: demandQuantile %v must be in (0, 1]", c.DemandQuantile)
	case c.Ordering != OrderingFCFS && c.Ordering != OrderingEDF:
		return fmt.Errorf("flow control: unknown ordering policy %q (known: %s, %s)", c.Ordering, OrderingFCFS, OrderingEDF)
	case math.IsNaN(c.OutputTokenWeight) || math.IsInf(c.OutputTokenWeight, 0) || c.OutputTokenWeight < 0:
		return fmt.Errorf("flow control: outputTokenWeight %v must be a finite number >= 0", c.OutputTokenWeight)
	}
	return c.Saturation.Validate()
}

// Validate checks the detector's thresholds (after WithDefaults).
func (s SaturationConfig) Validate() error {
	switch {
	case math.IsNaN(s.QueueDepthThreshold) || s.QueueDepthThreshold <= 0:
		return fmt.Errorf("flow control: saturation queueDepthThreshold %v must be > 0", s.QueueDepthThreshold)
	case math.IsNaN(s.KVCacheUtilThreshold) || s.KVCacheUtilThreshold <= 0 || s.KVCacheUtilThreshold > 1:
		return fmt.Errorf("flow control: saturation kvCacheUtilThreshold %v must be in (0, 1]", s.KVCacheUtilThreshold)
	case math.IsNaN(s.MaxRunningRequests) || s.MaxRunningRequests < 0:
		return fmt.Errorf("flow control: saturation maxRunningRequests %v must be >= 0", s.MaxRunningRequests)
	case s.MaxInFlightPerEndpoint < 0:
		return fmt.Errorf("flow control: saturation maxInFlightPerEndpoint %d must be >= 0", s.MaxInFlightPerEndpoint)
	case s.BatchLimit != BatchLimitLearned && s.BatchLimit != BatchLimitNone:
		return fmt.Errorf("flow control: saturation batchLimit %q (known: %s, %s)", s.BatchLimit, BatchLimitLearned, BatchLimitNone)
	}
	return nil
}

// retryAfterSeconds is the retry-after header value.
func (c Config) retryAfterSeconds() int {
	return max(int(math.Ceil(c.RetryAfter.Seconds())), 1)
}
