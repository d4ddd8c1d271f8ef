package sim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// apiError is an error answered the way vLLM's OpenAI server answers it:
// {"error":{"message":…,"type":…,"param":…,"code":<HTTP status>}}.
type apiError struct {
	status  int
	errType string
	message string
	param   string // "" is written as null
}

func (e *apiError) Error() string { return e.message }

func badRequest(format string, args ...any) *apiError {
	return &apiError{status: 400, errType: "BadRequestError", message: fmt.Sprintf(format, args...)}
}

func modelNotFound(model string) *apiError {
	return &apiError{status: 404, errType: "NotFoundError", param: "model",
		message: fmt.Sprintf("The model `%s` does not exist.", model)}
}

type errorBody struct {
	Error errorInfo `json:"error"`
}

type errorInfo struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    int     `json:"code"`
}

func (e *apiError) body() errorBody {
	info := errorInfo{Message: e.message, Type: e.errType, Code: e.status}
	if e.param != "" {
		info.Param = &e.param
	}
	return errorBody{Error: info}
}

// generateRequest is the subset of the OpenAI completions / chat completions body that the
// simulator honours; other fields are accepted and ignored, as vLLM ignores unknown ones.
type generateRequest struct {
	Model               string          `json:"model"`
	Prompt              json.RawMessage `json:"prompt"`
	Messages            []chatMessage   `json:"messages"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Stream              bool            `json:"stream"`
	StreamOptions       *streamOptions  `json:"stream_options"`
	IgnoreEOS           bool            `json:"ignore_eos"`
	N                   *int            `json:"n"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

type contentPart struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// parsedRequest is a validated generation request.
type parsedRequest struct {
	body         []byte // the raw body (valid during the handler)
	model        string
	promptText   string   // text to tokenize, or
	promptIDs    []uint32 // token ids given directly (completions only)
	maxTokens    int      // -1: not set
	stream       bool
	includeUsage bool
	ignoreEOS    bool
}

// parseGenerateRequest decodes and validates a completions (chat=false) or chat completions
// body. Errors are 400s that say what is wrong.
func parseGenerateRequest(body []byte, chat bool) (*parsedRequest, *apiError) {
	var req generateRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&req); err != nil {
		return nil, badRequest("invalid JSON body: %v", err)
	}
	if dec.More() {
		return nil, badRequest("invalid JSON body: trailing data after the JSON object")
	}
	if req.Model == "" {
		return nil, &apiError{status: 400, errType: "BadRequestError", param: "model",
			message: "field `model` is required"}
	}
	p := &parsedRequest{body: body, model: req.Model, maxTokens: -1, stream: req.Stream, ignoreEOS: req.IgnoreEOS}
	if req.StreamOptions != nil {
		if !req.Stream {
			return nil, badRequest("Stream options can only be defined when `stream=True`.")
		}
		p.includeUsage = req.StreamOptions.IncludeUsage
	}
	if req.N != nil && *req.N != 1 {
		return nil, badRequest("the simulator supports only n=1, got n=%d", *req.N)
	}
	switch {
	case req.MaxCompletionTokens != nil:
		p.maxTokens = *req.MaxCompletionTokens
	case req.MaxTokens != nil:
		p.maxTokens = *req.MaxTokens
	}
	if p.maxTokens == 0 || p.maxTokens < -1 {
		e := badRequest("max_tokens must be at least 1, got %d.", p.maxTokens)
		e.param = "max_tokens"
		return nil, e
	}
	var err *apiError
	if chat {
		p.promptText, err = chatPrompt(req.Messages)
	} else {
		err = completionPrompt(req.Prompt, p)
	}
	if err != nil {
		return nil, err
	}
	return p, nil
}

func completionPrompt(raw json.RawMessage, p *parsedRequest) *apiError {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return badRequest("field `prompt` is required")
	}
	var text string
	if json.Unmarshal(raw, &text) == nil {
		p.promptText = text
		return nil
	}
	var texts []string
	if json.Unmarshal(raw, &texts) == nil {
		if len(texts) != 1 {
			return badRequest("the simulator supports exactly one prompt per request, got %d", len(texts))
		}
		p.promptText = texts[0]
		return nil
	}
	var ids []int64
	if json.Unmarshal(raw, &ids) == nil {
		if len(ids) == 0 {
			return badRequest("prompt must not be empty")
		}
		p.promptIDs = make([]uint32, len(ids))
		for i, id := range ids {
			if id < 0 || id >= vocabSize {
				return badRequest("token id %d in prompt is out of vocabulary [0, %d)", id, vocabSize)
			}
			p.promptIDs[i] = uint32(id)
		}
		return nil
	}
	return badRequest("prompt must be a string, a list of one string or a list of token ids")
}

// chatPrompt renders messages with a Llama-3-like chat template, so that a conversation that
// grows turn by turn keeps a stable, cacheable prefix.
func chatPrompt(msgs []chatMessage) (string, *apiError) {
	if len(msgs) == 0 {
		return "", badRequest("field `messages` must be a non-empty list")
	}
	var b strings.Builder
	for i, m := range msgs {
		if m.Role == "" {
			return "", badRequest("messages[%d].role is required", i)
		}
		b.WriteString("<|start_header_id|>")
		b.WriteString(m.Role)
		b.WriteString("<|end_header_id|>\n\n")
		if err := appendContent(&b, m.Content); err != nil {
			return "", badRequest("messages[%d].content: %s", i, err.message)
		}
		b.WriteString("<|eot_id|>")
	}
	b.WriteString("<|start_header_id|>assistant<|end_header_id|>\n\n")
	return b.String(), nil
}

func appendContent(b *strings.Builder, raw json.RawMessage) *apiError {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var text string
	if json.Unmarshal(raw, &text) == nil {
		b.WriteString(text)
		return nil
	}
	var parts []contentPart
	if err := json.Unmarshal(raw, &parts); err != nil {
		return badRequest("must be a string or a list of content parts")
	}
	for _, part := range parts {
		if part.Type != "text" {
			return badRequest("content part type %q is not supported by the simulator", part.Type)
		}
		b.WriteString(part.Text)
	}
	return nil
}

// usage is OpenAI's usage object with vLLM's prompt_tokens_details.
type usage struct {
	PromptTokens        int           `json:"prompt_tokens"`
	TotalTokens         int           `json:"total_tokens"`
	CompletionTokens    int           `json:"completion_tokens"`
	PromptTokensDetails promptDetails `json:"prompt_tokens_details"`
}

type promptDetails struct {
	CachedTokens int `json:"cached_tokens"`
}

type chatResponse struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   usage        `json:"usage"`
}

type chatChoice struct {
	Index        int             `json:"index"`
	Message      responseMessage `json:"message"`
	Logprobs     *struct{}       `json:"logprobs"`
	FinishReason string          `json:"finish_reason"`
}

type responseMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type completionResponse struct {
	ID      string             `json:"id"`
	Object  string             `json:"object"`
	Created int64              `json:"created"`
	Model   string             `json:"model"`
	Choices []completionChoice `json:"choices"`
	Usage   usage              `json:"usage"`
}

type completionChoice struct {
	Index        int       `json:"index"`
	Text         string    `json:"text"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason string    `json:"finish_reason"`
}

type modelList struct {
	Object string      `json:"object"`
	Data   []modelCard `json:"data"`
}

type modelCard struct {
	ID          string   `json:"id"`
	Object      string   `json:"object"`
	Created     int64    `json:"created"`
	OwnedBy     string   `json:"owned_by"`
	Root        string   `json:"root"`
	Parent      *string  `json:"parent"`
	MaxModelLen int      `json:"max_model_len"`
	Permission  []string `json:"permission"`
}

type loadLoRARequest struct {
	LoRAName string `json:"lora_name"`
	LoRAPath string `json:"lora_path"`
}
