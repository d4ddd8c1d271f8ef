package extproc

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// Answer messages are trees of small protobuf structs. Each tree below is one block
// instead of one object per node, and the blocks live in the exchange, which is pooled:
// a request's answers allocate nothing. A block is filled in place (it is never copied
// afterwards, only pointed into) and may be refilled once its message has been sent:
// both transports encode a message before Send returns.

// streamedBodyBlock is a StreamedBodyResponse answer, request or response direction.
type streamedBodyBlock struct {
	resp     extprocv3.ProcessingResponse
	reqBody  extprocv3.ProcessingResponse_RequestBody
	respBody extprocv3.ProcessingResponse_ResponseBody
	body     extprocv3.BodyResponse
	common   extprocv3.CommonResponse
	mutation extprocv3.BodyMutation
	streamed extprocv3.BodyMutation_StreamedResponse
	chunk    extprocv3.StreamedBodyResponse
}

// fill makes b a streamed body answer and returns its message.
func (b *streamedBodyBlock) fill(chunk []byte, eos, request bool) *extprocv3.ProcessingResponse {
	*b = streamedBodyBlock{}
	b.chunk.Body, b.chunk.EndOfStream = chunk, eos
	b.streamed.StreamedResponse = &b.chunk
	b.mutation.Mutation = &b.streamed
	b.common.BodyMutation = &b.mutation
	b.body.Response = &b.common
	if request {
		b.reqBody.RequestBody = &b.body
		b.resp.Response = &b.reqBody
	} else {
		b.respBody.ResponseBody = &b.body
		b.resp.Response = &b.respBody
	}
	return &b.resp
}

// pickHeaders is the header mutation of a pick with room for its usual headers, and the
// headers answer that carries it in FULL_DUPLEX_STREAMED mode.
type pickHeaders struct {
	resp     extprocv3.ProcessingResponse
	oneof    extprocv3.ProcessingResponse_RequestHeaders
	headers  extprocv3.HeadersResponse
	mutation extprocv3.HeaderMutation
	common   extprocv3.CommonResponse
	opts     [8]corev3.HeaderValueOption
	values   [8]corev3.HeaderValue
	setBuf   [8]*corev3.HeaderValueOption
	used     int
	// arena holds the header values' bytes (RawValue is []byte): destination, request id,
	// content-length, pool name and (body-based routing) typical model names fit, so
	// setting them allocates nothing.
	arena     [384]byte
	arenaUsed int
}

// init empties p for a new pick.
func (p *pickHeaders) init() {
	*p = pickHeaders{}
	p.mutation.SetHeaders = p.setBuf[:0]
	p.common.HeaderMutation = &p.mutation
	p.common.ClearRouteCache = true
}

// set adds a header that overwrites any existing value, like setHeader.
func (p *pickHeaders) set(key, value string) {
	if p.used == len(p.opts) {
		p.mutation.SetHeaders = append(p.mutation.SetHeaders, setHeader(key, value))
		return
	}
	v, o := &p.values[p.used], &p.opts[p.used]
	p.used++
	v.Key, v.RawValue = key, p.bytes(value)
	o.Header, o.AppendAction = v, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
	p.mutation.SetHeaders = append(p.mutation.SetHeaders, o)
}

// bytes returns a copy of value in p's arena, or a new slice when the arena is full.
func (p *pickHeaders) bytes(value string) []byte {
	end := p.arenaUsed + len(value)
	if end > len(p.arena) {
		return []byte(value)
	}
	b := p.arena[p.arenaUsed:end:end]
	copy(b, value)
	p.arenaUsed = end
	return b
}

// headersAnswerBlock is a HeadersResponse answer to the response headers.
type headersAnswerBlock struct {
	resp    extprocv3.ProcessingResponse
	oneof   extprocv3.ProcessingResponse_ResponseHeaders
	headers extprocv3.HeadersResponse
	mode    extprocfilterv3.ProcessingMode // the mode_override when the observer takes the body
}

// fill makes b an answer to the response headers and returns it and the HeadersResponse
// inside it, to be filled in.
func (b *headersAnswerBlock) fill() (*extprocv3.ProcessingResponse, *extprocv3.HeadersResponse) {
	*b = headersAnswerBlock{}
	b.oneof.ResponseHeaders = &b.headers
	b.resp.Response = &b.oneof
	return &b.resp, &b.headers
}
