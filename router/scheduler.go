package router

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// scheduler is a SchedulerConfig built by a Registry, ready for the hot path.
type scheduler struct {
	filters []Filter
	scorers []weightedScorer // weight > 0 only; none when the picker ignores scores
	picker  Picker
	// scores: the picker reads the weighted sums (false for the random picker).
	scores bool
	// The prefix scorer's settings (usePrefix: it is configured with a weight > 0); the
	// router also sizes each endpoint's prefix LRU and block span from them.
	usePrefix         bool
	blockSize         int // prefix block span in characters; 0 = derive from the engine
	prefixLRUCapacity int // 0 = derive from the engine
	prefixMaxBlocks   int // 0 = maxPrefixBlocks
	sat               SaturationConfig
}

type weightedScorer struct {
	name   string
	weight float64
	scorer Scorer
}

// PickContext is what filters, scorers and pickers see of one pick: the candidates (index
// i is the same endpoint in every accessor) and the request. It is valid only during the
// call it is passed to.
type PickContext struct {
	req       *Request
	now       time.Time
	sched     *scheduler
	eps       []*endpoint
	ms        []*metricsState
	prefix    *spanHashes // the prompt's chained prefix-block hashes, per block span
	isAdapter bool        // the model is known to be a LoRA adapter
	prefixHit []int       // per candidate: matched prefix blocks (filled by the prefix scorer)
	flags     []bool      // per candidate scratch (ejection snapshot)
	// prefixDone: the prefix scorer filled prefixHit (each in its endpoint's block span).
	prefixDone bool
}

// newScheduler builds every plugin of cfg through the registry. Errors name the plugin
// (its place in the config and its name) and, for parameters, the field.
func (r *Registry) newScheduler(cfg SchedulerConfig) (*scheduler, error) {
	if err := cfg.Saturation.validate(); err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	s := &scheduler{sat: cfg.Saturation}
	for i, spec := range cfg.Filters {
		inst, err := r.buildAs(KindFilter, spec)
		if err != nil {
			return nil, fmt.Errorf("scheduler: filters[%d]: %w", i, err)
		}
		s.filters = append(s.filters, inst.(Filter))
	}
	pickerSpec := cfg.Picker
	if pickerSpec.Type == "" && pickerSpec.Parameters == nil && pickerSpec.Name == "" {
		pickerSpec = PluginSpec{Type: TypeMaxScorePicker, Name: PickerMaxScore}
	}
	inst, err := r.buildAs(KindPicker, pickerSpec)
	if err != nil {
		return nil, fmt.Errorf("scheduler: picker: %w", err)
	}
	s.picker = inst.(Picker)
	ig, ok := s.picker.(scoreIgnorer)
	s.scores = !ok || !ig.IgnoresScores()

	seen := make(map[string]bool, len(cfg.Scorers))
	for i, spec := range cfg.Scorers {
		w := spec.Weight
		if math.IsNaN(w) || math.IsInf(w, 0) || w < 0 {
			return nil, fmt.Errorf("scheduler: scorers[%d] (%s): weight %v must be a finite number >= 0", i, spec.displayName(), w)
		}
		inst, err := r.buildAs(KindScorer, spec)
		if err != nil {
			return nil, fmt.Errorf("scheduler: scorers[%d]: %w", i, err)
		}
		// One instance of a type: two prefix scorers would share one LRU per endpoint.
		t, _ := r.Lookup(spec.Type)
		if seen[t.Type] {
			return nil, fmt.Errorf("scheduler: scorers[%d]: scorer %q (%s) listed twice", i, spec.displayName(), t.Type)
		}
		seen[t.Type] = true
		if w == 0 || !s.scores {
			continue // off (the random picker ignores every scorer)
		}
		sc := inst.(Scorer)
		if p, ok := sc.(*prefixScorer); ok {
			s.usePrefix = true
			s.blockSize, s.prefixLRUCapacity, s.prefixMaxBlocks = p.blockSize, p.lruCapacity, p.maxBlocks
		}
		s.scorers = append(s.scorers, weightedScorer{name: spec.displayName(), weight: w, scorer: sc})
	}
	// pending-prefill reads the prefix scorer's matches: it runs last.
	if i := slices.IndexFunc(s.scorers, func(w weightedScorer) bool { _, ok := w.scorer.(pendingPrefillScorer); return ok }); i >= 0 {
		pp := s.scorers[i]
		s.scorers = append(slices.Delete(s.scorers, i, i+1), pp)
	}
	for i, spec := range cfg.Other {
		if _, err := r.Build(spec); err != nil {
			return nil, fmt.Errorf("scheduler: plugins not in the profile[%d]: %w", i, err)
		}
	}
	return s, nil
}

// buildAs builds a plugin that must be of kind.
func (r *Registry) buildAs(kind Kind, spec PluginSpec) (any, error) {
	t, ok := r.types[spec.Type]
	if !ok {
		return nil, fmt.Errorf("unknown %s type %q (known: %s)", kind, spec.Type, r.names(kind, false))
	}
	if t.Kind != kind {
		return nil, fmt.Errorf("plugin %s: type %s is a %s, not a %s", spec.displayName(), t.Type, t.Kind, kind)
	}
	if kind != KindScorer && spec.Weight != 0 {
		return nil, fmt.Errorf("plugin %s: only scorers take a weight", spec.displayName())
	}
	inst, err := r.Build(spec)
	if err != nil {
		return nil, err
	}
	var fits bool
	switch kind {
	case KindFilter:
		_, fits = inst.(Filter)
	case KindScorer:
		_, fits = inst.(Scorer)
	case KindPicker:
		_, fits = inst.(Picker)
	}
	if !fits {
		return nil, fmt.Errorf("plugin %s: the factory of %s made a %T, which is not a %s", spec.displayName(), t.Type, inst, kind)
	}
	return inst, nil
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
func (pc *PickContext) keep(pred func(i int) bool) {
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
func filterServesModel(pc *PickContext) {
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
func filterFresh(pc *PickContext, threshold time.Duration) (allStale bool) {
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
func keepFreshest(pc *PickContext, threshold time.Duration) {
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
func filterLoRAAffinity(pc *PickContext, s *scheduler) {
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
func isAdapterRequest(pc *PickContext) bool {
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
func scoreQueue(pc *PickContext, out []float64) {
	for i, m := range pc.ms {
		out[i] = m.waiting
	}
	invertMinMax(out)
}

// scoreInFlight: min-max normalised gateway-side in-flight picks (not yet Done), 1 for
// the fewest. It reacts within one request, where scraped metrics lag by a scrape.
func scoreInFlight(pc *PickContext, out []float64) {
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
func scorePendingPrefill(pc *PickContext, out []float64) {
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
func scoreLeastRecent(pc *PickContext, out []float64) {
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
func scoreKVCache(pc *PickContext, out []float64) {
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
func scoreLoRAAffinity(pc *PickContext, out []float64) {
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
func scorePrefix(pc *PickContext, out []float64) {
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

// --- The built-in plugins as registry plugins (registered in plugins.go) --------------

type loraAffinityFilter struct{}

func (loraAffinityFilter) Filter(pc *PickContext) { filterLoRAAffinity(pc, pc.sched) }

type queueScorer struct{}

func (queueScorer) Score(pc *PickContext, out []float64) { scoreQueue(pc, out) }

type kvCacheScorer struct{}

func (kvCacheScorer) Score(pc *PickContext, out []float64) { scoreKVCache(pc, out) }

// prefixScorer holds the prefix parameters resolved; the router reads them to size each
// endpoint's LRU and block span (scheduler.usePrefix and friends).
type prefixScorer struct{ blockSize, lruCapacity, maxBlocks int }

func (*prefixScorer) Score(pc *PickContext, out []float64) { scorePrefix(pc, out) }

type loraAffinityScorer struct{}

func (loraAffinityScorer) Score(pc *PickContext, out []float64) { scoreLoRAAffinity(pc, out) }

type inFlightScorer struct{}

func (inFlightScorer) Score(pc *PickContext, out []float64) { scoreInFlight(pc, out) }

type pendingPrefillScorer struct{}

func (pendingPrefillScorer) Score(pc *PickContext, out []float64) { scorePendingPrefill(pc, out) }

type leastRecentScorer struct{}

func (leastRecentScorer) Score(pc *PickContext, out []float64) { scoreLeastRecent(pc, out) }

type maxScorePicker struct{}

func (maxScorePicker) Pick(_ *PickContext, total []float64, order []int32, k int) {
	pickMaxScore(order, total, k)
}

type randomPicker struct{}

func (randomPicker) Pick(_ *PickContext, _ []float64, order []int32, k int) { pickRandom(order, k) }

// IgnoresScores: the scorers are not run for the random picker.
func (randomPicker) IgnoresScores() bool { return true }
