package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"

	"github.com/infergw/infergw/sim"
)

// podTrace is where a tenant's time to first token went inside the pods: queued in the
// model server, then from admission into the batch to the first token (its prefill, in
// steps shared with the other sequences' prefill chunks). The gateway's share is the rest
// of the TTFT the load tester saw (queued in flow control, the picker, Envoy).
type podTrace struct {
	Traced int `json:"traced"`
	// Pod queue and admission-to-first-token percentiles, ms.
	QueueP50   float64 `json:"pod_queue_p50_ms"`
	QueueP90   float64 `json:"pod_queue_p90_ms"`
	PrefillP50 float64 `json:"prefill_p50_ms"`
	PrefillP90 float64 `json:"prefill_p90_ms"`
	// BehindPrefill is the share of its requests that arrived while another request's
	// prompt was still being prefilled on their pod.
	BehindPrefill float64 `json:"behind_prefill_share"`
	// TokensAheadMean is the mean prompt tokens still to prefill ahead of its requests.
	TokensAheadMean float64 `json:"prefill_tokens_ahead_mean"`
}

// podTraces reads every pod's first-token traces (sim /debug/engine) and sums them per
// trace class (fairness ID, else objective name). Warm-up requests are included.
func (b *bench) podTraces(ctx context.Context) map[string][]sim.FirstTokenTrace {
	out := map[string][]sim.FirstTokenTrace{}
	for i := 0; i < b.plan.Pods; i++ {
		url := "http://" + net.JoinHostPort(podIP(i), strconv.Itoa(b.layout.TargetPort)) + "/debug/engine"
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			continue
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			continue
		}
		var v sim.EngineView
		err = json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&v)
		resp.Body.Close()
		if err != nil {
			continue
		}
		for class, ts := range v.FirstTokens {
			out[class] = append(out[class], ts...)
		}
	}
	return out
}

func summarizeTraces(ts []sim.FirstTokenTrace) *podTrace {
	if len(ts) == 0 {
		return nil
	}
	q := make([]float64, len(ts))
	p := make([]float64, len(ts))
	behind, ahead := 0, 0
	for i, t := range ts {
		q[i], p[i] = float64(t.QueueUS)/1000, float64(t.PrefillUS)/1000
		if t.PrefillAhead > 0 {
			behind++
		}
		ahead += t.PrefillAhead
	}
	slices.Sort(q)
	slices.Sort(p)
	n := float64(len(ts))
	return &podTrace{Traced: len(ts), QueueP50: pct(q, 0.5), QueueP90: pct(q, 0.9), PrefillP50: pct(p, 0.5), PrefillP90: pct(p, 0.9),
		BehindPrefill: float64(behind) / n, TokensAheadMean: float64(ahead) / n}
}

// pct is the nearest-rank percentile of sorted values.
func pct(sorted []float64, q float64) float64 {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func (t *podTrace) String() string {
	if t == nil {
		return "– | – | – | – | – | –"
	}
	return fmt.Sprintf("%d | %.0f | %.0f | %.0f | %.0f | %.0f %% (%.0f tokens)", t.Traced, t.QueueP50, t.QueueP90, t.PrefillP50, t.PrefillP90,
		100*t.BehindPrefill, t.TokensAheadMean)
}
