package inlinegrpc

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestMarshalMessage: the vtprotobuf path (go-control-plane's messages, with the build tag)
// and the proto path (messages without it) both frame a message that decodes back to the
// original.
func TestMarshalMessage(t *testing.T) {
	md, err := structpb.NewStruct(map[string]any{"envoy.lb": map[string]any{
		"x-gateway-destination-endpoint": "10.0.0.1:8000", "b": "2", "c": []any{"x", "y"}}})
	if err != nil {
		t.Fatal(err)
	}
	vt := &extprocv3.ProcessingResponse{
		DynamicMetadata: md,
		Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{
			Response: &extprocv3.CommonResponse{ClearRouteCache: true, HeaderMutation: &extprocv3.HeaderMutation{
				SetHeaders: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-gateway-destination-endpoint", RawValue: []byte("10.0.0.1:8000")}}},
			}},
		}},
	}
	// go-control-plane compiles its vtprotobuf methods only with the vtprotobuf build tag,
	// which the Makefile and the Dockerfile set.
	if _, ok := proto.Message(vt).(vtMarshaler); ok != builtWithVTProtobuf {
		t.Fatalf("ProcessingResponse has vtprotobuf methods: %v; built with the vtprotobuf tag: %v", ok, builtWithVTProtobuf)
	}
	plain := &testgrpc.SimpleResponse{Payload: &testgrpc.Payload{Body: []byte("hello")}, Username: "u"}
	if _, ok := proto.Message(plain).(vtMarshaler); ok {
		t.Fatal("the test service's messages grew vtprotobuf methods: the proto path is untested")
	}
	prefix := []byte("kept")
	for _, m := range []proto.Message{vt, plain} {
		out, err := marshalMessage(append([]byte{}, prefix...), m)
		if err != nil {
			t.Fatalf("%T: %v", m, err)
		}
		if string(out[:len(prefix)]) != string(prefix) {
			t.Fatalf("%T: bytes before the message changed", m)
		}
		msg := out[len(prefix)+5:]
		if out[len(prefix)] != 0 {
			t.Fatalf("%T: bad flag byte", m)
		}
		got := m.ProtoReflect().New().Interface()
		if err := proto.Unmarshal(msg, got); err != nil || !proto.Equal(got, m) {
			t.Fatalf("%T: decoded %v (%v), want %v", m, got, err, m)
		}
	}
}
