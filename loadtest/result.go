package loadtest

import "time"

// Result is the outcome of one request; it is what `--out json` writes per line.
type Result struct {
	Seq      int64  `json:"seq"`
	Model    string `json:"model"`
	Endpoint string `json:"endpoint,omitempty"`
	Status   int    `json:"status"`
	// Error is "" on success, else a class: "http_503", "transport", "timeout", "stream",
	// "decode", "interrupted".
	Error   string `json:"error,omitempty"`
	Warmup  bool   `json:"warmup,omitempty"`
	Session int    `json:"session,omitempty"`
	Turn    int    `json:"turn,omitempty"`
	// StartMs is the actual send time, ms since the run start; LagMs is how late that was
	// against the open-loop schedule (0 in closed loop).
	StartMs float64 `json:"start_ms"`
	LagMs   float64 `json:"lag_ms"`
	TTFBMs  float64 `json:"ttfb_ms"`
	TTFTMs  float64 `json:"ttft_ms,omitempty"`
	E2EMs   float64 `json:"e2e_ms"`
	TPOTMs  float64 `json:"tpot_ms,omitempty"`
	// Token counts: from usage when the server sent it, else output = content chunks.
	PromptTokens  int `json:"prompt_tokens"`
	OutputTokens  int `json:"output_tokens"`
	CachedTokens  int `json:"cached_tokens"`
	ContentChunks int `json:"content_chunks"`
	// Proto is the HTTP version the response came over ("HTTP/1.1", "HTTP/2.0").
	Proto string `json:"proto,omitempty"`
	// UsageReported tells whether token counts came from the server's usage.
	UsageReported bool `json:"usage_reported"`

	sent time.Time
	open bool // started by the open-loop schedule (LagMs is meaningful)
	// itl holds, per content chunk after the first, the gap since the previous content
	// chunk and the tokens it carried; filled by the client, consumed by the collector.
	itl []chunkGap
}

type chunkGap struct {
	gap    time.Duration
	tokens int
}

func (r *Result) ok() bool { return r.Error == "" }
