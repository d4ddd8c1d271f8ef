package loadtest

import (
	"encoding/json"
	"fmt"
)

// The encoding/json decoder below is the reference that scanChunk is fuzzed against.

// streamChunk is the part of an OpenAI completion / chat-completion chunk (or a whole
// non-streamed response) that the load tester needs. Both shapes are covered: completions
// carry `choices[].text`, chat carries `choices[].delta.content` (streamed) or
// `choices[].message.content` (not streamed).
type streamChunk struct {
	Choices []struct {
		Text  string `json:"text"`
		Delta struct {
			Content          string `json:"content"`
			ReasoningContent string `json:"reasoning_content"`
		} `json:"delta"`
		Message struct {
			Content string `json:"content"`
		} `json:"message"`
	} `json:"choices"`
	Usage *usage    `json:"usage"`
	Error *apiError `json:"error"`
}

type apiError struct {
	Message string `json:"message"`
	Type    string `json:"type"`
}

// parseChunk decodes one `data:` payload. It never panics on bad input.
func parseChunk(data []byte, c *streamChunk) (chunkInfo, error) {
	// Reuse the choices' backing array, zeroed: encoding/json decodes into existing elements
	// without clearing them, so a stale field of the previous chunk would leak through.
	choices := c.Choices[:cap(c.Choices)]
	clear(choices)
	*c = streamChunk{Choices: choices[:0]}
	if err := json.Unmarshal(data, c); err != nil {
		return chunkInfo{}, fmt.Errorf("decode chunk: %w", err)
	}
	var ci chunkInfo
	for i := range c.Choices {
		ch := &c.Choices[i]
		ci.contentBytes += len(ch.Text) + len(ch.Delta.Content) + len(ch.Delta.ReasoningContent) + len(ch.Message.Content)
	}
	if c.Usage != nil {
		ci.hasUsage = true
		ci.usage = *c.Usage
	}
	if c.Error != nil {
		ci.errMsg = c.Error.Message
		if ci.errMsg == "" {
			ci.errMsg = c.Error.Type
		}
		if ci.errMsg == "" {
			ci.errMsg = "error event"
		}
	}
	return ci, nil
}
