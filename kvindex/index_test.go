package kvindex

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/infergw/infergw/kvevents"
)

const bs = 4

// prompt returns n blocks of tokens starting at token base.
func prompt(base, n int) []uint32 {
	t := make([]uint32, n*bs)
	for i := range t {
		t[i] = uint32(base + i)
	}
	return t
}

// engine stands in for one model server's cache: it assigns engine hashes of its own
// (unrelated to our keys, as a real engine's are) and writes the events vLLM would.
type engine struct {
	next   uint64
	hashes map[string]uint64 // chain prefix -> engine hash
}

func newEngine(salt uint64) *engine { return &engine{next: salt << 32, hashes: map[string]uint64{}} }

// store returns the BlockStored event of a prompt's blocks not cached yet.
func (e *engine) store(tokens []uint32, lora string) kvevents.Event {
	ev := kvevents.Event{Kind: kvevents.BlockStored, BlockSize: bs, LoRAName: lora, Medium: "GPU"}
	for i := 0; i+bs <= len(tokens); i += bs {
		k := fmt.Sprint(lora, tokens[:i+bs])
		h, ok := e.hashes[k]
		if ok {
			ev.ParentHash, ev.HasParent = h, true
			continue
		}
		e.next++
		e.hashes[k] = e.next
		ev.BlockHashes = append(ev.BlockHashes, e.next)
		ev.TokenIDs = append(ev.TokenIDs, tokens[i:i+bs]...)
	}
	return ev
}

func (e *engine) hashOf(tokens []uint32, lora string) uint64 {
	return e.hashes[fmt.Sprint(lora, tokens)]
}

func keysOf(tokens []uint32, lora string) []uint64 {
	var h Hasher
	return h.AppendKeys(nil, RootKey(lora), tokens, bs, 0)
}

func newIndex(t testing.TB, cfg Config) *Index {
	ix, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

func batch(evs ...kvevents.Event) *kvevents.Batch { return &kvevents.Batch{Events: evs} }

func TestIndexStoreMatchRemove(t *testing.T) {
	ix := newIndex(t, Config{})
	e := newEngine(1)
	p := prompt(100, 6)
	ix.HandleBatch("10.0.0.1", "m", 0, batch(e.store(p[:3*bs], "")))
	ix.HandleBatch("10.0.0.1", "m", 1, batch(e.store(p, ""))) // the rest, chained to block 3
	if info := ix.Info("10.0.0.1"); info.State != StateConsistent || info.BlockSize != bs {
		t.Fatalf("info %+v", info)
	}
	if got := ix.Match("10.0.0.1", keysOf(p, "")); got != 6 {
		t.Fatalf("match %d, want 6", got)
	}
	// A prompt sharing 2 blocks then diverging matches 2.
	q := append(append([]uint32{}, p[:2*bs]...), prompt(900, 3)...)
	if got := ix.Match("10.0.0.1", keysOf(q, "")); got != 2 {
		t.Fatalf("diverging prompt: match %d, want 2", got)
	}
	// Evicting block 4 (the engine's hash) cuts the run there.
	ix.HandleBatch("10.0.0.1", "m", 2, batch(kvevents.Event{Kind: kvevents.BlockRemoved, BlockHashes: []uint64{e.hashOf(p[:4*bs], "")}}))
	if got := ix.Match("10.0.0.1", keysOf(p, "")); got != 3 {
		t.Fatalf("after eviction: match %d, want 3", got)
	}
	if got := ix.Match("10.0.0.2", keysOf(p, "")); got != 0 {
		t.Fatalf("other pod: %d", got)
	}
}

func TestIndexLoRAIsolated(t *testing.T) {
	ix := newIndex(t, Config{})
	e := newEngine(1)
	p := prompt(0, 3)
	ix.HandleBatch("a", "m", 0, batch(e.store(p, "tiny-lora")))
	if got := ix.Match("a", keysOf(p, "")); got != 0 {
		t.Fatalf("base-model prompt matched adapter blocks: %d", got)
	}
	if got := ix.Match("a", keysOf(p, "tiny-lora")); got != 3 {
		t.Fatalf("adapter prompt: %d, want 3", got)
	}
	if got := ix.Match("a", keysOf(p, "other-lora")); got != 0 {
		t.Fatalf("other adapter: %d", got)
	}
}

func TestIndexSequence(t *testing.T) {
	p := prompt(0, 4)
	cases := []struct {
		name  string
		seqs  []uint64 // the second batch stores nothing new; events in the first
		state State
		match int
	}{
		{"fresh pod", []uint64{0, 1}, StateConsistent, 4},
		{"joined mid-stream", []uint64{5, 6}, StatePartial, 4},
		{"gap", []uint64{0, 3}, StatePartial, 0},
		{"restart to 0", []uint64{4, 0}, StateConsistent, 0},
		{"restart mid-stream", []uint64{9, 2}, StatePartial, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ix := newIndex(t, Config{})
			e := newEngine(1)
			ix.HandleBatch("a", "m", c.seqs[0], batch(e.store(p, "")))
			ix.HandleBatch("a", "m", c.seqs[1], batch())
			if info := ix.Info("a"); info.State != c.state {
				t.Fatalf("state %v, want %v", info.State, c.state)
			}
			if got := ix.Match("a", keysOf(p, "")); got != c.match {
				t.Fatalf("match %d, want %d", got, c.match)
			}
		})
	}
}

func TestIndexAllBlocksClearedRestoresConsistency(t *testing.T) {
	ix := newIndex(t, Config{})
	e := newEngine(1)
	p := prompt(0, 4)
	ix.HandleBatch("a", "m", 0, batch(e.store(p, "")))
	ix.HandleBatch("a", "m", 5, batch()) // gap: partial, emptied
	ix.HandleBatch("a", "m", 6, batch(kvevents.Event{Kind: kvevents.AllBlocksCleared}))
	if info := ix.Info("a"); info.State != StateConsistent {
		t.Fatalf("after AllBlocksCleared: %v", info.State)
	}
	e = newEngine(2) // the engine's cache is empty: it stores afresh
	ix.HandleBatch("a", "m", 7, batch(e.store(p, "")))
	if got := ix.Match("a", keysOf(p, "")); got != 4 {
		t.Fatalf("match %d", got)
	}
	ix.HandleBatch("a", "m", 8, batch(kvevents.Event{Kind: kvevents.AllBlocksCleared}))
	if got := ix.Match("a", keysOf(p, "")); got != 0 || ix.Blocks("a") != 0 {
		t.Fatalf("cleared pod still matches %d (%d blocks)", got, ix.Blocks("a"))
	}
}

func TestIndexOrphanAndMedium(t *testing.T) {
	ix := newIndex(t, Config{})
	e := newEngine(1)
	p := prompt(0, 4)
	first := e.store(p[:2*bs], "") // never delivered: joined after it
	_ = first
	ix.HandleBatch("a", "m", 3, batch(e.store(p, "")))
	if got := ix.Blocks("a"); got != 0 {
		t.Fatalf("orphan blocks indexed: %d", got)
	}
	q := prompt(500, 2)
	ev := e.store(q, "")
	ev.Medium = "CPU"
	ix.HandleBatch("a", "m", 4, batch(ev))
	if got := ix.Blocks("a"); got != 0 {
		t.Fatalf("offloaded blocks indexed: %d", got)
	}
}

func TestIndexBounds(t *testing.T) {
	ix := newIndex(t, Config{MaxPods: 2, MaxRanksPerPod: 1, MaxBlocksPerPod: 5})
	e := newEngine(1)
	for i, pod := range []string{"a", "b", "c"} {
		ix.HandleBatch(pod, "m", 0, batch(e.store(prompt(i*100, 1), "")))
	}
	if ix.Info("c").State != StateUnknown || ix.Blocks("c") != 0 {
		t.Fatal("a third pod was tracked beyond MaxPods=2")
	}
	ix.HandleBatch("a", "m", 1, &kvevents.Batch{DPRank: 1, Events: []kvevents.Event{e.store(prompt(1000, 1), "")}})
	if ix.Blocks("a") != 1 {
		t.Fatalf("a second rank was tracked beyond MaxRanksPerPod=1: %d blocks", ix.Blocks("a"))
	}
	// 6 blocks beyond MaxBlocksPerPod=5 (1 already there): the pod's entries are dropped.
	ix.HandleBatch("a", "m", 2, batch(e.store(prompt(2000, 6), "")))
	if n := ix.Blocks("a"); n > 5 {
		t.Fatalf("%d blocks indexed, limit 5", n)
	}
	if ix.Info("a").State != StatePartial {
		t.Fatalf("state after overflow %v", ix.Info("a").State)
	}
}

func TestIndexSilentPod(t *testing.T) {
	ix := newIndex(t, Config{SilenceTimeout: time.Second})
	now := time.Unix(1000, 0)
	ix.now = func() time.Time { return now }
	e := newEngine(1)
	ix.HandleBatch("a", "m", 0, batch(e.store(prompt(0, 1), "")))
	ix.Expect("a")
	now = now.Add(999 * time.Millisecond)
	if ix.Info("a").State != StateConsistent {
		t.Fatal("silent before the timeout")
	}
	now = now.Add(2 * time.Millisecond)
	if ix.Info("a").State != StateSilent {
		t.Fatal("not silent after the timeout")
	}
	ix.HandleBatch("a", "m", 1, batch()) // it publishes again, in sequence
	if ix.Info("a").State != StateConsistent {
		t.Fatal("still silent after a batch")
	}
}

func TestKeysChainAndPartialBlock(t *testing.T) {
	var h Hasher
	p := prompt(0, 3)
	k := h.AppendKeys(nil, RootKey(""), append(p, 1, 2), bs, 0) // 2 extra tokens: no key
	if len(k) != 3 {
		t.Fatalf("%d keys", len(k))
	}
	k2 := h.AppendKeys(nil, RootKey(""), p[bs:], bs, 0) // same block 1 tokens, other prefix
	if k2[0] == k[1] {
		t.Fatal("a block's key does not depend on its prefix")
	}
	if got := h.AppendKeys(nil, RootKey(""), p, bs, 2); len(got) != 2 || got[1] != k[1] {
		t.Fatalf("maxBlocks: %v", got)
	}
}

// TestIndexConcurrent runs ingestion and matching together (for -race).
func TestIndexConcurrent(t *testing.T) {
	ix := newIndex(t, Config{})
	e := newEngine(1)
	var evs []kvevents.Event
	for i := range 200 {
		evs = append(evs, e.store(prompt(i*1000, 8), ""))
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for i, ev := range evs {
			ix.HandleBatch(fmt.Sprint("pod", i%4), "m", uint64(i/4), batch(ev))
		}
	})
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				ix.Match(fmt.Sprint("pod", (i+g)%4), keysOf(prompt(i*1000, 8), ""))
				ix.Info("pod0")
			}
		})
	}
	wg.Wait()
	total := 0
	for i := range 4 {
		total += ix.Blocks(fmt.Sprint("pod", i))
	}
	if total != 200*8 {
		t.Fatalf("%d blocks indexed, want 1600", total)
	}
}

func benchIndex(b *testing.B, pods, blocksPerPod int) (*Index, [][]uint64) {
	ix := newIndex(b, Config{})
	var prompts [][]uint64
	for p := range pods {
		e := newEngine(uint64(p + 1))
		for i := 0; i < blocksPerPod/64; i++ {
			toks := prompt(i*100000, 64)
			ix.HandleBatch(fmt.Sprint("pod", p), "m", uint64(i), batch(e.store(toks, "")))
			if p == 0 {
				prompts = append(prompts, keysOf(toks, ""))
			}
		}
	}
	return ix, prompts
}

// BenchmarkIndexMatch: one pick's lookup of a 64-block prompt on one pod (the scorer does
// one per candidate), with 8 pods of 16,384 blocks indexed.
func BenchmarkIndexMatch(b *testing.B) {
	ix, prompts := benchIndex(b, 8, 16384)
	b.ResetTimer()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if ix.Match("pod0", prompts[i%len(prompts)]) != 64 {
			b.Fatal("miss")
		}
		i++
	}
}

// BenchmarkIndexMatchParallel: picks from every core while nothing is ingested.
func BenchmarkIndexMatchParallel(b *testing.B) {
	ix, prompts := benchIndex(b, 8, 16384)
	b.ResetTimer()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			ix.Match("pod0", prompts[i%len(prompts)])
			i++
		}
	})
}

// BenchmarkIndexIngest: one batch storing a 64-block prompt (tokens hashed into keys),
// then removing it again, on one pod.
func BenchmarkIndexIngest(b *testing.B) {
	ix := newIndex(b, Config{})
	e := newEngine(1)
	st := e.store(prompt(0, 64), "")
	rm := kvevents.Event{Kind: kvevents.BlockRemoved, BlockHashes: st.BlockHashes}
	bst, brm := batch(st), batch(rm)
	b.ReportAllocs()
	seq := uint64(0)
	for b.Loop() {
		ix.HandleBatch("pod0", "m", seq, bst)
		ix.HandleBatch("pod0", "m", seq+1, brm)
		seq += 2
	}
}

// BenchmarkIndexIngestWhilePicking: ingestion on pod0 while other goroutines match on it.
func BenchmarkIndexIngestWhilePicking(b *testing.B) {
	ix, prompts := benchIndex(b, 2, 16384)
	e := newEngine(99)
	st := e.store(prompt(7, 64), "")
	rm := kvevents.Event{Kind: kvevents.BlockRemoved, BlockHashes: st.BlockHashes}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ix.Match("pod0", prompts[i%len(prompts)])
			}
		})
	}
	b.ResetTimer()
	b.ReportAllocs()
	seq := uint64(1 << 20)
	for b.Loop() {
		ix.HandleBatch("pod0", "m", seq, batch(st))
		ix.HandleBatch("pod0", "m", seq+1, batch(rm))
		seq += 2
	}
	close(stop)
	wg.Wait()
}

// BenchmarkIndexMemory reports the heap bytes per indexed block (b.N is ignored beyond
// one fill): the figure the README's memory bound uses.
func BenchmarkIndexMemory(b *testing.B) {
	const blocks = 1 << 17
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	ix, _ := benchIndex(b, 1, blocks)
	runtime.GC()
	runtime.ReadMemStats(&after)
	if ix.Blocks("pod0") != blocks {
		b.Fatalf("%d blocks", ix.Blocks("pod0"))
	}
	for b.Loop() {
		ix.Info("pod0")
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/blocks, "bytes/block")
	runtime.KeepAlive(ix)
}

func TestIndexSpeculation(t *testing.T) {
	ix := newIndex(t, Config{SpeculationTTL: time.Second})
	now := time.Unix(1000, 0)
	ix.now = func() time.Time { return now }
	e := newEngine(1)
	p := prompt(0, 4)
	ix.HandleBatch("a", "m", 0, batch(e.store(p[:bs], "")))
	keys := keysOf(p, "")
	ix.Speculate("a", keys[1:])
	ix.Speculate("unknown-pod", keys) // ignored: the index does not know it
	if got := ix.Match("a", keys); got != 4 {
		t.Fatalf("with speculation: %d, want 4", got)
	}
	now = now.Add(1001 * time.Millisecond)
	if got := ix.Match("a", keys); got != 1 {
		t.Fatalf("after the TTL: %d, want the 1 stored block", got)
	}
	if got := ix.Match("unknown-pod", keys); got != 0 {
		t.Fatalf("unknown pod: %d", got)
	}
	// Bounded: more speculative keys than the cap never grow the map past it.
	many := make([]uint64, maxSpeculativePerPod+10)
	for i := range many {
		many[i] = uint64(i) + 1<<40
	}
	ix.Speculate("a", many)
	ix.mu.RLock()
	n := len(ix.pods["a"].spec)
	ix.mu.RUnlock()
	if n > maxSpeculativePerPod {
		t.Fatalf("%d speculative keys, cap %d", n, maxSpeculativePerPod)
	}
}

// TestSpeculationConfirmedThenEvicted: a speculative block ends when the pod's BlockStored
// confirms it, so the BlockRemoved of its eviction, within the TTL, makes it not held;
// blocks not yet confirmed stay speculative until the TTL.
func TestSpeculationConfirmedThenEvicted(t *testing.T) {
	ix := newIndex(t, Config{SpeculationTTL: time.Hour})
	e := newEngine(1)
	p := prompt(0, 4)
	keys := keysOf(p, "")
	ix.HandleBatch("a", "m", 0, batch(e.store(prompt(500, 1), ""))) // the pod is known
	ix.Speculate("a", keys)
	if got := ix.Match("a", keys); got != 4 {
		t.Fatalf("speculated: %d, want 4", got)
	}
	// The engine stores the first two blocks (its prefill's first chunk), then evicts them.
	ix.HandleBatch("a", "m", 1, batch(e.store(p[:2*bs], "")))
	if got, stored := ix.Match("a", keys), ix.MatchStored("a", keys); got != 4 || stored != 2 {
		t.Fatalf("two confirmed: match %d stored %d, want 4 and 2", got, stored)
	}
	ix.HandleBatch("a", "m", 2, batch(kvevents.Event{Kind: kvevents.BlockRemoved,
		BlockHashes: []uint64{e.hashOf(p[:bs], ""), e.hashOf(p[:2*bs], "")}}))
	if got := ix.Match("a", keys); got != 0 {
		t.Fatalf("confirmed blocks evicted within the TTL: match %d, want 0", got)
	}
	// The unconfirmed tail is still speculative (a later prompt sharing only it is not a
	// prefix match, but the map keeps it until stored or expired).
	ix.mu.RLock()
	n := len(ix.pods["a"].spec)
	ix.mu.RUnlock()
	if n != 2 {
		t.Fatalf("%d speculative keys left, want the 2 unconfirmed", n)
	}
}

// TestSpeculationConcurrent: picks speculating and matching while batches confirm and
// evict the same keys (run with -race).
func TestSpeculationConcurrent(t *testing.T) {
	ix := newIndex(t, Config{SpeculationTTL: time.Hour})
	e := newEngine(1)
	ix.HandleBatch("a", "m", 0, batch(e.store(prompt(500, 1), "")))
	p := prompt(0, 8)
	keys := keysOf(p, "")
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 200 {
				ix.Speculate("a", keys)
				if got := ix.Match("a", keys); got < 0 || got > len(keys) {
					t.Errorf("match %d", got)
				}
			}
		})
	}
	for i := range 200 {
		ix.HandleBatch("a", "m", uint64(1+2*i), batch(e.store(p, "")))
		hashes := make([]uint64, 0, 8)
		for b := 1; b <= 8; b++ {
			hashes = append(hashes, e.hashOf(p[:b*bs], ""))
		}
		ix.HandleBatch("a", "m", uint64(2+2*i), batch(kvevents.Event{Kind: kvevents.BlockRemoved, BlockHashes: hashes}))
		e.hashes = map[string]uint64{} // evicted: the engine stores them anew next time
	}
	wg.Wait()
	if ix.MatchStored("a", keys) != 0 {
		t.Fatal("every stored block was removed")
	}
}
