package sim

import (
	"errors"
	"fmt"
	"time"
)

// Config describes one simulated vLLM instance: its API identity, its engine limits and the
// cost model that turns each engine step into time.
type Config struct {
	// Name is returned in the x-sim-instance response header; defaults to the listen address.
	Name string
	// Addr is the listen address (host:port; port 0 picks a free port).
	Addr string
	// Model is the served base model name.
	Model string
	// LoRAAdapters are adapters registered at start (served as models with parent = Model).
	LoRAAdapters []string

	// MaxLoRAs is the number of adapter slots on the "GPU" (vLLM --max-loras).
	MaxLoRAs int
	// MaxNumSeqs bounds the running batch (vLLM --max-num-seqs).
	MaxNumSeqs int
	// KVBlocks is the number of KV-cache blocks (vLLM num_gpu_blocks).
	KVBlocks int
	// BlockSize is the number of tokens per KV block (vLLM --block-size).
	BlockSize int
	// MaxNumBatchedTokens is the per-step token budget shared by decode and chunked prefill
	// (vLLM --max-num-batched-tokens).
	MaxNumBatchedTokens int
	// MaxModelLen bounds prompt + output tokens of one request (vLLM --max-model-len).
	MaxModelLen int

	// Cost model: one engine step takes
	//   StepOverhead + PrefillPerToken*prefill tokens + DecodePerSeq*decoding sequences
	//   + LoRALoadCost*adapters loaded in that step,
	// all multiplied by TimeScale.
	StepOverhead    time.Duration
	PrefillPerToken time.Duration
	DecodePerSeq    time.Duration
	LoRALoadCost    time.Duration
	// TimeScale multiplies every modelled duration (0.01 = 100x faster than modelled).
	TimeScale float64

	// MaxBodyBytes bounds a request body; larger bodies get 413.
	MaxBodyBytes int64

	// Faults injected from the start (off by default; Server.SetFaults changes them).
	Faults Faults

	// KVEvents publishes the KV cache's events as vLLM's --kv-events-config does.
	KVEvents KVEventsConfig
	// Tokenizer, when set, is a directory with a Hugging Face tokenizer.json (and
	// tokenizer_config.json with the chat template): prompts are tokenized as vLLM would
	// with that model, instead of by the sim's built-in approximation. Precise prefix
	// routing needs the picker and the model servers to agree on tokens.
	Tokenizer string
}

// DefaultConfig resembles an 8B model (e.g. Llama-3.1-8B, bf16) on one H100-class GPU; see the
// README for where each number comes from.
func DefaultConfig() Config {
	return Config{
		Addr:                "127.0.0.1:8000",
		Model:               "meta-llama/Llama-3.1-8B-Instruct",
		MaxLoRAs:            4,
		MaxNumSeqs:          256,
		KVBlocks:            4096,
		BlockSize:           16,
		MaxNumBatchedTokens: 2048,
		MaxModelLen:         8192,
		StepOverhead:        5 * time.Millisecond,
		PrefillPerToken:     60 * time.Microsecond,
		DecodePerSeq:        100 * time.Microsecond,
		LoRALoadCost:        50 * time.Millisecond,
		TimeScale:           1,
		MaxBodyBytes:        16 << 20,
	}
}

// validate reports the first unusable setting.
func (c *Config) validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.Model != "", "model must not be empty")
	check(c.MaxLoRAs >= 1, "max-loras must be >= 1, got %d", c.MaxLoRAs)
	check(c.MaxNumSeqs >= 1, "max-num-seqs must be >= 1, got %d", c.MaxNumSeqs)
	check(c.KVBlocks >= 1, "kv-blocks must be >= 1, got %d", c.KVBlocks)
	check(c.BlockSize >= 1, "block-size must be >= 1, got %d", c.BlockSize)
	check(c.MaxNumBatchedTokens >= 1, "max-num-batched-tokens must be >= 1, got %d", c.MaxNumBatchedTokens)
	check(c.MaxModelLen >= 2, "max-model-len must be >= 2, got %d", c.MaxModelLen)
	check(c.KVBlocks*c.BlockSize >= c.MaxModelLen,
		"kv cache (%d blocks x %d tokens) cannot hold one request of max-model-len %d",
		c.KVBlocks, c.BlockSize, c.MaxModelLen)
	check(c.StepOverhead >= 0 && c.PrefillPerToken >= 0 && c.DecodePerSeq >= 0 && c.LoRALoadCost >= 0,
		"cost model durations must not be negative")
	check(c.TimeScale > 0, "time-scale must be > 0, got %g", c.TimeScale)
	check(c.MaxBodyBytes > 0, "max-body-bytes must be > 0, got %d", c.MaxBodyBytes)
	if err := c.Faults.Validate(); err != nil {
		errs = append(errs, err)
	}
	for _, a := range c.LoRAAdapters {
		check(a != "" && a != c.Model, "invalid lora adapter name %q", a)
	}
	return errors.Join(errs...)
}

// scaled converts a modelled duration to wall time.
func (c *Config) scaled(d time.Duration) time.Duration {
	return time.Duration(float64(d) * c.TimeScale)
}
