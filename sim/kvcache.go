package sim

import (
	"encoding/binary"

	"github.com/cespare/xxhash/v2"
)

// kvCache is a paged KV cache with block-level prefix caching, modelled on vLLM's block
// pool: blocks are reference counted; a full prompt block, once computed, is registered under
// the chained hash of its tokens so that later requests with the same prefix reuse it; a
// cached block nobody references stays cached on an LRU list and is evicted (oldest first)
// only when a fresh block is needed. Not safe for concurrent use: the engine owns it.
type kvCache struct {
	blockSize int
	blocks    []kvBlock
	free      []int32          // unreferenced blocks holding no cached prefix
	cached    map[uint64]int32 // chained block hash -> block id
	lruHead   int32            // oldest evictable cached block (-1 when empty)
	lruTail   int32
	lruLen    int
	used      int // blocks with ref > 0
	// onEvict, when set, is told the hash of each cached block evicted (KV events).
	onEvict func(hash uint64)
}

type kvBlock struct {
	ref        int32
	hashed     bool
	hash       uint64
	prev, next int32 // LRU links, valid while inLRU
	inLRU      bool
}

func newKVCache(numBlocks, blockSize int) *kvCache {
	c := &kvCache{
		blockSize: blockSize,
		blocks:    make([]kvBlock, numBlocks),
		free:      make([]int32, numBlocks),
		cached:    make(map[uint64]int32),
		lruHead:   -1,
		lruTail:   -1,
	}
	for i := range c.free {
		// Pop from the end takes block 0 first; order does not matter otherwise.
		c.free[i] = int32(numBlocks - 1 - i) //nolint:gosec // G115: block numbers below the int32 block count
	}
	return c
}

// available counts blocks that can be handed out now (free or evictable).
func (c *kvCache) available() int { return len(c.free) + c.lruLen }

// usage is the fraction of blocks referenced by requests, as vLLM's kv_cache_usage_perc.
func (c *kvCache) usage() float64 { return float64(c.used) / float64(len(c.blocks)) }

// blockHashes returns the chained hashes of every full block of tokens: each hash covers the
// parent hash, the block's token ids and the extra key (the LoRA adapter, as vLLM does), so
// equal hashes mean equal whole prefixes.
func blockHashes(tokens []uint32, blockSize int, extra string, out []uint64) []uint64 {
	var parent uint64
	if extra != "" {
		parent = xxhash.Sum64String(extra)
	}
	buf := make([]byte, 8+4*blockSize)
	for start := 0; start+blockSize <= len(tokens); start += blockSize {
		binary.LittleEndian.PutUint64(buf, parent)
		for i, t := range tokens[start : start+blockSize] {
			binary.LittleEndian.PutUint32(buf[8+4*i:], t)
		}
		parent = xxhash.Sum64(buf)
		out = append(out, parent)
	}
	return out
}

// matchPrefix counts how many leading hashes name cached blocks.
func (c *kvCache) matchPrefix(hashes []uint64) int {
	for i, h := range hashes {
		if _, ok := c.cached[h]; !ok {
			return i
		}
	}
	return len(hashes)
}

// acquireCached references the cached blocks of the first n hashes (which matchPrefix
// guaranteed exist) and appends their ids to dst.
func (c *kvCache) acquireCached(hashes []uint64, dst []int32) []int32 {
	for _, h := range hashes {
		id := c.cached[h]
		c.ref(id)
		dst = append(dst, id)
	}
	return dst
}

func (c *kvCache) ref(id int32) {
	b := &c.blocks[id]
	if b.ref == 0 {
		if b.inLRU {
			c.lruRemove(id)
		}
		c.used++
	}
	b.ref++
}

// allocate appends n fresh blocks to dst, evicting the least recently used cached blocks
// when no free block is left. It reports false (and allocates nothing) when n blocks are not
// available.
func (c *kvCache) allocate(n int, dst []int32) ([]int32, bool) {
	if n > c.available() {
		return dst, false
	}
	for range n {
		var id int32
		if k := len(c.free); k > 0 {
			id = c.free[k-1]
			c.free = c.free[:k-1]
		} else {
			id = c.lruHead
			c.lruRemove(id)
			b := &c.blocks[id]
			delete(c.cached, b.hash)
			b.hashed = false
			if c.onEvict != nil {
				c.onEvict(b.hash)
			}
		}
		c.ref(id)
		dst = append(dst, id)
	}
	return dst, true
}

// release drops one reference from each block, last block first so that the tail of a
// prompt is evicted before its (more widely shared) head, as vLLM does.
func (c *kvCache) release(ids []int32) {
	for i := len(ids) - 1; i >= 0; i-- {
		id := ids[i]
		b := &c.blocks[id]
		b.ref--
		if b.ref > 0 {
			continue
		}
		c.used--
		if b.hashed {
			c.lruPush(id)
		} else {
			c.free = append(c.free, id)
		}
	}
}

// register publishes a computed full block under its chained hash. When another request
// computed the same prefix concurrently the first block stays canonical.
func (c *kvCache) register(id int32, hash uint64) bool {
	if _, dup := c.cached[hash]; dup {
		return false
	}
	b := &c.blocks[id]
	b.hashed = true
	b.hash = hash
	c.cached[hash] = id
	return true
}

func (c *kvCache) lruPush(id int32) {
	b := &c.blocks[id]
	b.inLRU = true
	b.prev, b.next = c.lruTail, -1
	if c.lruTail >= 0 {
		c.blocks[c.lruTail].next = id
	} else {
		c.lruHead = id
	}
	c.lruTail = id
	c.lruLen++
}

func (c *kvCache) lruRemove(id int32) {
	b := &c.blocks[id]
	if b.prev >= 0 {
		c.blocks[b.prev].next = b.next
	} else {
		c.lruHead = b.next
	}
	if b.next >= 0 {
		c.blocks[b.next].prev = b.prev
	} else {
		c.lruTail = b.prev
	}
	b.inLRU = false
	c.lruLen--
}
