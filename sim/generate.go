package sim

import (
	"bufio"
	"encoding/binary"
	"strconv"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/valyala/fasthttp"
)

// handleGenerate serves /v1/completions and /v1/chat/completions.
func (s *Server) handleGenerate(ctx *fasthttp.RequestCtx, chat bool) {
	s.genReqs.Add(1)
	if s.injectFault(ctx) {
		return
	}
	p, apiErr := parseGenerateRequest(ctx.PostBody(), chat)
	if apiErr != nil {
		s.writeError(ctx, apiErr)
		return
	}
	adapter, ok := s.servesModel(p.model)
	if !ok {
		s.writeError(ctx, modelNotFound(p.model))
		return
	}
	req, apiErr := s.buildRequest(p, adapter)
	if req != nil {
		req.traceClass = traceClassOf(ctx)
	}
	if apiErr != nil {
		s.writeError(ctx, apiErr)
		return
	}
	if err := s.engine.submit(req); err != nil {
		s.writeError(ctx, errShuttingDown())
		return
	}
	// x-sim-model names the model this server actually ran (the base model or an adapter):
	// a gateway may rewrite the response body's model field back to what the client asked
	// for, and tests need to see what was really served.
	ctx.Response.Header.Set("x-sim-model", p.model)
	rs := newResponseShape(s, p, chat)
	if !p.stream {
		s.jsonResponse(ctx, req, rs)
		return
	}
	ctx.SetContentType("text/event-stream; charset=utf-8")
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	// fasthttp runs the writer after this handler returns and sends each Flush as one HTTP
	// chunk; a failed Flush means the client is gone.
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) { s.streamResponse(w, req, rs) })
}

func errShuttingDown() *apiError {
	return &apiError{status: fasthttp.StatusServiceUnavailable, errType: "ServiceUnavailableError",
		message: "the simulator is shutting down"}
}

// buildRequest tokenizes the prompt, applies the context-length rules and decides the output
// length: max_tokens with ignore_eos, else the prompt's deterministic natural length capped by
// max_tokens (or by the remaining context when max_tokens is absent, as in vLLM).
func (s *Server) buildRequest(p *parsedRequest, adapter string) (*request, *apiError) {
	ids := p.promptIDs
	switch {
	case ids == nil && s.tok != nil:
		var err error
		if ids, err = s.tok.Tokens(make([]uint32, 0, len(p.promptText)/3+1), p.body); err != nil {
			return nil, badRequest("tokenize: %v", err)
		}
	case ids == nil:
		ids = tokenize(p.promptText, make([]uint32, 0, len(p.promptText)/3+1))
	}
	if len(ids) == 0 {
		return nil, badRequest("prompt must not be empty")
	}
	limit := s.cfg.MaxModelLen
	if len(ids) >= limit {
		return nil, badRequest("This model's maximum context length is %d tokens. However, your request has %d input tokens. Please reduce the length of the input messages.", limit, len(ids))
	}
	maxTokens := p.maxTokens
	if maxTokens > limit {
		e := badRequest("max_tokens=%d cannot be greater than max_model_len=%d. Please request fewer output tokens. (parameter=max_tokens, value=%d)",
			maxTokens, limit, maxTokens)
		e.param = "max_tokens"
		return nil, e
	}
	if maxTokens < 0 {
		maxTokens = limit - len(ids)
	} else if len(ids)+maxTokens > limit {
		return nil, badRequest("This model's maximum context length is %d tokens. However, you requested %d tokens (%d in the messages, %d in the completion). Please reduce the length of the messages or completion.",
			limit, len(ids)+maxTokens, len(ids), maxTokens)
	}
	r := newRequest()
	r.adapter = adapter
	r.promptLen = len(ids)
	r.tokens = ids
	r.hashes = blockHashes(ids, s.cfg.BlockSize, adapter, make([]uint64, 0, len(ids)/s.cfg.BlockSize))
	seed := promptSeed(ids)
	r.outLen, r.stopAtLimit = maxTokens, true
	if natural := naturalLength(seed); !p.ignoreEOS && natural < maxTokens {
		r.outLen, r.stopAtLimit = natural, false
	}
	r.seed = seed
	r.arrival = time.Now()
	return r, nil
}

func promptSeed(ids []uint32) uint64 {
	d := xxhash.New()
	var buf [4]byte
	for _, id := range ids {
		binary.LittleEndian.PutUint32(buf[:], id)
		_, _ = d.Write(buf[:])
	}
	return d.Sum64()
}

// await blocks until the engine reports progress; false means the sim is stopping.
func (s *Server) await(r *request) (progress, bool) {
	select {
	case <-r.notify:
		return r.snapshot(), true
	case <-s.engine.done:
		return progress{}, false
	}
}

// jsonResponse waits for the whole generation. fasthttp gives a handler no signal when its
// client disconnects, so a non-streamed request always runs to its end.
func (s *Server) jsonResponse(ctx *fasthttp.RequestCtx, r *request, rs *responseShape) {
	var pr progress
	for !pr.finished {
		var ok bool
		if pr, ok = s.await(r); !ok {
			s.writeError(ctx, errShuttingDown())
			return
		}
	}
	var text strings.Builder
	for i := range pr.generated {
		text.WriteString(outputToken(r.seed, i))
	}
	u := usage{PromptTokens: r.promptLen, CompletionTokens: pr.generated,
		TotalTokens: r.promptLen + pr.generated, PromptTokensDetails: promptDetails{CachedTokens: pr.cachedTokens}}
	if rs.chat {
		s.writeJSON(ctx, fasthttp.StatusOK, chatResponse{ID: rs.id, Object: "chat.completion", Created: rs.created, Model: rs.model,
			Choices: []chatChoice{{Message: responseMessage{Role: "assistant", Content: text.String()}, FinishReason: pr.finishReason}},
			Usage:   u})
		return
	}
	s.writeJSON(ctx, fasthttp.StatusOK, completionResponse{ID: rs.id, Object: "text_completion", Created: rs.created, Model: rs.model,
		Choices: []completionChoice{{Text: text.String(), FinishReason: pr.finishReason}}, Usage: u})
}

// streamResponse writes SSE chunks as the engine produces tokens. Tokens produced while the
// previous write was in flight are written together with one flush, so a fast engine costs
// fewer syscalls, while at modelled speeds every step's token arrives on its own. A failed
// flush (client gone) aborts the request so the engine frees its blocks.
func (s *Server) streamResponse(w *bufio.Writer, r *request, rs *responseShape) {
	buf := make([]byte, 0, 1024)
	sent := 0
	for {
		pr, ok := s.await(r)
		if !ok {
			return
		}
		buf = buf[:0]
		if sent == 0 && pr.generated > 0 && rs.chat {
			buf = rs.appendRoleChunk(buf)
		}
		for ; sent < pr.generated; sent++ {
			finish := ""
			if pr.finished && sent == pr.generated-1 {
				finish = pr.finishReason
			}
			buf = rs.appendTokenChunk(buf, outputToken(r.seed, sent), finish)
		}
		if pr.finished {
			if rs.includeUsage {
				buf = rs.appendUsageChunk(buf, r.promptLen, pr.generated, pr.cachedTokens)
			}
			buf = append(buf, "data: [DONE]\n\n"...)
		}
		if len(buf) > 0 {
			if _, err := w.Write(buf); err != nil {
				s.engine.abort(r)
				return
			}
			if err := w.Flush(); err != nil {
				s.engine.abort(r)
				return
			}
		}
		if pr.finished {
			return
		}
	}
}

// responseShape holds the per-response constant parts of every chunk.
type responseShape struct {
	chat         bool
	includeUsage bool
	id           string
	model        string
	created      int64
	head         []byte // `data: {"id":…,"object":…,"created":…,"model":…,"choices":`
}

func newResponseShape(s *Server, p *parsedRequest, chat bool) *responseShape {
	rs := &responseShape{chat: chat, includeUsage: p.includeUsage, model: p.model, created: time.Now().Unix()}
	prefix, object := "cmpl-", "text_completion"
	if chat {
		prefix, object = "chatcmpl-", "chat.completion.chunk"
	}
	rs.id = prefix + s.idPrefix + "-" + strconv.FormatUint(s.nextID.Add(1), 10)
	if !p.stream {
		return rs
	}
	h := append([]byte(nil), `data: {"id":"`...)
	h = append(h, rs.id...)
	h = append(h, `","object":"`...)
	h = append(h, object...)
	h = append(h, `","created":`...)
	h = strconv.AppendInt(h, rs.created, 10)
	h = append(h, `,"model":`...)
	h = appendJSONString(h, rs.model)
	h = append(h, `,"choices":`...)
	rs.head = h
	return rs
}

// tail ends a chunk. vLLM 0.32 writes no "usage" member in the chunks before the usage
// chunk, even with include_usage (OpenAI writes "usage":null there).
func (rs *responseShape) tail(b []byte) []byte {
	return append(b, "}\n\n"...)
}

// appendRoleChunk writes the first chat chunk: the assistant role and an empty content, as
// vLLM sends it.
func (rs *responseShape) appendRoleChunk(b []byte) []byte {
	b = append(b, rs.head...)
	b = append(b, `[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]`...)
	return rs.tail(b)
}

func (rs *responseShape) appendTokenChunk(b []byte, text, finish string) []byte {
	b = append(b, rs.head...)
	if rs.chat {
		b = append(b, `[{"index":0,"delta":{"content":`...)
		b = appendJSONString(b, text)
		b = append(b, `},"logprobs":null,"finish_reason":`...)
	} else {
		b = append(b, `[{"index":0,"text":`...)
		b = appendJSONString(b, text)
		b = append(b, `,"logprobs":null,"finish_reason":`...)
	}
	if finish == "" {
		b = append(b, "null"...)
	} else {
		b = appendJSONString(b, finish)
	}
	if !rs.chat {
		b = append(b, `,"stop_reason":null`...)
	}
	b = append(b, "}]"...)
	return rs.tail(b)
}

// appendUsageChunk writes the final stream_options.include_usage chunk: no choices, usage set.
func (rs *responseShape) appendUsageChunk(b []byte, prompt, completion, cached int) []byte {
	b = append(b, rs.head...)
	b = append(b, `[],"usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt+completion), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(completion), 10)
	b = append(b, `,"prompt_tokens_details":{"cached_tokens":`...)
	b = strconv.AppendInt(b, int64(cached), 10)
	b = append(b, "}}}\n\n"...)
	return b
}

// appendJSONString appends s as a JSON string literal.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c) // UTF-8 passes through; JSON allows it
		}
	}
	return append(b, '"')
}
