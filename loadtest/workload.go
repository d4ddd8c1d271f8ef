package loadtest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
)

// Message is one chat turn.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Request is one generated request before it is encoded for the target API.
type Request struct {
	Model string
	// Messages is the conversation (chat) or, joined, the prompt (completions).
	Messages []Message
	// InputTokens is the workload's own estimate of the prompt length in tokens (words).
	InputTokens int
	// MaxTokens is sent as max_tokens (0 = not sent).
	MaxTokens int
	// Session and Turn identify a multi-turn conversation (Session -1 otherwise).
	Session, Turn int
}

// LengthDist draws token counts: fixed N, uniform in [Min, Max], or normal(Mean, StdDev)
// clamped to [1, 4·Mean].
type LengthDist struct {
	Kind   string  `json:"kind"` // "fixed" (default), "uniform", "normal"
	Mean   float64 `json:"mean,omitempty"`
	StdDev float64 `json:"stddev,omitempty"`
	Min    int     `json:"min,omitempty"`
	Max    int     `json:"max,omitempty"`
}

// ParseLengthDist reads "128", "fixed:128", "uniform:64:256" or "normal:128:32".
func ParseLengthDist(s string) (LengthDist, error) {
	parts := strings.Split(strings.TrimSpace(s), ":")
	num := func(p string) (float64, error) {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || v < 0 || math.IsNaN(v) || math.IsInf(v, 0) || v > 1e7 {
			return 0, fmt.Errorf("length %q: want a number of tokens in [0, 1e7]", p)
		}
		return v, nil
	}
	switch {
	case len(parts) == 1 || (len(parts) == 2 && parts[0] == "fixed"):
		v, err := num(parts[len(parts)-1])
		if err != nil {
			return LengthDist{}, err
		}
		return LengthDist{Kind: "fixed", Mean: v}, nil
	case len(parts) == 3 && parts[0] == "uniform":
		lo, err1 := num(parts[1])
		hi, err2 := num(parts[2])
		if err1 != nil || err2 != nil || lo > hi {
			return LengthDist{}, fmt.Errorf("length %q: want uniform:MIN:MAX with MIN <= MAX", s)
		}
		return LengthDist{Kind: "uniform", Min: int(lo), Max: int(hi), Mean: (lo + hi) / 2}, nil
	case len(parts) == 3 && parts[0] == "normal":
		m, err1 := num(parts[1])
		sd, err2 := num(parts[2])
		if err1 != nil || err2 != nil {
			return LengthDist{}, fmt.Errorf("length %q: want normal:MEAN:STDDEV", s)
		}
		return LengthDist{Kind: "normal", Mean: m, StdDev: sd}, nil
	}
	return LengthDist{}, fmt.Errorf("length %q: want N, fixed:N, uniform:MIN:MAX or normal:MEAN:STDDEV", s)
}

func (d LengthDist) draw(rng *rand.Rand) int {
	switch d.Kind {
	case "uniform":
		if d.Max <= d.Min {
			return d.Min
		}
		return d.Min + rng.IntN(d.Max-d.Min+1)
	case "normal":
		v := math.Round(d.Mean + d.StdDev*rng.NormFloat64())
		return int(max(1, min(v, 4*d.Mean+1)))
	default:
		return int(d.Mean)
	}
}

// WeightedModel is one entry of the model mix.
type WeightedModel struct {
	Name   string  `json:"name"`
	Weight float64 `json:"weight"`
}

// ParseModels reads `--model` values: "a", "a,b" (equal weights) or "a=3" (weight 3).
func ParseModels(values []string) ([]WeightedModel, error) {
	var out []WeightedModel
	for _, v := range values {
		for _, item := range strings.Split(v, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			name, w := item, 1.0
			if i := strings.LastIndexByte(item, '='); i >= 0 {
				name = item[:i]
				f, err := strconv.ParseFloat(item[i+1:], 64)
				if err != nil || !(f > 0) || math.IsInf(f, 0) {
					return nil, fmt.Errorf("model %q: weight must be a positive number", item)
				}
				w = f
			}
			if name == "" {
				return nil, fmt.Errorf("model %q: empty name", item)
			}
			out = append(out, WeightedModel{Name: name, Weight: w})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no model given (use --model NAME)")
	}
	return out, nil
}

// WorkloadConfig chooses and parameterises the prompt generator.
type WorkloadConfig struct {
	// Kind: "synthetic" (default), "shared-prefix", "multi-turn" or "sharegpt".
	Kind string `json:"kind"`
	// Input and Output are the prompt / output length distributions in tokens (synthetic
	// and multi-turn; Output also for shared-prefix). Output sets max_tokens.
	Input  LengthDist `json:"input"`
	Output LengthDist `json:"output"`
	// Shared prefix: Groups groups, each with a PrefixTokens-token common prefix, then a
	// SuffixTokens-token suffix unique to each request.
	Groups       int `json:"groups,omitempty"`
	PrefixTokens int `json:"prefix_tokens,omitempty"`
	SuffixTokens int `json:"suffix_tokens,omitempty"`
	// Multi-turn: Sessions conversations in parallel, each Turns turns long; every turn
	// resends the whole conversation plus a new user message of Input tokens.
	Sessions int `json:"sessions,omitempty"`
	Turns    int `json:"turns,omitempty"`
	// ShareGPTFile is a ShareGPT-format JSON file (sharegpt kind).
	ShareGPTFile string `json:"sharegpt_file,omitempty"`
	// Trace replay (trace kind): TraceFile in TraceFormat ("mooncake" JSONL or "azure" CSV;
	// "" = by extension) sets each request's start time, lengths and shared prefixes.
	// TimeScale speeds the trace up (2 = twice as fast; default 1).
	TraceFile   string  `json:"trace_file,omitempty"`
	TraceFormat string  `json:"trace_format,omitempty"`
	TimeScale   float64 `json:"time_scale,omitempty"`
	// Tokenizer is a Hugging Face tokenizer.json (or a directory holding one): generated
	// prompts are then exactly the requested number of the model's tokens. Without it a word
	// stands in for a token.
	Tokenizer string `json:"tokenizer,omitempty"`
	// Dataset (dataset kind): prompts or chat conversations from a JSONL, JSON or Parquet file.
	Dataset DatasetConfig `json:"dataset,omitzero"`
}

// generator produces the request sequence. Its order depends only on the seed, so a run is
// reproducible whatever the concurrency; it is safe for concurrent use.
type generator struct {
	mu       sync.Mutex
	rng      *rand.Rand
	cfg      WorkloadConfig
	models   []WeightedModel
	cumW     []float64
	seq      int
	prefixes []string
	sessions []session
	nextSess int
	share    []shareGPTItem
	trace    []traceEntry
	dataset  []datasetItem
	tok      *modelTokens // nil: words stand in for tokens
	seed     uint64
}

type session struct {
	msgs []Message
	turn int
	id   int
}

func newGenerator(cfg WorkloadConfig, models []WeightedModel, seed uint64) (*generator, error) {
	g := &generator{rng: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)), cfg: cfg, models: models, seed: seed}
	total := 0.0
	for _, m := range models {
		total += m.Weight
		g.cumW = append(g.cumW, total)
	}
	if len(models) == 0 {
		return nil, fmt.Errorf("workload: no model")
	}
	if cfg.Tokenizer != "" {
		tok, err := loadModelTokens(cfg.Tokenizer)
		if err != nil {
			return nil, err
		}
		g.tok = tok
	}
	switch cfg.Kind {
	case "", "synthetic":
	case "shared-prefix":
		if cfg.Groups <= 0 || cfg.PrefixTokens <= 0 {
			return nil, fmt.Errorf("workload shared-prefix: groups and prefix tokens must be > 0")
		}
		for i := 0; i < cfg.Groups; i++ {
			g.prefixes = append(g.prefixes, g.words(cfg.PrefixTokens))
		}
	case "multi-turn":
		if cfg.Sessions <= 0 || cfg.Turns <= 0 {
			return nil, fmt.Errorf("workload multi-turn: sessions and turns must be > 0")
		}
		g.sessions = make([]session, cfg.Sessions)
		for i := range g.sessions {
			g.sessions[i].id = i
		}
		g.nextSess = cfg.Sessions
	case "sharegpt":
		items, err := loadShareGPT(cfg.ShareGPTFile)
		if err != nil {
			return nil, err
		}
		// A seeded shuffle so that different seeds sample the file differently.
		g.rng.Shuffle(len(items), func(i, j int) { items[i], items[j] = items[j], items[i] })
		g.share = items
	case "dataset":
		items, err := loadDataset(cfg.Dataset)
		if err != nil {
			return nil, err
		}
		g.rng.Shuffle(len(items), func(i, j int) { items[i], items[j] = items[j], items[i] })
		g.dataset = items
	case "trace":
		entries, err := loadTrace(cfg.TraceFile, cfg.TraceFormat)
		if err != nil {
			return nil, err
		}
		g.trace = entries
	default:
		return nil, fmt.Errorf("workload: unknown kind %q (synthetic, shared-prefix, multi-turn, sharegpt, dataset, trace)", cfg.Kind)
	}
	return g, nil
}

// skipArrival keeps a trace's requests aligned with its schedule when an arrival is
// dropped (not started): the dropped arrival's entry is skipped, not given to the next one.
// Other workloads are not tied to arrivals and draw nothing for a drop.
func (g *generator) skipArrival() {
	if g.cfg.Kind != "trace" {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.seq++
}

func (g *generator) pickModel() string {
	if len(g.models) == 1 {
		return g.models[0].Name
	}
	x := g.rng.Float64() * g.cumW[len(g.cumW)-1]
	for i, c := range g.cumW {
		if x < c {
			return g.models[i].Name
		}
	}
	return g.models[len(g.models)-1].Name
}

// Next returns the next request of the sequence.
func (g *generator) Next() Request {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.seq++
	r := Request{Model: g.pickModel(), Session: -1}
	switch g.cfg.Kind {
	case "shared-prefix":
		grp := g.rng.IntN(len(g.prefixes))
		suffix := g.wordsAfter(g.rng, g.cfg.SuffixTokens)
		r.Messages = []Message{{Role: "user", Content: g.prefixes[grp] + " " + suffix}}
		r.InputTokens = g.cfg.PrefixTokens + g.cfg.SuffixTokens
		r.MaxTokens = g.cfg.Output.draw(g.rng)
	case "multi-turn":
		i := g.rng.IntN(len(g.sessions))
		s := &g.sessions[i]
		if s.turn >= g.cfg.Turns { // conversation finished: start a new one in its slot
			*s = session{id: g.nextSess}
			g.nextSess++
		}
		out := g.cfg.Output.draw(g.rng)
		s.msgs = append(s.msgs, Message{Role: "user", Content: g.words(max(1, g.cfg.Input.draw(g.rng)))})
		r.Messages = append([]Message(nil), s.msgs...)
		for _, m := range r.Messages {
			r.InputTokens += wordCount(m.Content)
		}
		r.MaxTokens, r.Session, r.Turn = out, s.id, s.turn
		// The assistant turn is replayed as synthetic text of the requested length, so the
		// sequence stays reproducible and independent of what the server answered.
		s.msgs = append(s.msgs, Message{Role: "assistant", Content: g.words(max(1, out))})
		s.turn++
	case "dataset":
		it := g.dataset[(g.seq-1)%len(g.dataset)]
		r.Messages = append([]Message(nil), it.msgs...)
		r.InputTokens, r.MaxTokens = it.promptTokens, it.outputTokens
		if r.MaxTokens == 0 {
			r.MaxTokens = g.cfg.Output.draw(g.rng)
		}
	case "trace":
		e := g.trace[(g.seq-1)%len(g.trace)]
		r.Messages = []Message{{Role: "user", Content: g.tracePrompt(e)}}
		r.InputTokens, r.MaxTokens = e.input, e.output
	case "sharegpt":
		it := g.share[(g.seq-1)%len(g.share)]
		r.Messages = []Message{{Role: "user", Content: it.prompt}}
		r.InputTokens = it.promptTokens
		r.MaxTokens = it.outputTokens
	default:
		n := max(1, g.cfg.Input.draw(g.rng))
		r.Messages = []Message{{Role: "user", Content: g.words(n)}}
		r.InputTokens = n
		r.MaxTokens = g.cfg.Output.draw(g.rng)
	}
	return r
}

// vocabulary is a fixed list of short common words: most tokenizers map each to one token,
// so an N-word prompt is close to N tokens.
var vocabulary = strings.Fields(`the of and to in is was for on are with as his they at be this
from have or by one had not but what all were when we there can an your which their said if do
will each about how up out them then she many some so these would other into has more her two
like him see time could no make than first been its who now people my made over did down only
way find use may water long little very after words called just where most know get through
back much before go good new write our used me man too any day same right look think also
around another came come work three word must because does part even place well such here
take why things help put years different away again off went old number great tell men say
small every found still between name should home big give air line set own under read last
never us left end along while might next sound below saw something thought both few those
always looked show large often together asked house don world going want school important
until form food keep children feet land side without boy once animals life enough took
sometimes four head above kind began almost live page got earth need far hand high year
mother light parts country father let night following picture being study second eyes soon
times story boys since white days ever paper hard near sentence better best across during
today others sure means knew its try told young miles sun ways thing whole hear example heard
several change answer room sea against top turned learn point city play toward five using
himself usually`)

// words returns n tokens of random text: exactly n of the model's tokens with --tokenizer,
// else n words (about n tokens).
func (g *generator) words(n int) string {
	if n <= 0 {
		return ""
	}
	if g.tok != nil {
		text, _ := g.tok.words(g.rng, n, false)
		return text
	}
	var b strings.Builder
	b.Grow(n * 6)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(vocabulary[g.rng.IntN(len(vocabulary))])
	}
	return b.String()
}

// wordsAfter is words for text that will follow a space (its first word is costed with
// the leading space), drawn from rng.
func (g *generator) wordsAfter(rng *rand.Rand, n int) string {
	if n <= 0 {
		return ""
	}
	if g.tok != nil {
		text, _ := g.tok.words(rng, n, true)
		return text
	}
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(vocabulary[rng.IntN(len(vocabulary))])
	}
	return b.String()
}

func wordCount(s string) int { return len(strings.Fields(s)) }
