package router

import (
	"math"
	"slices"
	"time"
)

// scheduler is a SchedulerConfig compiled for the hot path.
type scheduler struct {
	loraFilter        bool
	scorers           []weightedScorer // weight > 0 only
	random            bool
	usePrefix         bool
	usePrecise        bool // the precise-prefix scorer is configured
	blockSize         int  // prefix block span in characters; 0 = derive from the engine
	prefixLRUCapacity int  // 0 = derive from the engine
	prefixMaxBlocks   int  // 0 = maxPrefixBlocks
	sat               SaturationConfig
}

type weightedScorer struct {
	name   string
	weight float64
	score  scoreFunc
}

// scoreFunc writes one score in [0,1] per candidate of pc into out (len(out) ==
// len(pc.eps)).
type scoreFunc func(pc *pickContext, out []float64)

// pickContext is what filters and scorers see of one Pick: the candidates (endpoint and
// the metrics loaded once for this pick, index-aligned) and the request.
type pickContext struct {
	req       *Request
	now       time.Time
	eps       []*endpoint
	ms        []*metricsState
	prefix    *spanHashes // the prompt's chained prefix-block hashes, per block span
	isAdapter bool        // the model is known to be a LoRA adapter
	prefixHit []int       // per candidate: matched prefix blocks (filled by the prefix scorer)
	flags     []bool      // per candidate scratch (ejection snapshot)
	// prefixDone: the prefix scorer filled prefixHit (each in its endpoint's block span).
	prefixDone bool
	precise    *preciseScratch // the precise-prefix scorer's buffers
}

func newScheduler(cfg SchedulerConfig) *scheduler {
	s := &scheduler{
		loraFilter:        slices.Contains(cfg.Filters, FilterLoRAAffinity),
		random:            cfg.Picker == PickerRandom,
		blockSize:         cfg.Prefix.BlockSize,
		prefixLRUCapacity: cfg.Prefix.LRUCapacity,
		prefixMaxBlocks:   cfg.Prefix.MaxBlocks,
		sat:               cfg.Saturation,
	}
	if s.random {
		return s // scorers are ignored by the random picker
	}
	for _, sc := range cfg.Scorers {
		if sc.Weight == 0 {
			continue
		}
		var fn scoreFunc
		switch sc.Name {
		case ScorerQueue:
			fn = scoreQueue
		case ScorerKVCache:
			fn = scoreKVCache
		case ScorerPrefix:
			fn = scorePrefix
			s.usePrefix = true
		case ScorerPrecisePrefix:
			s.usePrefix, s.usePrecise = true, true // fn is bound to the router in New
		case ScorerLoRAAffinity:
			fn = scoreLoRAAffinity
		case ScorerInFlight:
			fn = scoreInFlight
		case ScorerPendingPrefill:
			fn = scorePendingPrefill
		case ScorerLeastRecent:
			fn = scoreLeastRecent
		}
		s.scorers = append(s.scorers, weightedScorer{name: sc.Name, weight: sc.Weight, score: fn})
	}
	// pending-prefill reads the prefix scorer's matches: it runs last.
	if i := slices.IndexFunc(s.scorers, func(w weightedScorer) bool { return w.name == ScorerPendingPrefill }); i >= 0 {
		pp := s.scorers[i]
		s.scorers = append(slices.Delete(s.scorers, i, i+1), pp)
	}
	return s
}

// span is the prefix block span, in prompt characters, of an endpoint with metrics m: the
// configured blockSize, else the engine's KV block size (vllm:cache_config_info
// block_size tokens at charsPerToken characters each), else DefaultPrefixBlockSize.
func (s *scheduler) span(m *metricsState) int {
	switch {
	case s.blockSize > 0:
		return s.blockSize
	case m.blockSize > 0:
		return min(m.blockSize*charsPerToken, maxPrefixSpan)
	}
	return DefaultPrefixBlockSize
}

// maxPrefixLRUCapacity bounds a derived prefix LRU (blocks per endpoint): 2^20 block hashes,
// ~40 MiB, hold a 16-million-token cache at 16 tokens per block, more than any engine has.
const maxPrefixLRUCapacity = 1 << 20

// maxPrefixSpan bounds a derived span (a block size an engine reports is not trusted to
// be sane: 64 KiB of prompt per block is far beyond any engine's).
const maxPrefixSpan = 64 << 10

// lruCapacity is the prefix LRU size of an endpoint with metrics m: the engine's KV cache
// in tokens over the tokens per hashed block (with a derived span, num_gpu_blocks).
func (s *scheduler) lruCapacity(m *metricsState) int {
	if s.prefixLRUCapacity > 0 {
		return s.prefixLRUCapacity
	}
	if m.numGPUBlocks > 0 && m.blockSize > 0 {
		// The engine's figures come from its /metrics: a broken or hostile server must not
		// size the LRU (nor overflow the product) past a bound.
		tokensPerBlock := max(s.span(m)/charsPerToken, 1)
		tokens := int64(min(m.numGPUBlocks, maxPrefixLRUCapacity)) * int64(min(m.blockSize, maxPrefixSpan))
		return int(max(min(tokens/int64(tokensPerBlock), maxPrefixLRUCapacity), 1))
	}
	return DefaultPrefixLRUCapacity
}

// saturated reports whether an endpoint with metrics m is saturated.
func (s *scheduler) saturated(m *metricsState) bool {
	return m.waiting >= s.sat.QueueDepthThreshold || m.kvUsage >= s.sat.KVCacheThreshold
}

// keep compacts the candidates to those for which pred is true.
func (pc *pickContext) keep(pred func(i int) bool) {
	n := 0
	for i := range pc.eps {
		if pred(i) {
			pc.eps[n], pc.ms[n] = pc.eps[i], pc.ms[i]
			n++
		}
	}
	pc.eps, pc.ms = pc.eps[:n], pc.ms[:n]
}

// --- Filters -------------------------------------------------------------------------

// filterServesModel drops endpoints whose model list is known and lacks the model. A request
// that names no model (a bodiless GET such as /v1/models) may go to any endpoint.
func filterServesModel(pc *pickContext) {
	model := pc.req.Model
	if model == "" {
		return
	}
	pc.keep(func(i int) bool {
		ms := pc.eps[i].models.Load()
		if ms == nil {
			return true
		}
		_, ok := (*ms)[model]
		return ok
	})
}

// filterFresh keeps only fresh endpoints when at least one is fresh, and reports whether
// every candidate is stale (then all are kept).
func filterFresh(pc *pickContext, threshold time.Duration) (allStale bool) {
	fresh := 0
	for i, e := range pc.eps {
		if e.isFresh(pc.ms[i], pc.now, threshold) {
			fresh++
		}
	}
	if fresh == 0 {
		keepFreshest(pc, threshold)
		return len(pc.eps) > 0
	}
	if fresh < len(pc.eps) {
		pc.keep(func(i int) bool { return pc.eps[i].isFresh(pc.ms[i], pc.now, threshold) })
	}
	return false
}

// keepFreshest degrades a pick where every candidate is stale to the freshest data rather
// than to all of it alike: it keeps the endpoints scraped within one staleness threshold
// of the newest scrape, and among them those whose last scrape did not fail outright
// (a slow answer is not a failure; see runEndpoint) when there are any. Never-scraped
// endpoints go only if every candidate is never-scraped.
func keepFreshest(pc *pickContext, threshold time.Duration) {
	var newest time.Time
	for _, m := range pc.ms {
		if m.scrapedAt.After(newest) {
			newest = m.scrapedAt
		}
	}
	if newest.IsZero() {
		return
	}
	recent := func(i int) bool {
		t := pc.ms[i].scrapedAt
		return !t.IsZero() && newest.Sub(t) <= threshold
	}
	answering := false
	for i, e := range pc.eps {
		if recent(i) && !e.lastFailed.Load() {
			answering = true
			break
		}
	}
	pc.keep(func(i int) bool { return recent(i) && (!answering || !pc.eps[i].lastFailed.Load()) })
}

// filterLoRAAffinity narrows an adapter request to the unsaturated endpoints that run the
// adapter; if none, to the unsaturated endpoints with a free adapter slot; else it keeps
// every candidate (the LoRA scorer still ranks them).
func filterLoRAAffinity(pc *pickContext, s *scheduler) {
	if !pc.isAdapter {
		return
	}
	model := pc.req.Model
	running, free := 0, 0
	for i := range pc.eps {
		m := pc.ms[i]
		if s.saturated(m) {
			continue
		}
		if slices.Contains(m.loraRunning, model) {
			running++
		} else if hasFreeLoRASlot(m) {
			free++
		}
	}
	switch {
	case running > 0:
		pc.keep(func(i int) bool { return !s.saturated(pc.ms[i]) && slices.Contains(pc.ms[i].loraRunning, model) })
	case free > 0:
		pc.keep(func(i int) bool { return !s.saturated(pc.ms[i]) && hasFreeLoRASlot(pc.ms[i]) })
	}
}

// hasFreeLoRASlot: an engine whose LoRA state is still unknown counts as having a free
// slot (vLLM reports none before its first step, when no adapter is loaded yet), not as
// having zero slots.
func hasFreeLoRASlot(m *metricsState) bool {
	return m.loraUnknown || (m.maxLoRA > 0 && len(m.loraRunning) < m.maxLoRA)
}

// isAdapterRequest reports whether the model is known to be a LoRA adapter: some
// candidate lists it with a parent in /v1/models, or runs or queues it as an adapter.
func isAdapterRequest(pc *pickContext) bool {
	model := pc.req.Model
	for i, e := range pc.eps {
		if ms := e.models.Load(); ms != nil {
			if parent, ok := (*ms)[model]; ok && parent != "" {
				return true
			}
		}
		m := pc.ms[i]
		if slices.Contains(m.loraRunning, model) || slices.Contains(m.loraWaiting, model) {
			return true
		}
	}
	return false
}

// --- Scorers ---------------------------------------------------------------------------

// scoreQueue: min-max normalised scraped waiting queue, 1 for the shortest.
func scoreQueue(pc *pickContext, out []float64) {
	for i, m := range pc.ms {
		out[i] = m.waiting
	}
	invertMinMax(out)
}

// scoreInFlight: min-max normalised gateway-side in-flight picks (not yet Done), 1 for
// the fewest. It reacts within one request, where scraped metrics lag by a scrape.
func scoreInFlight(pc *pickContext, out []float64) {
	for i, e := range pc.eps {
		out[i] = float64(e.inflight.Load())
	}
	invertMinMax(out)
}

// pendingPrefillMinSpanBytes is the smallest spread of prefill work (~1,000 tokens, ~60 ms on
// an 8B model on one H100) that the pending-prefill score stretches over its whole range.
const pendingPrefillMinSpanBytes = 4096

// scorePendingPrefill scores the prompt work an endpoint must do before this request's
// first token: the uncached prompt bytes of its picks still waiting for a first token (exact
// at the gateway, where the scraped queue is up to one scrape old), plus this prompt's part
// not in its prefix cache. With w that work and lo, hi its least and most among the
// candidates, the score is 1 − (w − lo) / max(hi − lo, 4 KiB): linear in the extra work, so
// that it ranks endpoints as well under high load (every endpoint has prompts pending) as
// under a light one, and stretched over at least 4 KiB, so that a few bytes do not weigh
// like a full prompt. It reads the prefix scorer's matches when that ran first.
func scorePendingPrefill(pc *pickContext, out []float64) {
	prompt := len(pc.req.Prompt)
	hits := len(pc.prefixHit) == len(pc.eps) && pc.prefixDone
	lo, hi := math.Inf(1), math.Inf(-1)
	for i, e := range pc.eps {
		own := prompt
		if hits {
			own = max(prompt-pc.prefixHit[i]*int(e.prefixSpan.Load()), 0)
		}
		w := float64(max(e.out.pendingBytes.Load(), 0) + int64(own))
		out[i] = w
		lo, hi = min(lo, w), max(hi, w)
	}
	span := max(hi-lo, pendingPrefillMinSpanBytes)
	for i, w := range out {
		out[i] = 1 - (w-lo)/span
	}
}

// scoreLeastRecent: min-max normalised time since the endpoint was last picked, 1 for the
// longest ago. The one signal no lag can spoil: when every other one is flat or stale, it
// spaces picks of an endpoint in time as round robin does, instead of leaving the choice
// to chance.
func scoreLeastRecent(pc *pickContext, out []float64) {
	now := pc.now.UnixNano()
	for i, e := range pc.eps {
		out[i] = -float64(now - e.lastPick.Load())
	}
	invertMinMax(out)
}

// invertMinMax maps values to (max-v)/(max-min); all 1 when they are equal.
func invertMinMax(v []float64) {
	if len(v) == 0 {
		return
	}
	lo, hi := v[0], v[0]
	for _, x := range v[1:] {
		lo, hi = min(lo, x), max(hi, x)
	}
	if hi == lo {
		for i := range v {
			v[i] = 1
		}
		return
	}
	span := hi - lo
	for i, x := range v {
		v[i] = (hi - x) / span
	}
}

// scoreKVCache: 1 − KV-cache utilisation.
func scoreKVCache(pc *pickContext, out []float64) {
	for i, m := range pc.ms {
		out[i] = 1 - clamp01(m.kvUsage)
	}
}

// LoRA affinity scores.
const (
	loraScoreRunning  = 1.0
	loraScoreFreeSlot = 0.8
	loraScoreWaiting  = 0.6
)

// scoreLoRAAffinity: for adapter requests 1.0 when the adapter is running, 0.8 when a
// slot is free, 0.6 when it is waiting, else 0. For base-model requests every endpoint
// scores 0 (no preference).
func scoreLoRAAffinity(pc *pickContext, out []float64) {
	model := pc.req.Model
	for i, m := range pc.ms {
		switch {
		case !pc.isAdapter:
			out[i] = 0
		case slices.Contains(m.loraRunning, model):
			out[i] = loraScoreRunning
		case hasFreeLoRASlot(m):
			out[i] = loraScoreFreeSlot
		case slices.Contains(m.loraWaiting, model):
			out[i] = loraScoreWaiting
		default:
			out[i] = 0
		}
	}
}

// scorePrefix: longest cached prefix chain / prompt blocks, each endpoint measured in its
// own block span (0 when the prompt has no full block of that span).
func scorePrefix(pc *pickContext, out []float64) {
	for i, e := range pc.eps {
		hashes := pc.prefix.get(int(e.prefixSpan.Load()))
		if len(hashes) == 0 {
			out[i], pc.prefixHit[i] = 0, 0
			continue
		}
		n := e.prefix.matchLen(hashes)
		pc.prefixHit[i] = n
		out[i] = float64(n) / float64(len(hashes))
	}
	pc.prefixDone = true
}
