package kvindex

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

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

// specIndex is an index on a settable clock that knows pod "a" (the pod must have
// published to take speculation).
func specIndex(t *testing.T, cfg Config) (*Index, *time.Time) {
	t.Helper()
	ix := newIndex(t, cfg)
	now := time.Unix(1000, 0)
	ix.now = func() time.Time { return now }
	ix.HandleBatch("a", "m", 0, batch(newEngine(9).store(prompt(5000, 1), "")))
	return ix, &now
}

func specLen(ix *Index, pod string) int {
	ix.mu.RLock()
	p := ix.pods[pod]
	ix.mu.RUnlock()
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.spec)
}

// TestSpeculationLastsWhileQueued: a request's speculation does not end with a clock
// while the request waits for its first token, however long it queues (past capacity a
// pod's queue outlasted the old 2 s TTL and the blocks of requests still waiting stopped
// counting); its first token ends it after the grace.
func TestSpeculationLastsWhileQueued(t *testing.T) {
	ix, now := specIndex(t, Config{}) // the defaults: a 60 s backstop, a 500 ms grace
	keys := keysOf(prompt(0, 4), "")
	sp := ix.Speculate("a", keys)
	*now = now.Add(10 * time.Second) // queued five times the old 2 s TTL
	if got := ix.Match("a", keys); got != 4 {
		t.Fatalf("queued 10 s: match %d, want 4", got)
	}
	sp.End(true)
	*now = now.Add(499 * time.Millisecond)
	if got := ix.Match("a", keys); got != 4 {
		t.Fatalf("within the grace after the first token: match %d, want 4", got)
	}
	*now = now.Add(2 * time.Millisecond)
	if got := ix.Match("a", keys); got != 0 {
		t.Fatalf("after the grace: match %d, want 0", got)
	}
	sp.End(false) // a second end changes nothing
	if got := ix.Match("a", keys); got != 0 {
		t.Fatalf("after a second end: match %d", got)
	}
}

// TestSpeculationFailureEndsAtOnce: a request that fails or is cancelled before its first
// token will never store its blocks: they stop counting at once, and leave the map.
func TestSpeculationFailureEndsAtOnce(t *testing.T) {
	ix, _ := specIndex(t, Config{SpeculationTTL: time.Minute})
	keys := keysOf(prompt(0, 4), "")
	sp := ix.Speculate("a", keys)
	if got := ix.Match("a", keys); got != 4 {
		t.Fatalf("speculated: match %d, want 4", got)
	}
	sp.End(false)
	if got := ix.Match("a", keys); got != 0 {
		t.Fatalf("failed: match %d, want 0 at once", got)
	}
	if n := specLen(ix, "a"); n != 0 {
		t.Fatalf("%d speculative entries left after the only request failed", n)
	}
	if got := testutil.ToFloat64(ix.specEnds.WithLabelValues("failed")); got != 1 {
		t.Fatalf("failed ends counted %v, want 1", got)
	}
	var none *Speculation
	none.End(false) // Speculate's nil (unknown pod) is safe to end
	if ix.Speculate("unknown-pod", keys) != nil {
		t.Fatal("an unknown pod took speculation")
	}
}

// TestSpeculationOverlapping: two in-flight requests share a prefix on one pod: ending one
// (failed or answered) leaves the other's blocks held; the shared ones go with the last.
func TestSpeculationOverlapping(t *testing.T) {
	ix, now := specIndex(t, Config{SpeculationTTL: time.Minute, SpeculationGrace: 100 * time.Millisecond})
	p := prompt(0, 6)
	keys := keysOf(p, "")
	first := ix.Speculate("a", keys[:4]) // blocks 0-3
	second := ix.Speculate("a", keys)    // blocks 0-5: shares 0-3
	first.End(false)
	if got := ix.Match("a", keys); got != 6 {
		t.Fatalf("first failed, second queued: match %d, want 6", got)
	}
	third := ix.Speculate("a", keys[:2])
	second.End(true)
	*now = now.Add(time.Second) // past the grace of the second's first token
	if got := ix.Match("a", keys); got != 2 {
		t.Fatalf("second answered, third queued: match %d, want the third's 2", got)
	}
	third.End(false)
	// The second's blocks past its grace are dead (swept by a later Speculate); the ones
	// the failed third held last left at once.
	if got := ix.Match("a", keys); got != 0 || specLen(ix, "a") != 4 {
		t.Fatalf("all ended: match %d, %d entries, want 0 and the 4 past their grace", got, specLen(ix, "a"))
	}
}

// TestSpeculationEndAfterConfirmation: once the pod's BlockStored confirmed a block, its
// speculation is over whatever the requests do; if it is evicted and a later request
// speculates it anew, the end of the earlier request does not end the later one's.
func TestSpeculationEndAfterConfirmation(t *testing.T) {
	ix, _ := specIndex(t, Config{SpeculationTTL: time.Minute})
	e := newEngine(1)
	p := prompt(0, 2)
	keys := keysOf(p, "")
	early := ix.Speculate("a", keys)
	ix.HandleBatch("a", "m", 1, batch(e.store(p, ""))) // early's prefill stored both
	ix.HandleBatch("a", "m", 2, batch(kvevents.Event{Kind: kvevents.BlockRemoved,
		BlockHashes: []uint64{e.hashOf(p[:bs], ""), e.hashOf(p, "")}})) // and they were evicted
	if got := ix.Match("a", keys); got != 0 {
		t.Fatalf("confirmed then evicted: match %d, want 0", got)
	}
	late := ix.Speculate("a", keys)
	early.End(false) // e.g. its stream was cut after the prefill
	if got := ix.Match("a", keys); got != 2 {
		t.Fatalf("the earlier request's end took the later one's speculation: match %d, want 2", got)
	}
	late.End(false)
	if got := ix.Match("a", keys); got != 0 {
		t.Fatalf("both ended: match %d", got)
	}
}

// TestSpeculationLostEnds: requests whose end never comes (a lost end) hold their blocks
// until the backstop TTL, and no longer: they stop counting and their entries are swept,
// so speculating with ends lost forever keeps the map near what is live.
func TestSpeculationLostEnds(t *testing.T) {
	ix, now := specIndex(t, Config{SpeculationTTL: 30 * time.Second})
	keys := keysOf(prompt(0, 4), "")
	ix.Speculate("a", keys) // never ended
	*now = now.Add(29 * time.Second)
	if got := ix.Match("a", keys); got != 4 {
		t.Fatalf("within the backstop: match %d, want 4", got)
	}
	*now = now.Add(2 * time.Second)
	if got := ix.Match("a", keys); got != 0 {
		t.Fatalf("past the backstop: match %d, want 0", got)
	}
	// 200 rounds of 100 requests of 8 fresh blocks each, ends all lost, 31 s apart: 160,000
	// keys speculated, more than twice the per-pod bound.
	peak := 0
	for round := range 200 {
		for r := range 100 {
			ix.Speculate("a", keysOf(prompt(10_000+(round*100+r)*8*bs, 8), ""))
		}
		peak = max(peak, specLen(ix, "a"))
		*now = now.Add(31 * time.Second)
	}
	if peak > 4*800+minSpecSweep {
		t.Fatalf("speculation map peaked at %d entries with 800 live", peak)
	}
	if got := testutil.ToFloat64(ix.specExpired); got < 150_000 {
		t.Fatalf("%v blocks counted as ended by the backstop, want most of the 160,004 lost", got)
	}
}

// TestSpeculationBound: one pod's speculation never exceeds maxSpeculativePerPod however
// many live requests speculate, and ends of requests whose entries were dropped to keep
// the bound leave the newer ones alone.
func TestSpeculationBound(t *testing.T) {
	ix, _ := specIndex(t, Config{SpeculationTTL: time.Hour})
	const perRequest = 4096
	var specs []*Speculation
	for r := range maxSpeculativePerPod/perRequest + 4 { // all live, 4 requests over
		keys := make([]uint64, perRequest)
		for i := range keys {
			keys[i] = uint64(r*perRequest+i) + 1<<40
		}
		specs = append(specs, ix.Speculate("a", keys))
		if n := specLen(ix, "a"); n > maxSpeculativePerPod {
			t.Fatalf("request %d: %d speculative keys, bound %d", r, n, maxSpeculativePerPod)
		}
	}
	last := specs[len(specs)-1]
	held := specLen(ix, "a")
	for _, sp := range specs[:len(specs)-1] {
		sp.End(false)
	}
	if n := specLen(ix, "a"); n != perRequest || held < perRequest {
		t.Fatalf("after every other request ended: %d entries, want the last request's %d", n, perRequest)
	}
	last.End(false)
	// One request with more keys than the bound: clipped to it.
	huge := make([]uint64, maxSpeculativePerPod+10)
	for i := range huge {
		huge[i] = uint64(i) + 1<<50
	}
	ix.Speculate("a", huge)
	if n := specLen(ix, "a"); n != maxSpeculativePerPod {
		t.Fatalf("one request over the bound: %d entries, want %d", n, maxSpeculativePerPod)
	}
}

// BenchmarkSpeculateEnd: a pick's speculation of a 128-block prompt the pod lacks and its
// end at the first token, with 32 other requests' speculation live on the pod (a queue).
func BenchmarkSpeculateEnd(b *testing.B) {
	ix := newIndex(b, Config{})
	ix.HandleBatch("a", "m", 0, batch(newEngine(9).store(prompt(1<<20, 1), "")))
	for r := range 32 {
		ix.Speculate("a", keysOf(prompt(r*128*bs, 128), ""))
	}
	keys := keysOf(prompt(1<<22, 128), "")
	b.ReportAllocs()
	for b.Loop() {
		ix.Speculate("a", keys).End(true)
	}
}
