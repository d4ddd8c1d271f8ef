package sim

import (
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
	return v
}

func (s *Server) handleDebugEngine(ctx *fasthttp.RequestCtx) {
	s.writeJSON(ctx, fasthttp.StatusOK, s.View())
}
