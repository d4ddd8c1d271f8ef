package kvevents

import (
	"bytes"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// Encoder writes batches in vLLM's encoding (msgspec array_like structs with the type name
// as tag, trailing fields that equal their defaults omitted), so a publisher built on it
// (the simulator's) is read by every vLLM subscriber as vLLM's own. Not safe for
// concurrent use.
type Encoder struct {
	buf bytes.Buffer
	e   *msgpack.Encoder
}

// NewEncoder returns an Encoder.
func NewEncoder() *Encoder {
	enc := &Encoder{}
	enc.e = msgpack.NewEncoder(&enc.buf)
	return enc
}

// Encode returns the payload of b; the slice is valid until the next Encode.
func (enc *Encoder) Encode(b *Batch) ([]byte, error) {
	enc.buf.Reset()
	e := enc.e
	err := e.EncodeArrayLen(3)
	err = firstErr(err, e.EncodeFloat64(b.TS))
	err = firstErr(err, e.EncodeArrayLen(len(b.Events)))
	for i := range b.Events {
		err = firstErr(err, enc.event(&b.Events[i]))
	}
	err = firstErr(err, e.EncodeInt(int64(b.DPRank)))
	if err != nil {
		return nil, fmt.Errorf("kvevents: encode: %w", err)
	}
	return enc.buf.Bytes(), nil
}

func firstErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func (enc *Encoder) event(ev *Event) error {
	e := enc.e
	switch ev.Kind {
	case BlockStored:
		// block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium, lora_name
		n := 7
		if ev.LoRAName == "" {
			n = 6
		}
		err := e.EncodeArrayLen(n + 1)
		err = firstErr(err, e.EncodeString("BlockStored"))
		err = firstErr(err, enc.hashes(ev.BlockHashes))
		if ev.HasParent {
			err = firstErr(err, e.EncodeUint(ev.ParentHash))
		} else {
			err = firstErr(err, e.EncodeNil())
		}
		err = firstErr(err, e.EncodeArrayLen(len(ev.TokenIDs)))
		for _, t := range ev.TokenIDs {
			err = firstErr(err, e.EncodeUint(uint64(t)))
		}
		err = firstErr(err, e.EncodeInt(int64(ev.BlockSize)))
		if ev.LoRAID != 0 {
			err = firstErr(err, e.EncodeInt(ev.LoRAID))
		} else {
			err = firstErr(err, e.EncodeNil())
		}
		err = firstErr(err, optString(e, ev.Medium))
		if ev.LoRAName != "" {
			err = firstErr(err, e.EncodeString(ev.LoRAName))
		}
		return err
	case BlockRemoved:
		err := e.EncodeArrayLen(3)
		err = firstErr(err, e.EncodeString("BlockRemoved"))
		err = firstErr(err, enc.hashes(ev.BlockHashes))
		return firstErr(err, optString(e, ev.Medium))
	case AllBlocksCleared:
		err := e.EncodeArrayLen(1)
		return firstErr(err, e.EncodeString("AllBlocksCleared"))
	}
	return fmt.Errorf("unknown event kind %d", ev.Kind)
}

func (enc *Encoder) hashes(hs []uint64) error {
	err := enc.e.EncodeArrayLen(len(hs))
	for _, h := range hs {
		err = firstErr(err, enc.e.EncodeUint(h))
	}
	return err
}

func optString(e *msgpack.Encoder, s string) error {
	if s == "" {
		return e.EncodeNil()
	}
	return e.EncodeString(s)
}
