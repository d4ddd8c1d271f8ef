package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/infergw/infergw/stack"
)

// TestResponseObserverKeepsAccounting runs streamed completions through real Envoy with the
// response observer (the default with STREAMED responses; xds/observer.go): the picker's
// own filter must stop answering per chunk (a handful of picker answers per request, not
// one per SSE event), while every request is still accounted in full — TTFT, tokens, the
// end that releases the pick — and a response the picker must change (the usage chunk it
// added for its own accounting) is still changed.
func TestResponseObserverKeepsAccounting(t *testing.T) {
	w := onePool(t, 2)
	gw := startGateway(t, w, func(c *stack.Config) { c.Sim.TimeScale = 0.2 })

	const n, tokens = 6, 32
	base := gw.pickerCounts(t)
	before := gw.envoyCounters(t, "ext_proc")
	for i := 0; i < n; i++ {
		res, events := streamChat(t, gw.url, baseModel, "Tell me about lighthouses, part "+strings.Repeat("I", i+1), tokens)
		if res.Status != 200 || len(events) < tokens || events[len(events)-1].Data != "[DONE]" {
			t.Fatalf("request %d: status %d, %d events, last %q", i, res.Status, len(events), lastData(events))
		}
	}
	after := gw.envoyCounters(t, "ext_proc")
	answers := sumSuffix(after, ".ext_proc.stream_msgs_received") - sumSuffix(before, ".ext_proc.stream_msgs_received")
	// The picker answers the request headers, the request body and the response headers;
	// the observer, which never answers, got the body: every SSE event went out once.
	if answers > 4*n {
		t.Fatalf("the picker answered %d messages for %d streamed requests of %d tokens: it still processes every chunk (observer not used)", answers, n, tokens)
	}
	// With the picker's filter out of the body, the TTFT and the tokens below can only have
	// come through the observer. Accounting is complete as soon as each stream ended (not
	// when Envoy's deferred close of the observer's stream fires, seconds later).
	got := gw.pickerCounts(t)
	if d := got.ttft - base.ttft; d != n {
		t.Errorf("TTFT observations: %d more, want %d", d, n)
	}
	if d := got.outputTokens - base.outputTokens; d != n*tokens {
		t.Errorf("output tokens recorded: %d more, want %d (%d requests × %d)", d, n*tokens, n, tokens)
	}
	if got.running != 0 {
		t.Errorf("running requests %d after every stream ended, want 0", got.running)
	}

	// A stream that did not ask for usage: the picker added include_usage for its own
	// accounting and must remove the usage chunk, so it keeps this body itself.
	body, _ := json.Marshal(map[string]any{
		"model": baseModel, "stream": true, "max_tokens": 8, "ignore_eos": true,
		"messages": []map[string]string{{"role": "user", "content": "no usage please"}},
	})
	earlyBefore := gw.observerEarlyCloses(t)
	startedBefore := sumSuffix(gw.envoyCounters(t, "ext_proc"), ".ext_proc.streams_started")
	res := post(t, gw.url+"/v1/chat/completions", body, nil)
	if res.Status != 200 || strings.Contains(string(res.Body), `"usage"`) || !strings.Contains(string(res.Body), "[DONE]") {
		t.Fatalf("stream without include_usage: status %d, body %.400q", res.Status, res.Body)
	}
	// Untagged by the picker, the request skips the observer filter altogether: one
	// ext_proc stream, none opened only to be ended.
	if d := sumSuffix(gw.envoyCounters(t, "ext_proc"), ".ext_proc.streams_started") - startedBefore; d != 1 {
		t.Errorf("the stream the picker kept opened %d ext_proc streams, want 1 (the observer should be skipped)", d)
	}
	if d := gw.observerEarlyCloses(t) - earlyBefore; d != 0 {
		t.Errorf("%d observer streams opened and ended for a request the picker kept", d)
	}
	final := gw.pickerCounts(t)
	if d := final.outputTokens - got.outputTokens; d != 8 {
		t.Errorf("output tokens of the stream the picker kept: %d, want 8", d)
	}
	gw.checkPickerStreamsClean(t, 2*n)
}

func lastData(events []sseEvent) string {
	if len(events) == 0 {
		return ""
	}
	return events[len(events)-1].Data
}

func sumSuffix(counters map[string]int64, suffix string) int64 {
	var s int64
	for name, v := range counters {
		if strings.HasSuffix(name, suffix) {
			s += v
		}
	}
	return s
}

// pickerCounts is the picker's accounting, from its /metrics.
type pickerCounts struct {
	ttft, outputTokens, running int64
}

func (g *gateway) pickerCounts(t *testing.T) pickerCounts {
	t.Helper()
	var fams map[string]*dto.MetricFamily
	// The accounting of a stream that just ended may trail its last byte by a moment.
	deadline := time.Now().Add(5 * time.Second)
	for {
		p := expfmt.NewTextParser(model.UTF8Validation)
		var err error
		fams, err = p.TextToMetricFamilies(strings.NewReader(getText(t, "http://"+g.metrics+"/metrics")))
		if err != nil {
			t.Fatalf("parse the picker's metrics: %v", err)
		}
		if gauge(fams["inference_objective_running_requests"]) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	var c pickerCounts
	for _, m := range fams["inference_objective_request_ttft_seconds"].GetMetric() {
		c.ttft += int64(m.GetHistogram().GetSampleCount())
	}
	for _, m := range fams["inference_objective_output_tokens"].GetMetric() {
		c.outputTokens += int64(m.GetHistogram().GetSampleSum())
	}
	c.running = int64(gauge(fams["inference_objective_running_requests"]))
	return c
}

func gauge(f *dto.MetricFamily) float64 {
	var s float64
	for _, m := range f.GetMetric() {
		s += m.GetGauge().GetValue()
	}
	return s
}
