package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/infergw/infergw/stack"
)

// simIP maps a pod name to its IP in a world.
func (w *world) simIP(name string) string {
	for _, p := range w.Pods {
		if p.Name == name {
			return p.IP
		}
	}
	return ""
}

func hostOf(t *testing.T, hostport string) string {
	t.Helper()
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatalf("upstream %q: %v", hostport, err)
	}
	return h
}

// onePool is a world of one FailClose pool of n sims behind one route.
func onePool(t *testing.T, n int) *world {
	var ips []string
	for i := 0; i < n; i++ {
		ips = append(ips, fmt.Sprintf("127.0.0.%d", 2+i))
	}
	// The port is also free on the next address, where some tests add a pod.
	w := newWorld(t, append(ips, fmt.Sprintf("127.0.0.%d", 2+n)))
	w.Pools = []pool{{Name: "llm", App: "llm"}}
	for i, ip := range ips {
		w.Pods = append(w.Pods, pod{Name: fmt.Sprintf("llm-%d", i), IP: ip, App: "llm"})
	}
	w.Routes = `  rules:
    - backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: llm}]`
	return w
}

// TestRequestsLandWhereThePickerChose shows that Envoy sends each request to the endpoint the
// picker chose: a long prompt, repeated, sticks to one sim (prefix affinity) although Envoy's
// own load balancing would spread it; and the sim that answered is the upstream Envoy used.
func TestRequestsLandWhereThePickerChose(t *testing.T) {
	w := onePool(t, 3)
	gw := startGateway(t, w, nil)

	prompt := strings.Repeat("You are a careful assistant who answers questions about invoices. ", 60)
	first := chat(t, gw.url, baseModel, prompt+"Q0", nil)
	if first.Status != 200 {
		t.Fatalf("status %d: %s", first.Status, first.Body)
	}
	for i := 1; i <= 12; i++ {
		r := chat(t, gw.url, baseModel, prompt+fmt.Sprintf("Q%d", i), nil)
		if r.Status != 200 {
			t.Fatalf("request %d: status %d: %s", i, r.Status, r.Body)
		}
		if r.Instance != first.Instance {
			t.Fatalf("request %d with the same long prefix went to %s, first went to %s: prefix affinity not honoured", i, r.Instance, first.Instance)
		}
		if got, want := hostOf(t, r.Upstream), w.simIP(r.Instance); got != want {
			t.Fatalf("Envoy's upstream %s is not the sim that answered (%s at %s)", r.Upstream, r.Instance, want)
		}
	}

	// Envoy saw every stream to the picker end cleanly: no resets, no failures (the stack's
	// readiness probe through Envoy may add a stream of its own).
	gw.checkPickerStreamsClean(t, 13)

	// The stack's one metrics port serves the picker's counters and its readiness.
	body := getText(t, "http://"+gw.metrics+"/metrics")
	if !strings.Contains(body, `inference_objective_request_total{`) || !strings.Contains(body, "infergw_router_picks_total") {
		t.Fatalf("/metrics lacks the picker's and the router's metrics:\n%.2000s", body)
	}
	if got := getText(t, "http://"+gw.metrics+"/readyz"); strings.TrimSpace(got) != "ok" {
		t.Fatalf("/readyz = %q", got)
	}
}

func getText(t *testing.T, url string) string {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

// TestStreamingEndToEnd checks that an SSE stream passes through Envoy and the picker chunk
// by chunk, in time, ending with usage and [DONE].
func TestStreamingEndToEnd(t *testing.T) {
	w := onePool(t, 2)
	gw := startGateway(t, w, func(c *stack.Config) { c.Sim.TimeScale = 0.5 })
	res, events := streamChat(t, gw.url, baseModel, "Tell me a story about a lighthouse.", 24)
	if res.Status != 200 {
		t.Fatalf("status %d", res.Status)
	}
	if ct := res.Header.Get("content-type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("content-type %q", ct)
	}
	if len(events) < 24 {
		t.Fatalf("got %d SSE events, want at least 24 (one per token)", len(events))
	}
	if events[len(events)-1].Data != "[DONE]" {
		t.Fatalf("last event %q, want [DONE]", events[len(events)-1].Data)
	}
	var usage struct {
		Usage *struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal([]byte(events[len(events)-2].Data), &usage); err != nil || usage.Usage == nil || usage.Usage.CompletionTokens != 24 {
		t.Fatalf("final usage chunk %q (err %v)", events[len(events)-2].Data, err)
	}
	// 24 decode steps of the modelled GPU (≥ 5 ms each at time scale 0.5 → ≥ 2.5 ms) cannot
	// arrive in one burst: the stream must have been relayed as it was produced.
	spread := events[len(events)-2].At - events[1].At
	if spread < 20*time.Millisecond {
		t.Fatalf("stream arrived in a burst (first token to last %s): something buffered it", spread)
	}
}

// TestNewPodManifestGetsTraffic adds a Pod manifest while traffic flows: a sim starts on it,
// the picker and Envoy learn the endpoint, and it serves requests, with nothing restarted.
func TestNewPodManifestGetsTraffic(t *testing.T) {
	w := newWorld(t, []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"})
	w.Pools = []pool{{Name: "llm", App: "llm"}}
	w.Pods = []pod{{Name: "llm-0", IP: "127.0.0.2", App: "llm"}, {Name: "llm-1", IP: "127.0.0.3", App: "llm"}}
	w.Routes = `  rules:
    - backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: llm}]`
	gw := startGateway(t, w, nil)
	envoyPid := gw.Envoy.Pid()

	w.Pods = append(w.Pods, pod{Name: "llm-2", IP: "127.0.0.4", App: "llm"})
	w.write(t, gw.dir)
	i := 0
	took := eventually(t, 30*time.Second, "the new pod to serve a request", func() bool {
		i++
		r := chat(t, gw.url, baseModel, fmt.Sprintf("unique question %d", i), nil)
		return r.Status == 200 && r.Instance == "llm-2"
	})
	t.Logf("manifest change to first request served by the new pod: %s (%d requests)", took.Round(time.Millisecond), i)
	if gw.Envoy.Pid() != envoyPid {
		t.Fatal("Envoy was restarted")
	}
}

// TestWeightedPools splits a route 80/20 between two pools behind one picker.
func TestWeightedPools(t *testing.T) {
	ips := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"}
	w := newWorld(t, ips)
	w.Pools = []pool{{Name: "blue", App: "blue"}, {Name: "green", App: "green"}}
	w.Pods = []pod{
		{Name: "blue-0", IP: ips[0], App: "blue"}, {Name: "blue-1", IP: ips[1], App: "blue"},
		{Name: "green-0", IP: ips[2], App: "green"}, {Name: "green-1", IP: ips[3], App: "green"},
	}
	w.Routes = `  rules:
    - backendRefs:
        - {group: inference.networking.k8s.io, kind: InferencePool, name: blue, weight: 80}
        - {group: inference.networking.k8s.io, kind: InferencePool, name: green, weight: 20}`
	gw := startGateway(t, w, nil)
	const n = 200
	blue := 0
	for i := 0; i < n; i++ {
		r := chat(t, gw.url, baseModel, fmt.Sprintf("q%d", i), nil)
		if r.Status != 200 {
			t.Fatalf("request %d: %d %s", i, r.Status, r.Body)
		}
		if got, want := hostOf(t, r.Upstream), w.simIP(r.Instance); got != want {
			t.Fatalf("upstream %s is not the sim that answered (%s)", r.Upstream, r.Instance)
		}
		if strings.HasPrefix(r.Instance, "blue-") {
			blue++
		}
	}
	// Binomial(200, 0.8): mean 160, sd 5.7; 130..184 is beyond five sd on either side.
	if blue < 130 || blue > 184 {
		t.Fatalf("blue served %d of %d requests, want about 80%%", blue, n)
	}
	t.Logf("blue %d / green %d", blue, n-blue)
}

// TestModelRewriteCanary sends a share of the traffic for a virtual model to each LoRA
// adapter, and the client still sees the model it asked for.
func TestModelRewriteCanary(t *testing.T) {
	w := onePool(t, 2)
	w.Extra = `apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata: {name: food-review, namespace: default}
spec:
  poolRef: {name: llm}
  rules:
    - matches: [{model: {value: food-review}}]
      targets:
        - {modelRewrite: food-review-1, weight: 70}
        - {modelRewrite: food-review-2, weight: 30}
`
	gw := startGateway(t, w, nil)
	counts := map[string]int{}
	const n = 120
	for i := 0; i < n; i++ {
		r := chat(t, gw.url, "food-review", fmt.Sprintf("how was the soup %d", i), nil)
		if r.Status != 200 {
			t.Fatalf("status %d: %s", r.Status, r.Body)
		}
		var body struct {
			Model string `json:"model"`
		}
		if err := json.Unmarshal(r.Body, &body); err != nil {
			t.Fatalf("response body: %v", err)
		}
		if body.Model != "food-review" {
			t.Fatalf("client sees model %q, want the one it asked for", body.Model)
		}
		counts[r.Header.Get("x-sim-model")]++
	}
	// Binomial(120, 0.7): mean 84, sd 5; 60..105 is beyond four sd on either side.
	if c1 := counts["food-review-1"]; c1 < 60 || c1 > 105 || c1+counts["food-review-2"] != n {
		t.Fatalf("served models %v, want about 70/30 between food-review-1 and food-review-2", counts)
	}
	t.Logf("served models: %v", counts)
}

// TestPickerDownFailOpenAndFailClose kills the picker: the FailOpen pool keeps serving through
// Envoy's fallback load balancing, the FailClose pool answers 503 with a JSON error, and both
// recover when the picker returns.
func TestPickerDownFailOpenAndFailClose(t *testing.T) {
	ips := []string{"127.0.0.2", "127.0.0.3"}
	w := newWorld(t, ips)
	w.Pools = []pool{{Name: "open", App: "open", FailureMode: "FailOpen"}, {Name: "closed", App: "closed", FailureMode: "FailClose"}}
	w.Pods = []pod{{Name: "open-0", IP: ips[0], App: "open"}, {Name: "closed-0", IP: ips[1], App: "closed"}}
	w.Routes = `  rules:
    - matches: [{headers: [{name: x-tier, value: open}]}]
      backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: open}]
    - backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: closed}]`
	gw := startGateway(t, w, nil)
	open := map[string]string{"x-tier": "open"}

	for _, r := range []result{chat(t, gw.url, baseModel, "hi", open), chat(t, gw.url, baseModel, "hi", nil)} {
		if r.Status != 200 {
			t.Fatalf("before the picker stops: %d %s", r.Status, r.Body)
		}
	}
	gw.StopPicker()

	// A request racing the picker's death can be reset while Envoy still holds the dying
	// gRPC connection; once Envoy has seen it close, every FailOpen request must succeed.
	eventually(t, 10*time.Second, "Envoy to notice the picker is gone", func() bool {
		return tryChat(gw.url, open) == 200
	})
	for i := 0; i < 10; i++ {
		r := chat(t, gw.url, baseModel, fmt.Sprintf("still there? %d", i), open)
		if r.Status != 200 || r.Instance != "open-0" {
			t.Fatalf("FailOpen pool with the picker down: %d from %q: %s", r.Status, r.Instance, r.Body)
		}
	}
	r := chat(t, gw.url, baseModel, "still there?", nil)
	if r.Status != 503 {
		t.Fatalf("FailClose pool with the picker down: status %d, want 503: %s", r.Status, r.Body)
	}
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(r.Body, &e); err != nil || !strings.Contains(e.Error.Message, "picker") {
		t.Fatalf("FailClose body %q is not a JSON error naming the picker (err %v)", r.Body, err)
	}

	if err := gw.StartPicker(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the FailClose pool to serve again", func() bool {
		return chat(t, gw.url, baseModel, "back?", nil).Status == 200
	})
}

// TestInvalidManifestKeepsLastGoodConfig breaks a manifest: the error is reported, traffic
// keeps flowing on the last good configuration, and a fix is picked up.
func TestInvalidManifestKeepsLastGoodConfig(t *testing.T) {
	w := onePool(t, 2)
	gw := startGateway(t, w, nil)
	good := gw.Source.Current().Version

	// Two identical target ports: the CRD's CEL rule rejects this.
	broken := strings.Replace(w.poolsYAML(), fmt.Sprintf("targetPorts: [{number: %d}]", w.TargetPort),
		fmt.Sprintf("targetPorts: [{number: %d}, {number: %d}]", w.TargetPort, w.TargetPort), 1)
	writeFile(t, filepath.Join(gw.dir, "pools.yaml"), broken)
	eventually(t, 10*time.Second, "the broken manifest to be reported", func() bool { return gw.Source.LastError() != nil })
	if err := gw.Source.LastError(); !strings.Contains(err.Error(), "pools.yaml") {
		t.Errorf("error %q does not name the file", err)
	}
	for i := 0; i < 10; i++ {
		if r := chat(t, gw.url, baseModel, fmt.Sprintf("q%d", i), nil); r.Status != 200 {
			t.Fatalf("with a broken manifest, request %d got %d: %s", i, r.Status, r.Body)
		}
	}
	if v := gw.Source.Current().Version; v != good {
		t.Fatalf("snapshot moved from %d to %d on an invalid manifest", good, v)
	}

	// Fix it, adding a third pod: the new good state is served.
	w.Pods = append(w.Pods, pod{Name: "llm-2", IP: "127.0.0.4", App: "llm"})
	w.write(t, gw.dir)
	eventually(t, 10*time.Second, "the fixed manifests to apply", func() bool {
		return gw.Source.LastError() == nil && gw.Source.Current().Version > good
	})
	if r := chat(t, gw.url, baseModel, "after the fix", nil); r.Status != 200 {
		t.Fatalf("after the fix: %d %s", r.Status, r.Body)
	}
}
