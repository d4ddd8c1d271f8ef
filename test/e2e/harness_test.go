// Package e2e runs the whole gateway for real: Envoy 1.40 (a child process), the xDS control
// plane, the picker and simulated vLLM servers on 127.0.0.x, configured by manifests in a
// temporary directory that the tests edit while traffic flows. Nothing is mocked.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/infergw/infergw/internal/envoytest"
	"github.com/infergw/infergw/internal/wirescan"
	"github.com/infergw/infergw/stack"
)

const baseModel = "meta-llama/Llama-3.1-8B-Instruct"

// envoyBinary returns the real Envoy (envoytest.Binary: CI must provide it).
func envoyBinary(t *testing.T) string { return envoytest.Binary(t) }

// freePort returns a TCP port that is free on ip right now.
func freePort(t *testing.T, ip string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// freePortOnAll returns a port free on every listed IP (sims of a pool share one port).
func freePortOnAll(t *testing.T, ips []string) int {
	t.Helper()
	for attempt := 0; attempt < 50; attempt++ {
		port := freePort(t, ips[0])
		ok := true
		for _, ip := range ips[1:] {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return port
		}
	}
	t.Fatal("no port free on all sim addresses")
	return 0
}

// pod is a simulated model server declared as a Pod manifest.
type pod struct {
	Name, IP, App string
}

// pool is an InferencePool selecting pods by app label.
type pool struct {
	Name, App, FailureMode string
}

// world is the set of manifests of one test.
type world struct {
	GatewayPort, PickerPort, TargetPort int
	Pools                               []pool
	Pods                                []pod
	// Routes is the HTTPRoute YAML rules section (indented under spec:).
	Routes string
	// Extra is appended verbatim (objectives, rewrites).
	Extra string
}

func (w *world) gatewayYAML() string {
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: infergw}
spec: {controllerName: infergw.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: infergw
  listeners:
    - {name: http, protocol: HTTP, port: %d}
---
apiVersion: v1
kind: Service
metadata: {name: picker, namespace: default}
spec:
  clusterIP: 127.0.0.1
  ports:
    - {name: grpc, port: %d, protocol: TCP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: route, namespace: default}
spec:
  parentRefs: [{name: gw}]
%s
`, w.GatewayPort, w.PickerPort, w.Routes)
}

func (w *world) poolsYAML() string {
	var b strings.Builder
	for _, p := range w.Pools {
		fm := p.FailureMode
		if fm == "" {
			fm = "FailClose"
		}
		fmt.Fprintf(&b, `---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: %s, namespace: default}
spec:
  selector: {matchLabels: {app: %s}}
  targetPorts: [{number: %d}]
  endpointPickerRef: {kind: Service, name: picker, port: {number: %d}, failureMode: %s}
`, p.Name, p.App, w.TargetPort, w.PickerPort, fm)
	}
	return b.String()
}

func podYAML(p pod) string {
	return fmt.Sprintf(`---
apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: default
  labels: {app: %s, inference.networking.k8s.io/engine-type: vllm}
spec:
  containers: [{name: vllm, image: vllm/vllm-openai}]
status:
  podIP: %s
  conditions: [{type: Ready, status: "True"}]
`, p.Name, p.App, p.IP)
}

// write lays the manifests out as a user would: one file per concern.
func (w *world) write(t *testing.T, dir string) {
	t.Helper()
	var pods strings.Builder
	for _, p := range w.Pods {
		pods.WriteString(podYAML(p))
	}
	files := map[string]string{
		"gateway.yaml": w.gatewayYAML(),
		"pools.yaml":   w.poolsYAML(),
		"pods.yaml":    pods.String(),
		"extra.yaml":   w.Extra,
	}
	for name, content := range files {
		writeFile(t, filepath.Join(dir, name), content)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	// Write then rename, as editors and kubectl-style tools do, so the watcher never reads
	// half a file.
	tmp := path + ".tmp~"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// newWorld picks free ports for a world whose pods live on the given IPs.
func newWorld(t *testing.T, ips []string) *world {
	return &world{
		GatewayPort: freePort(t, "127.0.0.1"),
		PickerPort:  freePort(t, "127.0.0.1"),
		TargetPort:  freePortOnAll(t, ips),
	}
}

// gateway is a running stack plus the manifest directory it serves.
type gateway struct {
	*stack.Stack
	dir     string
	url     string
	metrics string // host:port of /metrics, /healthz, /readyz
	admin   string // host:port of Envoy's admin interface
}

// startGateway writes the world's manifests and starts the full stack on them.
func startGateway(t *testing.T, w *world, tweak func(*stack.Config)) *gateway {
	t.Helper()
	bin := envoyBinary(t)
	dir := t.TempDir()
	w.write(t, dir)
	cfg := stack.DefaultConfig()
	cfg.ManifestDir = dir
	cfg.EnvoyBinary = bin
	cfg.XDSAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1"))
	cfg.EnvoyAdminAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1"))
	cfg.MetricsAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1"))
	// A fast sim keeps the suite quick; routing does not depend on absolute speed.
	cfg.Sim.TimeScale = 0.05
	cfg.ReadyTimeout = 60 * time.Second
	if testing.Verbose() {
		cfg.EnvoyOutput = os.Stderr
	}
	if tweak != nil {
		tweak(&cfg)
	}
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	st, err := stack.Start(ctx, cfg, log)
	if err != nil {
		t.Fatalf("start stack: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("stack close: %v", err)
		}
	})
	return &gateway{Stack: st, dir: dir, url: st.GatewayURL(), metrics: cfg.MetricsAddr, admin: cfg.EnvoyAdminAddr}
}

// envoyCounters returns Envoy's counters whose names contain substr, from the admin
// interface's text stats (histograms and text values are skipped).
func (g *gateway) envoyCounters(t *testing.T, substr string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, line := range strings.Split(getText(t, "http://"+g.admin+"/stats?filter="+substr), "\n") {
		name, val, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(strings.TrimSpace(val), 10, 64); err == nil {
			out[name] = n
		}
	}
	return out
}

// checkPickerStreamsClean asserts, from Envoy's side, that every ext_proc stream to the
// picker ended cleanly: none failed, timed out or was ignored, and the picker reset none
// (rx_reset). Envoy's own resets (tx_reset) are not trouble: Envoy 1.40 resets each
// ext_proc stream itself when its HTTP exchange is torn down, one per request.
func (g *gateway) checkPickerStreamsClean(t *testing.T, minStreams int64) {
	t.Helper()
	// Envoy closes a response observer's stream up to a second after its response ended
	// (xds/observer.go, deferred close): wait for every stream to be over first.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := g.envoyCounters(t, "ext_proc")
		if sumSuffix(c, ".ext_proc.streams_closed")+g.observerEarlyCloses(t) >= sumSuffix(c, ".ext_proc.streams_started") || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	var started, closed, bad int64
	var trouble []string
	for name, v := range g.envoyCounters(t, "ext_proc") {
		switch {
		case strings.HasSuffix(name, ".ext_proc.streams_started"):
			started += v
		case strings.HasSuffix(name, ".ext_proc.streams_closed"):
			closed += v
		case strings.HasSuffix(name, ".ext_proc.streams_failed"), strings.HasSuffix(name, ".ext_proc.message_timeouts"),
			strings.HasSuffix(name, ".ext_proc.spurious_msgs_received"), strings.HasSuffix(name, ".ext_proc.failure_mode_allowed"):
			bad += v
			if v != 0 {
				trouble = append(trouble, fmt.Sprintf("%s=%d", name, v))
			}
		}
	}
	// The picker ends a response observer's stream itself when it has nothing to observe
	// (extproc/observe.go), which Envoy counts as a reset from the picker: those are
	// expected, as many as the picker counted.
	early := g.observerEarlyCloses(t)
	for _, suffix := range []string{"http2.rx_reset", "upstream_rq_rx_reset"} {
		var resets int64
		for name, v := range g.envoyCounters(t, "picker") {
			if v != 0 && strings.HasSuffix(name, suffix) {
				resets += v
				trouble = append(trouble, fmt.Sprintf("%s=%d", name, v))
			}
		}
		if resets > early {
			bad += resets - early
		}
	}
	// Envoy counts the observer streams the picker ended itself as neither closed nor
	// failed.
	if started < minStreams || closed+early < started || closed > started || bad != 0 {
		t.Fatalf("ext_proc streams to the picker: started %d (want ≥ %d), closed cleanly %d; trouble: %v (observer streams the picker ended itself: %d)",
			started, minStreams, closed, trouble, early)
	}
}

// observerEarlyCloses is how many response observer streams the picker ended itself, from
// its /metrics.
func (g *gateway) observerEarlyCloses(t *testing.T) int64 {
	return g.observerCount(t, false)
}

// observerStreams is how many response observer streams the picker has seen end or hand
// over (every observer stream of a finished request).
func (g *gateway) observerStreams(t *testing.T) int64 {
	return g.observerCount(t, true)
}

func (g *gateway) observerCount(t *testing.T, withObserved bool) int64 {
	t.Helper()
	var n int64
	for _, line := range strings.Split(getText(t, "http://"+g.metrics+"/metrics"), "\n") {
		if !strings.HasPrefix(line, "infergw_picker_response_observer_streams_total{") ||
			(!withObserved && strings.Contains(line, `outcome="observed"`)) {
			continue
		}
		if _, val, ok := strings.Cut(line, "} "); ok {
			if f, err := strconv.ParseFloat(val, 64); err == nil {
				n += int64(f)
			}
		}
	}
	return n
}

// result is what a test needs of one response.
type result struct {
	Status   int
	Header   http.Header
	Body     []byte
	Upstream string // x-infergw-upstream, set by Envoy: the endpoint it really used
	Instance string // x-sim-instance, set by the sim that answered
}

var client = &http.Client{Timeout: 30 * time.Second}

func chat(t *testing.T, url, model, prompt string, hdr map[string]string) result {
	t.Helper()
	body, _ := json.Marshal(map[string]any{
		"model":      model,
		"max_tokens": 4,
		"messages":   []map[string]string{{"role": "user", "content": prompt}},
	})
	return post(t, url+"/v1/chat/completions", body, hdr)
}

func post(t *testing.T, url string, body []byte, hdr map[string]string) result {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("content-type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return result{Status: resp.StatusCode, Header: resp.Header, Body: b,
		Upstream: resp.Header.Get("x-infergw-upstream"), Instance: resp.Header.Get("x-sim-instance")}
}

// eventually retries f every 50 ms until it returns true or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, f func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if f() {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sseEvent is one data line of a streamed response and when it arrived.
type sseEvent struct {
	Data string
	At   time.Duration
}

func streamChat(t *testing.T, url, model, prompt string, maxTokens int) (result, []sseEvent) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{
		"model": model, "stream": true, "max_tokens": maxTokens, "ignore_eos": true,
		"stream_options": map[string]bool{"include_usage": true},
		"messages":       []map[string]string{{"role": "user", "content": prompt}},
	})
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", bytes.NewReader(body))
	req.Header.Set("content-type", "application/json")
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var events []sseEvent
	sse := wirescan.NewSSEReader(resp.Body, 0)
	for {
		ev, err := sse.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read stream: %v", err)
		}
		events = append(events, sseEvent{Data: string(ev.Data), At: time.Since(start)})
	}
	return result{Status: resp.StatusCode, Header: resp.Header,
		Upstream: resp.Header.Get("x-infergw-upstream"), Instance: resp.Header.Get("x-sim-instance")}, events
}

// tryChat sends one small chat completion and returns its status, or 0 when the request
// failed at the transport level; for polling loops that must tolerate resets.
func tryChat(url string, hdr map[string]string) int {
	body := []byte(`{"model":"` + baseModel + `","max_tokens":1,"messages":[{"role":"user","content":"poll"}]}`)
	req, err := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		return 0
	}
	req.Header.Set("content-type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
