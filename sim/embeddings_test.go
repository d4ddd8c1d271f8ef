package sim

import (
	"encoding/base64"
	"math"
	"net/http"
	"strings"
	"testing"
)

type embeddingsAnswer struct {
	Object string `json:"object"`
	Model  string `json:"model"`
	Data   []struct {
		Object    string    `json:"object"`
		Index     int       `json:"index"`
		Embedding []float64 `json:"embedding"`
	} `json:"data"`
	Usage struct {
		PromptTokens int `json:"prompt_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
}

// TestEmbeddingsShapesAndDeterminism: every input shape OpenAI allows is answered with one
// unit vector per input, identical inputs embed identically, different ones differently,
// and usage counts the prompt tokens.
func TestEmbeddingsShapesAndDeterminism(t *testing.T) {
	s := startSim(t, func(c *Config) { c.Model = "bge-small" })
	url := "http://" + s.Addr() + "/v1/embeddings"

	resp := post(t, url, map[string]any{"model": "bge-small", "input": []string{"the cat sat", "the cat sat", "a dog ran"}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var a embeddingsAnswer
	decodeJSON(t, resp, &a)
	if a.Object != "list" || a.Model != "bge-small" || len(a.Data) != 3 {
		t.Fatalf("answer %+v", a)
	}
	for i, d := range a.Data {
		if d.Object != "embedding" || d.Index != i || len(d.Embedding) != defaultEmbeddingDims {
			t.Fatalf("data[%d]: object %q index %d dims %d", i, d.Object, d.Index, len(d.Embedding))
		}
		var norm float64
		for _, v := range d.Embedding {
			norm += v * v
		}
		if math.Abs(norm-1) > 1e-3 {
			t.Errorf("data[%d] has norm² %v, want 1", i, norm)
		}
	}
	if !equalVec(a.Data[0].Embedding, a.Data[1].Embedding) || equalVec(a.Data[0].Embedding, a.Data[2].Embedding) {
		t.Error("identical inputs must embed identically and different inputs differently")
	}
	if a.Usage.PromptTokens < 6 || a.Usage.TotalTokens != a.Usage.PromptTokens {
		t.Errorf("usage %+v", a.Usage)
	}

	for name, input := range map[string]any{"string": "hello", "ids": []int{1, 2, 3}, "id lists": [][]int{{1}, {2, 3}}} {
		resp := post(t, url, map[string]any{"model": "bge-small", "input": input, "dimensions": 8})
		var b embeddingsAnswer
		decodeJSON(t, resp, &b)
		if resp.StatusCode != http.StatusOK || len(b.Data) == 0 || len(b.Data[0].Embedding) != 8 {
			t.Errorf("%s: status %d, %+v", name, resp.StatusCode, b)
		}
	}

	resp = post(t, url, map[string]any{"model": "bge-small", "input": "hello", "encoding_format": "base64"})
	var c struct {
		Data []struct {
			Embedding string `json:"embedding"`
		} `json:"data"`
	}
	decodeJSON(t, resp, &c)
	raw, err := base64.StdEncoding.DecodeString(c.Data[0].Embedding)
	if err != nil || len(raw) != 4*defaultEmbeddingDims {
		t.Errorf("base64 embedding: %d bytes, %v", len(raw), err)
	}
}

// TestEmbeddingsErrors: bad input is a vLLM-shaped 400/404, never a 500, and the number of
// inputs is bounded.
func TestEmbeddingsErrors(t *testing.T) {
	s := startSim(t, func(c *Config) { c.Model = "bge-small"; c.MaxModelLen = 64 })
	url := "http://" + s.Addr() + "/v1/embeddings"
	many := make([]string, maxEmbeddingInputs+1)
	for i := range many {
		many[i] = "x"
	}
	for name, tc := range map[string]struct {
		body   map[string]any
		status int
	}{
		"unknown model":   {map[string]any{"model": "nope", "input": "x"}, 404},
		"no input":        {map[string]any{"model": "bge-small"}, 400},
		"bad input":       {map[string]any{"model": "bge-small", "input": map[string]any{"a": 1}}, 400},
		"empty list":      {map[string]any{"model": "bge-small", "input": []string{}}, 400},
		"too many inputs": {map[string]any{"model": "bge-small", "input": many}, 400},
		"too long":        {map[string]any{"model": "bge-small", "input": strings.Repeat("word ", 100)}, 400},
		"bad dims":        {map[string]any{"model": "bge-small", "input": "x", "dimensions": 0}, 400},
		"bad format":      {map[string]any{"model": "bge-small", "input": "x", "encoding_format": "hex"}, 400},
	} {
		resp := post(t, url, tc.body)
		var e errorBody
		decodeJSON(t, resp, &e)
		if resp.StatusCode != tc.status || e.Error.Code != tc.status || e.Error.Message == "" {
			t.Errorf("%s: status %d, error %+v; want %d", name, resp.StatusCode, e.Error, tc.status)
		}
	}
}

func equalVec(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
