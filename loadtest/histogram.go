package loadtest

import (
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Histograms hold microseconds from 1 µs to 1 h with 3 significant digits (0.1 % error).
const (
	histMinUs   = 1
	histMaxUs   = int64(time.Hour / time.Microsecond)
	histSigFigs = 3
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMinUs, histMaxUs, histSigFigs) }

// newHistSmall trades precision (2 significant digits) for an 8x smaller histogram.
func newHistSmall() *hdrhistogram.Histogram { return hdrhistogram.New(histMinUs, histMaxUs, 2) }

func recordMs(h *hdrhistogram.Histogram, v float64, n int64) {
	us := int64(v*1000 + 0.5)
	if us < histMinUs {
		us = histMinUs
	}
	if us > histMaxUs {
		us = histMaxUs
	}
	_ = h.RecordValues(us, n) // cannot fail: the value is clamped into range
}

// Latency is a distribution summary in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	Avg   float64 `json:"avg"`
	Min   float64 `json:"min"`
	Max   float64 `json:"max"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P95   float64 `json:"p95"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99_9"`
}

func latencyOf(h *hdrhistogram.Histogram) Latency {
	if h.TotalCount() == 0 {
		return Latency{}
	}
	q := func(p float64) float64 { return float64(h.ValueAtQuantile(p)) / 1000 }
	return Latency{
		Count: h.TotalCount(),
		Avg:   h.Mean() / 1000,
		Min:   float64(h.Min()) / 1000,
		Max:   float64(h.Max()) / 1000,
		P50:   q(50), P90: q(90), P95: q(95), P99: q(99), P999: q(99.9),
	}
}

// cdfPoints returns (latency ms, cumulative fraction) pairs for plotting.
func cdfPoints(h *hdrhistogram.Histogram) [][2]float64 {
	if h.TotalCount() == 0 {
		return nil
	}
	qs := []float64{0, 1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 97, 98, 99, 99.5, 99.9, 99.99, 100}
	out := make([][2]float64, 0, len(qs))
	for _, p := range qs {
		out = append(out, [2]float64{float64(h.ValueAtQuantile(p)) / 1000, p / 100})
	}
	return out
}
