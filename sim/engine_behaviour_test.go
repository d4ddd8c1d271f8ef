package sim

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// A request sharing a long prefix with an earlier one reuses its KV blocks: lower TTFT and
// cached_tokens > 0.
func TestSharedPrefixLowersTTFT(t *testing.T) {
	s := startSim(t, func(c *Config) { c.TimeScale = 1 })
	prefix := words(1500, "p")
	first := stream(t, s, "/v1/completions", map[string]any{
		"model": s.cfg.Model, "prompt": prefix + "first question", "max_tokens": 2, "ignore_eos": true})
	second := stream(t, s, "/v1/completions", map[string]any{
		"model": s.cfg.Model, "prompt": prefix + "second question", "max_tokens": 2, "ignore_eos": true})
	if first.cachedTokens() != 0 {
		t.Errorf("first request cached_tokens = %d, want 0", first.cachedTokens())
	}
	if second.cachedTokens() <= 1000 {
		t.Errorf("second request cached_tokens = %d, want > 1000 (shared prefix)", second.cachedTokens())
	}
	// Modelled: ~2900 prompt tokens of prefill (~180 ms) vs the last partial blocks (~6 ms).
	if second.firstToken*3 > first.firstToken {
		t.Errorf("TTFT with cached prefix %v is not well below TTFT without %v", second.firstToken, first.firstToken)
	}
	t.Logf("TTFT cold %v, warm %v, cached tokens %d", first.firstToken, second.firstToken, second.cachedTokens())
	fams := scrape(t, s)
	if hits := metricValue(t, fams, "vllm:prefix_cache_hits_total"); hits != float64(second.cachedTokens()) {
		t.Errorf("prefix_cache_hits_total = %v, want %d", hits, second.cachedTokens())
	}
}

// Once max-num-seqs sequences run, later requests queue and their TTFT grows with their place
// in the queue.
func TestTTFTGrowsWithQueue(t *testing.T) {
	s := startSim(t, func(c *Config) { c.MaxNumSeqs = 2; c.TimeScale = 1 })
	const n = 8
	results := make([]*streamResult, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = stream(t, s, "/v1/completions", map[string]any{
				"model": s.cfg.Model, "prompt": words(20, string(rune('a'+i))), "max_tokens": 40, "ignore_eos": true})
		}()
	}
	sawWaiting := 0.0
	for range 20 {
		sawWaiting = max(sawWaiting, metricValue(t, scrape(t, s), "vllm:num_requests_waiting"))
		time.Sleep(5 * time.Millisecond)
	}
	wg.Wait()
	ttft := make([]time.Duration, n)
	for i, r := range results {
		ttft[i] = r.firstToken
	}
	slices.Sort(ttft)
	t.Logf("TTFTs, sorted: %v", ttft)
	// All 8 arrive together; two run at a time for 40 steps (~5.2 ms each, ~210 ms a round),
	// so the k-th pair in the queue waits k rounds: the sorted TTFTs form four clusters.
	const round = 40 * 5200 * time.Microsecond
	for k := 1; k < n/2; k++ {
		if gap := ttft[2*k] - ttft[2*k-1]; gap < round/2 {
			t.Errorf("queue position %d: TTFT %v is only %v above position %d's, want about one round (%v)",
				2*k, ttft[2*k], gap, 2*k-1, round)
		}
	}
	if ttft[n-2] < 3*ttft[1] {
		t.Errorf("TTFT at the back of the queue %v is not well above the front's %v", ttft[n-2], ttft[1])
	}
	if sawWaiting < 2 {
		t.Errorf("vllm:num_requests_waiting peaked at %v with 8 requests and max-num-seqs 2", sawWaiting)
	}
}

// KV usage rises while requests hold blocks and falls back to 0 when they finish.
func TestKVUsageRisesAndFalls(t *testing.T) {
	s := startSim(t, func(c *Config) { c.KVBlocks = 1024; c.MaxModelLen = 4096; c.TimeScale = 0.2 })
	idle := scrape(t, s)
	if u := metricValue(t, idle, "vllm:kv_cache_usage_perc"); u != 0 {
		t.Fatalf("idle kv usage = %v, want 0", u)
	}
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream(t, s, "/v1/completions", map[string]any{
				"model": s.cfg.Model, "prompt": words(1000, string(rune('k'+i))), "max_tokens": 40, "ignore_eos": true})
		}()
	}
	peak, peakRunning := 0.0, 0.0
	for range 40 {
		fams := scrape(t, s)
		peak = max(peak, metricValue(t, fams, "vllm:kv_cache_usage_perc"))
		peakRunning = max(peakRunning, metricValue(t, fams, "vllm:num_requests_running"))
		time.Sleep(5 * time.Millisecond)
	}
	wg.Wait()
	after := scrape(t, s)
	if peak < 0.1 {
		t.Errorf("peak kv usage %v under load, want >= 0.1", peak)
	}
	if peakRunning < 2 {
		t.Errorf("peak running %v, want >= 2", peakRunning)
	}
	if u := metricValue(t, after, "vllm:kv_cache_usage_perc"); u != 0 {
		t.Errorf("kv usage after load = %v, want 0", u)
	}
	if r := metricValue(t, after, "vllm:num_requests_running"); r != 0 {
		t.Errorf("running after load = %v, want 0", r)
	}
	t.Logf("peak kv usage %.3f, peak running %v", peak, peakRunning)
}

// The first request for an adapter pays the load cost; the next one does not. With one slot,
// a request for another adapter waits while the first adapter is busy.
func TestLoRALoadCostAndSlots(t *testing.T) {
	s := startSim(t, func(c *Config) {
		c.LoRAAdapters = []string{"sql", "chat"}
		c.MaxLoRAs = 1
		c.LoRALoadCost = 400 * time.Millisecond
		c.TimeScale = 0.25
	})
	body := func(model string, tokens int) map[string]any {
		return map[string]any{"model": model, "prompt": "select all users", "max_tokens": tokens, "ignore_eos": true}
	}
	cold := stream(t, s, "/v1/completions", body("sql", 2))
	warm := stream(t, s, "/v1/completions", body("sql", 2))
	t.Logf("adapter TTFT cold %v, warm %v", cold.firstToken, warm.firstToken)
	if cold.firstToken < 80*time.Millisecond { // 400 ms * 0.25 = 100 ms modelled
		t.Errorf("cold adapter TTFT %v does not include the load cost", cold.firstToken)
	}
	if warm.firstToken*3 > cold.firstToken {
		t.Errorf("warm adapter TTFT %v is not well below cold %v", warm.firstToken, cold.firstToken)
	}

	// sql runs a long request; chat must wait for the only slot.
	var wg sync.WaitGroup
	wg.Add(1)
	var long *streamResult
	go func() { defer wg.Done(); long = stream(t, s, "/v1/completions", body("sql", 200)) }()
	time.Sleep(30 * time.Millisecond)
	waitingSeen := false
	wg.Add(1)
	var other *streamResult
	go func() { defer wg.Done(); other = stream(t, s, "/v1/completions", body("chat", 2)) }()
	for range 30 {
		fams := scrape(t, s)
		for _, m := range fams["vllm:lora_requests_info"].GetMetric() {
			// vLLM lists every active adapter as waiting, the running one included.
			if hasLabels(m, "waiting_lora_adapters", "chat,sql", "running_lora_adapters", "sql", "max_lora", "1") {
				waitingSeen = true
			}
		}
		if waitingSeen {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	wg.Wait()
	if !waitingSeen {
		t.Errorf("lora_requests_info never showed chat waiting while sql ran")
	}
	if longEnd := long.start.Add(long.arrivals[len(long.arrivals)-1]); other.start.Add(other.firstToken).Before(longEnd) {
		t.Errorf("chat got its first token before the sql request finished, despite max-loras=1")
	}
}

// Streamed tokens arrive one step apart, not in one burst.
func TestStreamingChunksSpreadInTime(t *testing.T) {
	s := startSim(t, func(c *Config) { c.TimeScale = 1 })
	res := stream(t, s, "/v1/chat/completions", map[string]any{
		"model": s.cfg.Model, "messages": []map[string]any{{"role": "user", "content": "tell me a story"}},
		"max_tokens": 20, "ignore_eos": true})
	if len(res.arrivals) != 20 {
		t.Fatalf("got %d content chunks, want 20", len(res.arrivals))
	}
	spread := res.arrivals[19] - res.arrivals[0]
	// 19 decode steps of ~5.1 ms each are ~97 ms.
	if spread < 40*time.Millisecond {
		t.Errorf("chunks arrived within %v, want them spread over ~100 ms", spread)
	}
	distinct := 1
	for i := 1; i < len(res.arrivals); i++ {
		if res.arrivals[i]-res.arrivals[i-1] > time.Millisecond {
			distinct++
		}
	}
	if distinct < 10 {
		t.Errorf("only %d of 20 chunks arrived separately: %v", distinct, res.arrivals)
	}
	if res.contentType != "text/event-stream; charset=utf-8" || !res.done {
		t.Errorf("content type %q, [DONE] seen %v", res.contentType, res.done)
	}
}

// When blocks run out, running sequences are preempted and recomputed, and every request
// still completes with all its tokens.
func TestPreemptionUnderKVPressure(t *testing.T) {
	// Time scale 0.2: each request decodes for ~150 ms, so the four overlap even when a
	// busy machine (make test runs packages in parallel) delays some of them by tens of
	// milliseconds; at 0.01 one lasted ~8 ms and they could run one after another, with
	// nothing to preempt.
	s := startSim(t, func(c *Config) { c.KVBlocks = 24; c.MaxModelLen = 384; c.TimeScale = 0.2 })
	const n = 4
	results := make([]*streamResult, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = stream(t, s, "/v1/completions", map[string]any{
				"model": s.cfg.Model, "prompt": words(60, string(rune('q'+i))), "max_tokens": 150, "ignore_eos": true})
		}()
	}
	wg.Wait()
	for i, r := range results {
		if len(r.arrivals) != 150 || r.finish != "length" {
			t.Errorf("request %d: %d tokens, finish %q; want 150, length", i, len(r.arrivals), r.finish)
		}
	}
	fams := scrape(t, s)
	if p := metricValue(t, fams, "vllm:num_preemptions_total"); p < 1 {
		t.Errorf("no preemption recorded with 4 x 13 blocks needed of 24")
	}
	if u := metricValue(t, fams, "vllm:kv_cache_usage_perc"); u != 0 {
		t.Errorf("kv usage after all finished = %v", u)
	}
}
