package extproc

import (
	"fmt"
	"unicode/utf8"

	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"google.golang.org/protobuf/encoding/protowire"
)

// The picker reads a handful of fields of each envoy.service.ext_proc.v3.ProcessingRequest.
// proto.Unmarshal builds the whole message instead: with the ~12 headers Envoy sends for a
// typical request that is ~70 allocations and ~12 µs per request (measured), more than the
// pick. wireRequest decodes just those fields, without allocating: byte slices alias the
// message, and the header slice is reused from message to message. A fuzz test holds it to
// proto.Unmarshal's reading of the same bytes.
//
// Aliasing rule: nothing decoded may be kept after the message is handled (the transport
// reuses the bytes). The exchange copies what it keeps (header values become strings; body
// chunks are appended to its own buffer).

// msgKind is which of ProcessingRequest's oneof fields a message carries (its field number).
type msgKind uint8

const (
	kindNone             msgKind = 0
	kindRequestHeaders   msgKind = 2
	kindResponseHeaders  msgKind = 3
	kindRequestBody      msgKind = 4
	kindResponseBody     msgKind = 5
	kindRequestTrailers  msgKind = 6
	kindResponseTrailers msgKind = 7
)

// Field numbers read (envoy/service/ext_proc/v3/external_processor.proto and
// envoy/config/core/v3/base.proto).
const (
	fieldMetadataContext = 8  // ProcessingRequest.metadata_context
	fieldProtocolConfig  = 11 // ProcessingRequest.protocol_config
	fieldHeaders         = 1  // HttpHeaders.headers (HeaderMap)
	fieldHeadersEOS      = 3  // HttpHeaders.end_of_stream
	fieldBody            = 1  // HttpBody.body
	fieldBodyEOS         = 2  // HttpBody.end_of_stream
	fieldHeaderMapValues = 1  // HeaderMap.headers
	fieldHeaderKey       = 1  // HeaderValue.key
	fieldHeaderValue     = 2  // HeaderValue.value
	fieldHeaderRawValue  = 3  // HeaderValue.raw_value
	fieldRequestBodyMode = 1  // ProtocolConfiguration.request_body_mode
	fieldRespBodyMode    = 2  // ProtocolConfiguration.response_body_mode
)

// wireHeader is one header; value is raw_value when set (Envoy's choice), else value.
type wireHeader struct {
	key, value []byte
}

// wireRequest is the picker's view of one ProcessingRequest.
type wireRequest struct {
	kind        msgKind
	headers     []wireHeader // request or response headers (kinds 2 and 3)
	endOfStream bool         // of the headers or body
	body        []byte       // kinds 4 and 5

	hasProtocol bool
	reqMode     extprocfilterv3.ProcessingMode_BodySendMode
	respMode    extprocfilterv3.ProcessingMode_BodySendMode

	hasMetadata bool
	metadata    []byte // metadata_context, still encoded: decoded only when it is read
	mdOwned     []byte // backs metadata when the field came in several pieces
	mdMerged    bool   // metadata is mdOwned: later pieces are appended, not re-copied
	mdCopied    int    // bytes copied into mdOwned by this decode: at most the message's size
}

// Limits of the decoder. A peer chooses how many entries a message carries, and a 2-byte
// header entry costs a 32-byte wireHeader here: without a cap a 4 MiB message would make
// 64 MiB of them. Envoy sends at most max_request_headers_count entries (100 by default,
// 8192 at most on the HTTP connection manager).
const maxWireHeaders = 8192

// maxKeptMetadata: a merged metadata buffer larger than this is dropped after its message.
const maxKeptMetadata = 64 << 10

// errTooManyHeaders names the limit a message went over.
var errTooManyHeaders = fmt.Errorf("HeaderMap: more than %d headers (the picker's limit per message)", maxWireHeaders)

// header returns the value of the last header named key, or nil. (Envoy sends each name
// once; proto order is kept, so "last" matches a map built from the list.)
func (w *wireRequest) header(key string) []byte {
	var v []byte
	for i := range w.headers {
		if string(w.headers[i].key) == key {
			v = w.headers[i].value
		}
	}
	return v
}

// decode reads b, a serialized ProcessingRequest, into w (reusing w's buffers). It reads
// the fields as proto.Unmarshal would: the last oneof field wins, repeated occurrences of
// a message field merge, fields of a wire type other than the declared one are skipped as
// unknown, and string fields must be valid UTF-8.
func (w *wireRequest) decode(b []byte) error {
	*w = wireRequest{headers: w.headers[:0], mdOwned: w.mdOwned[:0]}
	if cap(w.mdOwned) > maxKeptMetadata {
		w.mdOwned = nil // a rare large metadata_context is not pinned for the stream's life
	}
	return eachField(b, "ProcessingRequest", func(f field) error {
		if f.typ != protowire.BytesType {
			return nil
		}
		switch {
		case f.num >= protowire.Number(kindRequestHeaders) && f.num <= protowire.Number(kindResponseTrailers):
			kind := msgKind(f.num)
			if kind != w.kind { // a different oneof member replaces the previous one
				w.kind, w.headers, w.endOfStream, w.body = kind, w.headers[:0], false, nil
			}
			switch kind {
			case kindRequestHeaders, kindResponseHeaders:
				return w.decodeHTTPHeaders(f.bytes)
			case kindRequestBody, kindResponseBody:
				return w.decodeHTTPBody(f.bytes)
			default:
				return skipMessage(f.bytes) // trailers: the picker only needs to know they came
			}
		case f.num == fieldProtocolConfig:
			w.hasProtocol = true
			return w.decodeProtocol(f.bytes)
		case f.num == fieldMetadataContext:
			// Concatenated encodings of a message merge, which is what proto does with
			// a repeated message field. The first piece is aliased; from the second on the
			// pieces are appended to one buffer, each byte copied once (re-copying what
			// was merged so far made a message of many small pieces quadratic: a 2 MiB
			// one held its connection for seconds).
			switch {
			case !w.hasMetadata:
				w.hasMetadata, w.metadata = true, f.bytes
			case !w.mdMerged:
				w.mdMerged = true
				w.mdOwned = append(append(w.mdOwned[:0], w.metadata...), f.bytes...)
				w.mdCopied += len(w.metadata) + len(f.bytes)
				w.metadata = w.mdOwned
			default:
				w.mdOwned = append(w.mdOwned, f.bytes...)
				w.mdCopied += len(f.bytes)
				w.metadata = w.mdOwned
			}
		}
		return nil
	})
}

// field is one field of a message, with its value decoded for the two wire types the
// picker reads.
type field struct {
	num    protowire.Number
	typ    protowire.Type
	bytes  []byte // BytesType: aliases the message
	varint uint64 // VarintType
}

// eachField calls fn for every field of message b, in order; what names the message in
// errors. fn must not keep f.bytes beyond the message's life.
func eachField(b []byte, what string, fn func(f field) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%s: %w", what, protowire.ParseError(n))
		}
		b = b[n:]
		f := field{num: num, typ: typ}
		switch typ {
		case protowire.BytesType:
			f.bytes, n = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			f.varint, n = protowire.ConsumeVarint(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("%s field %d: %w", what, num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

func (w *wireRequest) decodeHTTPHeaders(b []byte) error {
	return eachField(b, "HttpHeaders", func(f field) error {
		switch {
		case f.num == fieldHeaders && f.typ == protowire.BytesType:
			return w.decodeHeaderMap(f.bytes)
		case f.num == fieldHeadersEOS && f.typ == protowire.VarintType:
			w.endOfStream = f.varint != 0
		}
		return nil
	})
}

func (w *wireRequest) decodeHeaderMap(b []byte) error {
	return eachField(b, "HeaderMap", func(f field) error {
		if f.num != fieldHeaderMapValues || f.typ != protowire.BytesType {
			return nil
		}
		if len(w.headers) >= maxWireHeaders {
			return errTooManyHeaders
		}
		h, err := decodeHeaderValue(f.bytes)
		if err != nil {
			return err
		}
		w.headers = append(w.headers, h)
		return nil
	})
}

func decodeHeaderValue(b []byte) (wireHeader, error) {
	var key, value, raw []byte
	err := eachField(b, "HeaderValue", func(f field) error {
		if f.typ != protowire.BytesType {
			return nil
		}
		switch f.num {
		case fieldHeaderKey:
			key = f.bytes
		case fieldHeaderValue:
			value = f.bytes
		case fieldHeaderRawValue:
			raw = f.bytes
			return nil
		default:
			return nil
		}
		if !utf8.Valid(f.bytes) { // key and value are proto strings
			return fmt.Errorf("HeaderValue field %d: invalid UTF-8", f.num)
		}
		return nil
	})
	if err != nil {
		return wireHeader{}, err
	}
	if len(raw) > 0 {
		value = raw
	}
	return wireHeader{key: key, value: value}, nil
}

func (w *wireRequest) decodeHTTPBody(b []byte) error {
	return eachField(b, "HttpBody", func(f field) error {
		switch {
		case f.num == fieldBody && f.typ == protowire.BytesType:
			w.body = f.bytes
		case f.num == fieldBodyEOS && f.typ == protowire.VarintType:
			w.endOfStream = f.varint != 0
		}
		return nil
	})
}

func (w *wireRequest) decodeProtocol(b []byte) error {
	return eachField(b, "ProtocolConfiguration", func(f field) error {
		if f.typ != protowire.VarintType {
			return nil
		}
		// Enums are int32 on the wire; proto keeps unknown values as they are.
		mode := extprocfilterv3.ProcessingMode_BodySendMode(int32(f.varint)) //nolint:gosec // G115: proto decodes int32 enums by truncating the varint, as here
		switch f.num {
		case fieldRequestBodyMode:
			w.reqMode = mode
		case fieldRespBodyMode:
			w.respMode = mode
		}
		return nil
	})
}

// skipMessage checks that b is a well-formed message without reading it.
func skipMessage(b []byte) error {
	return eachField(b, "message", func(field) error { return nil })
}
