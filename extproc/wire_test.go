package extproc

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// wireSeeds are serialized ProcessingRequests of every kind the picker reads, plus
// encodings proto allows but Envoy does not produce (repeated fields that merge, a oneof
// member replaced by another).
func wireSeeds(t testing.TB) [][]byte {
	t.Helper()
	subset, err := structpb.NewStruct(map[string]any{KeySubset: []any{"10.0.0.1:8000", "10.0.0.2:8000"}})
	if err != nil {
		t.Fatal(err)
	}
	withMeta := reqHeaders(protocol(duplex, duplex), false, ":method", "POST", ":path", "/v1/completions")
	withMeta.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{NamespaceSubset: subset}}
	msgs := []*extprocv3.ProcessingRequest{
		benchRequestHeaders(4096),
		benchResponseHeaders(),
		reqBody([]byte(`{"model":"base","prompt":"hi"}`), true),
		respBody([]byte("data: {}\n\n"), false),
		withMeta,
		{Request: &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: &extprocv3.HttpTrailers{}}},
		{Request: &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocv3.HttpTrailers{
			Trailers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "grpc-status", Value: "0"}}}}}},
		{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "x-old", Value: "value field"}}}}}},
	}
	var out [][]byte
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	// Two occurrences of the same oneof member merge; another member replaces it.
	out = append(out, append(append([]byte{}, out[0]...), out[4]...))
	out = append(out, append(append([]byte{}, out[2]...), out[1]...))
	return out
}

// checkWireMatchesProto decodes data both ways: whenever proto.Unmarshal accepts it, the
// picker's decoder must accept it too and read the same fields.
func checkWireMatchesProto(t *testing.T, data []byte) {
	var m extprocv3.ProcessingRequest
	if err := proto.Unmarshal(data, &m); err != nil {
		// The decoder reads fewer fields than proto, so it may accept more; it must still
		// not panic.
		var w wireRequest
		_ = w.decode(data)
		return
	}
	var w wireRequest
	if err := w.decode(data); err != nil {
		if errors.Is(err, errTooManyHeaders) && len(m.GetRequestHeaders().GetHeaders().GetHeaders())+len(m.GetResponseHeaders().GetHeaders().GetHeaders()) > maxWireHeaders {
			return // proto has no limit; the decoder's is documented
		}
		t.Fatalf("proto accepts %x, the decoder says %v", data, err)
	}
	var (
		kind    msgKind
		headers *extprocv3.HttpHeaders
		body    *extprocv3.HttpBody
	)
	switch r := m.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		kind, headers = kindRequestHeaders, r.RequestHeaders
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		kind, headers = kindResponseHeaders, r.ResponseHeaders
	case *extprocv3.ProcessingRequest_RequestBody:
		kind, body = kindRequestBody, r.RequestBody
	case *extprocv3.ProcessingRequest_ResponseBody:
		kind, body = kindResponseBody, r.ResponseBody
	case *extprocv3.ProcessingRequest_RequestTrailers:
		kind = kindRequestTrailers
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		kind = kindResponseTrailers
	}
	if w.kind != kind {
		t.Fatalf("kind %d, proto says %d", w.kind, kind)
	}
	if headers != nil {
		want := headers.GetHeaders().GetHeaders()
		if len(w.headers) != len(want) || w.endOfStream != headers.GetEndOfStream() {
			t.Fatalf("%d headers eos=%v, proto says %d eos=%v", len(w.headers), w.endOfStream, len(want), headers.GetEndOfStream())
		}
		for i, hv := range want {
			value := hv.GetRawValue()
			if len(value) == 0 {
				value = []byte(hv.GetValue())
			}
			if string(w.headers[i].key) != hv.GetKey() || !bytes.Equal(w.headers[i].value, value) {
				t.Fatalf("header %d is %q=%q, proto says %q=%q", i, w.headers[i].key, w.headers[i].value, hv.GetKey(), value)
			}
		}
	}
	if body != nil && (!bytes.Equal(w.body, body.GetBody()) || w.endOfStream != body.GetEndOfStream()) {
		t.Fatalf("body %q eos=%v, proto says %q eos=%v", w.body, w.endOfStream, body.GetBody(), body.GetEndOfStream())
	}
	if pc := m.GetProtocolConfig(); w.hasProtocol != (pc != nil) || w.reqMode != pc.GetRequestBodyMode() || w.respMode != pc.GetResponseBodyMode() {
		t.Fatalf("protocol %v %v %v, proto says %v", w.hasProtocol, w.reqMode, w.respMode, pc)
	}
	if w.hasMetadata != (m.GetMetadataContext() != nil) {
		t.Fatalf("metadata present %v, proto says %v", w.hasMetadata, m.GetMetadataContext() != nil)
	}
	if w.hasMetadata {
		var md corev3.Metadata
		if err := proto.Unmarshal(w.metadata, &md); err != nil || !proto.Equal(&md, m.GetMetadataContext()) {
			t.Fatalf("metadata %v (%v), proto says %v", &md, err, m.GetMetadataContext())
		}
	}
}

func TestWireRequestMatchesProto(t *testing.T) {
	for _, seed := range wireSeeds(t) {
		checkWireMatchesProto(t, seed)
	}
	// The merged seeds really merged: request headers from two occurrences, body replaced
	// by headers.
	seeds := wireSeeds(t)
	var w wireRequest
	if err := w.decode(seeds[len(seeds)-2]); err != nil || len(w.headers) != 22 || !w.hasMetadata {
		t.Fatalf("merged headers: %d headers, metadata %v, err %v", len(w.headers), w.hasMetadata, err)
	}
	if err := w.decode(seeds[len(seeds)-1]); err != nil || w.kind != kindResponseHeaders || w.body != nil {
		t.Fatalf("replaced member: kind %d body %q err %v", w.kind, w.body, err)
	}
}

func TestWireRequestRejectsBrokenInput(t *testing.T) {
	good := wireSeeds(t)[0]
	for name, data := range map[string][]byte{
		"truncated":    good[:len(good)-3],
		"bad tag":      {0x00},
		"long length":  {0x12, 0xff, 0x01},
		"bad utf8 key": badUTF8HeaderKey(),
	} {
		var w wireRequest
		if err := w.decode(data); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

// badUTF8HeaderKey is request headers with one header whose key is not UTF-8, built by
// hand: proto.Marshal refuses to encode it, as proto.Unmarshal refuses to decode it.
func badUTF8HeaderKey() []byte {
	hv := protowire.AppendBytes(protowire.AppendTag(nil, fieldHeaderKey, protowire.BytesType), []byte("x-\xff"))
	hm := protowire.AppendBytes(protowire.AppendTag(nil, fieldHeaderMapValues, protowire.BytesType), hv)
	hh := protowire.AppendBytes(protowire.AppendTag(nil, fieldHeaders, protowire.BytesType), hm)
	return protowire.AppendBytes(protowire.AppendTag(nil, protowire.Number(kindRequestHeaders), protowire.BytesType), hh)
}

// metadataFlood is request headers plus a metadata_context sent as n one-field pieces (each
// a valid Metadata encoding: an empty filter_metadata entry), which proto merges.
func metadataFlood(n int) []byte {
	entry := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), nil) // Metadata.filter_metadata{}
	msg := badUTF8HeaderKey()[:0:0]
	for i := 0; i < n; i++ {
		msg = protowire.AppendBytes(protowire.AppendTag(msg, fieldMetadataContext, protowire.BytesType), entry)
	}
	return msg
}

// TestWireMetadataMergeIsLinear: a message of many small metadata_context pieces costs
// work in proportion to its size. Merging used to re-copy what was merged so far for every
// piece: 20,000 pieces copied ~400 MB (n² bytes by the same count), 699k pieces in a
// 2 MiB message cost seconds of CPU.
func TestWireMetadataMergeIsLinear(t *testing.T) {
	for _, n := range []int{2, 1000, 20000} {
		msg := metadataFlood(n)
		var w wireRequest
		if err := w.decode(msg); err != nil {
			t.Fatalf("%d pieces: %v", n, err)
		}
		if w.mdCopied > len(msg) {
			t.Errorf("%d pieces (%d bytes): merging copied %d bytes, more than the message", n, len(msg), w.mdCopied)
		}
		if len(w.metadata) != 2*n {
			t.Errorf("%d pieces: merged metadata is %d bytes, want %d", n, len(w.metadata), 2*n)
		}
		var md corev3.Metadata
		if err := proto.Unmarshal(w.metadata, &md); err != nil {
			t.Errorf("%d pieces: merged metadata does not decode: %v", n, err)
		}
	}
}

// TestWireHeaderCap: a message with more header entries than the cap is refused with an
// error that names the cap; one at the cap is read.
func TestWireHeaderCap(t *testing.T) {
	build := func(n int) []byte {
		hv := protowire.AppendBytes(protowire.AppendTag(nil, fieldHeaderKey, protowire.BytesType), []byte("k"))
		var hm []byte
		for i := 0; i < n; i++ {
			hm = protowire.AppendBytes(protowire.AppendTag(hm, fieldHeaderMapValues, protowire.BytesType), hv)
		}
		hh := protowire.AppendBytes(protowire.AppendTag(nil, fieldHeaders, protowire.BytesType), hm)
		return protowire.AppendBytes(protowire.AppendTag(nil, protowire.Number(kindRequestHeaders), protowire.BytesType), hh)
	}
	var w wireRequest
	if err := w.decode(build(maxWireHeaders)); err != nil || len(w.headers) != maxWireHeaders {
		t.Fatalf("%d headers: %d read, err %v", maxWireHeaders, len(w.headers), err)
	}
	// A 2 MiB message of minimal entries, as an attacker would send it.
	err := w.decode(build(2 << 20 / 5))
	if err == nil || !strings.Contains(err.Error(), "8192") {
		t.Fatalf("flood of header entries: err %v, want one naming the limit of %d", err, maxWireHeaders)
	}
	if len(w.headers) > maxWireHeaders {
		t.Fatalf("decoder kept %d headers past the cap", len(w.headers))
	}
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzWireRequest holds the decoder to proto.Unmarshal on arbitrary bytes.
func FuzzWireRequest(f *testing.F) {
	for _, s := range wireSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(checkWireMatchesProto)
}

// BenchmarkDecodeRequest compares the decoder with proto.Unmarshal on one request's
// messages (realistic headers, a 4 KB body, response headers and an SSE body).
func BenchmarkDecodeRequest(b *testing.B) {
	var msgs [][]byte
	for _, m := range []*extprocv3.ProcessingRequest{benchRequestHeaders(4096), reqBody(chatRequest("base", 4<<10), true),
		benchResponseHeaders(), respBody([]byte(sseResponse("base")), true)} {
		msgs = append(msgs, mustMarshal(b, m))
	}
	b.Run("wire", func(b *testing.B) {
		b.ReportAllocs()
		var w wireRequest
		for i := 0; i < b.N; i++ {
			for _, m := range msgs {
				if err := w.decode(m); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("proto", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			for _, m := range msgs {
				var r extprocv3.ProcessingRequest
				if err := proto.Unmarshal(m, &r); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
