package kvevents

import (
	"errors"
	"reflect"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func sampleBatch() *Batch {
	return &Batch{TS: 1733520000.25, DPRank: 1, Events: []Event{
		{Kind: BlockStored, BlockHashes: []uint64{11, 1<<63 + 5}, TokenIDs: []uint32{1, 2, 3, 4}, BlockSize: 2, Medium: "GPU"},
		{Kind: BlockStored, BlockHashes: []uint64{12}, ParentHash: 1<<63 + 5, HasParent: true, TokenIDs: []uint32{5, 6}, BlockSize: 2, LoRAName: "tiny-lora", LoRAID: 3, Medium: "GPU"},
		{Kind: BlockRemoved, BlockHashes: []uint64{11}, Medium: "GPU"},
		{Kind: AllBlocksCleared},
	}}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	want := sampleBatch()
	payload, err := NewEncoder().Encode(want)
	if err != nil {
		t.Fatal(err)
	}
	var got Batch
	if err := NewDecoder(Limits{}).Decode(payload, &got); err != nil {
		t.Fatal(err)
	}
	for i := range got.Events { // nil and empty slices compare unequal
		if len(got.Events[i].BlockHashes) == 0 {
			got.Events[i].BlockHashes = nil
		}
		if len(got.Events[i].TokenIDs) == 0 {
			got.Events[i].TokenIDs = nil
		}
	}
	if !reflect.DeepEqual(&got, want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, *want)
	}
}

// TestDecodeVLLMArrayForm decodes a batch written field by field as vLLM's msgspec
// encoder writes it (array_like, tag first, extra trailing fields of newer versions), not
// through our Encoder.
func TestDecodeVLLMArrayForm(t *testing.T) {
	ev := []any{"BlockStored", []any{uint64(99)}, nil, []any{7, 8, 9, 10}, 4, nil, "GPU", nil,
		[]any{[]any{"mm", 1}}, 0, "full"} // lora_name nil, then extra_keys, group_idx, kv_cache_spec_kind
	payload, err := msgpack.Marshal([]any{1.5, []any{ev, []any{"BlockRemoved", []any{int64(-2)}}}, 0})
	if err != nil {
		t.Fatal(err)
	}
	var b Batch
	if err := NewDecoder(Limits{}).Decode(payload, &b); err != nil {
		t.Fatal(err)
	}
	e := b.Events[0]
	if e.Kind != BlockStored || e.BlockHashes[0] != 99 || e.HasParent || e.BlockSize != 4 || len(e.TokenIDs) != 4 || e.Medium != "GPU" || e.LoRAName != "" {
		t.Fatalf("stored: %+v", e)
	}
	if r := b.Events[1]; r.Kind != BlockRemoved || r.BlockHashes[0] != uint64(1<<64-2) {
		t.Fatalf("removed: %+v", r)
	}
}

func TestDecodeMapForm(t *testing.T) {
	ev := map[string]any{"type": "BlockStored", "block_hashes": []any{5}, "parent_block_hash": 4,
		"token_ids": []any{1, 2}, "block_size": 2, "lora_name": "a", "medium": "GPU", "group_idx": 0}
	payload, _ := msgpack.Marshal([]any{2, []any{ev, map[string]any{"type": "AllBlocksCleared"}}})
	var b Batch
	if err := NewDecoder(Limits{}).Decode(payload, &b); err != nil {
		t.Fatal(err)
	}
	if e := b.Events[0]; !e.HasParent || e.ParentHash != 4 || e.LoRAName != "a" || b.Events[1].Kind != AllBlocksCleared {
		t.Fatalf("%+v", b)
	}
}

func TestDecodeRejects(t *testing.T) {
	deep := []byte{0x93, 0x00, 0x91, 0x92, 0xa7} // [0, [[ "BlockSt...
	deep = append(deep, "Cleared"...)
	nested := []any{1, []any{[]any{"BlockStored", []any{1}, nil, []any{1}, 1, nil, nil, nil, nil}}, 0}
	// 40 levels of nested arrays in an unknown field.
	var n any = 1
	for range 40 {
		n = []any{n}
	}
	nested[1].([]any)[0].([]any)[8] = n
	deepPayload, _ := msgpack.Marshal(nested)
	lim := Limits{MaxEvents: 2, MaxBlocksPerEvent: 2, MaxTokensPerEvent: 4, MaxStringBytes: 16}
	mk := func(v any) []byte { b, _ := msgpack.Marshal(v); return b }
	cases := map[string][]byte{
		"empty":            nil,
		"not an array":     mk(map[string]any{"a": 1}),
		"too many events":  mk([]any{1, []any{[]any{"AllBlocksCleared"}, []any{"AllBlocksCleared"}, []any{"AllBlocksCleared"}}}),
		"too many hashes":  mk([]any{1, []any{[]any{"BlockRemoved", []any{1, 2, 3}}}}),
		"too many tokens":  mk([]any{1, []any{[]any{"BlockStored", []any{1}, nil, []any{1, 2, 3, 4, 5}, 5}}}),
		"tokens mismatch":  mk([]any{1, []any{[]any{"BlockStored", []any{1, 2}, nil, []any{1, 2, 3}, 2}}}),
		"zero block size":  mk([]any{1, []any{[]any{"BlockStored", []any{}, nil, []any{}, 0}}}),
		"unknown type":     mk([]any{1, []any{[]any{"BlockMoved"}}}),
		"long string":      mk([]any{1, []any{[]any{"BlockRemoved", []any{1}, "GPUGPUGPUGPUGPUGPUGPU"}}}),
		"negative token":   mk([]any{1, []any{[]any{"BlockStored", []any{1}, nil, []any{-1}, 1}}}),
		"trailing bytes":   append(mk([]any{1, []any{}}), 0x01),
		"truncated":        deep,
		"nesting too deep": deepPayload,
	}
	for name, p := range cases {
		var b Batch
		if err := NewDecoder(lim).Decode(p, &b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err %v, want ErrMalformed", name, err)
		}
	}
}

// FuzzDecode: no input panics, and whatever decodes re-encodes to a batch that decodes to
// the same events.
func FuzzDecode(f *testing.F) {
	p, _ := NewEncoder().Encode(sampleBatch())
	f.Add(p)
	m, _ := msgpack.Marshal([]any{1, []any{map[string]any{"type": "BlockRemoved", "block_hashes": []any{"abc"}}}, nil})
	f.Add(m)
	f.Add([]byte{0x93, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0, 0xdd, 0xff, 0xff, 0xff, 0xff})
	dec := NewDecoder(Limits{MaxEvents: 64, MaxBlocksPerEvent: 64, MaxTokensPerEvent: 1024, MaxStringBytes: 64})
	f.Fuzz(func(t *testing.T, data []byte) {
		var b Batch
		if dec.Decode(data, &b) != nil {
			return
		}
		again, err := NewEncoder().Encode(&b)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		var b2 Batch
		if err := dec.Decode(again, &b2); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if len(b2.Events) != len(b.Events) {
			t.Fatalf("events %d != %d", len(b2.Events), len(b.Events))
		}
		for i := range b.Events {
			x, y := b.Events[i], b2.Events[i]
			if x.Kind != y.Kind || len(x.BlockHashes) != len(y.BlockHashes) || len(x.TokenIDs) != len(y.TokenIDs) || x.ParentHash != y.ParentHash || x.LoRAName != y.LoRAName {
				t.Fatalf("event %d: %+v != %+v", i, x, y)
			}
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	// One engine step: 8 requests each storing 16 blocks of 16 tokens.
	var batch Batch
	for r := range 8 {
		ev := Event{Kind: BlockStored, BlockSize: 16, Medium: "GPU"}
		for i := range 16 {
			ev.BlockHashes = append(ev.BlockHashes, uint64(r*1000+i))
			for j := range 16 {
				ev.TokenIDs = append(ev.TokenIDs, uint32(i*16+j))
			}
		}
		batch.Events = append(batch.Events, ev)
	}
	p, _ := NewEncoder().Encode(&batch)
	dec := NewDecoder(Limits{})
	var out Batch
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if err := dec.Decode(p, &out); err != nil {
			b.Fatal(err)
		}
	}
}
