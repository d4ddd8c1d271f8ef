// Package kvroute answers the router's precise-prefix scorer (router.PrefixSource): it
// tokenizes a request as the model server will (kvprompt), chains the tokens into block
// keys in each pod's block size (kvindex.Hasher) and looks them up in the index the pods'
// KV events keep (kvindex, fed by kvevents).
package kvroute

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/infergw/infergw/kvindex"
	"github.com/infergw/infergw/kvprompt"
	"github.com/infergw/infergw/router"
)

// DefaultMaxBlocks caps the blocks matched per prompt (at 16 tokens a block, 512 K
// tokens: longer than any model's context).
const DefaultMaxBlocks = 32768

// Source is a router.PrefixSource over an index and per-model tokenizers.
type Source struct {
	ix        *kvindex.Index
	models    map[string]*kvprompt.Model // by model name; "" = every other model
	maxBlocks int
	log       *slog.Logger
	work      sync.Pool // *work

	results *prometheus.CounterVec // per pick: ok, no_tokenizer, tokenize_error, no_body

	shadow *shadow // benchmark only: compare every answer with the sims' own (EnableShadow)
}

// EnableShadow makes every answer be compared with the oracle's (benchmark only; the
// comparison is in infergw_precise_prefix_shadow_* metrics, the routing is unchanged).
func (s *Source) EnableShadow(o *Oracle, reg prometheus.Registerer) error {
	sh, err := newShadow(o, reg)
	if err != nil {
		return fmt.Errorf("kvroute shadow: %w", err)
	}
	s.shadow = sh
	return nil
}

type work struct {
	root   uint64
	tokens []uint32
	hasher kvindex.Hasher
	// keys per block size seen in this pick (pods of a pool share one, usually).
	sizes [4]int
	keys  [4][]uint64
	n     int
}

// New returns a Source. models maps model names to tokenizers ("" for the default one).
func New(ix *kvindex.Index, models map[string]*kvprompt.Model, maxBlocks int, log *slog.Logger, reg prometheus.Registerer) (*Source, error) {
	if maxBlocks <= 0 {
		maxBlocks = DefaultMaxBlocks
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Source{ix: ix, models: models, maxBlocks: maxBlocks, log: log,
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "infergw_precise_prefix_requests_total",
			Help: "Picks the precise-prefix scorer tokenized, by result (ok, no_tokenizer, tokenize_error, no_body).",
		}, []string{"result"})}
	if reg != nil {
		if err := reg.Register(s.results); err != nil {
			return nil, fmt.Errorf("kvroute metrics: %w", err)
		}
	}
	return s, nil
}

func (s *Source) model(name string) *kvprompt.Model {
	if m, ok := s.models[name]; ok {
		return m
	}
	return s.models[""]
}

// MatchPrefix implements router.PrefixSource.
//
// The handle it returns is the pick's tokens and keys: Sent uses them to mark the blocks
// the primary is about to store, then returns them to the pool.
func (s *Source) MatchPrefix(req *router.Request, adapter bool, hosts []string, hit, total []int, exact []router.PrefixExactness) any {
	if len(req.Body) == 0 {
		s.results.WithLabelValues("no_body").Inc()
		return nil
	}
	m := s.model(req.Model)
	if m == nil {
		s.results.WithLabelValues("no_tokenizer").Inc()
		return nil
	}
	w, _ := s.work.Get().(*work)
	if w == nil {
		w = new(work)
	}
	var err error
	if w.tokens, err = m.Tokens(w.tokens[:0], req.Body); err != nil {
		s.results.WithLabelValues("tokenize_error").Inc()
		s.log.Debug("kvroute: tokenize", "model", req.Model, "err", err)
		s.work.Put(w)
		return nil
	}
	s.results.WithLabelValues("ok").Inc()
	lora := ""
	if adapter {
		lora = req.Model // vLLM names an adapter's blocks by its served name
	}
	root := kvindex.RootKey(lora)
	w.root = root
	w.n = 0
	hosts = hosts[:min(len(hosts), len(hit), len(total), len(exact))]
	hit, total = hit[:len(hosts)], total[:len(hosts)]
	for i, h := range hosts {
		info := s.ix.Info(h)
		switch info.State {
		case kvindex.StateConsistent:
			exact[i] = router.PrefixExact
		case kvindex.StatePartial:
			exact[i] = router.PrefixAtLeast
		default:
			continue
		}
		if info.BlockSize == 0 {
			// Nothing stored since the index knew the pod: it holds none of the prompt.
			hit[i], total[i] = 0, 1 //nolint:gosec // G602: hit and total were cut to len(hosts) above
			continue
		}
		keys := w.keysFor(info.BlockSize, root, s.maxBlocks)
		hit[i], total[i] = s.ix.Match(h, keys), len(keys) //nolint:gosec // G602: as above
	}
	if s.shadow != nil {
		stored := make([]int, len(hosts))
		for i, h := range hosts {
			if bs := s.ix.Info(h).BlockSize; bs > 0 {
				stored[i] = s.ix.MatchStored(h, w.keysFor(bs, root, s.maxBlocks))
			}
		}
		s.shadow.compare(req, adapter, hosts, hit, stored, total, exact)
	}
	return w
}

func (w *work) keysFor(blockSize int, root uint64, maxBlocks int) []uint64 {
	for i := 0; i < w.n; i++ {
		if w.sizes[i] == blockSize {
			return w.keys[i]
		}
	}
	i := min(w.n, len(w.sizes)-1)
	if w.n < len(w.sizes) {
		w.n++
	}
	w.sizes[i] = blockSize
	w.keys[i] = w.hasher.AppendKeys(w.keys[i][:0], root, w.tokens, blockSize, maxBlocks)
	return w.keys[i]
}

// Sent implements router.PrefixSource: the request's blocks count as the pod's while it
// waits for its prefill, however long it queues: those the pod lacks (the next requests of
// the same prefix follow this one instead of scattering before the engine's events
// arrive), and those it holds too — a request waiting in the queue does not pin them, so
// under KV pressure the pod may evict them before its prefill, which then computes them
// again; the model server's own view (the benchmark's oracle) counts a queued request's
// whole prompt. The pod must publish the blocks it lacks: the index marks it silent if it
// does not. The watcher it returns ends the speculation with the request
// (kvindex.Speculation.End).
func (s *Source) Sent(handle any, host string, hit, total int) router.PrefillWatcher {
	w, _ := handle.(*work)
	if w == nil {
		return nil
	}
	defer s.work.Put(w)
	if hit < total {
		s.ix.Expect(host)
	}
	bs := s.ix.Info(host).BlockSize
	if bs <= 0 || total == 0 {
		return nil
	}
	sp := s.ix.Speculate(host, w.keysFor(bs, w.root, s.maxBlocks))
	if sp == nil {
		return nil // not a typed nil: the Decision would call it
	}
	return (*speculation)(sp)
}

// speculation is a kvindex.Speculation as the router's PrefillWatcher.
type speculation kvindex.Speculation

// PrefillEnded implements router.PrefillWatcher.
func (sp *speculation) PrefillEnded(firstToken bool) { (*kvindex.Speculation)(sp).End(firstToken) }

var _ router.PrefixSource = (*Source)(nil)

// Ref is a PrefixSource whose Source is set once it runs: the scheduler's plugin registry
// is built before the subscriber starts (the config is read first), so the registered
// scorer holds a Ref. Until Set, every endpoint falls back to the approximate scorer.
type Ref struct{ p atomic.Pointer[sourceBox] }

type sourceBox struct{ router.PrefixSource }

// Set makes s answer (nil: none).
func (r *Ref) Set(s *Source) {
	if s == nil {
		r.p.Store(nil)
		return
	}
	r.SetSource(s)
}

// SetSource makes any PrefixSource answer (the benchmark's Oracle; nil: none).
func (r *Ref) SetSource(s router.PrefixSource) {
	if s == nil {
		r.p.Store(nil)
		return
	}
	r.p.Store(&sourceBox{s})
}

// MatchPrefix implements router.PrefixSource.
func (r *Ref) MatchPrefix(req *router.Request, adapter bool, hosts []string, hit, total []int, exact []router.PrefixExactness) any {
	if s := r.p.Load(); s != nil {
		return s.MatchPrefix(req, adapter, hosts, hit, total, exact)
	}
	return nil
}

// Sent implements router.PrefixSource.
func (r *Ref) Sent(handle any, host string, hit, total int) router.PrefillWatcher {
	if s := r.p.Load(); s != nil {
		return s.Sent(handle, host, hit, total)
	}
	return nil
}

// Register registers the precise-prefix scorer, answered through ref, in reg.
func Register(reg *router.Registry, ref *Ref) error {
	return reg.Register(router.PrecisePrefixType(ref))
}
