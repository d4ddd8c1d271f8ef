package sim

import (
	"sync"
	"sync/atomic"
	"time"
)

// Finish reasons, as OpenAI and vLLM name them.
const (
	finishStop   = "stop"
	finishLength = "length"
	finishAbort  = "abort"
)

// request is one generation in the engine. The engine owns the fields in the first block;
// the handler reads progress through snapshot() and is woken through notify.
type request struct {
	// Set before submission, read-only afterwards.
	adapter     string   // "" for the base model
	promptLen   int      // prompt tokens
	hashes      []uint64 // chained hashes of the prompt's full blocks
	tokens      []uint32 // the prompt's token ids (for KV events)
	outLen      int      // tokens to generate before finishing
	stopAtLimit bool     // outLen came from max_tokens (finish "length") rather than EOS
	arrival     time.Time
	seed        uint64 // selects the deterministic output text
	// traceClass groups the request in the first-token traces of /debug/engine (the
	// gateway's fairness ID or objective header; "" without).
	traceClass string

	// Engine-owned state.
	numComputed  int     // tokens whose KV is computed
	generated    int     // tokens sampled so far
	blocks       []int32 // KV blocks held, in token order
	registered   int     // leading prompt blocks already published to the prefix cache
	admittedOnce bool
	admitted     time.Time // first admission into the running batch
	prefillAhead int       // prompt tokens still to prefill in the engine when it arrived
	lastToken    time.Time

	aborted atomic.Bool
	notify  chan struct{} // capacity 1: "progress happened"

	mu           sync.Mutex
	outGenerated int
	outCached    int
	finished     bool
	finishReason string
}

func newRequest() *request {
	return &request{notify: make(chan struct{}, 1)}
}

// progress is what a handler needs to write the next part of a response.
type progress struct {
	generated    int
	cachedTokens int
	finished     bool
	finishReason string
}

func (r *request) snapshot() progress {
	r.mu.Lock()
	defer r.mu.Unlock()
	return progress{r.outGenerated, r.outCached, r.finished, r.finishReason}
}

// publish records engine progress for the handler and wakes it without ever blocking.
func (r *request) publish(finishReason string) {
	r.mu.Lock()
	r.outGenerated = r.generated
	if finishReason != "" {
		r.finished = true
		r.finishReason = finishReason
	}
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *request) setCached(n int) {
	r.mu.Lock()
	r.outCached = n
	r.mu.Unlock()
}

// tokensNeeded is how many tokens must have KV before the next token can be sampled.
func (r *request) tokensNeeded() int { return r.promptLen + r.generated }
