package router

import (
	"strings"
	"syscall"

	"fmt"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"math/rand/v2"
	"testing"
	"time"
)

// benchPrompt returns n bytes of text-like prompt.
func benchPrompt(n int) []byte {
	const text = "The quick brown fox jumps over the lazy dog while the model server keeps its KV cache warm. "
	b := make([]byte, 0, n)
	for len(b) < n {
		b = append(b, text...)
	}
	return b[:n]
}

// BenchmarkPick measures a full Pick (filters, five scorers, max-score picker with two
// fallbacks, prefix hashing and LRU update, Done) with the default scheduler. Endpoints
// have varied metrics; a quarter of the pool has served the prompt's prefix before.
func BenchmarkPick(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		for _, size := range []struct {
			name  string
			bytes int
		}{{"1KB", 1 << 10}, {"200KB", 200 << 10}} {
			b.Run(fmt.Sprintf("endpoints=%d/prompt=%s", n, size.name), func(b *testing.B) {
				r, err := New(DefaultConfig(), nil, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer r.Close()
				rng := rand.New(rand.NewPCG(1, 2))
				prompt := benchPrompt(size.bytes)
				shared := hashPrefixBlocks(nil, "m", prompt[:len(prompt)/2], DefaultPrefixBlockSize)
				eps := make([]*endpoint, n)
				for i := range eps {
					eps[i] = staticEndpoint(fmt.Sprintf("10.%d.%d.%d:8000", i/65536, i/256%256, i%256), metricsState{
						waiting: float64(rng.IntN(8)), running: float64(rng.IntN(32)), kvUsage: rng.Float64() * 0.7,
						scrapedAt: time.Now().Add(time.Hour),
					})
					if i%4 == 0 {
						eps[i].prefix.add(shared)
					}
				}
				installPool(r, "ns/p", eps)
				req := &Request{Pool: "ns/p", Model: "m", Prompt: prompt}
				b.SetBytes(int64(len(prompt)))
				b.ReportAllocs()
				cpu := startCPUClock()
				for b.Loop() {
					d, err := r.Pick(req)
					if err != nil {
						b.Fatal(err)
					}
					d.Done()
				}
				cpu.report(b)
			})
		}
	}
}

// BenchmarkPickParallel runs Pick from every core on a 100-endpoint pool (1 KB prompt).
func BenchmarkPickParallel(b *testing.B) {
	r, err := New(DefaultConfig(), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	eps := make([]*endpoint, 100)
	for i := range eps {
		eps[i] = staticEndpoint(fmt.Sprintf("10.0.0.%d:8000", i), metricsState{waiting: float64(i % 7), kvUsage: float64(i%10) / 10})
	}
	installPool(r, "ns/p", eps)
	prompt := benchPrompt(1 << 10)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := &Request{Pool: "ns/p", Model: "m", Prompt: prompt}
		for pb.Next() {
			d, err := r.Pick(req)
			if err != nil {
				b.Error(err)
				return
			}
			d.Done()
		}
	})
}

// BenchmarkPrefixHash200KB hashes the blocks of a 200 KB prompt (3200 blocks of 64 bytes).
func BenchmarkPrefixHash200KB(b *testing.B) {
	prompt := benchPrompt(200 << 10)
	buf := make([]uint64, 0, len(prompt)/DefaultPrefixBlockSize)
	b.SetBytes(int64(len(prompt)))
	b.ReportAllocs()
	cpu := startCPUClock()
	for b.Loop() {
		buf = hashPrefixBlocks(buf[:0], "meta-llama/Llama-3.1-8B-Instruct", prompt, DefaultPrefixBlockSize)
	}
	cpu.report(b)
	if len(buf) != len(prompt)/DefaultPrefixBlockSize {
		b.Fatalf("blocks = %d", len(buf))
	}
}

// BenchmarkScrapeParseVLLM reads a vLLM exposition (one scrape's CPU after the HTTP
// exchange): "full" parses every family, "filtered" what a scrape does (keepFamilies, then
// parse). vllm-sim.txt is the simulator's /metrics, histograms included, like vLLM's.
func BenchmarkScrapeParseVLLM(b *testing.B) {
	for _, file := range []string{"vllm.txt", "vllm-sim.txt"} {
		text := readTestdata(b, file)
		for _, mode := range []string{"full", "filtered"} {
			b.Run(file+"/"+mode, func(b *testing.B) {
				parse := parseExposition
				if mode == "filtered" {
					parse = parseFiltered
				}
				b.SetBytes(int64(len(text)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := parse(engineVLLM, text); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkScrapeParseMemo is a busy server's scrape after the first (what a scrape does
// after keepFamilies): the kept lines of two scrapes differ in their values, as a loaded
// server's do; "parser" parses every scrape, "memo" goes through the exposition memo.
func BenchmarkScrapeParseMemo(b *testing.B) {
	for _, file := range []string{"vllm-sim.txt", "vllm-0.32-cpu-lora-running.txt"} {
		kept := string(keepFamilies(nil, []byte(readTestdata(b, file)), engineVLLM.families()))
		var alt strings.Builder
		for _, line := range strings.SplitAfter(kept, "\n") {
			if line == "" || strings.HasPrefix(line, "#") {
				alt.WriteString(line)
				continue
			}
			alt.WriteString(line[:strings.LastIndexAny(line, " \t")+1] + "3\n")
		}
		texts := [2]string{kept, alt.String()}
		for _, mode := range []string{"parser", "memo"} {
			b.Run(file+"/"+mode, func(b *testing.B) {
				var bufs scrapeBuffers
				parser := expfmt.NewTextParser(model.UTF8Validation)
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					bufs.kept.Reset()
					bufs.kept.WriteString(texts[i%2])
					i++
					if mode == "parser" {
						bufs.memo.reset()
					}
					fams, err := bufs.parseKept(&parser)
					var m metricsState
					if err != nil || !extractMetrics(engineVLLM, fams, &m) {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func parseExposition(eng engine, text string) (*metricsState, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return nil, err
	}
	var m metricsState
	if !extractMetrics(eng, fams, &m) {
		return nil, fmt.Errorf("no metrics")
	}
	return &m, nil
}

// cpuClock measures the process's CPU time (user+system) during a single-goroutine
// benchmark loop. On this shared 2-core machine wall time per op includes waiting for a
// core; cpu-ns/op is the work itself (it includes GC and the idle scrape-free router).
type cpuClock struct{ start time.Duration }

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPUClock() cpuClock { return cpuClock{start: processCPU()} }

func (c cpuClock) report(b *testing.B) {
	if b.N > 0 {
		b.ReportMetric(float64(processCPU()-c.start)/float64(b.N), "cpu-ns/op")
	}
}
