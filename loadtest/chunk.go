package loadtest

// usage is the OpenAI usage object (also sent as the last chunk with include_usage).
type usage struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	PromptTokensDetails *struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
}

// chunkInfo is what one chunk contributes to a request's measures.
type chunkInfo struct {
	contentBytes int // bytes of generated text (0 for role-only, empty or usage-only chunks)
	hasUsage     bool
	usage        usage
	errMsg       string
}
