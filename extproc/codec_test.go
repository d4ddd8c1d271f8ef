package extproc

import (
	"bytes"
	"strings"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// TestProtoCodecRoundTrip checks the picker's codec against protobuf's own encoding for
// small (unpooled) and large (pooled, several size classes) messages, including a
// message delivered in several buffers as gRPC frames deliver it.
func TestProtoCodecRoundTrip(t *testing.T) {
	pool, err := newBufferPool()
	if err != nil {
		t.Fatal(err)
	}
	c := protoCodec{pool: pool}
	for _, size := range []int{0, 100, 5000, 62000, 200 << 10, 3 << 20} {
		body := bytes.Repeat([]byte("abcdefgh"), size/8+1)[:size]
		in := new(streamedBodyBlock).fill(body, true, true)
		in.DynamicMetadata = destinationMetadata("10.0.0.1:8000,10.0.0.2:8000")
		data, err := c.Marshal(in)
		if err != nil {
			t.Fatalf("size %d: marshal: %v", size, err)
		}
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		if data.Len() != len(want) {
			t.Fatalf("size %d: codec wrote %d bytes, protobuf %d", size, data.Len(), len(want))
		}
		// Split the encoding into 16 KiB pieces, like HTTP/2 data frames.
		flat := data.Materialize()
		data.Free()
		var frames mem.BufferSlice
		for rest := flat; len(rest) > 0; {
			n := min(len(rest), 16<<10)
			frames = append(frames, mem.SliceBuffer(rest[:n]))
			rest = rest[n:]
		}
		out := new(extprocv3.ProcessingResponse)
		if err := c.Unmarshal(frames, out); err != nil {
			t.Fatalf("size %d: unmarshal: %v", size, err)
		}
		if !proto.Equal(in, out) {
			t.Fatalf("size %d: round trip changed the message", size)
		}
	}
}

func TestProtoCodecRejectsNonProto(t *testing.T) {
	pool, err := newBufferPool()
	if err != nil {
		t.Fatal(err)
	}
	c := protoCodec{pool: pool}
	if _, err := c.Marshal("not a message"); err == nil || !strings.Contains(err.Error(), "string") {
		t.Fatalf("marshal of a string: err = %v", err)
	}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{1})}, new(int)); err == nil {
		t.Fatal("unmarshal into *int succeeded")
	}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0xff, 0xff})}, new(extprocv3.ProcessingRequest)); err == nil {
		t.Fatal("unmarshal of garbage succeeded")
	}
}
