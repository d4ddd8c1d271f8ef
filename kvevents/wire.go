// Package kvevents receives the KV-cache events model servers publish (vLLM's
// --kv-events-config "publisher": "zmq") and decodes them: a ZMQ SUB socket (wire.go
// decodes, subscriber.go receives), bounded in everything a peer controls. What the events
// mean for routing is the kvindex package's business.
package kvevents

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/cespare/xxhash/v2"
	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// Kind is the type of one KV-cache event.
type Kind uint8

// Event kinds, named as vLLM's msgspec tags.
const (
	BlockStored Kind = iota + 1
	BlockRemoved
	AllBlocksCleared
)

func (k Kind) String() string {
	switch k {
	case BlockStored:
		return "BlockStored"
	case BlockRemoved:
		return "BlockRemoved"
	case AllBlocksCleared:
		return "AllBlocksCleared"
	}
	return "unknown"
}

// Event is one decoded KV-cache event. Slices are owned by the Batch they came from and
// reused by the next DecodeBatch into it.
type Event struct {
	Kind Kind
	// BlockHashes are the engine's block hashes (BlockStored, BlockRemoved). vLLM sends
	// them as integers (64-bit); a hash sent as bytes is folded to 64 bits with xxhash.
	BlockHashes []uint64
	// ParentHash is the engine hash of the block before the first stored one; HasParent
	// is false when the first block starts a prompt.
	ParentHash uint64
	HasParent  bool
	// TokenIDs are the stored blocks' tokens, BlockSize per block, in order.
	TokenIDs  []uint32
	BlockSize int
	// LoRAName is the adapter the blocks were computed with ("" for the base model);
	// LoRAID is vLLM's integer id of it (0 when absent).
	LoRAName string
	LoRAID   int64
	// Medium is where the blocks live ("GPU" or empty for the engine's own cache; "CPU"
	// and others for offload tiers).
	Medium string
}

// Batch is one message's payload: [ts, [events...], data_parallel_rank].
type Batch struct {
	TS     float64
	Events []Event
	DPRank int
}

// Limits bound what one message may make the decoder hold: a peer sets every length in
// the message, so every length is checked before anything is allocated for it.
type Limits struct {
	MaxEvents         int // events per batch
	MaxBlocksPerEvent int // block hashes per event
	MaxTokensPerEvent int // token ids per event
	MaxStringBytes    int // lora_name, medium, type strings
}

// DefaultLimits hold vLLM's real batches (one engine step's events; a BlockStored
// carries one request's newly full blocks) with a wide margin.
func DefaultLimits() Limits {
	return Limits{MaxEvents: 16384, MaxBlocksPerEvent: 8192, MaxTokensPerEvent: 1 << 20, MaxStringBytes: 1024}
}

// maxSkipDepth bounds the nesting of values the decoder skips (unknown fields): the
// library's own Skip recurses without a limit, and a message of nested array headers
// would otherwise recurse once per byte.
const maxSkipDepth = 16

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("kvevents: malformed event batch")

// Decoder decodes batches, reusing its buffers; not safe for concurrent use.
type Decoder struct {
	lim Limits
	r   bytes.Reader
	d   *msgpack.Decoder
}

// NewDecoder returns a decoder with the limits lim (zero fields take DefaultLimits').
func NewDecoder(lim Limits) *Decoder {
	def := DefaultLimits()
	if lim.MaxEvents <= 0 {
		lim.MaxEvents = def.MaxEvents
	}
	if lim.MaxBlocksPerEvent <= 0 {
		lim.MaxBlocksPerEvent = def.MaxBlocksPerEvent
	}
	if lim.MaxTokensPerEvent <= 0 {
		lim.MaxTokensPerEvent = def.MaxTokensPerEvent
	}
	if lim.MaxStringBytes <= 0 {
		lim.MaxStringBytes = def.MaxStringBytes
	}
	dec := &Decoder{lim: lim}
	dec.d = msgpack.NewDecoder(&dec.r)
	return dec
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// Decode decodes one message payload (the third frame) into b, reusing b's slices.
//
// Two encodings of an event are accepted: vLLM's (msgspec array_like with tag: an array
// whose first element is the type name, then the fields in declaration order, trailing
// defaults omitted) and a map with a "type" member and the fields by name (what other
// publishers and vLLM's own debug dumps use).
func (dec *Decoder) Decode(payload []byte, b *Batch) error {
	dec.r.Reset(payload)
	dec.d.Reset(&dec.r)
	d := dec.d
	n, err := d.DecodeArrayLen()
	if err != nil || n < 2 {
		return malformed("batch is not an array of [ts, events, dp_rank] (len %d): %v", n, err)
	}
	if b.TS, err = decodeFloat(d); err != nil {
		return malformed("ts: %v", err)
	}
	ne, err := d.DecodeArrayLen()
	if err != nil {
		return malformed("events: %v", err)
	}
	if ne < 0 || ne > dec.lim.MaxEvents {
		return malformed("%d events in one batch (limit %d)", ne, dec.lim.MaxEvents)
	}
	// Reuse event slots, keeping their slices' backing arrays.
	if cap(b.Events) < ne {
		b.Events = append(b.Events[:cap(b.Events)], make([]Event, ne-cap(b.Events))...)
	}
	b.Events = b.Events[:ne]
	for i := range b.Events {
		if err := dec.event(&b.Events[i]); err != nil {
			return fmt.Errorf("event %d: %w", i, err)
		}
	}
	b.DPRank = 0
	if n >= 3 {
		if c, _ := d.PeekCode(); c == msgpcode.Nil {
			_ = d.DecodeNil()
		} else {
			r, err := d.DecodeInt64()
			if err != nil || r < 0 || r > 1<<16 {
				return malformed("dp_rank %d: %v", r, err)
			}
			b.DPRank = int(r)
		}
	}
	for i := 3; i < n; i++ {
		if err := skip(d, 0); err != nil {
			return malformed("batch field %d: %v", i, err)
		}
	}
	if dec.r.Len() != 0 {
		return malformed("%d trailing bytes", dec.r.Len())
	}
	return nil
}

func decodeFloat(d *msgpack.Decoder) (float64, error) {
	c, err := d.PeekCode()
	if err != nil {
		return 0, err
	}
	if c == msgpcode.Float || c == msgpcode.Double {
		return d.DecodeFloat64()
	}
	v, err := d.DecodeInt64()
	return float64(v), err
}

func (dec *Decoder) event(e *Event) error {
	*e = Event{BlockHashes: e.BlockHashes[:0], TokenIDs: e.TokenIDs[:0]}
	d := dec.d
	c, err := d.PeekCode()
	if err != nil {
		return malformed("event: %v", err)
	}
	if msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32 {
		return dec.eventMap(e)
	}
	n, err := d.DecodeArrayLen()
	if err != nil || n < 1 {
		return malformed("event is neither a tagged array nor a map: %v", err)
	}
	tag, err := dec.str()
	if err != nil {
		return malformed("event tag: %v", err)
	}
	if e.Kind = kindOf(tag); e.Kind == 0 {
		return malformed("unknown event type %q", tag)
	}
	// Field order of vLLM's msgspec structs (vllm/distributed/kv_events.py).
	var fields []string
	switch e.Kind {
	case BlockStored:
		fields = []string{"block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium", "lora_name"}
	case BlockRemoved:
		fields = []string{"block_hashes", "medium"}
	}
	for i := 1; i < n; i++ {
		name := ""
		if i-1 < len(fields) {
			name = fields[i-1]
		}
		if err := dec.field(e, name); err != nil {
			return err
		}
	}
	return dec.check(e)
}

func (dec *Decoder) eventMap(e *Event) error {
	d := dec.d
	n, err := d.DecodeMapLen()
	if err != nil || n < 0 {
		return malformed("event map: %v", err)
	}
	if n > 64 {
		return malformed("event map with %d fields", n)
	}
	for i := 0; i < n; i++ {
		key, err := dec.str()
		if err != nil {
			return malformed("event field name: %v", err)
		}
		if key == "type" {
			tag, err := dec.str()
			if err != nil {
				return malformed("event type: %v", err)
			}
			if e.Kind = kindOf(tag); e.Kind == 0 {
				return malformed("unknown event type %q", tag)
			}
			continue
		}
		if err := dec.field(e, key); err != nil {
			return err
		}
	}
	if e.Kind == 0 {
		return malformed("event without a type")
	}
	return dec.check(e)
}

// check enforces what the index relies on: a stored event's tokens are whole blocks,
// one block of tokens per hash.
func (dec *Decoder) check(e *Event) error {
	if e.Kind != BlockStored {
		return nil
	}
	if e.BlockSize <= 0 || e.BlockSize > dec.lim.MaxTokensPerEvent {
		return malformed("BlockStored block_size %d", e.BlockSize)
	}
	if len(e.TokenIDs) != len(e.BlockHashes)*e.BlockSize {
		return malformed("BlockStored with %d hashes of %d tokens but %d token ids", len(e.BlockHashes), e.BlockSize, len(e.TokenIDs))
	}
	return nil
}

func kindOf(tag string) Kind {
	switch tag {
	case "BlockStored":
		return BlockStored
	case "BlockRemoved":
		return BlockRemoved
	case "AllBlocksCleared":
		return AllBlocksCleared
	}
	return 0
}

func (dec *Decoder) field(e *Event, name string) error {
	d := dec.d
	var err error
	switch name {
	case "block_hashes":
		e.BlockHashes, err = dec.hashes(e.BlockHashes)
	case "parent_block_hash":
		if c, _ := d.PeekCode(); c == msgpcode.Nil {
			err = d.DecodeNil()
		} else {
			e.ParentHash, err = dec.hash()
			e.HasParent = err == nil
		}
	case "token_ids":
		e.TokenIDs, err = dec.tokens(e.TokenIDs)
	case "block_size":
		var v int64
		v, err = d.DecodeInt64()
		e.BlockSize = int(min(max(v, -1), 1<<30))
	case "lora_id":
		e.LoRAID, err = d.DecodeInt64() // nil decodes as 0
	case "lora_name":
		e.LoRAName, err = dec.optStr()
	case "medium":
		e.Medium, err = dec.optStr()
	default:
		err = skip(d, 0) // extra_keys, group_idx, kv_cache_spec_kind, future fields
	}
	if err != nil {
		return malformed("field %q: %v", name, err)
	}
	return nil
}

func (dec *Decoder) hashes(dst []uint64) ([]uint64, error) {
	n, err := dec.d.DecodeArrayLen()
	if err != nil {
		return dst, err
	}
	if n < 0 || n > dec.lim.MaxBlocksPerEvent {
		return dst, fmt.Errorf("%d block hashes (limit %d)", n, dec.lim.MaxBlocksPerEvent)
	}
	for i := 0; i < n; i++ {
		h, err := dec.hash()
		if err != nil {
			return dst, err
		}
		dst = append(dst, h)
	}
	return dst, nil
}

// hash reads an engine block hash: an integer (vLLM converts its hashes to int before
// publishing), or bytes / a string, folded to 64 bits.
func (dec *Decoder) hash() (uint64, error) {
	d := dec.d
	c, err := d.PeekCode()
	if err != nil {
		return 0, err
	}
	switch {
	case msgpcode.IsBin(c) || msgpcode.IsString(c):
		n, err := d.DecodeBytesLen()
		if err != nil {
			return 0, err
		}
		if n < 0 || n > dec.lim.MaxStringBytes {
			return 0, fmt.Errorf("block hash of %d bytes", n)
		}
		buf := make([]byte, n)
		if err := d.ReadFull(buf); err != nil {
			return 0, err
		}
		return xxhash.Sum64(buf), nil
	case c == msgpcode.Nil:
		return 0, errors.New("nil block hash")
	}
	return d.DecodeUint64() // a negative int64 keeps its bits
}

func (dec *Decoder) tokens(dst []uint32) ([]uint32, error) {
	n, err := dec.d.DecodeArrayLen()
	if err != nil {
		return dst, err
	}
	if n < 0 || n > dec.lim.MaxTokensPerEvent {
		return dst, fmt.Errorf("%d token ids (limit %d)", n, dec.lim.MaxTokensPerEvent)
	}
	for i := 0; i < n; i++ {
		v, err := dec.d.DecodeInt64()
		if err != nil {
			return dst, err
		}
		if v < 0 || v > 1<<32-1 {
			return dst, fmt.Errorf("token id %d out of range", v)
		}
		dst = append(dst, uint32(v))
	}
	return dst, nil
}

func (dec *Decoder) str() (string, error) {
	c, err := dec.d.PeekCode()
	if err != nil {
		return "", err
	}
	if !msgpcode.IsString(c) && !msgpcode.IsBin(c) {
		return "", fmt.Errorf("want a string, got code %#x", c)
	}
	n, err := dec.d.DecodeBytesLen()
	if err != nil {
		return "", err
	}
	if n < 0 || n > dec.lim.MaxStringBytes {
		return "", fmt.Errorf("string of %d bytes (limit %d)", n, dec.lim.MaxStringBytes)
	}
	buf := make([]byte, n)
	if err := dec.d.ReadFull(buf); err != nil {
		return "", err
	}
	return string(buf), nil
}

func (dec *Decoder) optStr() (string, error) {
	if c, _ := dec.d.PeekCode(); c == msgpcode.Nil {
		return "", dec.d.DecodeNil()
	}
	return dec.str()
}

// skip skips one value of any type with bounded nesting.
func skip(d *msgpack.Decoder, depth int) error {
	if depth > maxSkipDepth {
		return errors.New("nesting too deep")
	}
	c, err := d.PeekCode()
	if err != nil {
		return err
	}
	switch {
	case msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32:
		n, err := d.DecodeArrayLen()
		if err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			if err := skip(d, depth+1); err != nil {
				return err
			}
		}
		return nil
	case msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32:
		n, err := d.DecodeMapLen()
		if err != nil {
			return err
		}
		for i := 0; i < 2*n; i++ {
			if err := skip(d, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return d.Skip()
}
