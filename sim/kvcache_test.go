package sim

import "testing"

func TestBlockHashesChainAndDependOnAdapter(t *testing.T) {
	a := []uint32{1, 2, 3, 4, 5, 6, 7, 8, 9}
	b := []uint32{1, 2, 3, 4, 5, 6, 7, 0, 9} // differs in the second block only
	ha := blockHashes(a, 4, "", nil)
	hb := blockHashes(b, 4, "", nil)
	if len(ha) != 2 {
		t.Fatalf("%d hashes for 9 tokens of block 4, want 2 (partial block not hashed)", len(ha))
	}
	if ha[0] != hb[0] || ha[1] == hb[1] {
		t.Errorf("hashes %v vs %v: want equal first block, different second", ha, hb)
	}
	// Same second block after a different first block must differ (chaining).
	c := []uint32{9, 9, 9, 9, 5, 6, 7, 8}
	if hc := blockHashes(c, 4, "", nil); hc[1] == ha[1] {
		t.Errorf("second-block hash ignores the prefix")
	}
	if hl := blockHashes(a, 4, "lora", nil); hl[0] == ha[0] {
		t.Errorf("adapter does not change the hash")
	}
}

func TestKVCachePrefixReuseAndLRUEviction(t *testing.T) {
	c := newKVCache(4, 2)
	hashes := []uint64{101, 102}
	blocks, ok := c.allocate(2, nil)
	if !ok || c.usage() != 0.5 {
		t.Fatalf("allocate: ok=%v usage=%v", ok, c.usage())
	}
	c.register(blocks[0], hashes[0])
	c.register(blocks[1], hashes[1])
	if n := c.matchPrefix([]uint64{101, 102, 103}); n != 2 {
		t.Errorf("matchPrefix = %d, want 2", n)
	}
	c.release(blocks)
	if c.usage() != 0 || c.available() != 4 {
		t.Fatalf("after release usage %v available %d", c.usage(), c.available())
	}
	// Cached blocks survive release and can be re-acquired.
	if n := c.matchPrefix(hashes); n != 2 {
		t.Fatalf("cached blocks lost on release: match %d", n)
	}
	again := c.acquireCached(hashes[:1], nil)
	if again[0] != blocks[0] || c.usage() != 0.25 {
		t.Errorf("reacquired %v usage %v", again, c.usage())
	}
	// Need 3 fresh blocks: 2 free + evict the one unreferenced cached block (hash 102).
	fresh, ok := c.allocate(3, nil)
	if !ok {
		t.Fatal("allocate 3 failed with 2 free + 1 evictable")
	}
	if c.matchPrefix([]uint64{102}) != 0 {
		t.Errorf("evicted block still matches")
	}
	if c.matchPrefix([]uint64{101}) != 1 {
		t.Errorf("referenced cached block was evicted")
	}
	if _, ok := c.allocate(1, nil); ok {
		t.Errorf("allocated beyond capacity")
	}
	c.release(fresh)
	c.release(again)
	if c.usage() != 0 {
		t.Errorf("usage %v after releasing everything", c.usage())
	}
}

func TestKVCacheEvictsOldestFirst(t *testing.T) {
	c := newKVCache(3, 1)
	for i := range 3 {
		b, _ := c.allocate(1, nil)
		c.register(b[0], uint64(200+i))
		c.release(b)
	}
	if _, ok := c.allocate(1, nil); !ok {
		t.Fatal("allocate failed")
	}
	if c.matchPrefix([]uint64{200}) != 0 || c.matchPrefix([]uint64{201}) != 1 || c.matchPrefix([]uint64{202}) != 1 {
		t.Errorf("eviction did not take the least recently released block")
	}
}

func TestKVCacheDuplicateRegistrationKeepsFirst(t *testing.T) {
	c := newKVCache(2, 1)
	a, _ := c.allocate(1, nil)
	b, _ := c.allocate(1, nil)
	c.register(a[0], 7)
	c.register(b[0], 7)
	c.release(b) // unhashed duplicate goes back to the free list
	c.release(a)
	if got := c.acquireCached([]uint64{7}, nil); got[0] != a[0] {
		t.Errorf("hash 7 maps to block %d, want %d", got[0], a[0])
	}
}

func BenchmarkBlockHashes(b *testing.B) {
	tokens := tokenize(words(2000, "w"), nil)
	out := make([]uint64, 0, len(tokens)/16)
	b.ReportAllocs()
	for b.Loop() {
		out = blockHashes(tokens, 16, "", out[:0])
	}
}
