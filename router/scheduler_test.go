package router

import (
	"math"
	"slices"
	"testing"
	"time"
)

func ctxFor(req *Request, eps ...*endpoint) *PickContext {
	pc := &PickContext{req: req, now: time.Now(), prefixHit: make([]int, len(eps))}
	for _, e := range eps {
		pc.eps = append(pc.eps, e)
		pc.ms = append(pc.ms, e.loadMetrics())
	}
	pc.isAdapter = isAdapterRequest(pc)
	return pc
}

func approxEqual(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Abs(a[i]-b[i]) > 1e-9 {
			return false
		}
	}
	return true
}

func TestScorers(t *testing.T) {
	base := &Request{Model: "base"}
	lora := &Request{Model: "sql-lora"}
	tests := []struct {
		name  string
		score func(pc *PickContext, out []float64)
		req   *Request
		ms    []metricsState
		infl  []int64
		want  []float64
	}{
		{"queue min-max", scoreQueue, base, []metricsState{{waiting: 0}, {waiting: 5}, {waiting: 10}}, nil, []float64{1, 0.5, 0}},
		{"queue all equal", scoreQueue, base, []metricsState{{waiting: 3}, {waiting: 3}}, nil, []float64{1, 1}},
		{"queue single", scoreQueue, base, []metricsState{{waiting: 9}}, nil, []float64{1}},
		{"kv 1-usage", scoreKVCache, base, []metricsState{{kvUsage: 0}, {kvUsage: 0.25}, {kvUsage: 1}}, nil, []float64{1, 0.75, 0}},
		{"in-flight min-max", scoreInFlight, base, []metricsState{{}, {}, {}}, []int64{4, 0, 2}, []float64{0, 1, 0.5}},
		{"lora levels", scoreLoRAAffinity, lora, []metricsState{
			{loraRunning: []string{"sql-lora"}, maxLoRA: 1},
			{loraRunning: []string{"x"}, maxLoRA: 2},
			{loraRunning: []string{"x"}, loraWaiting: []string{"sql-lora"}, maxLoRA: 1},
			{loraRunning: []string{"x"}, maxLoRA: 1},
		}, nil, []float64{1, 0.8, 0.6, 0}},
		{"lora ignored for base model", scoreLoRAAffinity, base, []metricsState{
			{loraRunning: []string{"sql-lora"}, maxLoRA: 1}, {maxLoRA: 2},
		}, nil, []float64{0, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var eps []*endpoint
			for i, m := range tc.ms {
				e := staticEndpoint(string(rune('a'+i))+":1", m)
				if tc.infl != nil {
					e.inflight.Store(tc.infl[i])
				}
				eps = append(eps, e)
			}
			pc := ctxFor(tc.req, eps...)
			out := make([]float64, len(eps))
			tc.score(pc, out)
			if !approxEqual(out, tc.want) {
				t.Fatalf("scores = %v, want %v", out, tc.want)
			}
		})
	}
}

func TestPrefixScorer(t *testing.T) {
	prompt := []byte(stringsRepeat("abcdefgh", 64)) // 512 bytes = 8 blocks of 64
	hashes := hashPrefixBlocks(nil, "m", prompt, 64)
	if len(hashes) != 8 {
		t.Fatalf("blocks = %d, want 8", len(hashes))
	}
	full, half, none := staticEndpoint("a:1", metricsState{}), staticEndpoint("b:1", metricsState{}), staticEndpoint("c:1", metricsState{})
	full.prefix.add(hashes)
	half.prefix.add(hashes[:4])
	other := hashPrefixBlocks(nil, "other-model", prompt, 64) // same text, other model: no match
	none.prefix.add(other)
	pc := ctxFor(&Request{Model: "m"}, full, half, none)
	pc.prefix = &spanHashes{}
	pc.prefix.reset("m", prompt)
	out := make([]float64, 3)
	scorePrefix(pc, out)
	if want := []float64{1, 0.5, 0}; !approxEqual(out, want) {
		t.Fatalf("prefix scores = %v, want %v", out, want)
	}
	// Without blocks (short prompt) every endpoint scores 0.
	pc.prefix.reset("m", []byte("short"))
	scorePrefix(pc, out)
	if want := []float64{0, 0, 0}; !approxEqual(out, want) {
		t.Fatalf("short prompt scores = %v", out)
	}
}

// TestPrefixScorerEngineBlocks: each endpoint's match is measured in its own engine's
// blocks (block_size tokens × 4 characters). A shared prefix shorter than one 128-token
// block is not cached by that engine, so it earns no affinity there, while an engine with
// 16-token blocks holds it.
func TestPrefixScorerEngineBlocks(t *testing.T) {
	small := staticEndpoint("small:1", metricsState{blockSize: 16})  // span 64
	large := staticEndpoint("large:1", metricsState{blockSize: 128}) // span 512
	if small.prefixSpan.Load() != 64 || large.prefixSpan.Load() != 512 {
		t.Fatalf("spans %d %d, want 64 512", small.prefixSpan.Load(), large.prefixSpan.Load())
	}
	short := []byte(stringsRepeat("abcdefgh", 40)) // 320 characters: 5 small blocks, no large one
	for _, e := range []*endpoint{small, large} {
		e.prefix.add(hashPrefixBlocks(nil, "m", short, int(e.prefixSpan.Load())))
	}
	pc := ctxFor(&Request{Model: "m"}, small, large)
	pc.prefix = &spanHashes{}
	pc.prefix.reset("m", short)
	out := make([]float64, 2)
	scorePrefix(pc, out)
	if want := []float64{1, 0}; !approxEqual(out, want) || pc.prefixHit[0] != 5 || pc.prefixHit[1] != 0 {
		t.Fatalf("short prompt: scores %v hits %v, want %v [5 0]", out, pc.prefixHit, want)
	}
	// 1,100 characters: the large engine holds its 2 whole blocks of the first 1,024.
	long := []byte(stringsRepeat("abcdefghij", 110))
	large.prefix.add(hashPrefixBlocks(nil, "m", long, 512))
	pc.prefix.reset("m", long)
	scorePrefix(pc, out)
	if pc.prefixHit[1] != 2 || out[1] != 1 {
		t.Fatalf("long prompt on the 128-token engine: hits %d score %v, want 2 and 1", pc.prefixHit[1], out[1])
	}
	// A configured blockSize overrides the engine's.
	fixed := testScheduler(SchedulerConfig{
		Scorers:    []PluginSpec{{Type: TypePrefixScorer, Weight: 1, Parameters: PrefixParams{BlockSize: 64}}},
		Saturation: defaultSaturation(),
	})
	if s := fixed.span(&metricsState{blockSize: 128}); s != 64 {
		t.Fatalf("configured blockSize 64: span %d", s)
	}
}

// TestSpanHashesBound: more distinct spans than slots still hash correctly.
func TestSpanHashesBound(t *testing.T) {
	prompt := []byte(stringsRepeat("x", 4096))
	var h spanHashes
	h.reset("m", prompt)
	for span := 64; span <= 64*(maxSpans+3); span += 64 {
		if got, want := len(h.get(span)), 4096/span; got != want {
			t.Fatalf("span %d: %d blocks, want %d", span, got, want)
		}
	}
	if h.n != maxSpans {
		t.Fatalf("%d slots in use, bound %d", h.n, maxSpans)
	}
}

func stringsRepeat(s string, n int) string {
	b := make([]byte, 0, len(s)*n)
	for range n {
		b = append(b, s...)
	}
	return string(b)
}

func addrs(pc *PickContext) []string {
	var out []string
	for _, e := range pc.eps {
		out = append(out, e.spec.Address)
	}
	return out
}

func TestFilters(t *testing.T) {
	sched := testScheduler(DefaultSchedulerConfig())
	stale := staticEndpoint("stale:1", metricsState{scrapedAt: time.Now().Add(-time.Hour)})
	failed := staticEndpoint("failed:1", metricsState{})
	failed.lastFailed.Store(true)
	fresh := staticEndpoint("fresh:1", metricsState{})
	never := &endpoint{spec: EndpointSpec{Address: "never:1"}, prefix: newPrefixLRU(1)}
	never2 := &endpoint{spec: EndpointSpec{Address: "never2:1"}, prefix: newPrefixLRU(1)}
	// All stale under load: slowA's scrapes time out (no failure flag), its metrics 3 s
	// old; failedB refused its last scrape, metrics 2.5 s old; slowOld's are 9 s old.
	slowA := staticEndpoint("slowA:1", metricsState{scrapedAt: time.Now().Add(-3 * time.Second)})
	failedB := staticEndpoint("failedB:1", metricsState{scrapedAt: time.Now().Add(-2500 * time.Millisecond)})
	failedB.lastFailed.Store(true)
	slowOld := staticEndpoint("slowOld:1", metricsState{scrapedAt: time.Now().Add(-9 * time.Second)})

	tests := []struct {
		name     string
		req      *Request
		eps      []*endpoint
		filter   func(pc *PickContext)
		want     []string
		allStale bool
	}{
		{"serves model: unknown lists pass", &Request{Model: "x"},
			[]*endpoint{staticEndpoint("a:1", metricsState{}), withModels(staticEndpoint("b:1", metricsState{}), map[string]string{"y": ""}),
				withModels(staticEndpoint("c:1", metricsState{}), map[string]string{"x": ""})},
			filterServesModel, []string{"a:1", "c:1"}, false},
		{"serves model: no model (bodiless request) passes all", &Request{},
			[]*endpoint{withModels(staticEndpoint("b:1", metricsState{}), map[string]string{"y": ""}),
				withModels(staticEndpoint("c:1", metricsState{}), map[string]string{"x": ""})},
			filterServesModel, []string{"b:1", "c:1"}, false},
		{"fresh only while one is fresh", &Request{}, []*endpoint{stale, failed, fresh, never},
			func(pc *PickContext) { filterFresh(pc, time.Second) }, []string{"fresh:1"}, false},
		// failed's metrics are the newest (scrapedAt an hour ahead, then its scrape
		// failed); stale's are two hours older; never has none.
		{"all stale keeps the freshest data", &Request{}, []*endpoint{stale, failed, never},
			func(pc *PickContext) {
				if !filterFresh(pc, time.Second) {
					t.Error("allStale = false")
				}
			}, []string{"failed:1"}, true},
		{"all stale: slow beats failed within the window", &Request{}, []*endpoint{slowA, failedB, slowOld, never},
			func(pc *PickContext) { filterFresh(pc, 2*time.Second) }, []string{"slowA:1"}, true},
		{"all stale, none ever scraped, keeps all", &Request{}, []*endpoint{never, never2},
			func(pc *PickContext) { filterFresh(pc, time.Second) }, []string{"never:1", "never2:1"}, true},
		{"lora: running tier", &Request{Model: "l"}, []*endpoint{
			staticEndpoint("run:1", metricsState{loraRunning: []string{"l"}, maxLoRA: 1}),
			staticEndpoint("free:1", metricsState{maxLoRA: 2}),
			staticEndpoint("full:1", metricsState{loraRunning: []string{"z"}, maxLoRA: 1}),
		}, func(pc *PickContext) { filterLoRAAffinity(pc, sched) }, []string{"run:1"}, false},
		{"lora: saturated running endpoint skipped for free slot", &Request{Model: "l"}, []*endpoint{
			staticEndpoint("run:1", metricsState{loraRunning: []string{"l"}, maxLoRA: 1, waiting: 50}),
			staticEndpoint("free:1", metricsState{maxLoRA: 2, loraWaiting: nil}),
			staticEndpoint("full:1", metricsState{loraRunning: []string{"z"}, maxLoRA: 1}),
		}, func(pc *PickContext) { filterLoRAAffinity(pc, sched) }, []string{"free:1"}, false},
		{"lora: no tier keeps all", &Request{Model: "l"}, []*endpoint{
			staticEndpoint("w:1", metricsState{loraRunning: []string{"z"}, loraWaiting: []string{"l"}, maxLoRA: 1}),
			staticEndpoint("full:1", metricsState{loraRunning: []string{"z"}, maxLoRA: 1}),
		}, func(pc *PickContext) { filterLoRAAffinity(pc, sched) }, []string{"w:1", "full:1"}, false},
		{"lora: base model untouched", &Request{Model: "base"}, []*endpoint{
			staticEndpoint("run:1", metricsState{loraRunning: []string{"l"}, maxLoRA: 1}),
			staticEndpoint("free:1", metricsState{maxLoRA: 2}),
		}, func(pc *PickContext) { filterLoRAAffinity(pc, sched) }, []string{"run:1", "free:1"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pc := ctxFor(tc.req, tc.eps...)
			tc.filter(pc)
			if got := addrs(pc); !slices.Equal(got, tc.want) {
				t.Fatalf("kept %v, want %v", got, tc.want)
			}
			for i := range pc.eps { // metrics stay aligned with endpoints
				if pc.ms[i] != pc.eps[i].loadMetrics() {
					t.Fatalf("metrics misaligned at %d", i)
				}
			}
		})
	}
}

func TestIsAdapterFromModelList(t *testing.T) {
	e := withModels(staticEndpoint("a:1", metricsState{}), map[string]string{"base": "", "ad": "base"})
	if !ctxFor(&Request{Model: "ad"}, e).isAdapter {
		t.Error("adapter listed with parent not recognised")
	}
	if ctxFor(&Request{Model: "base"}, e).isAdapter {
		t.Error("base model taken for an adapter")
	}
}

func TestPickMaxScoreOrderAndTies(t *testing.T) {
	total := []float64{0.5, 3, 1, 3, 2}
	order := []int32{0, 1, 2, 3, 4}
	pickMaxScore(order, total, 3)
	top := []int32{order[0], order[1]}
	slices.Sort(top)
	if !slices.Equal(top, []int32{1, 3}) || order[2] != 4 {
		t.Fatalf("order = %v, want {1,3} tied then 4", order)
	}
	// Ties are broken randomly: among 4 equal candidates each wins sometimes.
	wins := make([]int, 4)
	for range 400 {
		o := []int32{0, 1, 2, 3}
		pickMaxScore(o, []float64{1, 1, 1, 1}, 1)
		wins[o[0]]++
	}
	for i, w := range wins {
		if w < 40 { // expected 100 each; 40 is > 6 standard deviations below
			t.Fatalf("candidate %d won %d of 400 ties: %v", i, w, wins)
		}
	}
}

// TestLRUCapacityBoundedAgainstEngineFigures: the prefix LRU's size derived from an
// engine's cache_config_info cannot be driven past the bound, nor overflow, by absurd
// figures a broken or hostile model server reports.
func TestLRUCapacityBoundedAgainstEngineFigures(t *testing.T) {
	s := testScheduler(DefaultSchedulerConfig())
	for _, tc := range []struct{ blocks, size, want int }{
		{8192, 128, 8192},                        // vLLM CPU: 128-token blocks, one hash per block
		{1 << 62, 1 << 40, maxPrefixLRUCapacity}, // would overflow an int product
		{1 << 40, 16, maxPrefixLRUCapacity},
	} {
		m := &metricsState{numGPUBlocks: tc.blocks, blockSize: tc.size}
		if got := s.lruCapacity(m); got != tc.want || got < 1 || got > maxPrefixLRUCapacity {
			t.Errorf("num_gpu_blocks %d, block_size %d: capacity %d, want %d", tc.blocks, tc.size, got, tc.want)
		}
	}
}
