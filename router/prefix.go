package router

import (
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
)

// maxPrefixBlocks caps the blocks hashed per request (at 64 characters per block, 2 MiB of
// prompt): beyond it a longer match cannot change which endpoint wins in practice, and
// the cap bounds the work a huge body can cause.
const maxPrefixBlocks = 32768

// charsPerToken converts prompt characters to tokens when sizing the LRU from the
// engine's KV-cache geometry.
const charsPerToken = 4

// hashPrefixBlocks appends to dst the chained hashes of the full blockSize-byte blocks of
// prompt: h(0) = xxhash64 of block 0 seeded with xxhash64(model), h(i) = xxhash64 of block i
// seeded with h(i-1). A hash thus identifies the model and the whole prefix up to its
// block. A trailing partial block is not hashed (it cannot be a cached block yet).
//
// Seeding with the previous hash, rather than hashing it as 8 more bytes, keeps every
// block a whole number of xxhash's 32-byte stripes (at the default 64), which the digest
// consumes straight from the prompt without buffering: about twice as fast per block.
func hashPrefixBlocks(dst []uint64, model string, prompt []byte, blockSize int) []uint64 {
	if blockSize <= 0 || len(prompt) < blockSize {
		return dst
	}
	h := xxhash.Sum64String(model)
	var d xxhash.Digest
	for off := 0; off+blockSize <= len(prompt) && len(dst) < maxPrefixBlocks; off += blockSize {
		d.ResetWithSeed(h)
		_, _ = d.Write(prompt[off : off+blockSize]) // xxhash.Digest.Write never fails
		h = d.Sum64()
		dst = append(dst, h)
	}
	return dst
}

// maxSpans bounds the distinct block spans one pick hashes the prompt for: endpoints of a
// pool usually share one engine block size; a pool mixing more than this rehashes.
const maxSpans = 4

// spanHashes holds the prompt's chained block hashes per block span (in characters) for
// one pick, hashing for a span only when an endpoint with that span asks. The prefix
// scorer measures each endpoint's match in that endpoint's own engine blocks: a prefix
// shorter than one vLLM block is not cached there, so it must not win affinity.
type spanHashes struct {
	model     string
	prompt    []byte
	maxBlocks int // blocks hashed per span at most (0: maxPrefixBlocks)
	n         int
	spans     [maxSpans]int
	hashes    [maxSpans][]uint64 // backing arrays reused across picks (the scratch pools them)
}

func (h *spanHashes) reset(model string, prompt []byte) {
	h.model, h.prompt, h.n = model, prompt, 0
}

// get returns the prompt's hashes for span. The slice is valid until the next get of a
// new span when maxSpans spans are in use: use it at once.
func (h *spanHashes) get(span int) []uint64 {
	for i := 0; i < h.n; i++ {
		if h.spans[i] == span {
			return h.hashes[i]
		}
	}
	i := h.n
	if i == maxSpans {
		i = maxSpans - 1 // more spans than slots: the last slot is rehashed
	} else {
		h.n++
	}
	h.spans[i] = span
	p := h.prompt
	if h.maxBlocks > 0 && span > 0 && len(p)/span > h.maxBlocks {
		p = p[:h.maxBlocks*span] // the same chain, cut after maxBlocks blocks
	}
	h.hashes[i] = hashPrefixBlocks(h.hashes[i][:0], h.model, p, span)
	return h.hashes[i]
}

// prefixLRU is the approximate set of prefix blocks an endpoint holds in its KV cache:
// the blocks of the prompts recently routed to it, least recently used evicted first.
// Nodes live in slices (no per-entry allocation); links are slice indices.
type prefixLRU struct {
	mu       sync.Mutex
	capacity int
	index    map[uint64]int32
	keys     []uint64
	prev     []int32
	next     []int32
	head     int32 // most recently used, -1 when empty
	tail     int32 // least recently used, -1 when empty
	size     atomic.Int32
}

func newPrefixLRU(capacity int) *prefixLRU {
	return &prefixLRU{capacity: max(capacity, 1), index: make(map[uint64]int32), head: -1, tail: -1}
}

// matchLen returns how many leading hashes are all present: the longest cached prefix.
//
// Presence is monotone along a chain: block i's hash covers the whole prefix up to i, so
// whoever added block i also added blocks 0..i-1, after it (add inserts last to first);
// those are therefore more recent and evicted later. If block i is present, so are all
// blocks before it, and a binary search finds the match length in O(log n) lookups.
func (l *prefixLRU) matchLen(hashes []uint64) int {
	if len(hashes) == 0 || l.size.Load() == 0 {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	// Invariant: hashes[:lo] are present, hashes[hi] (if hi < len) is absent.
	lo, hi := 0, len(hashes)
	for lo < hi {
		mid := int(uint(lo+hi+1) >> 1) // in (lo, hi]
		if _, ok := l.index[hashes[mid-1]]; ok {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}

// add records the blocks of a prompt routed to the endpoint. Blocks are inserted last to
// first so that the first block is the most recent: eviction then removes the tail of a
// chain before its head and the remaining entries stay a usable prefix.
func (l *prefixLRU) add(hashes []uint64) {
	if len(hashes) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(hashes) - 1; i >= 0; i-- {
		l.touch(hashes[i])
	}
	l.size.Store(int32(len(l.index))) //nolint:gosec // G115: bounded by the LRU capacity (an int32 setting)
}

func (l *prefixLRU) touch(h uint64) {
	if n, ok := l.index[h]; ok {
		l.unlink(n)
		l.pushFront(n)
		return
	}
	var n int32
	if len(l.keys) < l.capacity {
		n = int32(len(l.keys)) //nolint:gosec // G115: bounded by the LRU capacity (an int32 setting)
		l.keys = append(l.keys, h)
		l.prev = append(l.prev, -1)
		l.next = append(l.next, -1)
	} else {
		n = l.tail
		l.unlink(n)
		delete(l.index, l.keys[n])
		l.keys[n] = h
	}
	l.index[h] = n
	l.pushFront(n)
}

func (l *prefixLRU) unlink(n int32) {
	p, nx := l.prev[n], l.next[n]
	if p >= 0 {
		l.next[p] = nx
	} else {
		l.head = nx
	}
	if nx >= 0 {
		l.prev[nx] = p
	} else {
		l.tail = p
	}
	l.prev[n], l.next[n] = -1, -1
}

func (l *prefixLRU) pushFront(n int32) {
	l.prev[n] = -1
	l.next[n] = l.head
	if l.head >= 0 {
		l.prev[l.head] = n
	}
	l.head = n
	if l.tail < 0 {
		l.tail = n
	}
}

// setCapacity changes the capacity, keeping the most recent entries when it shrinks.
func (l *prefixLRU) setCapacity(capacity int) {
	capacity = max(capacity, 1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if capacity == l.capacity {
		return
	}
	if capacity > l.capacity || len(l.keys) <= capacity {
		l.capacity = capacity
		return
	}
	// Shrink: collect the most recent `capacity` keys and rebuild.
	keep := make([]uint64, 0, capacity)
	for n := l.head; n >= 0 && len(keep) < capacity; n = l.next[n] {
		keep = append(keep, l.keys[n])
	}
	l.capacity = capacity
	l.index = make(map[uint64]int32, len(keep))
	l.keys, l.prev, l.next = l.keys[:0], l.prev[:0], l.next[:0]
	l.head, l.tail = -1, -1
	for i := len(keep) - 1; i >= 0; i-- {
		l.touch(keep[i])
	}
	l.size.Store(int32(len(l.index))) //nolint:gosec // G115: bounded by the LRU capacity (an int32 setting)
}

// clear forgets every block (the endpoint's block span changed: old hashes never match).
func (l *prefixLRU) clear() {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.index)
	l.keys, l.prev, l.next = l.keys[:0], l.prev[:0], l.next[:0]
	l.head, l.tail = -1, -1
	l.size.Store(0)
}

// len returns the number of cached blocks.
func (l *prefixLRU) len() int { return int(l.size.Load()) }

// updatePrefixGeometry follows an endpoint's engine KV geometry after a scrape: its block
// span (a change empties its prefix cache, whose hashes were of the old span) and, unless
// configured, its LRU capacity.
func (r *Router) updatePrefixGeometry(e *endpoint, m *metricsState) {
	if span := int64(r.sched.span(m)); span != e.prefixSpan.Load() {
		e.prefix.clear()
		e.prefixSpan.Store(span)
	}
	if r.sched.prefixLRUCapacity == 0 {
		e.prefix.setCapacity(r.sched.lruCapacity(m))
	}
}
