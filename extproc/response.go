package extproc

import (
	"strconv"
	"time"

	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/infergw/infergw/extproc/openai"
)

func (x *exchange) onResponseHeaders(h *wireRequest) {
	x.reportResponseHeaders(h)
	contentType := string(h.header(HeaderContentType))
	clientModel := ""
	if x.model != "" && x.target != x.model {
		clientModel = x.model
	}
	if ho := x.handoff; ho != nil {
		x.handoff = nil
		// The observer can take a response that needs no change, when the body mode lets
		// the processing mode be overridden (Envoy refuses it in FULL_DUPLEX_STREAMED).
		canHand := clientModel == "" && !x.addedUsage && !h.endOfStream && x.decision != nil &&
			x.respMode == extprocfilterv3.ProcessingMode_STREAMED
		if ho.handOff(x, canHand) {
			answer, _ := x.respHdr.fill()
			x.setObservedMode(answer)
			x.send(answer)
			return
		}
	}
	p, err := openai.NewResponseProcessor(contentType, clientModel)
	if err != nil { // only if the model name cannot be encoded; then leave the body alone
		x.s.log.Warn("response model rewrite disabled", "error", err, "request_id", x.hdr.requestID)
		p, _ = openai.NewResponseProcessor(contentType, "")
		clientModel = ""
	}
	if x.addedUsage {
		p.DropUsageChunk()
	}
	x.resp = p
	answer, hr := x.respHdr.fill()
	if clientModel != "" && x.respMode != extprocfilterv3.ProcessingMode_NONE {
		// The body may change length when the model is written back.
		hr.Response = &extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{
			RemoveHeaders: []string{HeaderContentLength},
		}}
	}
	x.send(answer)
	if h.endOfStream {
		x.complete()
	}
}

func (x *exchange) onResponseBody(b *wireRequest) {
	if x.resp == nil { // body without headers: not a sequence Envoy sends; stay transparent
		x.resp, _ = openai.NewResponseProcessor("", "")
	}
	chunk := b.body
	if len(chunk) > 0 && x.firstByte.IsZero() {
		x.firstByte = time.Now()
		if x.decision != nil {
			x.decision.FirstByte() // the endpoint answered: outlier ejection and pending prefill
		}
	}
	x.respBytes += len(chunk)
	eos := b.endOfStream
	out := x.resp.Feed(chunk, eos)
	if x.respMode == extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED {
		if len(out) > 0 || eos {
			x.sendStreamedBody(out, eos, false)
		}
	} else {
		// BUFFERED/STREAMED: one answer per body message, with a body mutation only when the
		// bytes changed.
		common := &extprocv3.CommonResponse{}
		if !sameBytes(out, chunk) {
			common.BodyMutation = &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: out}}
		}
		x.send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
			ResponseBody: &extprocv3.BodyResponse{Response: common},
		}})
	}
	if eos {
		x.complete()
	}
}

func (x *exchange) onResponseTrailers() {
	if x.resp != nil && !x.completed && x.respMode == extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED {
		// Release anything held for rewriting; trailers end the stream, not the body.
		if out := x.resp.Feed(nil, true); len(out) > 0 {
			x.sendStreamedBody(out, false, false)
		}
	}
	x.send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{
		ResponseTrailers: &extprocv3.TrailersResponse{},
	}})
	x.complete()
}

// reportResponseHeaders tells the router the status and which endpoint answered (Envoy's
// retries may have moved the request off the primary), for its outlier ejection.
func (x *exchange) reportResponseHeaders(h *wireRequest) {
	if x.decision == nil {
		return
	}
	status, _ := strconv.Atoi(string(h.header(headerStatus)))
	x.decision.ResponseHeaders(status, string(h.header(HeaderUpstream)))
}

// complete records a finished response: duration, TTFT, tokens; and releases the pick.
func (x *exchange) complete() {
	if x.completed || x.decision == nil {
		return
	}
	x.completed = true
	m := x.series
	if m == nil { // not an inference request (no body): nothing to record
		x.release()
		return
	}
	var usage openai.Usage
	if x.resp != nil {
		usage = x.resp.Usage
	}
	x.s.recordResponse(m, x.start, x.firstByte, x.respBytes, usage, x.span, x.spanStart)
	x.release()
}

// recordResponse records a finished response in its series (and span): duration, TTFT,
// size, tokens. The exchange and the observer (observe.go) both end responses with it.
func (s *Server) recordResponse(m *modelSeries, start, firstByte time.Time, respBytes int, u openai.Usage, span trace.Span, spanStart bool) {
	if m == nil {
		return
	}
	dur := time.Since(start)
	m.duration.Observe(dur.Seconds())
	m.responseSizes.Observe(float64(respBytes))
	if !firstByte.IsZero() {
		m.ttft.Observe(firstByte.Sub(start).Seconds())
	}
	if !u.Present {
		return
	}
	m.inputTokens.Observe(float64(u.PromptTokens))
	m.outputTokens.Observe(float64(u.CompletionTokens))
	m.cachedTokens.Observe(float64(u.CachedTokens))
	if u.CompletionTokens > 0 {
		m.ntpot.Observe(dur.Seconds() / float64(u.CompletionTokens))
	}
	if spanStart && span.IsRecording() {
		span.SetAttributes(
			attribute.Int64("gen_ai.usage.input_tokens", u.PromptTokens),
			attribute.Int64("gen_ai.usage.output_tokens", u.CompletionTokens))
	}
}

// release gives the in-flight slot back to the router, then the request's place back to
// flow control (whose dispatcher it wakes: the router's count must be down by then).
// Idempotent.
func (x *exchange) release() {
	if x.decision != nil {
		x.decision.Done()
		if x.series != nil {
			x.series.running.Dec()
		}
		x.decision = nil
	}
	x.releaseTicket()
}

// finish runs when the stream ends for any reason: a normal end, an error, or the client
// going away (Envoy resets the stream). The pick is released exactly once. finish must be
// called exactly once and x not used after it: x goes back to the pool.
func (x *exchange) finish() {
	if x.handoff != nil { // ended before its response headers: nothing to hand over
		x.handoff.abandon()
		x.handoff = nil
	}
	if x.decision != nil && x.resp == nil && !x.rejected {
		x.decision.NoResponse() // the request went upstream and no response came back
	}
	x.release()
	if x.keepParsed { // queued and never resumed
		x.s.buffers.putParsed(x.parsed)
		x.parsed, x.keepParsed = nil, false
	}
	if x.bodyBuf != nil {
		// Every message that referenced the body has been sent (gRPC encodes on Send).
		*x.bodyBuf = x.body[:0]
		x.s.buffers.putBodyBuf(x.bodyBuf)
		x.bodyBuf, x.body = nil, nil
	}
	if x.spanStart {
		x.span.End()
	}
	x.recycle()
}
