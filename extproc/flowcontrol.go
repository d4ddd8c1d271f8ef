package extproc

import (
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/infergw/infergw/extproc/openai"
	"github.com/infergw/infergw/flowcontrol"
)

// Flow control in the picker (issue 19): a request of a pool whose scheduler config
// enables it enters the pool's flowcontrol.Controller after its body is parsed. If the
// pool has room and nothing waits, it is dispatched at once and picked as before.
// Otherwise the exchange keeps the ext_proc stream open without answering (Envoy applies
// no per-message timeout in FULL_DUPLEX_STREAMED; BUFFERED routes have the picker message
// timeout, above the queue's TTL) and the endpoint is picked when the controller
// dispatches it, from the endpoints' state at that moment: late binding. Releasing the
// pick (response end, reset, client gone) frees its place and wakes the dispatcher; so
// does every scrape.

// flowSource is what flow control needs of the scheduler; *router.Router has it. A
// Scheduler without it has no flow control.
type flowSource interface {
	FlowControlConfig(pool string) flowcontrol.Config
	EndpointSignals(pool string, dst []flowcontrol.EndpointSignal) []flowcontrol.EndpointSignal
	OnScrape(fn func(pool string))
}

// HeaderSLOTTFT is the request's time-to-first-token target in milliseconds (llm-d's
// SLO header): with orderingPolicy edf, a flow's requests are ordered by arrival + it.
const HeaderSLOTTFT = "x-slo-ttft-ms"

// maxSLO bounds the latency target taken from the header (a day): beyond, it orders
// nothing and could overflow a deadline.
const maxSLO = 24 * time.Hour

// parseSLOMillis reads a positive whole number of milliseconds; anything else is no target.
func parseSLOMillis(v []byte) time.Duration {
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil || n <= 0 || n > maxSLO.Milliseconds() {
		return 0
	}
	return time.Duration(n) * time.Millisecond
}

// maxFairnessIDBytes bounds the fairness ID kept from the header: it keys a flow and labels
// its queue-size series.
const maxFairnessIDBytes = 128

// flowControllers holds the controller of each pool that enables flow control.
type flowControllers struct {
	src     flowSource
	metrics *flowcontrol.Metrics
	log     *slog.Logger

	mu     sync.Mutex                                         // serialises creation and removal
	byPool atomic.Pointer[map[string]*flowcontrol.Controller] // copy-on-write; nil value = off for the pool
	closed bool
	// detectors holds each controlled pool's detector (copy-on-write, like byPool).
	detectors atomic.Pointer[map[string]*flowcontrol.Detector]
}

func newFlowControllers(src flowSource, reg prometheus.Registerer, log *slog.Logger) *flowControllers {
	f := &flowControllers{src: src, metrics: flowcontrol.NewMetrics(reg), log: log}
	empty := map[string]*flowcontrol.Controller{}
	f.byPool.Store(&empty)
	src.OnScrape(f.wake)
	return f
}

// get returns the pool's controller, creating it on first use; nil when the pool has flow
// control off (or the config is invalid, which the config parser prevents).
func (f *flowControllers) get(pool string) *flowcontrol.Controller {
	if f == nil {
		return nil
	}
	if c, ok := (*f.byPool.Load())[pool]; ok {
		return c
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	cur := *f.byPool.Load()
	if c, ok := cur[pool]; ok {
		return c
	}
	if f.closed {
		return nil
	}
	var c *flowcontrol.Controller
	var det *flowcontrol.Detector
	if cfg := f.src.FlowControlConfig(pool); cfg.Enabled {
		src := f.src
		det = flowcontrol.NewDetector(pool, cfg.WithDefaults().Saturation, func(dst []flowcontrol.EndpointSignal) []flowcontrol.EndpointSignal {
			return src.EndpointSignals(pool, dst)
		}, f.metrics)
		var err error
		if c, err = flowcontrol.New(pool, cfg, det, f.metrics, f.log.With("pool", pool)); err != nil {
			f.log.Error("flow control disabled for the pool: bad config", "pool", pool, "error", err)
			c = nil
		}
	}
	next := make(map[string]*flowcontrol.Controller, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	next[pool] = c
	dets := map[string]*flowcontrol.Detector{}
	if d := f.detectors.Load(); d != nil {
		for k, v := range *d {
			dets[k] = v
		}
	}
	if c != nil {
		dets[pool] = det
	}
	f.detectors.Store(&dets)
	f.byPool.Store(&next)
	return c
}

// hasRoom returns the pool's detector check (nil without one).
func (f *flowControllers) hasRoom(pool string) func(flowcontrol.EndpointSignal) bool {
	if d := f.detectors.Load(); d != nil {
		if det := (*d)[pool]; det != nil {
			return det.HasRoom
		}
	}
	return nil
}

// wake is the router's scrape callback: a scrape may show room.
func (f *flowControllers) wake(pool string) {
	if c := (*f.byPool.Load())[pool]; c != nil {
		c.Wake()
	}
}

// remove closes a removed pool's controller (its queued requests get RejectedOther).
func (f *flowControllers) remove(pool string) {
	if f == nil {
		return
	}
	f.mu.Lock()
	cur := *f.byPool.Load()
	c, ok := cur[pool]
	if ok {
		next := make(map[string]*flowcontrol.Controller, len(cur))
		for k, v := range cur {
			if k != pool {
				next[k] = v
			}
		}
		f.byPool.Store(&next)
	}
	f.mu.Unlock()
	if c != nil {
		c.Close()
		f.metrics.DeletePool(pool)
	}
}

// closeAll closes every controller (shutdown).
func (f *flowControllers) closeAll() {
	if f == nil {
		return
	}
	f.mu.Lock()
	f.closed = true
	cur := *f.byPool.Load()
	empty := map[string]*flowcontrol.Controller{}
	f.byPool.Store(&empty)
	f.mu.Unlock()
	for _, c := range cur {
		if c != nil {
			c.Close()
		}
	}
}

// StopFlowControl closes every pool's flow controller (their dispatch goroutines end;
// requests still queued get their 503/429). Serve does it on shutdown; a caller that runs
// the gRPC server itself (the local stack) calls it when it stops the picker.
func (s *Server) StopFlowControl() { s.flows.closeAll() }

// FlowCounts returns the flow-control totals of a pool (zero when it has none): what the
// tests and the benchmark check add up.
func (s *Server) FlowCounts(pool string) (flowcontrol.Counts, bool) {
	if s.flows == nil {
		return flowcontrol.Counts{}, false
	}
	c := (*s.flows.byPool.Load())[pool]
	if c == nil {
		return flowcontrol.Counts{}, false
	}
	return c.Counts(), true
}

// enqueue puts the parsed request in its pool's flow control, if the pool has it. It
// reports whether the exchange must stop here: rejected, or queued (then it is resumed by
// the transport when the controller decides).
func (x *exchange) enqueue(fc *flowcontrol.Controller, priority int, body []byte, multi, bodyEOS bool) (stop bool) {
	// The callback holds the transport's waiter, not x: x may be recycled by the time a
	// late callback runs, and the waiter knows whether its stream still has it.
	var notify func(*flowcontrol.Ticket)
	if w := x.waiter; w != nil {
		notify = func(*flowcontrol.Ticket) { w.decided() }
	}
	tk, err := fc.Enqueue(flowcontrol.Request{
		FairnessID:    x.hdr.fairnessID,
		Priority:      priority,
		Bytes:         int64(len(body)),
		LatencyTarget: x.hdr.sloTTFT,
	}, notify)
	if err != nil { // closed: the pool is going away or the picker shuts down
		x.rejectFlow(flowcontrol.RejectedOther, priority, fc.RetryAfterSeconds())
		return true
	}
	x.ticket = tk
	switch tk.Outcome() {
	case flowcontrol.Dispatched:
		return false
	case flowcontrol.Queued:
	default:
		x.rejectFlow(tk.Outcome(), priority, fc.RetryAfterSeconds())
		return true
	}
	// Queued. The body may alias the message being handled and the parsed request's
	// fields point into it: keep a copy and parse it again (only queued requests pay).
	x.queued = true
	x.queuedBody = append(x.queuedBody[:0], body...)
	x.queuedMulti, x.queuedEOS = multi, bodyEOS
	if err := openai.Parse(x.queuedBody, x.parsed); err != nil {
		// The same bytes parsed a moment ago: cannot happen; fail the request, not silently.
		tk.Cancel()
		x.queued = false
		x.reject(errInternal("re-parse of the queued body failed: " + err.Error()))
		return true
	}
	x.keepParsed = true
	return true
}

// queueWaiter is the transport's side of a queued exchange.
type queueWaiter interface {
	// decided is called from the controller's goroutine when the queued request's outcome
	// is known; the transport then calls exchange.resume where the stream's callbacks run.
	decided()
}

// resume continues a queued exchange once its ticket has an outcome: the pick (late
// binding) and the held answers, or the rejection.
func (x *exchange) resume() []*extprocv3.ProcessingResponse {
	x.out, x.usedBlocks = x.out[:0], 0
	if !x.queued {
		return nil
	}
	x.queued = false
	defer func() {
		x.s.buffers.putParsed(x.parsed)
		x.parsed, x.keepParsed = nil, false
	}()
	if o := x.ticket.Outcome(); o != flowcontrol.Dispatched {
		x.rejectFlow(o, x.ticket.Priority(), x.flowRetryAfter)
		return x.out
	}
	x.bind(x.queuedBody, x.queuedMulti, x.queuedEOS)
	if x.pendingTrailers && !x.rejected {
		x.send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{
			RequestTrailers: &extprocv3.TrailersResponse{},
		}})
	}
	return x.out
}

// releaseTicket ends the request's place in flow control: a queued one is cancelled (its
// client went away), a dispatched one released with its output tokens.
func (x *exchange) releaseTicket() {
	tk := x.ticket
	if tk == nil {
		return
	}
	x.ticket = nil
	if tk.Cancel() {
		return
	}
	var out int64
	if x.resp != nil && x.resp.Usage.Present {
		out = x.resp.Usage.CompletionTokens
	}
	tk.Release(out)
}

// rejectFlow answers a request flow control turned away: 429 when it is sheddable
// (priority < 0), 503 otherwise, with retry-after.
func (x *exchange) rejectFlow(o flowcontrol.Outcome, priority, retryAfter int) {
	var reason string
	switch o {
	case flowcontrol.RejectedCapacity:
		reason = "its flow-control queue is full"
	case flowcontrol.EvictedTTL:
		reason = "the request waited in its flow-control queue past its time to live"
	default:
		reason = "flow control is shutting down"
	}
	e := &apiError{503, "service_unavailable", "flow_control_" + codeFor(o), "",
		"pool " + x.pool + " is saturated and " + reason + "; retry later"}
	if priority < 0 {
		e.status, e.errType = 429, "rate_limit_error"
	}
	x.retryAfter = retryAfter
	x.reject(e)
}

func codeFor(o flowcontrol.Outcome) string {
	switch o {
	case flowcontrol.RejectedCapacity:
		return "queue_full"
	case flowcontrol.EvictedTTL:
		return "ttl_expired"
	}
	return "shutdown"
}

// retryAfterHeader adds retry-after to an immediate response.
func retryAfterHeader(resp *extprocv3.ProcessingResponse, seconds int) {
	ir := resp.GetImmediateResponse()
	if ir == nil || seconds <= 0 {
		return
	}
	ir.Headers.SetHeaders = append(ir.Headers.SetHeaders, &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: "retry-after", RawValue: []byte(strconv.Itoa(seconds))},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	})
}
