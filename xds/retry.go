package xds

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/infergw/infergw/model"
)

// AnnotationFirstByteTimeout on an InferencePool sets Options.FirstByteTimeout for the
// routes to that pool (a Go duration; "0" turns it off for the pool).
const AnnotationFirstByteTimeout = "infergw.dev/first-byte-timeout"

// retryOn are the failures a pool request is retried on, on the picker's next endpoint:
// the connection failed, was refused or reset before any response byte, or the try timed
// out before its first byte (per_try_timeout; "reset" covers that local reset).
const retryOn = "connect-failure,refused-stream,reset"

// poolFirstByteTimeout reads a pool's AnnotationFirstByteTimeout; a bad value is a
// warning and leaves the global default.
func (ix *index) poolFirstByteTimeout(p *model.Pool) *time.Duration {
	d, ok, err := p.DurationAnnotation(AnnotationFirstByteTimeout)
	if !ok {
		return nil
	}
	if err != nil {
		ix.warnf("pool %s: annotation %s=%q is not a non-negative duration; the default is used", p.Key, AnnotationFirstByteTimeout, p.Annotations[AnnotationFirstByteTimeout])
		return nil
	}
	return &d
}

// retryPolicy is a pool route's retry policy: NumRetries tries on connection failures and,
// with a first-byte timeout, on tries that sent no byte in time. A route to several pools
// has one policy: the shortest non-zero timeout among its pools applies.
func (b *builder) retryPolicy(pools []weightedPool) *routev3.RetryPolicy {
	if b.opts.NumRetries <= 0 {
		return nil
	}
	rp := &routev3.RetryPolicy{RetryOn: retryOn, NumRetries: wrapperspb.UInt32(uint32(b.opts.NumRetries))} //nolint:gosec // G115: a small non-negative option
	var timeout time.Duration
	for _, wp := range pools {
		t := b.opts.FirstByteTimeout
		if p := b.ix.pools[wp.Key]; p != nil && p.firstByteTimeout != nil {
			t = *p.firstByteTimeout
		}
		if t > 0 && (timeout == 0 || t < timeout) {
			timeout = t
		}
	}
	if timeout > 0 {
		rp.PerTryTimeout = durationpb.New(timeout)
	}
	return rp
}

// addRetryBudget caps the retries a pool cluster has in flight at RetryBudgetPercent of
// its active requests (min 3 concurrent), so that a pool failing everywhere is not hit by
// NumRetries times its traffic.
func (b *builder) addRetryBudget(c *clusterv3.Cluster) {
	if b.opts.RetryBudgetPercent <= 0 {
		return
	}
	for _, th := range c.GetCircuitBreakers().GetThresholds() {
		th.RetryBudget = &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
			BudgetPercent:       &typev3.Percent{Value: b.opts.RetryBudgetPercent},
			MinRetryConcurrency: wrapperspb.UInt32(3),
		}
	}
}
