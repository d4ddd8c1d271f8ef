package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/infergw/infergw/sim"
)

// fleetView is the routing seen from the sims (GET /debug/engine): how evenly requests
// arrived and how much prompt work each arrival found in front of it, which is what its
// time to first token waits for.
type fleetView struct {
	// Arrivals per pod in the cell (warm-up included), in pod order.
	Arrivals []uint64 `json:"arrivals"`
	// BehindPrefill is the share of arrivals that found another prompt still prefilling on
	// their pod; TokensAhead the prompt tokens an arrival found ahead of it, on average.
	BehindPrefill float64 `json:"behind_prefill"`
	TokensAhead   float64 `json:"tokens_ahead"`
	// Sampled every SampleEvery (--sim-view): per pod, the mean of pending prefill tokens
	// and running requests; Samples is how many samples were taken.
	SampleEvery     string    `json:"sample_every,omitempty"`
	Samples         int       `json:"samples,omitempty"`
	MeanPrefillToks []float64 `json:"mean_prefill_tokens,omitempty"`
	MeanRunning     []float64 `json:"mean_running,omitempty"`
}

func getView(ctx context.Context, client *http.Client, addr string) (sim.EngineView, error) {
	var v sim.EngineView
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/debug/engine", nil)
	if err != nil {
		return v, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return v, fmt.Errorf("sim view %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return v, fmt.Errorf("sim view %s: %w", addr, err)
	}
	return v, nil
}

// viewSampler reads every sim's engine view at start, optionally every interval, and at stop.
type viewSampler struct {
	addrs  []string
	client *http.Client
	start  []sim.EngineView
	sumTok []float64
	sumRun []float64
	n      int
	every  time.Duration
	stop   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
}

func startViewSampler(ctx context.Context, addrs []string, every time.Duration) (*viewSampler, error) {
	s := &viewSampler{addrs: slices.Clone(addrs), client: &http.Client{Timeout: 5 * time.Second},
		sumTok: make([]float64, len(addrs)), sumRun: make([]float64, len(addrs)), every: every,
		stop: make(chan struct{})}
	for _, a := range s.addrs {
		v, err := getView(ctx, s.client, a)
		if err != nil {
			return nil, err
		}
		s.start = append(s.start, v)
	}
	if every > 0 {
		s.wg.Add(1)
		go s.loop(ctx)
	}
	return s, nil
}

func (s *viewSampler) loop(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		tok := make([]float64, len(s.addrs))
		run := make([]float64, len(s.addrs))
		ok := true
		for i, a := range s.addrs {
			v, err := getView(ctx, s.client, a)
			if err != nil {
				ok = false
				break
			}
			tok[i], run[i] = float64(v.PrefillTokens), float64(v.Running)
		}
		if !ok {
			continue
		}
		s.mu.Lock()
		for i := range tok {
			s.sumTok[i] += tok[i]
			s.sumRun[i] += run[i]
		}
		s.n++
		s.mu.Unlock()
	}
}

// finish stops sampling and summarises.
func (s *viewSampler) finish(ctx context.Context) (fleetView, error) {
	close(s.stop)
	s.wg.Wait()
	var fv fleetView
	var arrivals, behind, ahead uint64
	for i, a := range s.addrs {
		v, err := getView(ctx, s.client, a)
		if err != nil {
			return fv, err
		}
		d := v.Arrivals - s.start[i].Arrivals
		fv.Arrivals = append(fv.Arrivals, d)
		arrivals += d
		behind += v.ArrivalsBehindPrefill - s.start[i].ArrivalsBehindPrefill
		ahead += v.PrefillTokensAhead - s.start[i].PrefillTokensAhead
	}
	if arrivals > 0 {
		fv.BehindPrefill = float64(behind) / float64(arrivals)
		fv.TokensAhead = float64(ahead) / float64(arrivals)
	}
	if s.n > 0 {
		fv.SampleEvery, fv.Samples = s.every.String(), s.n
		for i := range s.addrs {
			fv.MeanPrefillToks = append(fv.MeanPrefillToks, s.sumTok[i]/float64(s.n))
			fv.MeanRunning = append(fv.MeanRunning, s.sumRun[i]/float64(s.n))
		}
	}
	return fv, nil
}
