package router

import (
	"errors"
	"fmt"
)

// The built-in plugins: their types, parameters and factories. The plugins themselves are
// in scheduler.go.

func builtinPlugins() []PluginType {
	return append([]PluginType{
		NewFilterType(PluginInfo{
			Type: TypeLoRAAffinityFilter, ShortName: FilterLoRAAffinity,
			Doc: "For requests of a LoRA adapter: keeps the unsaturated endpoints running the adapter; if none, the " +
				"unsaturated endpoints with a free adapter slot (or whose LoRA state is still unknown); else every candidate. " +
				"GIE's filter keeps the first group with a probability (`threshold`); this one always does.",
		}, LoRAFilterParams{Threshold: 1}, func(LoRAFilterParams) (Filter, error) { return loraAffinityFilter{}, nil }),

		NewScorerType(PluginInfo{
			Type: TypeQueueScorer, ShortName: ScorerQueue, DefaultWeight: DefaultQueueWeight,
			Doc: "The scraped waiting queue, min-max normalised: `(max−q)/(max−min)`, 1 for every candidate when all are equal.",
		}, NoParams{}, func(NoParams) (Scorer, error) { return queueScorer{}, nil }),

		NewScorerType(PluginInfo{
			Type: TypeKVCacheScorer, ShortName: ScorerKVCache, Aliases: []string{"kv-cache-scorer"},
			DefaultWeight: DefaultKVCacheWeight,
			Doc:           "`1 − KV-cache use` as scraped.",
		}, NoParams{}, func(NoParams) (Scorer, error) { return kvCacheScorer{}, nil }),

		NewScorerType(PluginInfo{
			Type: TypePrefixScorer, ShortName: ScorerPrefix, DefaultWeight: DefaultPrefixWeight,
			Doc: "Longest prefix of the prompt (in chained-hash blocks) in the endpoint's approximate prefix cache, over the " +
				"prompt's blocks (0 when the prompt has no full block). Each pick records the prompt's blocks in the primary's " +
				"LRU. Takes infergw's parameter names and GIE's (`hashBlockSize`, `lruCapacityPerServer`, " +
				"`maxPrefixBlocksToMatch`, `autoTune`); a parameter given under both names is an error. " +
				"Unlike GIE, an omitted `maxBlocks` means 32768, not 256.",
		}, PrefixParams{}, newPrefixScorer),

		NewScorerType(PluginInfo{
			Type: TypeLoRAAffinityScorer, ShortName: ScorerLoRAAffinity, DefaultWeight: DefaultLoRAAffinityWeight,
			Doc: "Adapter requests: 1.0 when the adapter is running, 0.8 with a free adapter slot, 0.6 when it is waiting, " +
				"else 0. Base-model requests: 0 for every candidate.",
		}, NoParams{}, func(NoParams) (Scorer, error) { return loraAffinityScorer{}, nil }),

		NewScorerType(PluginInfo{
			Type: TypeInFlightScorer, ShortName: ScorerInFlight, DefaultWeight: DefaultInFlightWeight,
			Doc: "Gateway-side picks not yet done, min-max normalised like `queue`: it moves with every pick, where " +
				"scraped metrics lag by one scrape. infergw's own.",
		}, NoParams{}, func(NoParams) (Scorer, error) { return inFlightScorer{}, nil }),

		NewScorerType(PluginInfo{
			Type: TypePendingPrefillScorer, ShortName: ScorerPendingPrefill, DefaultWeight: DefaultPendingPrefillWeight,
			Doc: "`1 − (w − w_min) / max(w_max − w_min, 4 KiB)` where `w` is the prompt bytes the endpoint must prefill " +
				"before this request's first token (uncached bytes of its picks still waiting for a first byte, plus this " +
				"prompt's part not in its prefix cache). Runs after the prefix scorer, whose matches it reads. infergw's own.",
		}, NoParams{}, func(NoParams) (Scorer, error) { return pendingPrefillScorer{}, nil }),

		NewScorerType(PluginInfo{
			Type: TypeLeastRecentScorer, ShortName: ScorerLeastRecent, DefaultWeight: DefaultLeastRecentWeight,
			Doc: "Time since the endpoint was last picked as primary, min-max normalised (1 for the longest ago): spaces " +
				"picks as round robin does when every other signal is flat or stale. infergw's own.",
		}, NoParams{}, func(NoParams) (Scorer, error) { return leastRecentScorer{}, nil }),

		NewPickerType(PluginInfo{
			Type: TypeMaxScorePicker, ShortName: PickerMaxScore,
			Doc: "The highest weighted sum is the primary and the next ones its fallbacks (`--fallbacks`); scores within " +
				"1e-9 are ties, broken uniformly at random.",
		}, PickerParams{MaxNumOfEndpoints: 1}, func(PickerParams) (Picker, error) { return maxScorePicker{}, nil }),

		NewPickerType(PluginInfo{
			Type: TypeRandomPicker, ShortName: PickerRandom,
			Doc: "A uniformly random order; the scorers are not run.",
		}, PickerParams{MaxNumOfEndpoints: 1}, func(PickerParams) (Picker, error) { return randomPicker{}, nil }),

		NewPluginType(PluginInfo{
			Type: TypeSingleProfileHandler, Kind: KindProfileHandler,
			Doc: "GIE's handler of one scheduling profile: accepted in an EndpointPickerConfig (infergw runs exactly one " +
				"profile) and otherwise unused.",
		}, NoParams{}, func(NoParams) (any, error) { return singleProfileHandler{}, nil }),
	}, flowControlPlugins()...)
}

// singleProfileHandler is GIE's single-profile-handler: infergw always runs one profile.
type singleProfileHandler struct{}

// PrefixParams are the parameters of the prefix-cache scorer. The JSON names are
// infergw's; GIE's names of the same parameters are accepted too.
type PrefixParams struct {
	BlockSize   int `json:"blockSize" doc:"prompt characters per hashed block; 0 = the engine's KV block size × 4 characters (vllm:cache_config_info), 64 until it reports one"`
	LRUCapacity int `json:"lruCapacity" doc:"blocks remembered per endpoint; 0 = the engine's KV cache in blocks (num_gpu_blocks × block_size tokens ÷ tokens per block), 31250 until known"`
	MaxBlocks   int `json:"maxBlocks" doc:"most prompt blocks hashed and matched; 0 = 32768 (the hard cap)"`

	HashBlockSize          *int  `json:"hashBlockSize,omitempty" doc:"GIE's name of blockSize"`
	LRUCapacityPerServer   *int  `json:"lruCapacityPerServer,omitempty" doc:"GIE's name of lruCapacity"`
	MaxPrefixBlocksToMatch *int  `json:"maxPrefixBlocksToMatch,omitempty" doc:"GIE's name of maxBlocks"`
	AutoTune               *bool `json:"autoTune,omitempty" doc:"GIE's: true derives the block size and capacity from the engine (blockSize and lruCapacity 0, their defaults); false fixes them (64 and 31250 unless set)"`
}

// resolved folds GIE's names into infergw's.
func (p PrefixParams) resolved() (PrefixParams, error) {
	for _, s := range []struct {
		ours   *int
		gie    *int
		o, g   string
		oursOK bool
	}{
		{&p.BlockSize, p.HashBlockSize, "blockSize", "hashBlockSize", p.BlockSize == 0},
		{&p.LRUCapacity, p.LRUCapacityPerServer, "lruCapacity", "lruCapacityPerServer", p.LRUCapacity == 0},
		{&p.MaxBlocks, p.MaxPrefixBlocksToMatch, "maxBlocks", "maxPrefixBlocksToMatch", p.MaxBlocks == 0},
	} {
		if s.gie == nil {
			continue
		}
		if !s.oursOK {
			return p, fmt.Errorf("%s and %s are the same parameter: give one", s.o, s.g)
		}
		*s.ours = *s.gie
	}
	p.HashBlockSize, p.LRUCapacityPerServer, p.MaxPrefixBlocksToMatch = nil, nil, nil
	if p.AutoTune != nil {
		autoTune := *p.AutoTune
		p.AutoTune = nil
		switch {
		case autoTune && (p.BlockSize != 0 && p.BlockSize != DefaultPrefixBlockSize || p.LRUCapacity != 0 && p.LRUCapacity != DefaultPrefixLRUCapacity):
			return p, errors.New("autoTune: true derives blockSize and lruCapacity from the engine (falling back to 64 and 31250): drop them or set autoTune: false")
		case autoTune:
			p.BlockSize, p.LRUCapacity = 0, 0
		default:
			if p.BlockSize == 0 {
				p.BlockSize = DefaultPrefixBlockSize
			}
			if p.LRUCapacity == 0 {
				p.LRUCapacity = DefaultPrefixLRUCapacity
			}
		}
	}
	return p, nil
}

// Validate checks the parameters (under either name).
func (p PrefixParams) Validate() error {
	r, err := p.resolved()
	if err != nil {
		return err
	}
	switch {
	case r.BlockSize < 0:
		return fmt.Errorf("blockSize %d must be >= 0 (0 = derive from the engine)", r.BlockSize)
	case r.LRUCapacity < 0:
		return fmt.Errorf("lruCapacity %d must be >= 0 (0 = derive from the engine)", r.LRUCapacity)
	case r.MaxBlocks < 0 || r.MaxBlocks > maxPrefixBlocks:
		return fmt.Errorf("maxBlocks %d must be in [0, %d] (0 = %d)", r.MaxBlocks, maxPrefixBlocks, maxPrefixBlocks)
	}
	return nil
}

func newPrefixScorer(p PrefixParams) (Scorer, error) {
	r, err := p.resolved()
	if err != nil {
		return nil, err
	}
	return &prefixScorer{blockSize: r.BlockSize, lruCapacity: r.LRUCapacity, maxBlocks: r.MaxBlocks}, nil
}

// LoRAFilterParams are the parameters of the LoRA-affinity filter.
type LoRAFilterParams struct {
	Threshold float64 `json:"threshold" doc:"GIE's probability of keeping the endpoints with the adapter; only 1 (infergw's filter is deterministic)"`
}

// Validate accepts threshold 1 only.
func (p LoRAFilterParams) Validate() error {
	if p.Threshold != 1 {
		return fmt.Errorf("threshold %v: infergw's LoRA filter is deterministic (threshold 1); drop the parameter or set 1", p.Threshold)
	}
	return nil
}

// PickerParams are the parameters of the built-in pickers.
type PickerParams struct {
	MaxNumOfEndpoints int `json:"maxNumOfEndpoints" doc:"GIE's number of endpoints picked; only 1 (the fallbacks after the primary are set with --fallbacks)"`
}

// Validate accepts maxNumOfEndpoints 1 only.
func (p PickerParams) Validate() error {
	if p.MaxNumOfEndpoints != 1 {
		return fmt.Errorf("maxNumOfEndpoints %d: infergw picks one primary; fallbacks after it are set with --fallbacks", p.MaxNumOfEndpoints)
	}
	return nil
}
