package router

import "time"

// Outcome flags of a Decision (Decision.phase).
const (
	phaseFirstByteResolved uint32 = 1 << iota // the primary's awaiting count was released
	phaseOutcomeRecorded                      // a success or failure was recorded
	phaseHeadersOK                            // non-5xx response headers came back
	phasePrefillEnded                         // the PrefillWatcher was told
)

// ResponseHeaders reports the response status and, when known, the address of the
// endpoint that answered ("ip:port"; "" = unknown). An answer from another endpoint than
// the primary means the proxy retried: the primary failed (connect failure or reset). A
// 5xx is a failure of the endpoint that answered. Safe to call once from any goroutine;
// calls after Done are ignored.
func (d *Decision) ResponseHeaders(status int, upstream string) {
	if d == nil || d.primary == nil {
		return
	}
	d.recordMu.Lock()
	defer d.recordMu.Unlock()
	if d.done.Load() || d.phase.Load()&phaseOutcomeRecorded != 0 {
		return
	}
	d.answered = d.primary
	if upstream != "" && upstream != d.primary.spec.Address {
		d.primary.out.record(true, outlierReasonFailures)
		d.answered = d.router.endpointOf(d.Pool, upstream) // nil: not one of the pool's
		d.endPrefill(false)                                // the primary failed: it will not prefill
	}
	if status >= 400 {
		// An error answer (vLLM: bad request, prompt too long, overloaded, failure) comes
		// instead of a prefill.
		d.endPrefill(false)
	}
	if status >= 500 {
		d.resolveFirstByte(true)
		d.recordLocked(d.answered, true)
		return
	}
	d.phase.Or(phaseHeadersOK)
}

// FirstByte reports the first byte of the response body. For a streamed request (its
// first byte is its first token) a first byte later than the first-byte timeout is a
// failure of the endpoint that answered; otherwise it is a success.
func (d *Decision) FirstByte() {
	if d == nil || d.primary == nil {
		return
	}
	d.recordMu.Lock()
	defer d.recordMu.Unlock()
	if d.done.Load() {
		return
	}
	d.resolveFirstByte(true)
	d.endPrefill(true) // no-op when headers from another endpoint or an error ended it
	if d.phase.Load()&phaseOutcomeRecorded != 0 {
		return
	}
	target := d.answered
	if target == nil && d.phase.Load()&phaseHeadersOK == 0 {
		target = d.primary // headers not reported: the body can only be the primary's
	}
	timeout := d.router.cfg.Outlier.FirstByteTimeout
	d.recordLocked(target, d.stream && timeout > 0 && time.Since(d.pickedAt) > timeout)
}

// NoResponse reports that the request was sent and its stream ended without any response
// headers (connection lost, reset with no reply): a failure of the primary. Call it before
// Done.
func (d *Decision) NoResponse() {
	if d == nil || d.primary == nil {
		return
	}
	d.recordMu.Lock()
	defer d.recordMu.Unlock()
	if d.done.Load() || d.phase.Load()&(phaseOutcomeRecorded|phaseHeadersOK) != 0 {
		return
	}
	d.resolveFirstByte(false)
	d.endPrefill(false)
	d.recordLocked(d.primary, true)
}

// finishOutcome runs once from Done: a request that ended after good headers without a
// body byte is a success; one whose caller reported nothing records no outcome.
func (d *Decision) finishOutcome() {
	d.recordMu.Lock()
	defer d.recordMu.Unlock()
	d.resolveFirstByte(false)
	// Ended without a first byte from the primary: cancelled, cut, or a response whose
	// body the picker does not see (then the prefill is long over and confirmed).
	d.endPrefill(false)
	if d.phase.Load()&(phaseOutcomeRecorded|phaseHeadersOK) == phaseHeadersOK {
		d.recordLocked(d.answered, false)
	}
}

// resolveFirstByte releases the primary's awaiting-first-byte count once.
func (d *Decision) resolveFirstByte(gotByte bool) {
	if d.phase.Load()&phaseFirstByteResolved != 0 {
		return
	}
	d.phase.Or(phaseFirstByteResolved)
	d.primary.out.responded(gotByte, d.pendingBytes, d.stream)
}

// endPrefill tells the PrefillWatcher, once, how the request ended at the primary.
// Caller holds recordMu.
func (d *Decision) endPrefill(firstToken bool) {
	if d.prefill == nil || d.phase.Load()&phasePrefillEnded != 0 {
		return
	}
	d.phase.Or(phasePrefillEnded)
	d.prefill.PrefillEnded(firstToken)
	d.prefill = nil
}

func (d *Decision) recordLocked(e *endpoint, failed bool) {
	d.phase.Or(phaseOutcomeRecorded)
	if e != nil {
		e.out.record(failed, outlierReasonFailures)
	}
}

// endpointOf finds an endpoint of a pool by address (nil when unknown).
func (r *Router) endpointOf(poolName, addr string) *endpoint {
	p := r.lookup(poolName)
	if p == nil {
		return nil
	}
	v := p.view.Load()
	if i, ok := v.byAddr[addr]; ok {
		return v.endpoints[i]
	}
	return nil
}
