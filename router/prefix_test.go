package router

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestHashPrefixBlocksChained(t *testing.T) {
	a := []byte(stringsRepeat("x", 64) + stringsRepeat("y", 64) + "tail")
	b := []byte(stringsRepeat("z", 64) + stringsRepeat("y", 64))
	ha, hb := hashPrefixBlocks(nil, "m", a, 64), hashPrefixBlocks(nil, "m", b, 64)
	if len(ha) != 2 || len(hb) != 2 {
		t.Fatalf("blocks %d %d, want 2 (partial tail not hashed)", len(ha), len(hb))
	}
	if ha[1] == hb[1] {
		t.Fatal("same second block after different first blocks hashed equal: not chained")
	}
	if slices.Equal(ha, hashPrefixBlocks(nil, "other", a, 64)) {
		t.Fatal("hashes do not depend on the model")
	}
	if !slices.Equal(ha, hashPrefixBlocks(nil, "m", a, 64)) {
		t.Fatal("hashing not deterministic")
	}
	huge := make([]byte, (maxPrefixBlocks+10)*4)
	if n := len(hashPrefixBlocks(nil, "m", huge, 4)); n != maxPrefixBlocks {
		t.Fatalf("blocks of a huge prompt = %d, want the cap %d", n, maxPrefixBlocks)
	}
}

func TestPrefixLRU(t *testing.T) {
	l := newPrefixLRU(4)
	l.add([]uint64{1, 2, 3})
	if n := l.matchLen([]uint64{1, 2, 3, 9}); n != 3 {
		t.Fatalf("match = %d, want 3", n)
	}
	// Adding 2 more evicts the least recent. Insertion is last-to-first, so the chain
	// head (1) of the older prompt is more recent than its tail (3): 3 is evicted first.
	l.add([]uint64{10, 11})
	if l.len() != 4 {
		t.Fatalf("len = %d, want 4", l.len())
	}
	if n := l.matchLen([]uint64{1, 2, 3}); n != 2 {
		t.Fatalf("match after eviction = %d, want 2 (block 3 evicted, 1 and 2 kept)", n)
	}
	if n := l.matchLen([]uint64{10, 11}); n != 2 {
		t.Fatalf("new prompt match = %d", n)
	}
	// Touching an entry makes it most recent.
	l.add([]uint64{1})
	l.add([]uint64{20, 21})
	if l.matchLen([]uint64{1}) != 1 || l.matchLen([]uint64{20, 21}) != 2 {
		t.Fatal("touched entry evicted")
	}
	l.setCapacity(2)
	if l.len() != 2 || l.matchLen([]uint64{20, 21}) != 2 {
		t.Fatalf("shrink kept len %d, want the 2 most recent", l.len())
	}
	l.setCapacity(100)
	l.add([]uint64{30, 31, 32})
	if l.len() != 5 {
		t.Fatalf("len after grow = %d, want 5", l.len())
	}
}

// TestPrefixMatchLenMatchesLinearScan checks the binary search against a linear scan
// over random prompts that share prefixes, with an LRU small enough to evict.
func TestPrefixMatchLenMatchesLinearScan(t *testing.T) {
	l := newPrefixLRU(300)
	rng := rand.New(rand.NewPCG(7, 9))
	base := []byte(stringsRepeat("0123456789abcdef", 400)) // 100 blocks of 64
	var prompts [][]uint64
	for range 200 {
		p := slices.Clone(base[:64*(1+rng.IntN(100))])
		if rng.IntN(2) == 0 { // diverge somewhere
			p[rng.IntN(len(p))] ^= 0x20
		}
		h := hashPrefixBlocks(nil, "m", p, 64)
		prompts = append(prompts, h)
		l.add(h)
		q := prompts[rng.IntN(len(prompts))]
		linear := 0
		for linear < len(q) {
			if _, ok := l.index[q[linear]]; !ok {
				break
			}
			linear++
		}
		if got := l.matchLen(q); got != linear {
			t.Fatalf("matchLen = %d, linear scan = %d", got, linear)
		}
	}
}

// TestPrefixGeometryFollowsEngine: once an endpoint reports its KV block size, its prefix
// blocks span that many tokens (its cache of the old span is dropped: those hashes never
// match again) and its LRU holds as many blocks as the engine's cache.
func TestPrefixGeometryFollowsEngine(t *testing.T) {
	r, err := New(DefaultConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	e := staticEndpoint("a:1", metricsState{})
	if e.prefixSpan.Load() != DefaultPrefixBlockSize {
		t.Fatalf("span before the engine's geometry is known: %d", e.prefixSpan.Load())
	}
	prompt := []byte(stringsRepeat("x", 2048))
	e.prefix.add(hashPrefixBlocks(nil, "m", prompt, DefaultPrefixBlockSize))
	cpu := &metricsState{blockSize: 128, numGPUBlocks: 8192} // vLLM 0.32 on CPU, 1 GiB
	r.updatePrefixGeometry(e, cpu)
	if e.prefixSpan.Load() != 512 || e.prefix.len() != 0 || e.prefix.capacity != 8192 {
		t.Fatalf("after geometry: span %d, %d cached blocks, capacity %d; want 512, 0, 8192",
			e.prefixSpan.Load(), e.prefix.len(), e.prefix.capacity)
	}
	e.prefix.add(hashPrefixBlocks(nil, "m", prompt, 512))
	r.updatePrefixGeometry(e, cpu) // unchanged geometry: the cache stays
	if e.prefix.len() != 4 {
		t.Fatalf("%d cached blocks after an unchanged scrape, want 4", e.prefix.len())
	}
}

// TestSpanHashesMaxBlocks: a cap on the blocks matched hashes the same chain, cut.
func TestSpanHashesMaxBlocks(t *testing.T) {
	prompt := []byte(strings.Repeat("abcdefgh", 100)) // 800 bytes: 12 blocks of 64
	var h spanHashes
	h.reset("m", prompt)
	full := slices.Clone(h.get(64))
	h.reset("m", prompt)
	h.maxBlocks = 5
	capped := h.get(64)
	if len(full) != 12 || len(capped) != 5 || !slices.Equal(capped, full[:5]) {
		t.Errorf("full %d blocks, capped %d (a prefix of the full chain: %v)", len(full), len(capped), slices.Equal(capped, full[:len(capped)]))
	}
}
