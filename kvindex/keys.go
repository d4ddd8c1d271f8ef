// Package kvindex keeps which model-server pod holds which KV-cache block, from the pods'
// KV events (package kvevents), and answers how many leading blocks of a prompt each pod
// holds. Blocks are keyed by the index's own chained hash of token ids (this file), not by
// the engine's block hashes: the picker computes the same keys from a prompt's tokens
// without reproducing any engine's hash algorithm, seed or extra keys, and one index
// serves engines that hash differently.
package kvindex

import (
	"encoding/binary"

	"github.com/cespare/xxhash/v2"
)

// rootSeed starts every chain; the LoRA adapter's name is folded in, so the same tokens
// under another adapter (whose KV differs) are other blocks.
const rootSeed = 0x6b76_696e_6465_7831 // "kvindex1"

// RootKey is the parent key of a prompt's first block for an adapter ("" = base model).
func RootKey(lora string) uint64 {
	if lora == "" {
		return rootSeed
	}
	var d xxhash.Digest
	d.ResetWithSeed(rootSeed)
	_, _ = d.WriteString(lora) // never fails
	return d.Sum64()
}

// Hasher chains block keys: key(i) = xxhash64 of block i's token ids (uint32
// little-endian) seeded with key(i-1). A key thus names the adapter and every token up to
// the end of its block. The zero value is ready; not safe for concurrent use.
type Hasher struct {
	d   xxhash.Digest
	buf []byte
}

// Block returns the key of one block of tokens after parent.
func (h *Hasher) Block(parent uint64, tokens []uint32) uint64 {
	h.buf = h.buf[:0]
	for _, t := range tokens {
		h.buf = binary.LittleEndian.AppendUint32(h.buf, t)
	}
	h.d.ResetWithSeed(parent)
	_, _ = h.d.Write(h.buf)
	return h.d.Sum64()
}

// AppendKeys appends the keys of the full blockSize-token blocks of tokens (a trailing
// partial block is not cached by engines, so it has no key), at most maxBlocks of them
// (<= 0: no limit).
func (h *Hasher) AppendKeys(dst []uint64, root uint64, tokens []uint32, blockSize, maxBlocks int) []uint64 {
	if blockSize <= 0 {
		return dst
	}
	prev := root
	for off, n := 0, 0; off+blockSize <= len(tokens) && (maxBlocks <= 0 || n < maxBlocks); off, n = off+blockSize, n+1 {
		prev = h.Block(prev, tokens[off:off+blockSize])
		dst = append(dst, prev)
	}
	return dst
}
