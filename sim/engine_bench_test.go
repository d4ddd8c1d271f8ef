package sim

import (
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// decodingEngine returns an engine with n sequences admitted, prefilled and decoding.
func decodingEngine(b *testing.B, n int) *engine {
	cfg := DefaultConfig()
	cfg.KVBlocks = 1 << 15
	e := newEngine(&cfg, slog.New(slog.DiscardHandler))
	m, err := newMetrics(prometheus.NewRegistry(), &cfg, e)
	if err != nil {
		b.Fatal(err)
	}
	e.m = m
	for i := range n {
		r := newRequest()
		r.promptLen = 64
		r.hashes = blockHashes(tokenize(words(64, string(rune('a'+i%26))), nil), cfg.BlockSize, "", nil)
		r.outLen = 1 << 30 // never finishes during the benchmark
		r.arrival = time.Now()
		e.waiting = append(e.waiting, r)
	}
	for len(e.waiting) > 0 {
		e.schedule()
		e.complete(time.Now())
	}
	return e
}

// BenchmarkEngineStep measures one schedule+complete round with 256 sequences decoding: the
// engine's per-step bookkeeping, which bounds how fast a sim can go at tiny time scales. The
// engine is rebuilt (untimed) every 1024 steps so the sequences never outgrow the KV cache.
func BenchmarkEngineStep(b *testing.B) {
	const seqs, stepsPerEngine = 256, 1024
	e := decodingEngine(b, seqs)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i > 0 && i%stepsPerEngine == 0 {
			b.StopTimer()
			e = decodingEngine(b, seqs)
			b.StartTimer()
		}
		e.schedule()
		e.complete(time.Now())
		for _, r := range e.running {
			select { // drain notifications as handlers would
			case <-r.notify:
			default:
			}
		}
		if len(e.running) != seqs {
			b.Fatalf("%d running, want %d", len(e.running), seqs)
		}
	}
}
