package loadtest

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// shareGPTItem is one usable conversation: its first human turn as the prompt and the length
// of the first reply as the output length, the way serving benchmarks sample ShareGPT.
type shareGPTItem struct {
	prompt       string
	promptTokens int
	outputTokens int
}

type shareGPTRecord struct {
	Conversations []struct {
		From  string `json:"from"`
		Value string `json:"value"`
	} `json:"conversations"`
}

func loadShareGPT(path string) ([]shareGPTItem, error) {
	if path == "" {
		return nil, fmt.Errorf("workload sharegpt: no file given (--sharegpt FILE)")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("workload sharegpt: %w", err)
	}
	defer f.Close()
	items, err := parseShareGPT(f)
	if err != nil {
		return nil, fmt.Errorf("workload sharegpt %s: %w", path, err)
	}
	return items, nil
}

// parseShareGPT reads a ShareGPT JSON array. Conversations without a human turn followed by
// a gpt turn, or with an empty one, are skipped.
func parseShareGPT(r io.Reader) ([]shareGPTItem, error) {
	var recs []shareGPTRecord
	if err := json.NewDecoder(r).Decode(&recs); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	var out []shareGPTItem
	for _, rec := range recs {
		c := rec.Conversations
		if len(c) < 2 || !isHuman(c[0].From) || !isGPT(c[1].From) {
			continue
		}
		pt, ot := wordCount(c[0].Value), wordCount(c[1].Value)
		if pt == 0 || ot == 0 {
			continue
		}
		out = append(out, shareGPTItem{prompt: c[0].Value, promptTokens: pt, outputTokens: ot})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no usable conversation (want a human turn followed by a gpt turn)")
	}
	return out, nil
}

func isHuman(from string) bool { return from == "human" || from == "user" }
func isGPT(from string) bool   { return from == "gpt" || from == "assistant" || from == "chatgpt" }
