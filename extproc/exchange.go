package extproc

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/infergw/infergw/extproc/openai"
	"github.com/infergw/infergw/flowcontrol"
	"github.com/infergw/infergw/router"
)

// exchange is the state of one ext_proc stream, that is one HTTP request and its response.
// Only the stream's goroutine touches it. Exchanges are pooled (Server.exchanges): with
// their answer blocks inside, a request allocates a few small objects instead of ~4 KB,
// which at tens of thousands of requests per second is most of the garbage collector's
// work. newExchange takes one; finish, called exactly once, gives it back.
type exchange struct {
	s     *Server
	ctx   context.Context
	start time.Time

	reqMode  extprocfilterv3.ProcessingMode_BodySendMode
	respMode extprocfilterv3.ProcessingMode_BodySendMode
	modeSet  bool

	hdr      requestHeaders
	poolList string // gRPC metadata x-infergw-pools
	// Body-based routing (bodyrouting.go): the route table and the gateway's model list.
	modelRoutes string // gRPC metadata x-infergw-model-routes
	listModels  string // gRPC metadata x-infergw-list-models
	bodyRouted  bool   // the model headers are set from the body
	baseModel   string
	hasBase     bool
	subset      []string
	subsetSeen  bool

	body        []byte
	bodyBuf     *[]byte // pooled accumulation buffer, returned at the end of the stream
	bodyBytes   int
	noBody      bool // the request headers ended the request: no body follows
	headersSent bool // the request headers phase has been answered
	picked      bool // the request phase is complete (answered or rejected)
	rejected    bool // an ImmediateResponse ended the exchange

	parsed   *openai.Request // pooled; returned right after the pick
	model    string          // what the client asked for
	target   string          // what the backend is asked for
	pool     string
	decision *router.Decision
	series   *modelSeries // the picked request's metrics
	// modelServed: the pool serves the model, so its name may label metrics.
	modelServed bool
	span        trace.Span
	spanStart   bool

	wire        wireRequest    // the message being handled, decoded in place
	wireHeaders [24]wireHeader // backs wire.headers: room for a typical request's headers
	resp        *openai.ResponseProcessor
	addedUsage  bool // the gateway added stream_options.include_usage; the usage chunk is removed
	respBytes   int
	firstByte   time.Time
	completed   bool
	out         []*extprocv3.ProcessingResponse
	outBuf      [2]*extprocv3.ProcessingResponse // backs out: most messages get one or two answers

	// Answer blocks (answers.go). Those in out are refilled only on the next message, after
	// the transport has sent (encoded) them.
	pickHdr    pickHeaders
	routerReq  router.Request
	respHdr    headersAnswerBlock
	bodyBlocks []*streamedBodyBlock // the first usedBlocks are in out
	usedBlocks int

	// Flow control (flowcontrol.go). ticket is the request's place in its pool's queue;
	// while queued, the exchange holds a copy of the body and the parsed request, and the
	// transport (waiter) resumes it when the controller decides.
	ticket          *flowcontrol.Ticket
	queued          bool
	queuedBody      []byte
	queuedMulti     bool
	queuedEOS       bool
	keepParsed      bool // parsed outlives pick (queued)
	pendingTrailers bool // the request trailers' answer waits behind the held pick
	waiter          queueWaiter
	retryAfter      int // seconds, on the next rejection
	flowRetryAfter  int // the pool's retry-after for a queued request's rejection
	routerPriority  int // the priority the pick is made with
	// The response observer (observe.go): observed when the route has it, handoff from
	// the pick to the response headers.
	observed bool
	handoff  *handoff
	// hasRoom is the pool detector's per-endpoint check for a flow-controlled request.
	hasRoom func(flowcontrol.EndpointSignal) bool
}

// maxPooledBodyBlocks bounds the body answer blocks a pooled exchange keeps: a 16 MiB
// buffered body needs ~270 at once, a typical request two.
const maxPooledBodyBlocks = 8

func (s *Server) newExchange(ctx context.Context) *exchange {
	x, _ := s.exchanges.Get().(*exchange)
	if x == nil {
		x = new(exchange)
	}
	// A pooled exchange was zeroed by finish, apart from its reusable blocks.
	x.s, x.ctx, x.start = s, ctx, time.Now()
	x.out = x.outBuf[:0]
	x.wire.headers = x.wireHeaders[:0]
	return x
}

// recycle zeroes x, keeping its body answer blocks, and pools it. Nothing may use x after.
func (x *exchange) recycle() {
	s, blocks := x.s, x.bodyBlocks
	for i, b := range blocks {
		if i >= maxPooledBodyBlocks {
			blocks[i] = nil
			continue
		}
		b.chunk.Body = nil // do not pin the body buffer or the message it aliased
	}
	*x = exchange{bodyBlocks: blocks[:min(len(blocks), maxPooledBodyBlocks)]}
	s.exchanges.Put(x)
}

// streamedBody returns a streamed body answer from x's blocks.
func (x *exchange) streamedBody(chunk []byte, eos, request bool) *extprocv3.ProcessingResponse {
	if x.usedBlocks == len(x.bodyBlocks) {
		x.bodyBlocks = append(x.bodyBlocks, new(streamedBodyBlock))
	}
	b := x.bodyBlocks[x.usedBlocks]
	x.usedBlocks++
	return b.fill(chunk, eos, request)
}

// handle answers one serialized ProcessingRequest from Envoy with zero or more messages.
// msg is only read during the call (see wire.go). The error is for bytes that are not a
// ProcessingRequest; the stream should end with it.
func (x *exchange) handle(msg []byte) ([]*extprocv3.ProcessingResponse, error) {
	x.out, x.usedBlocks = x.out[:0], 0
	w := &x.wire
	if err := w.decode(msg); err != nil {
		return nil, err
	}
	if !x.modeSet {
		x.modeSet = true
		x.reqMode = x.s.opts.DefaultRequestBodyMode
		x.respMode = extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED
		if w.hasProtocol {
			x.reqMode, x.respMode = w.reqMode, w.respMode
		}
	}
	if w.hasMetadata && !x.subsetSeen {
		md := &corev3.Metadata{}
		if err := proto.Unmarshal(w.metadata, md); err != nil {
			return nil, fmt.Errorf("ProcessingRequest.metadata_context: %w", err)
		}
		x.subset, x.subsetSeen = subsetHint(md)
	}
	if x.rejected {
		return nil, nil // Envoy ends the stream after an ImmediateResponse; ignore stragglers.
	}
	if x.queued && w.kind != kindRequestTrailers {
		return nil, nil // nothing else is answered before the held pick
	}
	switch w.kind {
	case kindRequestHeaders:
		x.onRequestHeaders(w)
	case kindRequestBody:
		x.onRequestBody(w)
	case kindRequestTrailers:
		x.onRequestTrailers()
	case kindResponseHeaders:
		x.onResponseHeaders(w)
	case kindResponseBody:
		x.onResponseBody(w)
	case kindResponseTrailers:
		x.onResponseTrailers()
	}
	return x.out, nil
}

func (x *exchange) send(r *extprocv3.ProcessingResponse) { x.out = append(x.out, r) }

func (x *exchange) onRequestHeaders(h *wireRequest) {
	x.hdr.read(h.headers)
	if x.hdr.requestID == "" {
		x.hdr.requestID = newRequestID()
	}
	if x.listModels != "" {
		x.answerModelList(x.s.state.Load())
		return
	}
	x.noBody = h.endOfStream
	if h.endOfStream || !x.bodyAware() {
		// No body will come (or the mode cannot carry a pick made after the body): pick
		// now, without a model or prompt.
		x.pick(nil, false)
		return
	}
	if x.reqMode != extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED {
		// BUFFERED (and the other non-duplex modes): Envoy waits for this answer before
		// sending the body; the pick rides on the body response.
		x.headersSent = true
		x.send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
			RequestHeaders: &extprocv3.HeadersResponse{},
		}})
	}
	// FULL_DUPLEX_STREAMED: hold the headers answer until the body is complete.
}

// bodyAware reports whether the request body mode lets the pick wait for the body:
// FULL_DUPLEX_STREAMED holds the headers answer, BUFFERED and BUFFERED_PARTIAL carry the
// pick on their single body answer. STREAMED and GRPC forward the headers before the body
// is complete, so there the pick is made at the headers.
func (x *exchange) bodyAware() bool {
	switch x.reqMode {
	case extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED, extprocfilterv3.ProcessingMode_BUFFERED,
		extprocfilterv3.ProcessingMode_BUFFERED_PARTIAL:
		return true
	}
	return false
}

func (x *exchange) onRequestBody(b *wireRequest) {
	if x.picked {
		if !x.rejected && !x.bodyAware() {
			// STREAMED: every chunk needs an answer; pass it on unchanged.
			x.send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
				RequestBody: &extprocv3.BodyResponse{},
			}})
		}
		return
	}
	x.bodyBytes += len(b.body)
	if x.bodyBytes > x.s.opts.MaxBodyBytes {
		x.reject(errTooLarge(x.s.opts.MaxBodyBytes))
		return
	}
	aliased := false
	if x.body == nil && b.endOfStream {
		// The whole body in one message (BUFFERED, or a small duplex body): no copy. It
		// aliases the message, so it is used up before this call returns.
		x.body, aliased = b.body, true
	} else {
		if x.bodyBuf == nil {
			x.bodyBuf = x.s.buffers.getBodyBuf(x.hdr.contentLength, x.s.opts.MaxBodyBytes)
			x.body = (*x.bodyBuf)[:0]
		}
		x.body = append(x.body, b.body...)
	}
	switch {
	case x.reqMode == extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED:
		if b.endOfStream {
			x.pick(x.body, true)
		}
	default:
		// BUFFERED / BUFFERED_PARTIAL send the body they have in one message and wait for
		// the answer, whether or not trailers follow.
		x.pick(x.body, b.endOfStream)
	}
	if aliased {
		x.body = nil
	}
}

func (x *exchange) onRequestTrailers() {
	if !x.picked {
		// Full-duplex body that ended with trailers: the body is complete now. The body
		// chunks we send back do not carry end_of_stream, the trailers do.
		x.pick(x.body, false)
	}
	if x.rejected {
		return
	}
	if x.queued {
		x.pendingTrailers = true // answered after the held pick (resume)
		return
	}
	x.send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{
		RequestTrailers: &extprocv3.TrailersResponse{},
	}})
}

// pick runs once per request when everything routing needs has arrived. body is nil for a
// request without a body. bodyEOS tells whether the last body chunk sent back ends the stream.
func (x *exchange) pick(body []byte, bodyEOS bool) {
	x.picked = true
	st := x.s.state.Load()
	if x.s.tracing {
		x.startSpan()
	}

	if len(body) == 0 && x.hdr.method == "POST" && (x.bodyAware() || x.noBody) {
		// An inference request always has a body; without one a pod would answer in
		// its own error schema (or, worse, serve something).
		x.reject(errEmptyBody())
		return
	}
	if body != nil {
		x.parsed = x.s.buffers.getParsed()
		defer func() {
			if !x.keepParsed { // a queued request keeps it until resume
				x.s.buffers.putParsed(x.parsed)
				x.parsed = nil
			}
		}()
		if err := openai.Parse(body, x.parsed); err != nil {
			x.reject(classifyParseError(err))
			return
		}
		x.model = x.parsed.Model
		if x.model == "" {
			x.reject(errEmptyModel())
			return
		}
	}
	if x.modelRoutes != "" {
		passThrough, aerr := x.routeByModel(st)
		if aerr != nil {
			x.reject(aerr)
			return
		}
		if passThrough {
			x.answerPassThrough(body, bodyEOS)
			return
		}
	}
	pool, multi, aerr := x.choosePool(st)
	if aerr != nil {
		x.reject(aerr)
		return
	}
	x.pool = pool

	x.target = x.model
	if x.hdr.rewrite != "" {
		x.target = x.hdr.rewrite
	} else if t, ok := st.rewriteModel(pool, x.model); ok && x.model != "" {
		x.target = t
	}
	if x.target != "" && !x.s.router.ServesModel(pool, x.target) {
		x.reject(errModelNotFound(x.model))
		return
	}
	x.modelServed = true
	if x.subsetSeen && len(x.subset) == 0 {
		x.reject(errNoEndpoint("the proxy's endpoint subset hint is empty"))
		return
	}

	priority := st.priority(pool, x.hdr.objective)
	if body != nil {
		// Inference requests of a pool with flow control wait for their turn there.
		if fc := x.s.flows.get(pool); fc != nil {
			x.flowRetryAfter = fc.RetryAfterSeconds()
			x.hasRoom = x.s.flows.hasRoom(pool)
			if x.enqueue(fc, priority, body, multi, bodyEOS) {
				return
			}
			priority = 0 // dispatched: flow control, not the router, decides about shedding
		}
	}
	x.routerPriority = priority
	x.bind(body, multi, bodyEOS)
}

// bind picks the endpoint and sends the answer: at once, or when flow control dispatches
// a queued request (late binding).
func (x *exchange) bind(body []byte, multi, bodyEOS bool) {
	pool := x.pool
	// In the exchange, not on the stack: Pick is an interface call, so a local would escape.
	rreq := &x.routerReq
	*rreq = router.Request{Pool: pool, Model: x.target, Priority: x.routerPriority, HasRoom: x.hasRoom}
	if body != nil {
		rreq.Prompt = x.parsed.Prompt
		rreq.Body = body
		rreq.Stream = x.parsed.Stream
	}
	if x.subsetSeen {
		rreq.Subset = x.subset
	}
	t0 := time.Now()
	d, err := x.s.router.Pick(rreq)
	rreq.Prompt, rreq.Body = nil, nil // the parsed request goes back to its pool when pick returns
	x.s.metrics.schedulerE2E.Observe(time.Since(t0).Seconds())
	if err != nil {
		x.reject(classifyPickError(pool, err))
		x.releaseTicket()
		return
	}
	if x.ticket != nil {
		x.ticket.Bound() // the router's in-flight count shows the request from now on
	}
	if d == nil || len(d.Endpoints) == 0 {
		if d != nil {
			d.Done()
		}
		x.reject(errNoEndpoint("the router returned no endpoint"))
		return
	}
	x.decision = d
	if body != nil {
		// Only requests with a body (an inference request naming a model) count in the
		// per-model request, size, duration and TTFT metrics: a bodiless GET such as
		// /v1/models is routed but is no inference.
		x.series = x.s.metrics.seriesFor(x.model, x.target, pool)
		x.series.requests.Inc()
		x.series.running.Inc()
		x.series.requestSizes.Observe(float64(len(body)))
	}

	newBody, err := x.editBody(body)
	if err != nil {
		x.reject(errInternal(err.Error()))
		return
	}
	x.answer(d, pool, multi, body, newBody, bodyEOS)
}

// editBody returns the body to send upstream: the target model written in when it was
// rewritten, and stream_options.include_usage added to a streamed chat or completions
// request that did not ask for usage, so that its tokens are counted (the response side
// then removes the usage chunk the client did not ask for). It returns body itself when
// nothing changes.
func (x *exchange) editBody(body []byte) ([]byte, error) {
	if body == nil {
		return nil, nil
	}
	var edits [2]openai.Edit
	n := 0
	if x.target != x.model {
		enc, err := json.Marshal(x.target)
		if err != nil {
			return nil, fmt.Errorf("rewrite model: encode %q: %w", x.target, err)
		}
		edits[n] = openai.Edit{Start: x.parsed.ModelStart, End: x.parsed.ModelEnd, With: enc}
		n++
	}
	if !x.s.opts.NoStreamUsage && reportsStreamUsage(x.hdr.path) {
		if e, ok := x.parsed.IncludeUsageEdit(body); ok {
			edits[n] = e
			n++
			x.addedUsage = true
		}
	}
	if n == 0 {
		return body, nil
	}
	return openai.ApplyEdits(body, edits[:n]...)
}

// reportsStreamUsage reports whether the API at path takes stream_options.include_usage:
// OpenAI's chat completions and completions.
func reportsStreamUsage(path string) bool {
	path, _, _ = strings.Cut(path, "?")
	return strings.HasSuffix(path, "/chat/completions") || strings.HasSuffix(path, "/completions")
}

// choosePool applies the pool-selection contract: the route's pools from gRPC metadata,
// else --pool, else the only pool (or the first one serving the model).
func (x *exchange) choosePool(st *routingState) (pool string, multi bool, aerr *apiError) {
	if x.poolList != "" {
		pools, err := parsePools(x.poolList)
		if err != nil {
			return "", false, errInternal("proxy sent a bad " + MetadataPools + ": " + err.Error())
		}
		if len(pools) == 1 {
			return pools[0].Key, false, nil
		}
		return choosePool(pools), true, nil
	}
	if x.s.opts.DefaultPool != "" {
		return x.s.opts.DefaultPool, false, nil
	}
	switch len(st.pools) {
	case 0:
		return "", false, errNoEndpoint("the picker serves no pool yet")
	case 1:
		return st.pools[0], false, nil
	}
	for _, p := range st.pools {
		if x.model != "" && x.s.router.ServesModel(p, x.model) {
			return p, false, nil
		}
	}
	if x.model != "" {
		return "", false, errModelNotFound(x.model)
	}
	return st.pools[0], false, nil
}

// answer sends the pick: in BUFFERED mode as a body response carrying the header and body
// mutations; otherwise as the held headers response, then the body in bounded chunks.
func (x *exchange) answer(d *router.Decision, pool string, multi bool, body, newBody []byte, bodyEOS bool) {
	dest := strings.Join(d.Endpoints, ",")
	x.annotateSpan(dest)
	if x.s.log.Enabled(x.ctx, slog.LevelDebug) { // the arguments would allocate even when not logged
		x.s.log.Debug("picked", "request_id", x.hdr.requestID, "pool", pool, "model", x.model,
			"target_model", x.target, "destination", dest)
	}

	ph := &x.pickHdr
	ph.init()
	ph.set(HeaderDestination, dest)
	ph.set(HeaderRequestID, x.hdr.requestID)
	if body != nil && len(newBody) != len(body) {
		ph.set(HeaderContentLength, strconv.Itoa(len(newBody)))
	}
	x.setModelHeaders(ph)
	if x.s.perTry != "" && x.parsed != nil && x.parsed.Stream {
		ph.set(HeaderPerTryTimeout, x.s.perTry)
	}
	mut := &ph.mutation
	x.offerToObserver(ph)
	if multi {
		ph.set(HeaderPool, pool)
	} else if x.hdr.clientPool {
		mut.RemoveHeaders = append(mut.RemoveHeaders, HeaderPool)
	}
	x.injectTrace(mut)
	common := &ph.common
	md := x.s.destinationMetadata(dest)

	if x.headersSent {
		// BUFFERED: the headers phase is over; the body response carries everything.
		if body != nil && !sameBytes(body, newBody) {
			common.BodyMutation = &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: newBody}}
		}
		x.send(&extprocv3.ProcessingResponse{
			Response:        &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{Response: common}},
			DynamicMetadata: md,
		})
		return
	}
	x.headersSent = true
	ph.headers.Response = common
	ph.oneof.RequestHeaders = &ph.headers
	ph.resp.Response, ph.resp.DynamicMetadata = &ph.oneof, md
	x.send(&ph.resp)
	if body == nil {
		return
	}
	x.sendStreamedBody(newBody, bodyEOS, true)
}

// sendStreamedBody sends body back in chunks of at most MaxChunkBytes; the last carries eos.
func (x *exchange) sendStreamedBody(body []byte, eos, request bool) {
	for first := true; first || len(body) > 0; first = false {
		n := min(len(body), MaxChunkBytes)
		chunk := body[:n]
		body = body[n:]
		x.send(x.streamedBody(chunk, eos && len(body) == 0, request))
	}
}

func sameBytes(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0] || string(a) == string(b))
}

// reject ends the exchange with an error response and records it.
func (x *exchange) reject(e *apiError) {
	x.picked = true
	x.rejected = true
	// Until the pool is known to serve the model, the name is whatever the client sent:
	// as a label it would let any client create series without bound.
	model, target := x.model, x.target
	if !x.modelServed {
		model, target = "", ""
	}
	x.s.metrics.errors.WithLabelValues(model, target, x.pool, strconv.Itoa(e.status)).Inc()
	// The model name is routing data, not prompt text; the prompt is never logged.
	x.s.log.Debug("request rejected", "status", e.status, "code", e.code, "model", truncateForEcho(x.model),
		"pool", x.pool, "request_id", x.hdr.requestID)
	if x.spanStart {
		x.span.SetStatus(codes.Error, e.code)
		x.span.SetAttributes(attribute.Int("http.response.status_code", e.status))
	}
	resp := e.immediate()
	retryAfterHeader(resp, x.retryAfter)
	x.send(resp)
}

func (x *exchange) startSpan() {
	ctx := x.ctx
	if x.hdr.traceparent != "" {
		carrier := propagation.MapCarrier{HeaderTraceparent: x.hdr.traceparent}
		if x.hdr.tracestate != "" {
			carrier[HeaderTracestate] = x.hdr.tracestate
		}
		ctx = x.s.prop.Extract(ctx, carrier)
	}
	ctx, x.span = x.s.tracer.Start(ctx, "infergw.pick", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithTimestamp(x.start))
	x.ctx = ctx
	x.spanStart = true
}

func (x *exchange) annotateSpan(dest string) {
	if !x.spanStart || !x.span.IsRecording() {
		return
	}
	x.span.SetAttributes(
		attribute.String("infergw.pool", x.pool),
		attribute.String("infergw.model", truncateForEcho(x.model)),
		attribute.String("infergw.target_model", x.target),
		attribute.String("infergw.destination", dest),
		attribute.String("infergw.request_id", x.hdr.requestID),
		attribute.String("url.path", x.hdr.path),
	)
}

// injectTrace adds the span's traceparent to the request so the backend joins the trace.
func (x *exchange) injectTrace(mut *extprocv3.HeaderMutation) {
	if !trace.SpanContextFromContext(x.ctx).IsValid() {
		return
	}
	carrier := propagation.MapCarrier{}
	x.s.prop.Inject(x.ctx, carrier)
	for k, v := range carrier {
		mut.SetHeaders = append(mut.SetHeaders, setHeader(k, v))
	}
}
