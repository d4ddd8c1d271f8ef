package extproc

import (
	"fmt"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// newBufferPool builds the pool of one gRPC server; it is not shared between servers.
// Its capacity classes are 256 B and every power of two from 4 KiB to 4 MiB. grpc-go's
// default pool has 256 B, 4, 16 and 32 KiB and then 1 MiB, and clears the whole buffer on
// each Get: every body message between 32 KiB and 1 MiB (a 62,000-byte body chunk, a
// 50 KiB request chunk) cleared 1 MiB, which was a quarter of the picker's CPU for a
// 200 KB request. Body-sized classes keep the clearing (and the memory held) near the
// message size.
func newBufferPool() (mem.BufferPool, error) {
	p, err := mem.NewBinaryTieredBufferPool(8, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22)
	if err != nil {
		return nil, fmt.Errorf("extproc: gRPC buffer pool: %w", err)
	}
	return p, nil
}

// protoCodec is grpc-go's proto codec (the same wire format and the same
// Size-then-MarshalAppend sequence) with the server's own buffer pool; the stock codec
// always uses the process-wide default pool, which only a global setter can change.
type protoCodec struct{ pool mem.BufferPool }

// Name is the content subtype: this codec replaces the standard "proto" one.
func (protoCodec) Name() string { return "proto" }

func (c protoCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("proto codec: cannot marshal %T, want proto.Message", v)
	}
	size := proto.Size(m)
	// UseCachedSize reuses what Size just computed. Messages are not changed while gRPC
	// encodes them (shared ones, such as cached metadata, are never changed at all).
	opts := proto.MarshalOptions{UseCachedSize: true}
	if mem.IsBelowBufferPoolingThreshold(size) {
		buf, err := opts.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("proto codec: marshal %T: %w", v, err)
		}
		return mem.BufferSlice{mem.SliceBuffer(buf)}, nil
	}
	buf := c.pool.Get(size)
	if _, err := opts.MarshalAppend((*buf)[:0], m); err != nil {
		c.pool.Put(buf)
		return nil, fmt.Errorf("proto codec: marshal %T: %w", v, err)
	}
	return mem.BufferSlice{mem.NewBuffer(buf, c.pool)}, nil
}

// rawMessage receives a message undecoded; its receiver frees buf.
type rawMessage struct{ buf mem.Buffer }

func (c protoCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if r, ok := v.(*rawMessage); ok {
		r.buf = data.MaterializeToBuffer(c.pool)
		return nil
	}
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("proto codec: cannot unmarshal into %T, want proto.Message", v)
	}
	// A message that spans several frames is copied into one buffer: proto.Unmarshal
	// needs contiguous bytes. It copies bytes fields out, so the buffer is freed after.
	buf := data.MaterializeToBuffer(c.pool)
	defer buf.Free()
	if err := proto.Unmarshal(buf.ReadOnlyData(), m); err != nil {
		return fmt.Errorf("proto codec: unmarshal %T: %w", v, err)
	}
	return nil
}
