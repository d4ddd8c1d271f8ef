package kvprompt

import (
	"encoding/json"
	"fmt"
	"hash/maphash"
	"strings"
	"sync"
)

// byteBPE is a byte-level BPE model (GPT-2, Llama 3, Qwen2): a piece's bytes are mapped
// to GPT-2's printable byte characters, then adjacent symbols are merged, lowest merge
// rank first (leftmost on ties), as HF tokenizers' BPE does. It exists because the Go
// library (sugarme/tokenizer) cannot load tokenizers whose pre-tokenizer is a Split on a
// pattern with a lookahead (Llama 3, Qwen2: it panics compiling the pattern with Go's
// regexp), and its ByteLevel always re-splits with GPT-2's pattern. Read-only after
// construction, so safe for concurrent use.
type byteBPE struct {
	byteID [256]uint32
	merges mergeTable
	// bytePairs is merges.get of every pair of single bytes, indexed by the two bytes: a
	// piece's first lookups, one per byte, are then a direct index into 256 KiB (which the
	// CPU caches hold) instead of a probe of the megabytes of the merge table.
	bytePairs *[1 << 16]uint32
	vocab     map[string]uint32 // tokenizer.json's, by byte-level characters
	// whole maps a piece's bytes to its one id when the BPE is known to leave the piece
	// whole: every vocabulary entry under ignore_merges (HF looks the piece up before
	// merging), otherwise the entries whose own bytes the merges were checked, at load, to
	// merge back into that entry. One lookup then replaces a piece's merges: most pieces of
	// natural text are whole tokens of a real-size vocabulary.
	whole        wholeTable
	ignoreMerges bool
}

// bpeModelJSON is tokenizer.json's BPE model.
type bpeModelJSON struct {
	Type         string            `json:"type"`
	Vocab        map[string]uint32 `json:"vocab"`
	Merges       []json.RawMessage `json:"merges"` // "a b" (older files) or ["a", "b"]
	IgnoreMerges bool              `json:"ignore_merges"`
	ByteFallback bool              `json:"byte_fallback"`
	Dropout      *float64          `json:"dropout"`
	Prefix       *string           `json:"continuing_subword_prefix"`
	Suffix       *string           `json:"end_of_word_suffix"`
}

// newByteBPE builds the model, or reports why the fast path cannot use it.
func newByteBPE(mj *bpeModelJSON) (*byteBPE, error) {
	if mj.Type != "BPE" || mj.ByteFallback || (mj.Dropout != nil && *mj.Dropout > 0) ||
		(mj.Prefix != nil && *mj.Prefix != "") || (mj.Suffix != nil && *mj.Suffix != "") {
		return nil, fmt.Errorf("kvprompt: BPE options the fast path does not implement")
	}
	b := &byteBPE{merges: newMergeTable(len(mj.Merges)), vocab: mj.Vocab, ignoreMerges: mj.IgnoreMerges}
	for c, r := range byteChars() {
		id, ok := mj.Vocab[string(r)]
		if !ok {
			return nil, fmt.Errorf("kvprompt: byte %#x (%q) is not in the vocabulary: not a byte-level BPE", c, r)
		}
		b.byteID[c] = id
	}
	for rank, raw := range mj.Merges {
		var left, right string
		var pair []string
		if err := json.Unmarshal(raw, &pair); err == nil && len(pair) == 2 {
			left, right = pair[0], pair[1]
		} else {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return nil, fmt.Errorf("kvprompt: merge %d: %w", rank, err)
			}
			var ok bool
			if left, right, ok = strings.Cut(s, " "); !ok {
				return nil, fmt.Errorf("kvprompt: merge %d %q: no space", rank, s)
			}
		}
		l, lok := mj.Vocab[left]
		r, rok := mj.Vocab[right]
		m, mok := mj.Vocab[left+right]
		if !lok || !rok || !mok {
			return nil, fmt.Errorf("kvprompt: merge %d (%q %q) names a token not in the vocabulary", rank, left, right)
		}
		if l > maxMergeID || r > maxMergeID || m > maxMergeID || rank > maxMergeRank {
			return nil, fmt.Errorf("kvprompt: merge %d (ids %d %d %d): beyond the fast path's 2^20 ids and 2^24 merges", rank, l, r, m)
		}
		b.merges.insert(l, r, m)
	}
	b.bytePairs = new([1 << 16]uint32)
	for pair := range b.bytePairs {
		b.bytePairs[pair] = b.merges.get(b.byteID[pair>>8], b.byteID[pair&0xff])
	}
	b.whole = b.wholeTokens()
	return b, nil
}

// wholeTokens builds byteBPE.whole. Without ignore_merges an entry qualifies only if the
// merges rebuild it from its bytes (not every entry does: a trained vocabulary can hold
// tokens its own merge order never reaches, and added tokens are in it too).
func (b *byteBPE) wholeTokens() wholeTable {
	byteOf := make(map[rune]byte, 256)
	for c, r := range byteChars() {
		byteOf[r] = byte(c)
	}
	whole := newWholeTable(len(b.vocab), maphash.MakeSeed())
	var raw []byte
	var ids []uint32
vocab:
	for token, id := range b.vocab {
		raw = raw[:0]
		for _, r := range token {
			c, ok := byteOf[r]
			if !ok {
				continue vocab // not a byte-level token (an added token's own characters)
			}
			raw = append(raw, c)
		}
		if len(raw) == 0 {
			continue
		}
		if !b.ignoreMerges {
			if ids = b.merge(ids[:0], string(raw)); len(ids) != 1 || ids[0] != id {
				continue
			}
		}
		whole.put(string(raw), id)
	}
	return whole
}

// wholeTable maps a piece's bytes to a token id: an open-addressing table indexed by the
// piece's hash, at most half full, with the pieces' bytes in one array. A real-size
// vocabulary makes it megabytes, beyond the CPU caches: a lookup here touches one slot
// (and the bytes to compare), where a Go map[string]uint32 touches a control word, a slot
// and the string's bytes. Read-only after construction.
type wholeTable struct {
	seed  maphash.Seed
	slots []wholeSlot
	text  []byte
}

// wholeSlot is a piece at text[off:off+n] and its id; n == 0: a free slot.
type wholeSlot struct {
	tag, id, off, n uint32
}

func newWholeTable(n int, seed maphash.Seed) wholeTable {
	size := 16
	for size < 2*n {
		size *= 2
	}
	return wholeTable{seed: seed, slots: make([]wholeSlot, size)}
}

// find returns the slot holding a non-empty piece of hash h (maphash.String with the
// table's seed), or the free slot where it belongs.
func (t *wholeTable) find(piece string, h uint64) (*wholeSlot, uint32) {
	tag := uint32(h)                 //nolint:gosec // G115: the low bits, meant to be cut
	mask := uint64(len(t.slots) - 1) //nolint:gosec // G115: a positive power of two
	for i := h >> 32 & mask; ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.n == 0 || (s.tag == tag && string(t.text[s.off:s.off+s.n]) == piece) {
			return s, tag
		}
	}
}

// put adds a non-empty piece; the table must have room (newWholeTable's n).
func (t *wholeTable) put(piece string, id uint32) {
	if s, tag := t.find(piece, maphash.String(t.seed, piece)); s.n == 0 {
		*s = wholeSlot{tag: tag, id: id, off: uint32(len(t.text)), n: uint32(len(piece))} //nolint:gosec // G115: a vocabulary's bytes are far below 4 GiB
		t.text = append(t.text, piece...)
	}
}

func (t *wholeTable) get(piece string, h uint64) (uint32, bool) {
	s, _ := t.find(piece, h)
	return s.id, s.n != 0
}

// byteChars is GPT-2's byte-to-character table: printable Latin-1 bytes map to
// themselves, the others to U+0100 onwards in byte order.
func byteChars() [256]rune {
	var t [256]rune
	n := 0
	for c := range 256 {
		if (c >= '!' && c <= '~') || (c >= 0xa1 && c <= 0xac) || (c >= 0xae && c <= 0xff) {
			t[c] = rune(c)
		} else {
			t[c] = rune(256 + n)
			n++
		}
	}
	return t
}

// bpeScratch is encode's working memory, pooled: a prompt of unseen pieces would
// otherwise allocate it per piece.
type bpeScratch struct {
	ids        []uint32
	next, prev []int32
	alive      []bool
	heap       mergeHeap
}

var bpeScratchPool = sync.Pool{New: func() any { return new(bpeScratch) }}

// encode appends the ids of one pre-tokenized piece.
func (b *byteBPE) encode(dst []uint32, piece string) []uint32 {
	return b.encodeHashed(dst, piece, maphash.String(b.whole.seed, piece))
}

// encodeHashed is encode given the piece's hash with b.whole.seed (the piece cache hashes
// with the same seed: one hash per piece serves both).
func (b *byteBPE) encodeHashed(dst []uint32, piece string, h uint64) []uint32 {
	if id, ok := b.whole.get(piece, h); ok {
		return append(dst, id)
	}
	return b.merge(dst, piece)
}

// smallPiece: pieces up to this many bytes are merged in arrays on the stack.
const smallPiece = 64

// merge appends the ids the merges make of piece's bytes: the lowest-ranked adjacent pair
// is merged first, leftmost on ties, until no adjacent pair has a merge (HF's order).
func (b *byteBPE) merge(dst []uint32, piece string) []uint32 {
	n := len(piece)
	switch {
	case n == 0:
		return dst
	case n == 1:
		return append(dst, b.byteID[piece[0]])
	case n > smallPiece:
		return b.mergeLong(dst, piece)
	}
	// A short piece: find the best pair by scanning, O(n²) over n <= 64 symbols, which is
	// cheaper than a heap's bookkeeping at these sizes. rank[i] is the pair (i, i+1)'s
	// merge rank (noMerge: none).
	var ids, best [smallPiece]uint32
	for i := range n - 1 {
		ids[i] = b.byteID[piece[i]]
		best[i] = b.bytePairs[uint16(piece[i])<<8|uint16(piece[i+1])]
	}
	ids[n-1] = b.byteID[piece[n-1]]
	for n > 1 {
		at := 0
		for i := 1; i < n-1; i++ {
			if best[i] < best[at] {
				at = i
			}
		}
		if best[at] == noMerge {
			break
		}
		// Symbol at absorbs at+1: at+1's successors and their pairs move down one.
		ids[at] = b.merges.merged[best[at]]
		copy(ids[at+1:n-1], ids[at+2:n])
		if at+2 < n-1 {
			copy(best[at+1:n-2], best[at+2:n-1])
		}
		n--
		if at > 0 {
			best[at-1] = b.merges.get(ids[at-1], ids[at]) //nolint:gosec // G602: 0 < at < n <= smallPiece
		}
		if at < n-1 {
			best[at] = b.merges.get(ids[at], ids[at+1])
		}
	}
	return append(dst, ids[:n]...)
}

// mergeLong is merge for long pieces (long runs of digits, punctuation, letters of
// base64 and the like), in O(n log n): symbols as a linked list over the piece's bytes,
// candidate merges in a heap by (rank, position), each checked on pop against the
// symbols still there.
func (b *byteBPE) mergeLong(dst []uint32, piece string) []uint32 {
	sc := bpeScratchPool.Get().(*bpeScratch)
	defer bpeScratchPool.Put(sc)
	n := len(piece)
	ids, next, prev, alive := grow(sc.ids, n), grow(sc.next, n), grow(sc.prev, n), grow(sc.alive, n)
	sc.ids, sc.next, sc.prev, sc.alive = ids, next, prev, alive
	for i := range n {
		ids[i], next[i], prev[i], alive[i] = b.byteID[piece[i]], int32(i+1), int32(i-1), true
	}
	next[n-1] = -1
	h := &sc.heap
	*h = (*h)[:0]
	push := func(i int32) {
		if i < 0 || next[i] < 0 {
			return
		}
		if r := b.merges.get(ids[i], ids[next[i]]); r != noMerge {
			h.push(candidate{rank: r, pos: i, left: ids[i], right: ids[next[i]]})
		}
	}
	for i := range int32(n - 1) { //nolint:gosec // G115: n is a piece length, bounded by MaxPromptBytes
		push(i)
	}
	for h.Len() > 0 {
		c := h.pop()
		j := next[c.pos]
		if !alive[c.pos] || j < 0 || ids[c.pos] != c.left || ids[j] != c.right {
			continue // stale: a neighbour merged since
		}
		ids[c.pos] = b.merges.merged[c.rank]
		alive[j] = false
		next[c.pos] = next[j]
		if next[j] >= 0 {
			prev[next[j]] = c.pos
		}
		push(prev[c.pos])
		push(c.pos)
	}
	for i := int32(0); i >= 0; i = next[i] {
		dst = append(dst, ids[i])
	}
	return dst
}

// grow returns s resized to n, reusing its array when it is large enough.
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

type candidate struct {
	rank        uint32
	pos         int32
	left, right uint32
}

// mergeHeap is a binary min-heap by (rank, position), written out rather than through
// container/heap, whose interface would box (allocate) every candidate pushed.
type mergeHeap []candidate

func (h mergeHeap) Len() int { return len(h) }

func (h mergeHeap) less(i, j int) bool {
	if h[i].rank != h[j].rank {
		return h[i].rank < h[j].rank
	}
	return h[i].pos < h[j].pos
}

func (h *mergeHeap) push(c candidate) {
	*h = append(*h, c)
	s := *h
	for i := len(s) - 1; i > 0; {
		parent := (i - 1) / 2
		if !s.less(i, parent) {
			break
		}
		s[i], s[parent] = s[parent], s[i]
		i = parent
	}
}

func (h *mergeHeap) pop() candidate {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s = s[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(s) && s.less(l, m) {
			m = l
		}
		if r < len(s) && s.less(r, m) {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}

// mergeTable maps a pair of symbol ids to its merge's rank (and a rank to the merged
// symbol), in an open-addressing table of 8-byte slots (linear probing, at most half full).
// A real tokenizer has 128k-280k merges: the table is then megabytes, larger than the CPU
// caches, and a lookup costs about one cache miss (a Go map of the same pairs costs more:
// hashing, control bytes and a 16-byte slot in different cache lines), and the BPE of a
// piece never seen before makes two lookups per merge. A slot packs the pair (20-bit ids)
// and the rank (24 bits): newByteBPE checks the vocabulary and merges fit (the largest
// tokenizers have ~260k tokens).
type mergeTable struct {
	slots  []uint64 // pair<<24 | rank, pair = left<<20 | right; emptySlot: free
	shift  uint     // 64 - log2(len(slots))
	merged []uint32 // by rank: the merged symbol's id
}

const (
	maxMergeID   = 1<<20 - 2 // the all-ones id makes emptySlot
	maxMergeRank = 1<<24 - 2
	emptySlot    = ^uint64(0)
	noMerge      = ^uint32(0)
)

func newMergeTable(n int) mergeTable {
	size, shift := 16, uint(60)
	for size < 2*n {
		size, shift = size*2, shift-1
	}
	t := mergeTable{slots: make([]uint64, size), shift: shift, merged: make([]uint32, 0, n)}
	for i := range t.slots {
		t.slots[i] = emptySlot
	}
	return t
}

// slot is the pair's home slot: Fibonacci hashing, whose high bits mix all of the key's.
func (t *mergeTable) slot(pair uint64) uint64 { return (pair * 0x9e3779b97f4a7c15) >> t.shift }

// insert adds the next merge (ranks in order, ids <= maxMergeID); a pair already present
// keeps its first (lowest) rank.
func (t *mergeTable) insert(left, right, id uint32) {
	rank := uint64(len(t.merged))
	t.merged = append(t.merged, id)
	pair := uint64(left)<<20 | uint64(right)
	mask := uint64(len(t.slots) - 1) //nolint:gosec // G115: a positive power of two
	for i := t.slot(pair); ; i = (i + 1) & mask {
		switch s := t.slots[i]; {
		case s == emptySlot:
			t.slots[i] = pair<<24 | rank
			return
		case s>>24 == pair:
			return
		}
	}
}

// get returns the pair's merge rank, or noMerge.
func (t *mergeTable) get(left, right uint32) uint32 {
	pair := uint64(left)<<20 | uint64(right)
	mask := uint64(len(t.slots) - 1) //nolint:gosec // G115: a positive power of two
	for i := t.slot(pair); ; i = (i + 1) & mask {
		s := t.slots[i]
		if s>>24 == pair && s != emptySlot {
			return uint32(s & (1<<24 - 1))
		}
		if s == emptySlot {
			return noMerge
		}
	}
}
