package kvindex

import (
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/infergw/infergw/kvevents"
)

// State is how far a pod's indexed blocks can be trusted.
type State uint8

const (
	// StateUnknown: no event from the pod yet (never published, or a picker that just
	// started and has not heard from it).
	StateUnknown State = iota
	// StateConsistent: every event since the pod's cache was last empty has been applied
	// (its first batch had sequence 0, or an AllBlocksCleared came after we joined) and no
	// batch was missed since: the index is the pod's cache.
	StateConsistent
	// StatePartial: we joined mid-stream, or missed batches (a sequence gap) and dropped
	// the pod's entries: every indexed block is there (we see every later removal), but
	// blocks stored while we were not listening are unknown.
	StatePartial
	// StateSilent: a request that must have stored new blocks went to the pod and no
	// batch came within the silence timeout: its publisher may have stopped.
	StateSilent
)

func (s State) String() string {
	return [...]string{"unknown", "consistent", "partial", "silent"}[min(int(s), 3)]
}

// Config bounds the index. Memory: 72 bytes per indexed block (BenchmarkIndexMemory), so
// at most 72 B x MaxBlocksPerPod x MaxPods: 2.4 GB with the defaults, whatever the
// publishers send; 1.2 MB for this repository's two real vLLM servers (8,192 blocks each).
type Config struct {
	// MaxPods bounds the pods (topic IPs) tracked; batches of further pods are dropped.
	MaxPods int
	// MaxRanksPerPod bounds the data-parallel ranks tracked per pod.
	MaxRanksPerPod int
	// MaxBlocksPerPod bounds the blocks indexed per pod (all its ranks together): more
	// than the engine can hold means a broken or hostile publisher; the overflowing rank's
	// entries are dropped.
	MaxBlocksPerPod int
	// SilenceTimeout: how long after Expect a pod must have published (default 10 s).
	SilenceTimeout time.Duration
	// SpeculationTTL is the backstop of speculation: the longest the blocks of a request
	// routed to a pod count as the pod's without its events confirming them, for requests
	// whose end the picker never learns (default 60 s). Normally a request's speculation
	// ends with the request: see Speculation.End.
	SpeculationTTL time.Duration
	// SpeculationGrace: how long a request's speculative blocks outlive its first token,
	// for the events of the step that finished its prefill to arrive (default 500 ms).
	SpeculationGrace time.Duration
}

// Defaults: vLLM's num_gpu_blocks is 8,192 on this machine's CPU build and tens of
// thousands on GPUs; 2^17 blocks per pod leaves a margin.
const (
	DefaultMaxPods         = 256
	DefaultMaxRanksPerPod  = 8
	DefaultMaxBlocksPerPod = 1 << 17
	DefaultSilenceTimeout  = 10 * time.Second
	// DefaultSpeculationTTL: longer than a request waits in a pod's queue in any sane
	// fleet (the outlier detector's first-byte timeout is 30 s); only a lost end waits it out.
	DefaultSpeculationTTL = 60 * time.Second
	// DefaultSpeculationGrace: a request's first token and the BlockStored of its last
	// prefill chunk come from the same engine step (vLLM and the sim publish a step's
	// events at its end), so only their transports race: the event's ZMQ hop against the
	// token's HTTP path through Envoy. The grace covers that with a margin of several
	// steps (the sim's longest, a full 2,048-token budget: 5 ms + 2,048 x 60 µs = 128 ms;
	// vLLM's on a GPU: tens of ms to ~200 ms) for a busy picker's subscriber queue.
	DefaultSpeculationGrace = 500 * time.Millisecond
	// maxSpeculativePerPod bounds a pod's speculative blocks.
	maxSpeculativePerPod = 1 << 16
	// minSpecSweep: below this many entries a pod's speculation map is not swept.
	minSpecSweep = 1024
)

func (c Config) withDefaults() Config {
	if c.MaxPods <= 0 {
		c.MaxPods = DefaultMaxPods
	}
	if c.MaxRanksPerPod <= 0 {
		c.MaxRanksPerPod = DefaultMaxRanksPerPod
	}
	if c.MaxBlocksPerPod <= 0 {
		c.MaxBlocksPerPod = DefaultMaxBlocksPerPod
	}
	if c.SilenceTimeout <= 0 {
		c.SilenceTimeout = DefaultSilenceTimeout
	}
	if c.SpeculationTTL <= 0 {
		c.SpeculationTTL = DefaultSpeculationTTL
	}
	if c.SpeculationGrace <= 0 {
		c.SpeculationGrace = DefaultSpeculationGrace
	}
	return c
}

// Index is the block index of every pod. Ingestion (HandleBatch, from the subscriber's
// one goroutine) and lookups (from concurrent picks) are safe together: each pod has its
// own read-write lock, so a pick waits at most for one batch of one pod.
type Index struct {
	cfg  Config
	now  func() time.Time
	mu   sync.RWMutex
	pods map[string]*pod

	hasher Hasher // ingestion only (one goroutine)

	resets  *prometheus.CounterVec // by reason
	dropped *prometheus.CounterVec // by reason
	// specEnds counts requests' speculation ends (first_token, failed); specExpired the
	// speculative blocks the backstop TTL dropped while a request still held them (its
	// end was lost, or it queued longer than the TTL).
	specEnds    *prometheus.CounterVec
	specExpired prometheus.Counter
}

// pod is one pod's streams (one per data-parallel rank).
type pod struct {
	mu      sync.RWMutex
	model   string
	streams map[int]*stream
	blocks  int // engine blocks indexed, all streams
	// expectSince is when a pick that must store new blocks was sent while no batch has
	// come since (unix ns; 0: nothing expected).
	expectSince atomic.Int64
	// spec holds blocks requests routed here will store: until the engine's BlockStored
	// arrives, the next requests of the same prefix must see them, or a burst scatters over
	// every pod (guarded by mu, like the streams). specEpoch numbers Speculate calls.
	spec      map[uint64]specEntry
	specEpoch uint64
	// specSweepAt: the map's size at which Speculate next drops dead entries (ended
	// requests' after their grace, lost ends' after the TTL): twice what was live at the
	// last sweep, so sweeps cost O(1) per key amortised and dead entries never outnumber
	// live ones by much.
	specSweepAt int
}

// specEntry is one speculative block of a pod: held while a request that will store it
// has not ended (refs), for a grace after the last one's first token, and never past exp.
type specEntry struct {
	refs int32
	// epoch is the Speculate call that created the entry. A request's ref is in the entry
	// iff the entry is at least as old as the request's own Speculate call: entries are
	// only ever deleted whole (confirmed, expired, overflow), so a younger entry of the
	// same key was made by other requests after this one's ref went with the old entry.
	epoch uint64
	exp   int64 // unix ns: the backstop (SpeculationTTL after the latest Speculate)
	grace int64 // unix ns: held until then with no refs left (after a first token)
}

// live reports whether the entry counts as held at now (unix ns).
func (e specEntry) live(now int64) bool { return e.exp >= now && (e.refs > 0 || e.grace >= now) }

// stream is one engine's (pod, rank) view.
type stream struct {
	seq       uint64
	haveSeq   bool
	state     State
	blockSize int
	keys      map[uint64]int32  // our key -> engine blocks with that key
	engine    map[uint64]uint64 // engine hash -> our key
}

// Reset and drop reasons (metric labels).
const (
	reasonGap      = "sequence_gap"
	reasonRestart  = "restart"
	reasonCleared  = "all_blocks_cleared"
	reasonOverflow = "overflow"
	reasonGeometry = "block_size_change"

	dropTooManyPods  = "too_many_pods"
	dropTooManyRanks = "too_many_ranks"
	dropOrphan       = "orphan_block"
	dropOtherMedium  = "other_medium"
)

// New returns an empty index; reg receives its metrics (nil: none).
func New(cfg Config, reg prometheus.Registerer) (*Index, error) {
	ix := &Index{
		cfg:  cfg.withDefaults(),
		now:  time.Now,
		pods: make(map[string]*pod),
		resets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "infergw_kv_index_resets_total",
			Help: "Times a pod's indexed blocks were dropped, by reason (sequence_gap, restart, all_blocks_cleared, overflow, block_size_change).",
		}, []string{"reason"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "infergw_kv_index_dropped_total",
			Help: "KV events or batches not indexed, by reason (too_many_pods, too_many_ranks, orphan_block: parent unknown, other_medium: offloaded blocks).",
		}, []string{"reason"}),
		specEnds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "infergw_kv_index_speculation_ends_total",
			Help: "Requests whose speculative blocks ended with the request, by end (first_token: kept for a grace for the events; failed: dropped at once).",
		}, []string{"end"}),
		specExpired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "infergw_kv_index_speculation_expired_total",
			Help: "Speculative blocks dropped by the backstop TTL while a request still held them (an end the picker never learned).",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{ix.resets, ix.dropped, ix.specEnds, ix.specExpired, &indexCollector{ix: ix}} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return ix, nil
}

// HandleBatch applies one batch of a pod's events (kvevents.Handler).
func (ix *Index) HandleBatch(podName, model string, seq uint64, b *kvevents.Batch) {
	p := ix.podFor(podName)
	if p == nil {
		ix.dropped.WithLabelValues(dropTooManyPods).Inc()
		return
	}
	p.expectSince.Store(0)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.model = model
	s := p.streams[b.DPRank]
	if s == nil {
		if len(p.streams) >= ix.cfg.MaxRanksPerPod {
			ix.dropped.WithLabelValues(dropTooManyRanks).Inc()
			return
		}
		s = &stream{keys: make(map[uint64]int32), engine: make(map[uint64]uint64)}
		p.streams[b.DPRank] = s
	}
	ix.sequence(p, s, seq)
	for i := range b.Events {
		ix.apply(p, s, &b.Events[i])
	}
}

func (ix *Index) podFor(name string) *pod {
	ix.mu.RLock()
	p := ix.pods[name]
	ix.mu.RUnlock()
	if p != nil {
		return p
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if p = ix.pods[name]; p != nil {
		return p
	}
	if len(ix.pods) >= ix.cfg.MaxPods {
		return nil
	}
	p = &pod{streams: make(map[int]*stream)}
	ix.pods[name] = p
	return p
}

// sequence follows the stream's sequence numbers: the first batch (seq 0: the engine just
// started, so we saw everything; else we joined mid-stream), the next one, a gap (missed
// batches: entries dropped), or a step back (the engine restarted: its cache is empty).
func (ix *Index) sequence(p *pod, s *stream, seq uint64) {
	switch {
	case !s.haveSeq:
		s.state = StatePartial
		if seq == 0 {
			s.state = StateConsistent
		}
	case seq == s.seq+1:
	case seq > s.seq+1:
		ix.reset(p, s, reasonGap)
		s.state = StatePartial
	default:
		ix.reset(p, s, reasonRestart)
		s.state = StatePartial
		if seq == 0 {
			s.state = StateConsistent
		}
	}
	s.seq, s.haveSeq = seq, true
}

func (ix *Index) reset(p *pod, s *stream, reason string) {
	ix.resets.WithLabelValues(reason).Inc()
	p.blocks -= len(s.engine)
	// Maps never shrink: start afresh when they held many blocks, so that a pod whose
	// cache emptied does not keep its peak footprint.
	if len(s.engine) > 1024 {
		s.keys, s.engine = make(map[uint64]int32), make(map[uint64]uint64)
		return
	}
	clear(s.keys)
	clear(s.engine)
}

func (ix *Index) apply(p *pod, s *stream, e *kvevents.Event) {
	switch e.Kind {
	case kvevents.AllBlocksCleared:
		// The engine's cache is empty now: with no batch missed since, an empty index is
		// exact again, whatever it was before.
		ix.reset(p, s, reasonCleared)
		s.state = StateConsistent
	case kvevents.BlockRemoved:
		if !ownMedium(e.Medium) {
			return
		}
		for _, h := range e.BlockHashes {
			k, ok := s.engine[h]
			if !ok {
				continue // stored before we joined, or already gone
			}
			delete(s.engine, h)
			p.blocks--
			if s.keys[k] <= 1 {
				delete(s.keys, k)
			} else {
				s.keys[k]--
			}
		}
	case kvevents.BlockStored:
		if !ownMedium(e.Medium) {
			ix.dropped.WithLabelValues(dropOtherMedium).Inc()
			return
		}
		if e.BlockSize != s.blockSize {
			if len(s.engine) > 0 {
				ix.reset(p, s, reasonGeometry)
			}
			s.blockSize = e.BlockSize
		}
		lora := e.LoRAName
		if lora == "" && e.LoRAID != 0 {
			lora = "lora-id:" + strconv.FormatInt(e.LoRAID, 10)
		}
		prev := RootKey(lora)
		if e.HasParent {
			k, ok := s.engine[e.ParentHash]
			if !ok {
				// The parent was stored before we joined (or evicted in a batch we saw
				// first): these blocks' keys cannot be computed.
				ix.dropped.WithLabelValues(dropOrphan).Inc()
				return
			}
			prev = k
		}
		for i, h := range e.BlockHashes {
			prev = ix.hasher.Block(prev, e.TokenIDs[i*e.BlockSize:(i+1)*e.BlockSize])
			// Confirmed: from now on the block is the pod's as its events say, so a
			// BlockRemoved ends it at once. Left speculative, it would outlive its eviction
			// until the TTL: under KV pressure a pod turns its whole cache over in about a
			// second, and the picker sent requests after blocks the pod had already evicted.
			delete(p.spec, prev)
			if _, dup := s.engine[h]; dup {
				continue
			}
			if p.blocks >= ix.cfg.MaxBlocksPerPod {
				ix.reset(p, s, reasonOverflow)
				s.state = StatePartial
				return
			}
			s.engine[h] = prev
			s.keys[prev]++
			p.blocks++
		}
	}
}

// ownMedium: the engine's own (GPU) cache; offload tiers are not prefix hits a pick can
// count on.
func ownMedium(m string) bool { return m == "" || m == "GPU" || m == "gpu" }

// PodInfo is what a pick needs to know of a pod before matching: its state and the
// engine's block size (tokens) from its events (0: unknown).
type PodInfo struct {
	State     State
	BlockSize int
}

// Info returns the pod's state (the worst of its ranks') and block size.
func (ix *Index) Info(podName string) PodInfo {
	ix.mu.RLock()
	p := ix.pods[podName]
	ix.mu.RUnlock()
	if p == nil {
		return PodInfo{}
	}
	if t := p.expectSince.Load(); t != 0 && ix.now().UnixNano()-t > int64(ix.cfg.SilenceTimeout) {
		return PodInfo{State: StateSilent}
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	info := PodInfo{State: StateUnknown}
	if len(p.streams) > 0 {
		info.State = StateConsistent
	}
	for _, s := range p.streams {
		// The pod is as trustworthy as its least trustworthy rank.
		if info.State == StateConsistent {
			info.State = s.state
		}
		if info.BlockSize == 0 {
			info.BlockSize = s.blockSize
		}
	}
	return info
}

// Match returns how many leading keys the pod holds (the best of its ranks'), speculative
// blocks included.
func (ix *Index) Match(podName string, keys []uint64) int { return ix.match(podName, keys, true) }

// MatchStored is Match without speculative blocks: what the pod's events alone report.
func (ix *Index) MatchStored(podName string, keys []uint64) int {
	return ix.match(podName, keys, false)
}

func (ix *Index) match(podName string, keys []uint64, spec bool) int {
	ix.mu.RLock()
	p := ix.pods[podName]
	ix.mu.RUnlock()
	if p == nil || len(keys) == 0 {
		return 0
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	spec = spec && len(p.spec) > 0
	now := int64(0)
	if spec {
		now = ix.now().UnixNano()
	}
	best := 0
	for _, s := range p.streams {
		n := 0
		for n < len(keys) {
			if _, ok := s.keys[keys[n]]; !ok {
				if !spec {
					break
				}
				if e, ok := p.spec[keys[n]]; !ok || !e.live(now) {
					break
				}
			}
			n++
		}
		best = max(best, n)
	}
	return best
}

// Speculate records that a request with these block keys was just routed to the pod: they
// count as held until the pod's BlockStored confirms them (then its events alone decide,
// a BlockRemoved included), or the request ends (Speculation.End: at its first token
// after a grace, at once when it fails), or SpeculationTTL passes without either. Keys
// the pod already holds may be speculated too: a queued request does not pin them, and
// if the pod evicts them before its prefill it computes and stores them again, so they
// count until the request ends whatever BlockRemoved says meanwhile. Two requests may
// speculate the same keys on one pod: a key is held until both have ended. Only pods the
// index knows take speculation; nil when nothing was recorded.
func (ix *Index) Speculate(podName string, keys []uint64) *Speculation {
	ix.mu.RLock()
	p := ix.pods[podName]
	ix.mu.RUnlock()
	if p == nil || len(keys) == 0 {
		return nil
	}
	keys = keys[:min(len(keys), maxSpeculativePerPod)]
	sp := &Speculation{ix: ix, p: p, keys: slices.Clone(keys)}
	now := ix.now().UnixNano()
	exp := now + int64(ix.cfg.SpeculationTTL)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.spec == nil {
		p.spec = make(map[uint64]specEntry)
	}
	if n := len(p.spec) + len(keys); n > maxSpeculativePerPod || n > p.specSweepAt {
		for k, e := range p.spec {
			if !e.live(now) {
				ix.countExpired(e, now)
				delete(p.spec, k)
			}
		}
		p.specSweepAt = max(2*(len(p.spec)+len(keys)), minSpecSweep)
		if len(p.spec)+len(keys) > maxSpeculativePerPod {
			// Still full: start afresh rather than grow. Requests whose entries go see
			// younger entries (or none) when they end and leave them alone.
			clear(p.spec)
		}
	}
	p.specEpoch++
	sp.epoch = p.specEpoch
	for _, k := range keys {
		e, ok := p.spec[k]
		if !ok || !e.live(now) {
			if ok {
				ix.countExpired(e, now)
			}
			e = specEntry{epoch: sp.epoch}
		}
		e.refs++
		e.exp = max(e.exp, exp)
		p.spec[k] = e
	}
	return sp
}

// countExpired counts a dead entry that requests still held: the backstop ended it.
func (ix *Index) countExpired(e specEntry, now int64) {
	if e.refs > 0 && e.exp < now {
		ix.specExpired.Inc()
	}
}

// Speculation is one request's speculative blocks on one pod (Index.Speculate).
type Speculation struct {
	ix    *Index
	p     *pod // the pod as it was: if it is forgotten meanwhile, End touches nothing live
	keys  []uint64
	epoch uint64
	ended atomic.Bool
}

// End ends the request's speculation; only the first call counts. firstToken: the pod
// answered, so its prefill is done and the events of its blocks are on their way: they
// stay held for SpeculationGrace unless a BlockStored confirms them first. Otherwise the
// request failed, was cancelled or went elsewhere before its first token: it will never
// store them, so they stop counting at once. Other requests' refs on the same keys stay.
func (sp *Speculation) End(firstToken bool) {
	if sp == nil || !sp.ended.CompareAndSwap(false, true) {
		return
	}
	if firstToken {
		sp.ix.specEnds.WithLabelValues("first_token").Inc()
	} else {
		sp.ix.specEnds.WithLabelValues("failed").Inc()
	}
	now := sp.ix.now().UnixNano()
	grace := now + int64(sp.ix.cfg.SpeculationGrace)
	p := sp.p
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, k := range sp.keys {
		e, ok := p.spec[k]
		if !ok || e.epoch > sp.epoch || e.refs <= 0 {
			continue // confirmed, expired or cleared since: this request's ref went with it
		}
		e.refs--
		if firstToken {
			e.grace = max(e.grace, grace)
		}
		if !e.live(now) {
			delete(p.spec, k)
			continue
		}
		p.spec[k] = e
	}
}

// Expect records that a request which must store blocks the index lacks went to the pod:
// if no batch comes from it within the silence timeout, the pod reads as StateSilent
// until one does.
func (ix *Index) Expect(podName string) {
	ix.mu.RLock()
	p := ix.pods[podName]
	ix.mu.RUnlock()
	if p == nil {
		return // never published: already unknown
	}
	p.expectSince.CompareAndSwap(0, ix.now().UnixNano())
}

// Forget drops a pod (it left every pool).
func (ix *Index) Forget(podName string) {
	ix.mu.Lock()
	delete(ix.pods, podName)
	ix.mu.Unlock()
}

// Blocks returns the number of blocks indexed for the pod (all ranks).
func (ix *Index) Blocks(podName string) int {
	ix.mu.RLock()
	p := ix.pods[podName]
	ix.mu.RUnlock()
	if p == nil {
		return 0
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.blocks
}

// indexCollector reports pods by state and indexed blocks at scrape time.
type indexCollector struct{ ix *Index }

var (
	podsDesc   = prometheus.NewDesc("infergw_kv_index_pods", "Pods in the KV-block index by state (unknown, consistent, partial, silent).", []string{"state"}, nil)
	blocksDesc = prometheus.NewDesc("infergw_kv_index_blocks", "KV blocks indexed, all pods.", nil, nil)
)

func (c *indexCollector) Describe(ch chan<- *prometheus.Desc) { ch <- podsDesc; ch <- blocksDesc }

func (c *indexCollector) Collect(ch chan<- prometheus.Metric) {
	c.ix.mu.RLock()
	names := make([]string, 0, len(c.ix.pods))
	for n := range c.ix.pods {
		names = append(names, n)
	}
	c.ix.mu.RUnlock()
	var byState [4]float64
	blocks := 0
	for _, n := range names {
		byState[c.ix.Info(n).State]++
		blocks += c.ix.Blocks(n)
	}
	for s, v := range byState {
		ch <- prometheus.MustNewConstMetric(podsDesc, prometheus.GaugeValue, v, State(s).String())
	}
	ch <- prometheus.MustNewConstMetric(blocksDesc, prometheus.GaugeValue, float64(blocks))
}

// Pods returns the pods the index tracks.
func (ix *Index) Pods() []string {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	out := make([]string, 0, len(ix.pods))
	for n := range ix.pods {
		out = append(out, n)
	}
	return out
}
