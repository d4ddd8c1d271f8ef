package main

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
)

// heavyTail describes the mixed-length workload: prompt and answer lengths (in words, ~1
// token each for the load tester) drawn from log-normal distributions, whose long right
// tail is the shape of real chat traffic (ShareGPT, LMSYS-Chat: a median of a few hundred
// tokens and a tail of several thousand).
type heavyTail struct {
	Conversations int     `json:"conversations"`
	PromptMedian  float64 `json:"prompt_median_words"`
	PromptSigma   float64 `json:"prompt_sigma"`
	PromptMax     int     `json:"prompt_max_words"`
	OutputMedian  float64 `json:"output_median_words"`
	OutputSigma   float64 `json:"output_sigma"`
	OutputMax     int     `json:"output_max_words"`
}

// words the generated conversations are made of; distinct from the load tester's own list
// only so that the file reads as a dataset, not as a copy.
var datasetWords = strings.Fields(`model request token answer system user prompt cache batch queue
engine server route policy gateway cluster pod kernel memory block prefix adapter stream latency
throughput question detail summary context document section table value result error metric
time second minute hour day week month year world city river mountain forest ocean island
red green blue small large quick slow early late bright dark warm cold soft hard open close`)

// lognormal draws exp(N(ln median, sigma)), clamped to [1, max].
func lognormal(rng *rand.Rand, median, sigma float64, maxV int) int {
	v := math.Exp(math.Log(median) + sigma*rng.NormFloat64())
	return int(max(1, min(math.Round(v), float64(maxV))))
}

func randomText(rng *rand.Rand, n int) string {
	var b strings.Builder
	b.Grow(n * 7)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(datasetWords[rng.IntN(len(datasetWords))])
	}
	return b.String()
}

type shareGPTTurn struct {
	From  string `json:"from"`
	Value string `json:"value"`
}

type shareGPTRecord struct {
	ID            string         `json:"id"`
	Conversations []shareGPTTurn `json:"conversations"`
}

// writeHeavyTailDataset writes a seeded ShareGPT-format file the load tester's sharegpt
// workload reads: the first human turn is the prompt and the gpt turn's word count becomes
// max_tokens.
func writeHeavyTailDataset(path string, h heavyTail, seed uint64) error {
	if h.Conversations < 1 || h.PromptMedian < 1 || h.OutputMedian < 1 || h.PromptMax < 1 || h.OutputMax < 1 {
		return fmt.Errorf("heavy-tail dataset: conversations, medians and maxima must be >= 1: %+v", h)
	}
	rng := rand.New(rand.NewPCG(seed, 0x6a09e667f3bcc909))
	recs := make([]shareGPTRecord, h.Conversations)
	for i := range recs {
		p := lognormal(rng, h.PromptMedian, h.PromptSigma, h.PromptMax)
		o := lognormal(rng, h.OutputMedian, h.OutputSigma, h.OutputMax)
		recs[i] = shareGPTRecord{ID: fmt.Sprintf("bench-%d", i), Conversations: []shareGPTTurn{
			{From: "human", Value: randomText(rng, p)},
			{From: "gpt", Value: randomText(rng, o)},
		}}
	}
	b, err := json.Marshal(recs)
	if err != nil {
		return fmt.Errorf("heavy-tail dataset: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("heavy-tail dataset: %w", err)
	}
	return nil
}
