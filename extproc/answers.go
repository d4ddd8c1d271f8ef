package extproc

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// Answer messages are trees of small protobuf structs. The builders below allocate each
// tree as one block instead of one object per node, which cuts the picker's allocations
// per request (the blocks are never copied after construction, only pointed into).

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

func newStreamedBodyResponse(chunk []byte, eos, request bool) *extprocv3.ProcessingResponse {
	b := new(streamedBodyBlock)
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
	opts     [4]corev3.HeaderValueOption
	values   [4]corev3.HeaderValue
	setBuf   [4]*corev3.HeaderValueOption
	used     int
}

func newPickHeaders() *pickHeaders {
	p := new(pickHeaders)
	p.mutation.SetHeaders = p.setBuf[:0]
	p.common.HeaderMutation = &p.mutation
	p.common.ClearRouteCache = true
	return p
}

// set adds a header that overwrites any existing value, like setHeader.
func (p *pickHeaders) set(key, value string) {
	if p.used == len(p.opts) {
		p.mutation.SetHeaders = append(p.mutation.SetHeaders, setHeader(key, value))
		return
	}
	v, o := &p.values[p.used], &p.opts[p.used]
	p.used++
	v.Key, v.RawValue = key, []byte(value)
	o.Header, o.AppendAction = v, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
	p.mutation.SetHeaders = append(p.mutation.SetHeaders, o)
}

// headersAnswerBlock is a HeadersResponse answer to the response headers.
type headersAnswerBlock struct {
	resp    extprocv3.ProcessingResponse
	oneof   extprocv3.ProcessingResponse_ResponseHeaders
	headers extprocv3.HeadersResponse
}

// newResponseHeadersAnswer returns the answer to the response headers and the
// HeadersResponse inside it, to be filled in.
func newResponseHeadersAnswer() (*extprocv3.ProcessingResponse, *extprocv3.HeadersResponse) {
	b := new(headersAnswerBlock)
	b.oneof.ResponseHeaders = &b.headers
	b.resp.Response = &b.oneof
	return &b.resp, &b.headers
}
