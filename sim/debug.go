package sim

import (
	"bytes"
	"slices"
	"time"

	"github.com/valyala/fasthttp"
)

// EngineView is the engine's instantaneous state plus arrival counters, served as JSON at
// GET /debug/engine. It exists to watch routing from the model server's side: what a request
// found in front of it when it arrived decides its time to first token far more than how many
// requests the pod holds (a decoding sequence costs a step 0.1 ms, a prompt being prefilled
// up to tens of ms).
type EngineView struct {
	Running int     `json:"running"`
	Waiting int     `json:"waiting"`
	KVUsage float64 `json:"kv_usage"`
	// Prefilling counts requests that have not produced their first token yet (waiting or
	// running a prefill chunk) and PrefillTokens the prompt tokens they still have to compute.
	Prefilling    int `json:"prefilling"`
	PrefillTokens int `json:"prefill_tokens"`
	// Arrivals counts submitted requests; ArrivalsBehindPrefill those that found another
	// request still prefilling, and PrefillTokensAhead sums the prompt tokens they found
	// ahead of them (cumulative: diff two samples for a period).
	Arrivals              uint64 `json:"arrivals"`
	ArrivalsBehindPrefill uint64 `json:"arrivals_behind_prefill"`
	PrefillTokensAhead    uint64 `json:"prefill_tokens_ahead"`
	// FirstTokens are the last first-token traces (at most maxTracesPerClass) per class:
	// the x-gateway-inference-fairness-id header, else x-gateway-inference-objective, else
	// "" (at most maxTraceClasses classes; later ones are kept under "other").
	FirstTokens map[string][]FirstTokenTrace `json:"first_tokens,omitempty"`
}

// FirstTokenTrace splits one request's time to first token inside the model server: how
// long it waited in the engine's queue, and how long from admission into the batch to its
// first token (its prefill, in steps it shares with the other running sequences, whose
// prefill chunks lengthen them), and the prompt tokens other requests still had to
// prefill when it arrived.
type FirstTokenTrace struct {
	QueueUS      int64 `json:"queue_us"`
	PrefillUS    int64 `json:"prefill_us"`
	PrefillAhead int   `json:"prefill_tokens_ahead"`
}

const (
	maxTraceClasses   = 16
	maxTracesPerClass = 4096
)

// firstTokenTraces keeps a ring of traces per class. Bounded: the class comes from a
// client header.
type firstTokenTraces struct {
	byClass map[string]*traceRing
}

type traceRing struct {
	buf  []FirstTokenTrace
	next int
}

// add records r's first token at now. Caller holds the engine's mu.
func (t *firstTokenTraces) add(r *request, now time.Time) {
	if t.byClass == nil {
		t.byClass = make(map[string]*traceRing)
	}
	class := r.traceClass
	ring := t.byClass[class]
	if ring == nil {
		if len(t.byClass) >= maxTraceClasses {
			class = "other"
		}
		if ring = t.byClass[class]; ring == nil {
			ring = &traceRing{}
			t.byClass[class] = ring
		}
	}
	tr := FirstTokenTrace{QueueUS: r.admitted.Sub(r.arrival).Microseconds(),
		PrefillUS: now.Sub(r.admitted).Microseconds(), PrefillAhead: r.prefillAhead}
	if len(ring.buf) < maxTracesPerClass {
		ring.buf = append(ring.buf, tr)
		return
	}
	ring.buf[ring.next] = tr
	ring.next = (ring.next + 1) % maxTracesPerClass
}

func (t *firstTokenTraces) snapshot() map[string][]FirstTokenTrace {
	if len(t.byClass) == 0 {
		return nil
	}
	out := make(map[string][]FirstTokenTrace, len(t.byClass))
	for k, r := range t.byClass {
		out[k] = slices.Clone(r.buf)
	}
	return out
}

// traceClassOf is a request's trace class from its headers (at most 64 bytes kept).
func traceClassOf(ctx *fasthttp.RequestCtx) string {
	v := ctx.Request.Header.Peek("x-gateway-inference-fairness-id")
	if len(v) == 0 {
		v = ctx.Request.Header.Peek("x-gateway-inference-objective")
	}
	return string(v[:min(len(v), 64)])
}

// pendingPrefill is the prompt work in front of a new arrival. Caller holds mu.
func (e *engine) pendingPrefill() (reqs, tokens int) {
	for _, list := range [][]*request{e.running, e.waiting} {
		for _, r := range list {
			if r.generated == 0 {
				reqs++
				tokens += r.tokensNeeded() - r.numComputed
			}
		}
	}
	return reqs, tokens
}

// View returns the engine's state for /debug/engine.
func (s *Server) View() EngineView {
	e := s.engine
	e.mu.Lock()
	defer e.mu.Unlock()
	v := EngineView{Running: len(e.running), Waiting: len(e.waiting), KVUsage: e.kv.usage(),
		Arrivals: e.arrivals, ArrivalsBehindPrefill: e.arrivalsBehind, PrefillTokensAhead: e.tokensAhead}
	v.Prefilling, v.PrefillTokens = e.pendingPrefill()
	v.FirstTokens = e.traces.snapshot()
	return v
}

func (s *Server) handleDebugEngine(ctx *fasthttp.RequestCtx) {
	s.writeJSON(ctx, fasthttp.StatusOK, s.View())
}

// PrefixView is the answer of POST /debug/prefix: what this engine holds of a request's
// prompt, in its own tokens and blocks. It exists for the routing benchmark's oracle,
// which routes by the pods' true cache state (not by anything a gateway could know) to
// show how close a real policy comes.
type PrefixView struct {
	// Blocks is the prompt's full blocks; Cached the leading ones in the prefix cache now;
	// InFlight the leading ones an admitted request (waiting or running) shares with it,
	// which the engine will hold by the time this one runs; Held the larger of the two.
	Blocks   int `json:"blocks"`
	Cached   int `json:"cached"`
	InFlight int `json:"in_flight"`
	Held     int `json:"held"`
}

// handleDebugPrefix answers POST /debug/prefix with a chat or completion request's body
// (chat when it has "messages"): the request is parsed and tokenized as handleGenerate
// would, but not run.
func (s *Server) handleDebugPrefix(ctx *fasthttp.RequestCtx) {
	body := ctx.PostBody()
	p, apiErr := parseGenerateRequest(body, bytes.Contains(body, []byte(`"messages"`)))
	if apiErr != nil {
		s.writeError(ctx, apiErr)
		return
	}
	adapter, ok := s.servesModel(p.model)
	if !ok {
		s.writeError(ctx, modelNotFound(p.model))
		return
	}
	p.maxTokens = 1 // only the prompt matters; never the context-length check of the output
	req, apiErr := s.buildRequest(p, adapter)
	if apiErr != nil {
		s.writeError(ctx, apiErr)
		return
	}
	s.writeJSON(ctx, fasthttp.StatusOK, s.engine.prefixView(req.hashes))
}

// prefixView matches a prompt's block hashes against the cache and the admitted requests.
func (e *engine) prefixView(hashes []uint64) PrefixView {
	e.mu.Lock()
	defer e.mu.Unlock()
	v := PrefixView{Blocks: len(hashes), Cached: e.kv.matchPrefix(hashes)}
	for _, list := range [][]*request{e.running, e.waiting} {
		for _, r := range list {
			n := 0
			for n < len(hashes) && n < len(r.hashes) && hashes[n] == r.hashes[n] {
				n++
			}
			v.InFlight = max(v.InFlight, n)
		}
	}
	v.Held = max(v.Cached, v.InFlight)
	return v
}
