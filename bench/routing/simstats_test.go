package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/infergw/infergw/sim"
)

// TestScrapeFleetReadsARealSim runs one real sim on 127.0.0.1, sends it two identical
// requests (the second hits the prefix cache) and checks the counters scraped from its
// /metrics with the Prometheus text parser.
func TestScrapeFleetReadsARealSim(t *testing.T) {
	cfg := sim.DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.TimeScale = 0.001
	s, err := sim.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	before, err := scrapeFleet(ctx, []string{s.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	prompt := strings.Repeat("the quick brown fox jumps over the lazy dog ", 40)
	body := `{"model":"` + cfg.Model + `","prompt":"` + prompt + `","max_tokens":4,"ignore_eos":true}`
	for i := 0; i < 2; i++ {
		resp, err := http.Post("http://"+s.Addr()+"/v1/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("completion: status %d", resp.StatusCode)
		}
	}
	after, err := scrapeFleet(ctx, []string{s.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	d := after.minus(before)
	if d.GenerationTokens != 8 {
		t.Errorf("generation tokens = %v, want 8", d.GenerationTokens)
	}
	if d.PrefixQueryTokens <= 0 || d.PrefixHitTokens <= 0 || d.PrefixHitTokens >= d.PrefixQueryTokens {
		t.Errorf("prefix counters: queries %v hits %v; want 0 < hits < queries", d.PrefixQueryTokens, d.PrefixHitTokens)
	}
	if _, err := scrapeFleet(ctx, []string{"127.0.0.1:1"}); err == nil {
		t.Error("scrape of a closed port: want an error")
	}
}

func TestParseSimCountersRejectsGarbage(t *testing.T) {
	if _, err := parseSimCounters(strings.NewReader("not { prometheus text")); err == nil {
		t.Error("garbage: want an error")
	}
}
