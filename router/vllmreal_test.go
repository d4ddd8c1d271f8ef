package router

import (
	"slices"
	"testing"
)

// TestRealVLLMLoRAState reads expositions saved from a real vLLM 0.32 (CPU build, one
// LoRA adapter "tiny-lora", --max-loras 2; test/vllm) at four moments, through the same
// filter and parser a scrape uses.
func TestRealVLLMLoRAState(t *testing.T) {
	for _, tc := range []struct {
		file                     string
		unknown                  bool
		running, waitingAdapters []string
		maxLoRA                  int
		waiting, runningReqs     float64
		freeSlot                 bool
	}{
		// Before the engine's first step: the family is declared but has no sample. The
		// state is unknown, which counts as a free slot (no adapter is loaded yet).
		{file: "vllm-0.32-cpu-fresh.txt", unknown: true, freeSlot: true},
		// After a LoRA request finished: an old series still lists the adapter; the newest
		// (by value) lists none.
		{file: "vllm-0.32-cpu-lora-idle.txt", maxLoRA: 2, freeSlot: true},
		// One LoRA request running, nothing waiting: vLLM lists the adapter as waiting too.
		{file: "vllm-0.32-cpu-lora-running.txt", running: []string{"tiny-lora"}, maxLoRA: 2, runningReqs: 1, freeSlot: true},
		// 12 LoRA requests, 8 running, 4 waiting: now the waiting list is believed.
		{file: "vllm-0.32-cpu-lora-busy.txt", running: []string{"tiny-lora"}, waitingAdapters: []string{"tiny-lora"},
			maxLoRA: 2, waiting: 4, runningReqs: 8, freeSlot: true},
	} {
		t.Run(tc.file, func(t *testing.T) {
			text := readTestdata(t, tc.file)
			m, err := parseExposition(engineVLLM, string(keepFamilies(nil, []byte(text), engineVLLM.families())))
			if err != nil {
				t.Fatal(err)
			}
			if m.loraUnknown != tc.unknown || !slices.Equal(m.loraRunning, tc.running) ||
				!slices.Equal(m.loraWaiting, tc.waitingAdapters) || m.maxLoRA != tc.maxLoRA {
				t.Errorf("LoRA unknown=%v running=%q waiting=%q max=%d, want %v %q %q %d",
					m.loraUnknown, m.loraRunning, m.loraWaiting, m.maxLoRA, tc.unknown, tc.running, tc.waitingAdapters, tc.maxLoRA)
			}
			if m.waiting != tc.waiting || m.running != tc.runningReqs {
				t.Errorf("queue %v running %v, want %v %v", m.waiting, m.running, tc.waiting, tc.runningReqs)
			}
			if got := hasFreeLoRASlot(m); got != tc.freeSlot {
				t.Errorf("free LoRA slot %v, want %v", got, tc.freeSlot)
			}
			// vLLM's CPU backend: 128-token blocks, 8192 of them in 1 GiB of KV cache.
			if m.blockSize != 128 || m.numGPUBlocks != 8192 {
				t.Errorf("cache config block_size %d num_gpu_blocks %d, want 128 8192", m.blockSize, m.numGPUBlocks)
			}
		})
	}
}

// TestRealVLLMAdapterScores: an adapter request scores "running" (1.0) on the server whose
// real exposition shows the adapter running, and "free slot" (0.8) on a server that has
// not stepped yet (unknown LoRA state), not 0.
func TestRealVLLMAdapterScores(t *testing.T) {
	load := func(file string) *metricsState {
		m, err := parseExposition(engineVLLM, readTestdata(t, file))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	running := staticEndpoint("running:1", *load("vllm-0.32-cpu-lora-running.txt"))
	fresh := staticEndpoint("fresh:1", *load("vllm-0.32-cpu-fresh.txt"))
	pc := ctxFor(&Request{Model: "tiny-lora"}, running, fresh)
	pc.isAdapter = isAdapterRequest(pc)
	if !pc.isAdapter {
		t.Fatal("tiny-lora not recognised as an adapter")
	}
	out := make([]float64, 2)
	scoreLoRAAffinity(pc, out)
	if out[0] != loraScoreRunning || out[1] != loraScoreFreeSlot {
		t.Fatalf("scores %v, want [%v %v] (running; unknown state = free slot)", out, loraScoreRunning, loraScoreFreeSlot)
	}
}
