package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/infergw/infergw/stack"
)

// TestHungPodRetriedAfterFirstByteTimeout: a pod that accepts requests and never answers
// (its metrics look idle, so the picker picks it) costs a request one first-byte timeout,
// then Envoy retries it on the picker's next endpoint; every request succeeds. A stream
// that runs longer than the timeout after its first byte is not cut (Envoy's per-try
// timeout stops counting once the response to the client has started).
func TestHungPodRetriedAfterFirstByteTimeout(t *testing.T) {
	ips, w := threePodWorld(t)
	hung := fmt.Sprintf("%s:%d", ips[2], w.TargetPort)
	startBrokenPod(t, hung, podHangs)
	const firstByte = time.Second
	gw := startGateway(t, w, func(c *stack.Config) {
		c.Translate.FirstByteTimeout = firstByte
		c.Sim.TimeScale = 1 // real-time decoding, so a stream outlasts the timeout
	})

	const n = 15
	hits := 0
	for i := 0; i < n; i++ {
		start := time.Now()
		r := chat(t, gw.url, baseModel, fmt.Sprintf("question %d about something else entirely", i), nil)
		took := time.Since(start)
		if r.Status != 200 || r.Instance == "" {
			t.Fatalf("request %d: status %d from %q after %s: %s", i, r.Status, r.Instance, took, r.Body)
		}
		if r.Upstream == hung {
			t.Fatalf("request %d: answered by the hung pod?", i)
		}
		// Bounded by the timeout, never the hang (the client's own timeout is 30 s).
		if took > 10*firstByte {
			t.Fatalf("request %d took %s", i, took)
		}
	}
	c := gw.envoyCounters(t, "pool")
	for name, v := range c {
		if strings.HasSuffix(name, ".upstream_rq_per_try_timeout") {
			hits += int(v)
		}
	}
	if hits == 0 {
		t.Fatalf("no try timed out: the picker never chose the hung pod in %d requests, the test proved nothing (counters %v)", n, c)
	}
	t.Logf("%d of %d requests met the hung pod and were retried after %s", hits, n, firstByte)

	// A stream longer than the timeout, whose first byte came early, runs to its end.
	start := time.Now()
	res, events := streamChat(t, gw.url, baseModel, "tell a long story", 400)
	if res.Status != 200 || len(events) == 0 || events[len(events)-1].Data != "[DONE]" {
		t.Fatalf("long stream: status %d, %d events, last %v", res.Status, len(events), events[len(events)-1:])
	}
	// (Its first try may itself have met the hung pod: what counts is how long it ran
	// after its first byte.)
	if d := events[len(events)-1].At - events[0].At; d < 2*firstByte {
		t.Fatalf("the stream ran %s after its first event, not past the %s timeout: it proves nothing (%s in all)", d, firstByte, time.Since(start))
	}
}

// TestHungPodStreamRetriedByDefault: with no first-byte timeout configured on the routes,
// streaming requests are still protected by the picker's default (here shortened to 1 s):
// it sets Envoy's per-try timeout header on streaming picks, and every stream that met the
// hung pod was retried elsewhere and ran to [DONE].
func TestHungPodStreamRetriedByDefault(t *testing.T) {
	ips, w := threePodWorld(t)
	startBrokenPod(t, fmt.Sprintf("%s:%d", ips[2], w.TargetPort), podHangs)
	gw := startGateway(t, w, func(c *stack.Config) {
		c.Picker.StreamFirstByteTimeout = time.Second
	})
	const n = 15
	for i := 0; i < n; i++ {
		start := time.Now()
		res, events := streamChat(t, gw.url, baseModel, fmt.Sprintf("streamed question %d", i), 8)
		if res.Status != 200 || len(events) == 0 || events[len(events)-1].Data != "[DONE]" {
			t.Fatalf("stream %d: status %d, %d events", i, res.Status, len(events))
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Fatalf("stream %d took %s", i, took)
		}
	}
	hits := 0
	for name, v := range gw.envoyCounters(t, "pool") {
		if strings.HasSuffix(name, ".upstream_rq_per_try_timeout") {
			hits += int(v)
		}
	}
	if hits == 0 {
		t.Fatalf("no try timed out: the picker never chose the hung pod in %d streams, the test proved nothing", n)
	}
	t.Logf("%d of %d streams met the hung pod and were retried", hits, n)
}

// threePodWorld is one pool "llm" of three pods on 127.0.0.2-4 behind one route.
func threePodWorld(t *testing.T) ([]string, *world) {
	t.Helper()
	ips := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}
	w := newWorld(t, ips)
	w.Pools = []pool{{Name: "llm", App: "llm"}}
	for i, ip := range ips {
		w.Pods = append(w.Pods, pod{Name: fmt.Sprintf("llm-%d", i), IP: ip, App: "llm"})
	}
	w.Routes = `  rules:
    - backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: llm}]`
	return ips, w
}
