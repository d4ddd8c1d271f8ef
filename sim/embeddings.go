package sim

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/valyala/fasthttp"
)

// The embeddings API (POST /v1/embeddings) as vLLM's OpenAI server serves it for a pooling
// model: inputs as a string, a list of strings, a token-id list or a list of those; vectors
// as float lists or base64 little-endian float32. The vectors are deterministic (a hash of
// the input seeds them) and unit length, so identical inputs embed identically and a test
// can tell inputs apart; they carry no meaning. The cost is one prefill of every input's
// tokens (StepOverhead + PrefillPerToken per token), outside the generation engine.

const (
	defaultEmbeddingDims = 384
	maxEmbeddingDims     = 4096
	// maxEmbeddingInputs bounds the inputs of one request (OpenAI's own limit).
	maxEmbeddingInputs = 2048
)

type embeddingRequest struct {
	Model          string          `json:"model"`
	Input          json.RawMessage `json:"input"`
	EncodingFormat string          `json:"encoding_format"`
	Dimensions     *int            `json:"dimensions"`
}

type embeddingData struct {
	Object    string `json:"object"`
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"`
}

type embeddingResponse struct {
	ID      string          `json:"id"`
	Object  string          `json:"object"`
	Created int64           `json:"created"`
	Model   string          `json:"model"`
	Data    []embeddingData `json:"data"`
	Usage   struct {
		PromptTokens int `json:"prompt_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
}

// embeddingInput is one input: text, or token ids.
type embeddingInput struct {
	text   string
	tokens []int
	isText bool
}

// parseEmbeddingInputs accepts the four shapes OpenAI's "input" may take.
func parseEmbeddingInputs(raw json.RawMessage) ([]embeddingInput, *apiError) {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []embeddingInput{{text: one, isText: true}}, nil
	}
	var texts []string
	if json.Unmarshal(raw, &texts) == nil {
		out := make([]embeddingInput, len(texts))
		for i, t := range texts {
			out[i] = embeddingInput{text: t, isText: true}
		}
		return out, nil
	}
	var ids []int
	if json.Unmarshal(raw, &ids) == nil {
		return []embeddingInput{{tokens: ids}}, nil
	}
	var idLists [][]int
	if json.Unmarshal(raw, &idLists) == nil {
		out := make([]embeddingInput, len(idLists))
		for i, l := range idLists {
			out[i] = embeddingInput{tokens: l}
		}
		return out, nil
	}
	return nil, badRequest("'input' must be a string, a list of strings, a list of token ids or a list of token-id lists")
}

func (s *Server) handleEmbeddings(ctx *fasthttp.RequestCtx) {
	var req embeddingRequest
	if err := json.Unmarshal(ctx.PostBody(), &req); err != nil {
		s.writeError(ctx, badRequest("invalid JSON body: %v", err))
		return
	}
	if _, ok := s.servesModel(req.Model); !ok {
		s.writeError(ctx, modelNotFound(req.Model))
		return
	}
	if len(req.Input) == 0 {
		s.writeError(ctx, badRequest("'input' is required"))
		return
	}
	inputs, apiErr := parseEmbeddingInputs(req.Input)
	if apiErr != nil {
		s.writeError(ctx, apiErr)
		return
	}
	if len(inputs) == 0 || len(inputs) > maxEmbeddingInputs {
		s.writeError(ctx, badRequest("'input' must hold 1 to %d inputs, not %d", maxEmbeddingInputs, len(inputs)))
		return
	}
	dims := defaultEmbeddingDims
	if req.Dimensions != nil {
		if *req.Dimensions < 1 || *req.Dimensions > maxEmbeddingDims {
			s.writeError(ctx, badRequest("'dimensions' must be in [1, %d]", maxEmbeddingDims))
			return
		}
		dims = *req.Dimensions
	}
	b64 := false
	switch req.EncodingFormat {
	case "", "float":
	case "base64":
		b64 = true
	default:
		s.writeError(ctx, badRequest("'encoding_format' must be \"float\" or \"base64\""))
		return
	}
	resp := embeddingResponse{ID: "embd-" + s.cfg.Name, Object: "list", Created: time.Now().Unix(), Model: req.Model}
	var ids []uint32
	total := 0
	for i, in := range inputs {
		var seed uint64
		n := len(in.tokens)
		if in.isText {
			ids = tokenize(in.text, ids[:0])
			n = len(ids)
			seed = xxhash.Sum64String(in.text)
		} else {
			var buf [8]byte
			h := xxhash.New()
			for _, t := range in.tokens {
				binary.LittleEndian.PutUint64(buf[:], uint64(t)) //nolint:gosec // G115: bits of a token id, for hashing
				_, _ = h.Write(buf[:])
			}
			seed = h.Sum64()
		}
		if n > s.cfg.MaxModelLen {
			s.writeError(ctx, badRequest("input %d has %d tokens, more than the maximum context length of %d", i, n, s.cfg.MaxModelLen))
			return
		}
		total += n
		vec := embeddingVector(seed, dims)
		var emb any = vec
		if b64 {
			emb = encodeFloat32s(vec)
		}
		resp.Data = append(resp.Data, embeddingData{Object: "embedding", Index: i, Embedding: emb})
	}
	resp.Usage.PromptTokens, resp.Usage.TotalTokens = total, total
	cost := s.cfg.StepOverhead + time.Duration(total)*s.cfg.PrefillPerToken
	time.Sleep(time.Duration(float64(cost) * s.cfg.TimeScale))
	ctx.Response.Header.Set("x-sim-model", req.Model)
	s.writeJSON(ctx, fasthttp.StatusOK, resp)
}

// embeddingVector is a unit vector of dims components drawn from seed (splitmix64).
func embeddingVector(seed uint64, dims int) []float32 {
	vec := make([]float32, dims)
	var norm float64
	x := seed
	for i := range vec {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
		v := float64(z>>11)/float64(1<<53)*2 - 1
		vec[i] = float32(v)
		norm += v * v
	}
	if norm > 0 {
		inv := 1 / math.Sqrt(norm)
		for i := range vec {
			vec[i] = float32(float64(vec[i]) * inv)
		}
	}
	return vec
}

func encodeFloat32s(vec []float32) string {
	buf := make([]byte, 4*len(vec))
	for i, v := range vec {
		binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
	}
	return base64.StdEncoding.EncodeToString(buf)
}
