package sim

import (
	"errors"
	"github.com/infergw/infergw/kvevents"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// minSleep is the shortest wait worth a timer: shorter modelled steps (tiny time scales) are
// accumulated on a virtual clock and slept off together, so the average pace stays exact
// without paying timer overhead on every step.
const minSleep = 200 * time.Microsecond

// maxCatchUp is how far the engine may run behind its modelled timeline (timer overshoot on
// a busy machine) and still catch up by shortening the next waits, keeping the modelled pace.
const maxCatchUp = 20 * time.Millisecond

var errEngineStopped = errors.New("engine stopped")

// engine is a continuous-batching scheduler in the style of vLLM v1: one goroutine runs steps;
// each step first gives every running sequence its next tokens (one decode token, or the next
// prefill chunk) within a shared token budget, preempting the newest sequence when KV blocks
// run out, then admits waiting requests while max-num-seqs, the budget, KV blocks and LoRA
// slots allow. The step's duration comes from the cost model; at its end every sequence whose
// KV is complete samples one token.
type engine struct {
	cfg *Config
	log *slog.Logger
	m   *metrics

	mu       sync.Mutex
	kv       *kvCache
	waiting  []*request
	running  []*request
	gpuLoRAs map[string]uint64 // adapters in GPU slots -> step of last use
	stepNo   uint64
	ranStep  bool // a step with work ran (vLLM reports LoRA state only from then on)
	sched    []scheduled
	closed   bool
	// KV events (nil pub: off): this step's events, published at its end.
	pub    *kvPublisher
	events []kvevents.Event

	// Arrival counters for /debug/engine (EngineView).
	arrivals, arrivalsBehind, tokensAhead uint64
	// traces are the last first-token traces per class (/debug/engine).
	traces firstTokenTraces

	wake chan struct{}
	quit chan struct{}
	done chan struct{}
}

type scheduled struct {
	r *request
	n int // tokens computed for r in this step
}

// engineStats is the engine's state as the gauges report it.
type engineStats struct {
	running, waiting int
	kvUsage          float64
	runningLoRAs     []string
	waitingLoRAs     []string
	stepped          bool // the engine has run at least one step
}

func newEngine(cfg *Config, log *slog.Logger) *engine {
	return &engine{
		cfg:      cfg,
		log:      log,
		kv:       newKVCache(cfg.KVBlocks, cfg.BlockSize),
		gpuLoRAs: make(map[string]uint64),
		wake:     make(chan struct{}, 1),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
	}
}

func (e *engine) submit(r *request) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return errEngineStopped
	}
	e.arrivals++
	if n, tokens := e.pendingPrefill(); n > 0 {
		e.arrivalsBehind++
		e.tokensAhead += uint64(tokens) //nolint:gosec // G115: a token count, never negative
		r.prefillAhead = tokens
	}
	e.waiting = append(e.waiting, r)
	e.mu.Unlock()
	e.poke()
	return nil
}

// abort drops a request whose client went away; the engine frees it at its next step.
func (e *engine) abort(r *request) {
	r.aborted.Store(true)
	e.poke()
}

func (e *engine) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// stop ends the loop and waits for it; requests still queued are left for their handlers,
// which watch e.done.
func (e *engine) stop() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		<-e.done
		return
	}
	e.closed = true
	e.mu.Unlock()
	close(e.quit)
	<-e.done
}

func (e *engine) run() {
	defer close(e.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var clock time.Time // modelled end of the previous step
	for {
		e.mu.Lock()
		cost := e.schedule()
		busy := len(e.sched) > 0
		e.ranStep = e.ranStep || busy
		e.mu.Unlock()
		if !busy {
			select {
			case <-e.wake:
				continue
			case <-e.quit:
				return
			}
		}
		now := time.Now()
		if now.Sub(clock) > maxCatchUp {
			clock = now // idle or far behind: start the modelled timeline afresh
		}
		clock = clock.Add(e.cfg.scaled(cost))
		if wait := clock.Sub(now); wait > minSleep {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-e.quit:
				return
			}
		}
		e.mu.Lock()
		e.complete(time.Now())
		e.flushEvents()
		e.mu.Unlock()
	}
}

// schedule builds the next step into e.sched and returns its modelled cost. Caller holds mu.
func (e *engine) schedule() time.Duration {
	e.stepNo++
	e.dropAborted()
	e.sched = e.sched[:0]
	budget := e.cfg.MaxNumBatchedTokens
	prefillTokens, decodeSeqs, loads := 0, 0, 0
	preempted := false

	for i := 0; i < len(e.running) && budget > 0; i++ {
		r := e.running[i]
		n := min(r.tokensNeeded()-r.numComputed, budget)
		for r != nil && !e.ensureBlocks(r, r.numComputed+n) {
			victim := e.running[len(e.running)-1]
			e.preempt(victim)
			preempted = true
			if victim == r {
				r = nil
			}
		}
		if r == nil {
			break
		}
		e.sched = append(e.sched, scheduled{r, n})
		budget -= n
		if r.generated > 0 && n == 1 && r.numComputed+1 == r.tokensNeeded() {
			decodeSeqs++
		} else {
			prefillTokens += n
		}
		if r.adapter != "" {
			e.gpuLoRAs[r.adapter] = e.stepNo
		}
	}

	// Like vLLM, admit nobody in a step that had to preempt: memory is short.
	for j := 0; !preempted && j < len(e.waiting) && budget > 0 && len(e.running) < e.cfg.MaxNumSeqs; {
		r := e.waiting[j]
		if r.adapter != "" {
			ready, loaded := e.acquireLoRA(r.adapter)
			if !ready {
				j++ // no free slot for its adapter: it waits, later requests may go first
				continue
			}
			if loaded {
				loads++
			}
		}
		hits := 0
		if maxHits := (r.promptLen - 1) / e.cfg.BlockSize; maxHits > 0 {
			hits = e.kv.matchPrefix(r.hashes[:min(len(r.hashes), maxHits)])
		}
		r.blocks = e.kv.acquireCached(r.hashes[:hits], r.blocks[:0])
		r.numComputed = hits * e.cfg.BlockSize
		r.registered = hits
		n := min(r.tokensNeeded()-r.numComputed, budget)
		if !e.ensureBlocks(r, r.numComputed+n) {
			e.kv.release(r.blocks)
			r.blocks, r.numComputed, r.registered = r.blocks[:0], 0, 0
			break // first come, first served: nobody overtakes a request waiting for memory
		}
		e.waiting = slices.Delete(e.waiting, j, j+1)
		e.running = append(e.running, r)
		if !r.admittedOnce {
			r.admittedOnce = true
			r.admitted = time.Now()
			cached := hits * e.cfg.BlockSize
			r.setCached(cached)
			e.m.queueTime.Observe(time.Since(r.arrival).Seconds())
			e.m.promptTokens.Add(float64(r.promptLen))
			e.m.prefixQueries.Add(float64(r.promptLen))
			e.m.prefixHits.Add(float64(cached))
		}
		e.sched = append(e.sched, scheduled{r, n})
		budget -= n
		prefillTokens += n
	}

	return e.cfg.StepOverhead +
		time.Duration(prefillTokens)*e.cfg.PrefillPerToken +
		time.Duration(decodeSeqs)*e.cfg.DecodePerSeq +
		time.Duration(loads)*e.cfg.LoRALoadCost
}

// complete applies a finished step: computed tokens advance, full prompt blocks become
// shareable, and sequences with complete KV sample a token. Caller holds mu.
func (e *engine) complete(now time.Time) {
	bs := e.cfg.BlockSize
	finished := false
	for _, s := range e.sched {
		r := s.r
		r.numComputed += s.n
		for full := min(r.numComputed, r.promptLen) / bs; r.registered < full && r.registered < len(r.hashes); r.registered++ {
			if e.kv.register(r.blocks[r.registered], r.hashes[r.registered]) && e.pub != nil {
				e.blockStored(r, r.registered)
			}
		}
		if r.numComputed < r.tokensNeeded() {
			continue // prefill continues next step
		}
		r.generated++
		e.m.genTokens.Inc()
		if r.generated == 1 {
			e.m.ttft.Observe(now.Sub(r.arrival).Seconds())
			e.traces.add(r, now)
		} else {
			e.m.itl.Observe(now.Sub(r.lastToken).Seconds())
		}
		r.lastToken = now
		if r.generated < r.outLen {
			r.publish("")
			continue
		}
		reason := finishStop
		if r.stopAtLimit {
			reason = finishLength
		}
		e.finish(r, reason, now)
		finished = true
	}
	if finished {
		e.running = slices.DeleteFunc(e.running, func(r *request) bool { return r.blocks == nil })
	}
}

// finish releases a request's blocks (leaving r.blocks nil as the "done" mark) and reports it.
func (e *engine) finish(r *request, reason string, now time.Time) {
	e.kv.release(r.blocks)
	r.blocks = nil
	e.m.success.WithLabelValues(reason).Inc()
	e.m.e2e.Observe(now.Sub(r.arrival).Seconds())
	r.publish(reason)
}

func (e *engine) dropAborted() {
	now := time.Now()
	drop := func(r *request) bool {
		if !r.aborted.Load() {
			return false
		}
		if r.blocks == nil {
			r.blocks = []int32{} // waiting requests hold no blocks; finish needs a slice
		}
		e.finish(r, finishAbort, now)
		return true
	}
	e.running = slices.DeleteFunc(e.running, drop)
	e.waiting = slices.DeleteFunc(e.waiting, drop)
}

// ensureBlocks grows r's block table to hold tokens tokens.
func (e *engine) ensureBlocks(r *request, tokens int) bool {
	need := (tokens+e.cfg.BlockSize-1)/e.cfg.BlockSize - len(r.blocks)
	if need <= 0 {
		return true
	}
	var ok bool
	r.blocks, ok = e.kv.allocate(need, r.blocks)
	return ok
}

// preempt frees a running request's KV (vLLM's recompute preemption) and puts it at the
// head of the queue; when re-admitted it prefills prompt + generated tokens again.
func (e *engine) preempt(r *request) {
	e.kv.release(r.blocks)
	r.blocks, r.numComputed, r.registered = r.blocks[:0], 0, 0
	e.running = e.running[:len(e.running)-1]
	e.waiting = slices.Insert(e.waiting, 0, r)
	e.m.preemptions.Inc()
	e.log.Debug("preempted request", "generated", r.generated, "prompt_tokens", r.promptLen)
}

// acquireLoRA makes adapter resident in a GPU slot. ready is false when every slot holds an
// adapter that running requests use; loaded reports that this step pays a load.
func (e *engine) acquireLoRA(adapter string) (ready, loaded bool) {
	if _, ok := e.gpuLoRAs[adapter]; ok {
		e.gpuLoRAs[adapter] = e.stepNo
		return true, false
	}
	if len(e.gpuLoRAs) >= e.cfg.MaxLoRAs {
		inUse := make(map[string]bool, len(e.running))
		for _, r := range e.running {
			inUse[r.adapter] = true
		}
		victim, oldest := "", uint64(0)
		for a, last := range e.gpuLoRAs {
			if !inUse[a] && (victim == "" || last < oldest) {
				victim, oldest = a, last
			}
		}
		if victim == "" {
			return false, false
		}
		delete(e.gpuLoRAs, victim)
	}
	e.gpuLoRAs[adapter] = e.stepNo
	return true, true
}

func (e *engine) stats() engineStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := engineStats{running: len(e.running), waiting: len(e.waiting), kvUsage: e.kv.usage(), stepped: e.ranStep}
	st.runningLoRAs = distinctAdapters(e.running)
	st.waitingLoRAs = distinctAdapters(e.waiting)
	return st
}

func distinctAdapters(rs []*request) []string {
	var out []string
	for _, r := range rs {
		if r.adapter != "" && !slices.Contains(out, r.adapter) {
			out = append(out, r.adapter)
		}
	}
	slices.Sort(out)
	return out
}

// blockStored records the KV event of request r's prompt block i, first computed now.
// Caller holds mu.
func (e *engine) blockStored(r *request, i int) {
	bs := e.cfg.BlockSize
	ev := kvevents.Event{Kind: kvevents.BlockStored, BlockHashes: []uint64{r.hashes[i]},
		TokenIDs: r.tokens[i*bs : (i+1)*bs : (i+1)*bs], BlockSize: bs, LoRAName: r.adapter, Medium: "GPU"}
	if i > 0 {
		ev.ParentHash, ev.HasParent = r.hashes[i-1], true
	}
	if r.adapter != "" {
		ev.LoRAID = int64(loraID(r.adapter))
	}
	e.events = append(e.events, ev)
}

// loraID is a stable positive id for an adapter name (vLLM numbers adapters as it loads
// them; subscribers key on the name).
func loraID(name string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(name); i++ {
		h = (h ^ uint32(name[i])) * 16777619
	}
	return h>>1 | 1
}

// flushEvents publishes the step's events as one batch. Caller holds mu.
func (e *engine) flushEvents() {
	if e.pub == nil || len(e.events) == 0 {
		return
	}
	e.pub.enqueue(e.events)
	e.events = nil // the sender owns the slice now
}

// enableKVEvents makes the cache report evictions to the step's events.
func (e *engine) enableKVEvents(p *kvPublisher) {
	e.pub = p
	e.kv.onEvict = func(h uint64) {
		e.events = append(e.events, kvevents.Event{Kind: kvevents.BlockRemoved, BlockHashes: []uint64{h}, Medium: "GPU"})
	}
}
