package router

import (
	"slices"
	"strings"
)

// The precise-prefix scorer scores endpoints by the leading prompt blocks their engine's
// KV cache holds, as the engines' own KV events report it (a PrefixSource), and falls back,
// per endpoint, to the approximate prefix scorer where the events are not known to be
// complete. It is not a built-in: the package that owns the PrefixSource registers it
// with PrecisePrefixType (kvroute.Register).
const (
	ScorerPrecisePrefix     = "precise-prefix"
	TypePrecisePrefixScorer = "precise-prefix-cache-scorer" // llm-d's name for the same idea
)

// PrecisePrefixType is the precise-prefix scorer's plugin type over src. Its parameters
// are the prefix scorer's (they configure the approximate fallback).
func PrecisePrefixType(src PrefixSource) PluginType {
	return NewScorerType(PluginInfo{
		Type: TypePrecisePrefixScorer, ShortName: ScorerPrecisePrefix, DefaultWeight: DefaultPrefixWeight,
		Doc: "Leading prompt blocks each endpoint's engine holds, over the prompt's blocks in that engine's block size, " +
			"from the model servers' KV events (the prompt tokenized as the server does): exact for endpoints whose " +
			"event stream is complete, the better of events and the approximate prefix scorer for endpoints whose events " +
			"are a lower bound (joined mid-stream, after a sequence gap), the approximate scorer for the others (no " +
			"events, silent publisher). Takes the prefix scorer's parameters for that fallback. Registered when the " +
			"picker subscribes to KV events (`--kv-events-bind`).",
	}, PrefixParams{}, func(p PrefixParams) (Scorer, error) {
		ps, err := newPrefixScorer(p)
		if err != nil {
			return nil, err
		}
		return &precisePrefixScorer{prefixScorer: *ps.(*prefixScorer), src: src}, nil
	})
}

// precisePrefixScorer is the precise-prefix scorer; its embedded prefix settings size the
// approximate fallback's LRU like the prefix scorer's.
type precisePrefixScorer struct {
	prefixScorer
	src PrefixSource
}

// prefixCacheUser is implemented by scorers that use the approximate prefix cache (the
// router then hashes prompts, sizes LRUs and records each pick in the primary's LRU).
type prefixCacheUser interface {
	prefixSettings() (blockSize, lruCapacity, maxBlocks int)
}

func (p *prefixScorer) prefixSettings() (int, int, int) {
	return p.blockSize, p.lruCapacity, p.maxBlocks
}

// pickObserver is implemented by scorers told which candidate became the primary.
type pickObserver interface {
	picked(pc *PickContext, primary int)
}

// PrefixExactness says how far a PrefixSource's answer for one endpoint can be trusted.
type PrefixExactness uint8

const (
	// PrefixUnknown: no usable answer (no events, a silent publisher, or the request
	// could not be tokenized): the approximate scorer decides for this endpoint.
	PrefixUnknown PrefixExactness = iota
	// PrefixExact: the endpoint's events are complete: its match is the truth.
	PrefixExact
	// PrefixAtLeast: every block reported is there, but blocks stored while the source
	// was not listening are unknown: the better of it and the approximate match counts.
	PrefixAtLeast
)

// PrefixSource answers the precise-prefix scorer (package kvroute implements it from
// the pods' KV events). Implementations must be safe for concurrent picks.
type PrefixSource interface {
	// MatchPrefix fills, for each candidate's host (pod IP), the prompt's leading blocks
	// the host's engine holds (hit), the prompt's full blocks in that engine's block size
	// (total) and how exact that is. model is the requested model (an adapter name when
	// adapter is true).
	// It returns a handle for Sent (nil: none).
	MatchPrefix(req *Request, adapter bool, hosts []string, hit, total []int, exact []PrefixExactness) any
	// Sent tells the source that the request of handle went to host, where hit of its
	// total blocks were cached: the engine will store the rest and should publish events.
	// It is called at most once per MatchPrefix, right after it, from the same goroutine.
	// The source may return a PrefillWatcher (nil: none) to learn how the request ended.
	Sent(handle any, host string, hit, total int) PrefillWatcher
}

// PrefillWatcher learns, once, how a request a PrefixSource was told about (Sent) ended
// at its host's engine: the Decision calls PrefillEnded when the primary's first response
// byte comes (firstToken true: its prefill is done), or when none will (false: an error
// status, no response, the proxy retried on another endpoint, or the request ended before
// a first byte, e.g. cancelled). It is called from the response path's goroutines, with
// the Decision's outcome lock held: it must not block.
type PrefillWatcher interface {
	PrefillEnded(firstToken bool)
}

// hostOf returns the host of an "ip:port" address (IPv6 in brackets included).
func hostOf(addr string) string {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return addr
	}
	return strings.TrimSuffix(strings.TrimPrefix(addr[:i], "["), "]")
}

// preciseScratch holds the precise scorer's per-pick buffers (in the pick's scratch).
type preciseScratch struct {
	handle any
	hosts  []string
	hit    []int
	total  []int
	exact  []PrefixExactness
	// watch is what the source's Sent returned for the primary: the Decision tells it how
	// the request ended.
	watch PrefillWatcher
}

// scorePrecisePrefix: the fraction of the prompt's blocks an endpoint's engine holds,
// from its events where they are exact, the better of events and approximation where they
// are a lower bound, the approximate scorer elsewhere. prefixHit is left in the
// approximate scorer's units (blocks of the endpoint's span) for pending-prefill.
func (s *precisePrefixScorer) Score(pc *PickContext, out []float64) {
	scorePrefix(pc, out) // the fallback for every endpoint, and the LRU's units
	src, ps := s.src, pc.precise
	if src == nil || ps == nil {
		return
	}
	n := len(pc.eps)
	ps.hosts = grow(ps.hosts, n)
	ps.hit, ps.total = grow(ps.hit, n), grow(ps.total, n)
	ps.exact = grow(ps.exact, n)
	for i, e := range pc.eps {
		ps.hosts[i] = hostOf(e.spec.Address)
		ps.hit[i], ps.total[i], ps.exact[i] = 0, 0, PrefixUnknown
	}
	ps.handle = src.MatchPrefix(pc.req, pc.isAdapter, ps.hosts, ps.hit, ps.total, ps.exact)
	for i, e := range pc.eps {
		if ps.exact[i] == PrefixUnknown || ps.total[i] == 0 {
			continue
		}
		frac := float64(ps.hit[i]) / float64(ps.total[i])
		if ps.exact[i] == PrefixAtLeast && frac < out[i] {
			continue
		}
		out[i] = frac
		if spans := len(pc.prefix.get(int(e.prefixSpan.Load()))); spans > 0 {
			pc.prefixHit[i] = int(frac*float64(spans) + 0.5)
		}
	}
}

// picked reports the pick to the source (see PrefixSource.Sent).
func (s *precisePrefixScorer) picked(pc *PickContext, primary int) {
	ps := pc.precise
	if s.src == nil || ps == nil || primary >= len(ps.exact) || ps.exact[primary] == PrefixUnknown {
		return
	}
	h := ps.handle
	ps.handle = nil
	ps.watch = s.src.Sent(h, ps.hosts[primary], ps.hit[primary], ps.total[primary])
}

// EndpointHosts returns the hosts (pod IPs) of every endpoint of every pool, sorted and
// deduplicated: whom a KV-event subscriber should hear from.
func (r *Router) EndpointHosts() []string {
	var out []string
	for _, p := range *r.pools.Load() {
		for _, e := range p.view.Load().endpoints {
			out = append(out, hostOf(e.spec.Address))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
