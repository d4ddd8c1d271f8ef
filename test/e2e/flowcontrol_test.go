package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/infergw/infergw/flowcontrol"
	"github.com/infergw/infergw/router"
	"github.com/infergw/infergw/stack"
)

const flowObjectives = `
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {name: critical, namespace: default}
spec:
  priority: 10
  poolRef: {group: inference.networking.k8s.io, kind: InferencePool, name: llm}
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {name: batch, namespace: default}
spec:
  priority: -1
  poolRef: {group: inference.networking.k8s.io, kind: InferencePool, name: llm}
`

// flowGateway is one sim running two sequences at a time behind a gateway whose pool
// queues requests beyond two in flight, with the given reservation policy.
func flowGateway(t *testing.T, ttl time.Duration, reservation string) *gateway {
	w := onePool(t, 1)
	w.Extra = flowObjectives
	return startGateway(t, w, func(c *stack.Config) {
		c.Sim.TimeScale = 1
		c.Sim.MaxNumSeqs = 2
		sc := router.DefaultSchedulerConfig()
		sc.FlowControl.Default = flowcontrol.Config{
			Enabled:     true,
			RequestTTL:  ttl,
			Saturation:  flowcontrol.SaturationConfig{MaxInFlightPerEndpoint: 2},
			Reservation: reservation,
		}
		c.Router.Scheduler = sc
	})
}

// flowBody is a chat completion of n output tokens (~5 ms each on the sim at time scale 1).
func flowBody(n int) []byte {
	b, _ := json.Marshal(map[string]any{
		"model": baseModel, "max_tokens": n, "ignore_eos": true,
		"messages": []map[string]string{{"role": "user", "content": "flow control"}},
	})
	return b
}

func flowRequest(ctx context.Context, url, objective, tenant string, n int) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", bytes.NewReader(flowBody(n)))
	if err != nil {
		return nil, err
	}
	req.Header.Set("content-type", "application/json")
	if objective != "" {
		req.Header.Set("x-gateway-inference-objective", objective)
	}
	if tenant != "" {
		req.Header.Set("x-gateway-inference-fairness-id", tenant)
	}
	return req, nil
}

func (g *gateway) flowCounts(t *testing.T) flowcontrol.Counts {
	t.Helper()
	c, ok := g.Picker.FlowCounts("default/llm")
	if !ok {
		t.Fatal("the pool has no flow controller")
	}
	return c
}

// With the pool full of batch work and more batch work queued, critical requests that
// arrive last are served first, through the real data path; a client that disconnects
// while queued leaves the queue and never reaches the pod; the outcomes add up.
//
// Without the demand reservation: the stack's readiness probe (priority 0) would keep one of
// the two slots for its band (TestFlowControlReservationOnEnvoy), and this test is about
// the queue's order.
func TestFlowControlPriorityAndDisconnectOnEnvoy(t *testing.T) {
	g := flowGateway(t, 20*time.Second, flowcontrol.ReservationNone)
	type done struct {
		tag    string
		status int
		at     time.Time
	}
	var mu sync.Mutex
	var finished []done
	var wg sync.WaitGroup
	send := func(tag, objective string, tokens int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, err := flowRequest(context.Background(), g.url, objective, "", tokens)
			if err != nil {
				t.Error(err)
				return
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Errorf("%s: %v", tag, err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			mu.Lock()
			finished = append(finished, done{tag, resp.StatusCode, time.Now()})
			mu.Unlock()
		}()
	}
	base := g.flowCounts(t) // the stack's readiness probe went through already
	// Two batch requests fill both slots; six more queue.
	for i := 0; i < 8; i++ {
		send(fmt.Sprint("batch-", i), "batch", 60)
		if i == 1 {
			eventually(t, 10*time.Second, "two batch requests in flight", func() bool { return g.flowCounts(t).InFlight == 2 })
		}
	}
	eventually(t, 10*time.Second, "six batch requests queued", func() bool { return g.flowCounts(t).Queued == 6 })

	// A client that gives up while queued.
	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan error, 1)
	go func() {
		req, _ := flowRequest(ctx, g.url, "critical", "quitter", 60)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		gone <- err
	}()
	eventually(t, 10*time.Second, "the quitter queued", func() bool { return g.flowCounts(t).Queued == 7 })
	cancel()
	if err := <-gone; err == nil {
		t.Fatal("the cancelled request completed")
	}
	eventually(t, 10*time.Second, "the quitter left the queue", func() bool {
		c := g.flowCounts(t)
		return c.Queued == 6 && c.Outcomes[flowcontrol.EvictedContextCancelled]-base.Outcomes[flowcontrol.EvictedContextCancelled] == 1
	})

	// Two critical requests arrive last.
	send("critical-0", "critical", 60)
	send("critical-1", "critical", 60)
	wg.Wait()

	sort.Slice(finished, func(i, j int) bool { return finished[i].at.Before(finished[j].at) })
	var order []string
	for _, f := range finished {
		if f.status != http.StatusOK {
			t.Errorf("%s: status %d", f.tag, f.status)
		}
		order = append(order, f.tag)
	}
	// The first two to finish are the two batch requests that were running; the next two
	// must be the critical ones, ahead of the six batch requests queued before them.
	if len(order) != 10 || !strings.HasPrefix(order[2], "critical") || !strings.HasPrefix(order[3], "critical") {
		t.Fatalf("completion order %v: the critical requests did not overtake the queued batch work", order)
	}

	c := g.flowCounts(t)
	if !c.Balanced() || c.Queued != 0 || c.InFlight != 0 {
		t.Fatalf("flow-control accounting: %+v", c)
	}
	if got := c.Enqueued - base.Enqueued; got != 11 {
		t.Fatalf("enqueued %d requests, want 11", got)
	}
	if got := c.Outcomes[flowcontrol.Dispatched] - base.Outcomes[flowcontrol.Dispatched]; got != 10 {
		t.Fatalf("dispatched %d, want 10 (the quitter must not reach the pod)", got)
	}
	// The sim saw exactly the dispatched requests.
	body := getText(t, "http://"+g.metrics+"/metrics")
	for _, want := range []string{
		`inference_extension_flow_control_request_outcomes_total{inference_pool="default/llm",outcome="EvictedContextCancelled",priority="10"} 1`,
		`inference_extension_flow_control_request_queue_duration_seconds_count{inference_pool="default/llm",outcome="Dispatched",priority="-1"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	g.checkPickerStreamsClean(t, 11)
}

// A request that cannot be served within the TTL gets 429 (sheddable) or 503 with
// OpenAI-style JSON and retry-after, through Envoy.
func TestFlowControlTTLRejectionOnEnvoy(t *testing.T) {
	g := flowGateway(t, 300*time.Millisecond, flowcontrol.ReservationNone)
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ { // fill both slots for ~1 s
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := flowRequest(context.Background(), g.url, "", "", 200)
			if resp, err := client.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	eventually(t, 10*time.Second, "both slots busy", func() bool { return g.flowCounts(t).InFlight == 2 })
	for _, tc := range []struct {
		objective string
		status    int
	}{{"batch", 429}, {"critical", 503}} {
		req, _ := flowRequest(context.Background(), g.url, tc.objective, "", 5)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		checkOpenAIError(t, tc.objective, resp.StatusCode, resp.Header.Get("content-type"), b, tc.status, `"flow_control_ttl_expired"`)
		if resp.Header.Get("retry-after") != "1" {
			t.Errorf("%s: retry-after %q, want 1", tc.objective, resp.Header.Get("retry-after"))
		}
	}
	wg.Wait()
	c := g.flowCounts(t)
	if !c.Balanced() || c.Outcomes[flowcontrol.EvictedTTL] != 2 {
		t.Fatalf("accounting %+v", c)
	}
}

// The demand reservation through the real data path: after one critical request, a flood
// of sheddable batch work gets one of the two slots, not both, and the next critical
// request is dispatched at once into the other, without waiting for a batch request to end.
func TestFlowControlReservationOnEnvoy(t *testing.T) {
	g := flowGateway(t, 20*time.Second, "") // the default: demand
	do := func(objective string, tokens int) int {
		req, err := flowRequest(context.Background(), g.url, objective, "", tokens)
		if err != nil {
			t.Error(err)
			return 0
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Errorf("%s: %v", objective, err)
			return 0
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := do("critical", 1); st != http.StatusOK {
		t.Fatalf("first critical request: %d", st)
	}
	base := g.flowCounts(t)
	var wg sync.WaitGroup
	var batchDone atomic.Int64
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st := do("batch", 200); st != http.StatusOK {
				t.Errorf("batch: %d", st)
			}
			batchDone.Add(1)
		}()
	}
	eventually(t, 10*time.Second, "the batch flood queued behind one slot", func() bool {
		c := g.flowCounts(t)
		return c.Enqueued-base.Enqueued == 6 && c.Queued == 5
	})
	time.Sleep(100 * time.Millisecond) // a wrong second dispatch of batch work would happen here
	if c := g.flowCounts(t); c.InFlight != 1 || c.Queued != 5 {
		t.Fatalf("batch took the reserved slot: %+v", c)
	}
	// A batch request takes ~1 s (200 tokens × ~5 ms): the critical one, dispatched into
	// the reserved slot, is answered while the running batch request still runs.
	if st := do("critical", 1); st != http.StatusOK || batchDone.Load() != 0 {
		t.Fatalf("critical request: status %d after %d batch requests ended, want 200 before any", st, batchDone.Load())
	}
	wg.Wait()
	if c := g.flowCounts(t); !c.Balanced() || c.Queued != 0 || c.InFlight != 0 {
		t.Fatalf("flow-control accounting: %+v", c)
	}
}
