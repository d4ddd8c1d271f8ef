package kvprompt

import (
	"encoding/json"
	"fmt"
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
	byteID       [256]uint32
	merges       map[[2]uint32]merge // by the pair of symbol ids
	vocab        map[string]uint32   // for ignore_merges
	ignoreMerges bool
}

type merge struct {
	rank int
	id   uint32 // the merged symbol
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
	b := &byteBPE{merges: make(map[[2]uint32]merge, len(mj.Merges)), vocab: mj.Vocab, ignoreMerges: mj.IgnoreMerges}
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
		if _, dup := b.merges[[2]uint32{l, r}]; !dup {
			b.merges[[2]uint32{l, r}] = merge{rank: rank, id: m}
		}
	}
	return b, nil
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
	chars      []byte
}

var bpeScratchPool = sync.Pool{New: func() any { return new(bpeScratch) }}

// byteCharTable is byteChars as UTF-8, for building a piece's vocabulary string.
var byteCharTable = func() (t [256]string) {
	for c, r := range byteChars() {
		t[c] = string(r)
	}
	return t
}()

// encode appends the ids of one pre-tokenized piece.
func (b *byteBPE) encode(dst []uint32, piece string) []uint32 {
	if len(piece) == 0 {
		return dst
	}
	sc := bpeScratchPool.Get().(*bpeScratch)
	defer bpeScratchPool.Put(sc)
	if b.ignoreMerges {
		sc.chars = sc.chars[:0]
		for i := 0; i < len(piece); i++ {
			sc.chars = append(sc.chars, byteCharTable[piece[i]]...)
		}
		if id, ok := b.vocab[string(sc.chars)]; ok { // no allocation: a map lookup by []byte
			return append(dst, id)
		}
	}
	// Symbols as a linked list over the piece's bytes; candidate merges in a heap by
	// (rank, position), each checked on pop against the symbols still there.
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
		if m, ok := b.merges[[2]uint32{ids[i], ids[next[i]]}]; ok {
			h.push(candidate{rank: m.rank, pos: i, left: ids[i], right: ids[next[i]]})
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
		ids[c.pos] = b.merges[[2]uint32{c.left, c.right}].id
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
	rank        int
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
