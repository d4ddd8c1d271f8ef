package extproc

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"sync"
	"time"

	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.opentelemetry.io/otel/trace"

	"github.com/infergw/infergw/extproc/openai"
	"github.com/infergw/infergw/flowcontrol"
	"github.com/infergw/infergw/router"
)

// The response observer (xds: the second ext_proc filter, in observability mode).
//
// A streamed completion is tens to thousands of SSE chunks. When the picker's own filter
// processes the response body, every chunk pauses Envoy's filter chain for a round trip:
// one message to the picker, one answer back, a resume — most of the gateway's CPU per
// request (bench/README.md, "Where the CPU goes"). Most responses need no change: the
// picker only reads them (first byte, usage, end). Those are left to the observer filter,
// whose streams Envoy sends without waiting for answers.
//
// The two filters' streams meet here. The picker's exchange opens a handoff when it picks
// (and tags the request with its id, HeaderExchange); the observer's stream, which sees the
// request after the picker's mutations, attaches to it by that id and records what it
// sees of the response. At the response headers the exchange decides: if the response
// needs no change and an observer is attached, it hands its accounting (the pick, its
// metrics series, its flow-control place, its span) over and turns its own response body
// processing off (mode_override); otherwise it keeps the body, as without an observer,
// and the observer's view is dropped. The accounting is recorded once, by whichever side
// finishes last. Either side may be first at every step: the observer's messages are not
// ordered with the picker filter's.

// maxHandoffs bounds the open handoffs of a picker: one per request between its pick and
// its end, so this is the picker's in-flight limit for the observed path. Past it,
// requests keep their body processing in the picker's own filter.
const maxHandoffs = 1 << 16

// handoffTable holds the open handoffs by id.
type handoffTable struct {
	prefix [8]byte // random per process: an observer routed to another replica finds nothing
	mu     sync.Mutex
	next   uint64
	m      map[uint64]*handoff
	max    int
}

func newHandoffTable(maxOpen int) *handoffTable {
	t := &handoffTable{m: make(map[uint64]*handoff), max: maxOpen}
	_, _ = rand.Read(t.prefix[:]) // crypto/rand.Read never fails (Go 1.24+)
	return t
}

// open starts a handoff, or returns nil when the table is full.
func (t *handoffTable) open() *handoff {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.m) >= t.max {
		return nil
	}
	t.next++
	h := &handoff{t: t, id: t.next}
	var b [16]byte
	copy(b[:8], t.prefix[:])
	binary.BigEndian.PutUint64(b[8:], h.id)
	h.key = hex.EncodeToString(b[:])
	t.m[h.id] = h
	return h
}

// attach finds the handoff of key for an observer; nil when it is not this process's, not
// open, or already observed.
func (t *handoffTable) attach(key string) *handoff {
	var b [16]byte
	if len(key) != 32 {
		return nil
	}
	if _, err := hex.Decode(b[:], []byte(key)); err != nil || [8]byte(b[:8]) != t.prefix {
		return nil
	}
	t.mu.Lock()
	h := t.m[binary.BigEndian.Uint64(b[8:])]
	t.mu.Unlock()
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.observer != observerNone {
		return nil // one observer per request: a second stream with the same id is not ours
	}
	h.observer = observerAttached
	return h
}

func (t *handoffTable) remove(h *handoff) {
	t.mu.Lock()
	delete(t.m, h.id)
	t.mu.Unlock()
}

func (t *handoffTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

type observerState uint8

const (
	observerNone     observerState = iota // no observer stream has attached (yet)
	observerAttached                      // attached, response not over
	observerEnded                         // its stream ended (response over, or cut)
)

type ownerState uint8

const (
	ownerPending ownerState = iota // the exchange has not seen the response headers
	ownerKept                      // the exchange processes the body itself
	ownerHanded                    // the exchange handed its accounting over
)

// handoff is one request's meeting point. mu guards everything below it.
type handoff struct {
	t   *handoffTable
	id  uint64
	key string

	mu       sync.Mutex
	observer observerState
	owner    ownerState
	view     responseView // the observer's record of the response
	acct     accounting   // set when handed over
}

// responseView is what the observer saw of the response.
type responseView struct {
	proc      *openai.ResponseProcessor
	firstByte time.Time
	bytes     int
	eos       bool
}

// accounting is what an exchange records when its response ends, detached from the
// (pooled) exchange so that the observer can record it.
type accounting struct {
	s         *Server
	start     time.Time
	series    *modelSeries
	decision  *router.Decision
	ticket    *flowcontrol.Ticket
	span      trace.Span
	spanStart bool
	// firstByteSent: decision.FirstByte was reported (it is reported once).
	firstByteSent bool
}

// handOff is the exchange's decision at its response headers: true when the observer takes
// the response over (the caller then turns its own body processing off); false when the
// exchange keeps it. Called once, on the exchange's goroutine.
func (h *handoff) handOff(x *exchange, canHand bool) bool {
	h.mu.Lock()
	if !canHand || h.observer == observerNone || (h.observer == observerEnded && !h.view.eos) {
		// No observer, or one whose stream was cut before the response ended: keep the
		// body here, where every chunk will still arrive.
		h.owner = ownerKept
		h.mu.Unlock()
		h.t.remove(h)
		return false
	}
	h.owner = ownerHanded
	x.s.metrics.observer.WithLabelValues("observed").Inc()
	h.acct = x.detachAccounting()
	ended := h.view.eos || h.observer == observerEnded
	if !h.view.firstByte.IsZero() && h.acct.decision != nil {
		h.acct.decision.FirstByte()
		h.acct.firstByteSent = true
	}
	h.mu.Unlock()
	if ended { // the observer saw the whole response already: record it now
		h.record()
	}
	return true
}

// abandon is the exchange ending before its response headers (rejected, reset, no
// response): the observer's view is not needed.
func (h *handoff) abandon() {
	h.mu.Lock()
	if h.owner == ownerPending {
		h.owner = ownerKept
	}
	h.mu.Unlock()
	h.t.remove(h)
}

// observe records a response message seen by the observer. It returns false when the
// observer is not needed any more (the exchange kept the body): its stream may close.
func (h *handoff) observe(contentType []byte, chunk []byte, headers, eos bool) bool {
	h.mu.Lock()
	if h.owner == ownerKept {
		h.mu.Unlock()
		return false
	}
	v := &h.view
	if headers {
		v.proc, _ = openai.NewResponseProcessor(string(contentType), "")
	} else {
		if v.proc == nil { // a body without headers: read it as an opaque body
			v.proc, _ = openai.NewResponseProcessor("", "")
		}
		if len(chunk) > 0 && v.firstByte.IsZero() {
			v.firstByte = time.Now()
			if h.owner == ownerHanded && h.acct.decision != nil && !h.acct.firstByteSent {
				h.acct.decision.FirstByte()
				h.acct.firstByteSent = true
			}
		}
		v.bytes += len(chunk)
		v.proc.Feed(chunk, eos)
	}
	record := false
	if eos && !v.eos {
		v.eos = true
		record = h.owner == ownerHanded
	}
	h.mu.Unlock()
	if record { // the response is over: record it now, not when Envoy closes the stream
		h.record()
	}
	return true
}

// observerDone is the observer's stream ending, for any reason. If the exchange handed
// over and the response was not recorded at its end of stream (a cut stream), it is now.
func (h *handoff) observerDone() {
	h.mu.Lock()
	if h.observer == observerEnded {
		h.mu.Unlock()
		return
	}
	h.observer = observerEnded
	handed := h.owner == ownerHanded
	h.mu.Unlock()
	if handed {
		h.record()
	}
}

// record ends a handed-over response: metrics, then the pick's and the flow-control
// place's release. Only the first call records. The caller does not hold h.mu.
func (h *handoff) record() {
	h.mu.Lock()
	a, v := h.acct, h.view
	h.acct = accounting{}
	h.mu.Unlock()
	h.t.remove(h)
	if a.s == nil {
		return // recorded already
	}
	var usage openai.Usage
	if v.proc != nil {
		if !v.eos {
			v.proc.Feed(nil, true) // a cut stream: take what was read
		}
		usage = v.proc.Usage
	}
	a.s.recordResponse(a.series, a.start, v.firstByte, v.bytes, usage, a.span, a.spanStart)
	if a.decision != nil {
		a.decision.Done()
		if a.series != nil {
			a.series.running.Dec()
		}
	}
	if a.ticket != nil && !a.ticket.Cancel() {
		var out int64
		if usage.Present {
			out = usage.CompletionTokens
		}
		a.ticket.Release(out)
	}
	if a.spanStart {
		a.span.End()
	}
}

// detachAccounting moves the exchange's end-of-response state into an accounting value:
// the exchange's finish then releases nothing.
func (x *exchange) detachAccounting() accounting {
	a := accounting{s: x.s, start: x.start, series: x.series, decision: x.decision,
		ticket: x.ticket, span: x.span, spanStart: x.spanStart}
	x.decision, x.ticket, x.spanStart = nil, nil, false
	x.completed = true
	return a
}

// setObservedMode turns the picker filter's response body processing off in answer (a
// response headers answer from x.respHdr), once the observer has the response.
func (x *exchange) setObservedMode(answer *extprocv3.ProcessingResponse) {
	m := &x.respHdr.mode
	m.RequestHeaderMode = extprocfilterv3.ProcessingMode_SEND
	m.ResponseHeaderMode = extprocfilterv3.ProcessingMode_SEND
	m.RequestBodyMode = x.reqMode
	m.ResponseBodyMode = extprocfilterv3.ProcessingMode_NONE
	m.RequestTrailerMode = extprocfilterv3.ProcessingMode_SKIP
	m.ResponseTrailerMode = extprocfilterv3.ProcessingMode_SKIP
	answer.ModeOverride = m
}

// observer is one stream of the observer filter: Envoy sends it the request headers, the
// response headers and the response body without waiting, and it never answers.
type observer struct {
	s *Server
	h *handoff
	w wireRequest
	// wireHeaders backs w.headers.
	wireHeaders [24]wireHeader
	done        bool
}

func (s *Server) newObserver() *observer {
	o := &observer{s: s}
	o.w.headers = o.wireHeaders[:0]
	return o
}

// handle reads one message; false means the stream is not needed any more (the caller
// ends it cleanly, which Envoy takes as "no more messages").
func (o *observer) handle(msg []byte) (bool, error) {
	if o.done {
		return false, nil
	}
	w := &o.w
	w.headers = w.headers[:0]
	if err := w.decode(msg); err != nil {
		return false, err
	}
	keep := true
	switch w.kind {
	case kindRequestHeaders:
		if o.h == nil {
			o.h = o.s.handoffs.attach(string(w.header(HeaderExchange)))
		}
		keep = o.h != nil
	case kindResponseHeaders:
		keep = o.h != nil && o.h.observe(w.header(HeaderContentType), nil, true, w.endOfStream)
		o.countKept(keep)
	case kindResponseBody:
		keep = o.h != nil && o.h.observe(nil, w.body, false, w.endOfStream)
		o.countKept(keep)
	default:
		// The observer's processing mode sends nothing else; stay quiet, as observability
		// mode requires.
	}
	if !keep {
		o.close()
	}
	return keep, nil
}

// countKept counts an attached observer that the picker's choice to keep the body sent
// away.
func (o *observer) countKept(keep bool) {
	if !keep && o.h != nil {
		o.s.metrics.observer.WithLabelValues("kept").Inc()
	}
}

// close ends the observer's part, once.
func (o *observer) close() {
	if o.done {
		return
	}
	o.done = true
	if o.h == nil {
		// Nothing of this picker to observe: a forged or another replica's id, a response
		// the picker keeps, or a local reply (Envoy runs the observer on the picker's own
		// error answers, response headers first).
		o.s.metrics.observer.WithLabelValues("unmatched").Inc()
		return
	}
	o.h.observerDone()
	o.h = nil
}

// offerToObserver opens the request's handoff when its route has the observer and its
// response body would come to the picker in a mode that can be turned off, and tags the
// request with its id. Otherwise a client-sent id is removed: only the picker names
// exchanges.
func (x *exchange) offerToObserver(ph *pickHeaders) {
	// A response the picker will change (the model name written back, the usage chunk it
	// asked for removed) stays with the picker: no handoff, so the observer, finding none,
	// ends its stream before the response.
	unchanged := !x.addedUsage && (x.model == "" || x.target == x.model)
	if x.handoff == nil && x.observed && unchanged && x.respMode == extprocfilterv3.ProcessingMode_STREAMED {
		x.handoff = x.s.handoffs.open()
	}
	if x.handoff != nil {
		ph.set(HeaderExchange, x.handoff.key)
		return
	}
	if x.hdr.clientExchange {
		ph.mutation.RemoveHeaders = append(ph.mutation.RemoveHeaders, HeaderExchange)
	}
}
