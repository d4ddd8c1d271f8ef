package kvprompt

import (
	"container/heap"
	"encoding/json"
	"fmt"
	"strings"
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

// encode appends the ids of one pre-tokenized piece.
func (b *byteBPE) encode(dst []uint32, piece string) []uint32 {
	if len(piece) == 0 {
		return dst
	}
	if b.ignoreMerges {
		var sb strings.Builder
		chars := byteChars()
		for i := 0; i < len(piece); i++ {
			sb.WriteRune(chars[piece[i]])
		}
		if id, ok := b.vocab[sb.String()]; ok {
			return append(dst, id)
		}
	}
	// Symbols as a linked list over the piece's bytes; candidate merges in a heap by
	// (rank, position), each checked on pop against the symbols still there.
	n := len(piece)
	ids := make([]uint32, n)
	next, prev := make([]int, n), make([]int, n)
	alive := make([]bool, n)
	for i := range n {
		ids[i], next[i], prev[i], alive[i] = b.byteID[piece[i]], i+1, i-1, true
	}
	next[n-1] = -1
	h := &mergeHeap{}
	push := func(i int) {
		if i < 0 || next[i] < 0 {
			return
		}
		if m, ok := b.merges[[2]uint32{ids[i], ids[next[i]]}]; ok {
			heap.Push(h, candidate{rank: m.rank, pos: i, left: ids[i], right: ids[next[i]]})
		}
	}
	for i := range n - 1 {
		push(i)
	}
	for h.Len() > 0 {
		c := heap.Pop(h).(candidate)
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
	for i := 0; i >= 0; i = next[i] {
		dst = append(dst, ids[i])
	}
	return dst
}

type candidate struct {
	rank, pos   int
	left, right uint32
}

type mergeHeap []candidate

func (h mergeHeap) Len() int { return len(h) }
func (h mergeHeap) Less(i, j int) bool {
	if h[i].rank != h[j].rank {
		return h[i].rank < h[j].rank
	}
	return h[i].pos < h[j].pos
}
func (h mergeHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *mergeHeap) Push(x any)   { *h = append(*h, x.(candidate)) }
func (h *mergeHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	return c
}
