package vllm

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// progress prints a line at once (go test -v buffers nothing for t.Log in a running test
// only with -v; this goes straight to stderr so CI never looks hung).
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "test-vllm: %s "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
}

// proc is a child process started in its own process group, so that stopping it also
// stops the workers it started (vLLM runs its engine in a separate process).
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startProc(t *testing.T, name, logPath string, env []string, bin string, args ...string) *proc {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(p.stop)
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signalGroup sends sig to the process group.
func (p *proc) signalGroup(sig syscall.Signal) error {
	return syscall.Kill(-p.cmd.Process.Pid, sig)
}

// stop ends the whole process group: SIGCONT (it may have been stopped by the test),
// SIGTERM, then SIGKILL after a grace period. Idempotent.
func (p *proc) stop() {
	if p.exited() {
		_ = p.signalGroup(syscall.SIGKILL) // stray workers of an exited leader
		return
	}
	_ = p.signalGroup(syscall.SIGCONT)
	_ = p.signalGroup(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		progress("%s did not stop within 20s of SIGTERM: killing", p.name)
	}
	_ = p.signalGroup(syscall.SIGKILL)
	<-p.done
}

func (p *proc) tail(n int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// vllmServer is one real vLLM OpenAI server.
type vllmServer struct {
	*proc
	addr   string // ip:port
	ip     string
	replay string // its KV-event replay endpoint (vLLM's replay_endpoint)
}

func (s *vllmServer) url(path string) string { return "http://" + s.addr + path }

// startVLLM starts `vllm serve` on ip:port, its engine bound to one core, publishing its
// KV-cache events to the subscriber that binds kvEvents (tcp://HOST:PORT; vLLM connects),
// under topic kv@IP@tiny, and serving its event buffer for replay on ip:(a free port).
func startVLLM(t *testing.T, env testEnv, logDir, name, ip string, port, core int, kvEvents string) *vllmServer {
	replay := "tcp://" + net.JoinHostPort(ip, strconv.Itoa(freePort(t, ip)))
	args := []string{filepath.Join(env.testDir, "vllm_launcher.py"), "serve", filepath.Join(env.modelDir, "model"),
		"--host", ip, "--port", strconv.Itoa(port),
		"--served-model-name", baseModel,
		"--enable-lora", "--lora-modules", loraModel + "=" + filepath.Join(env.modelDir, "lora"),
		"--max-loras", "2", "--max-lora-rank", "8",
		"--enable-prefix-caching", "--enable-prompt-tokens-details",
		"--max-model-len", "2048", "--max-num-seqs", "8", "--dtype", "bfloat16",
		// Reproducible block hashes (with PYTHONHASHSEED below) and KV events, as the
		// picker's precise-prefix scorer expects them.
		"--prefix-caching-hash-algo", "sha256_cbor",
		"--kv-events-config", fmt.Sprintf(`{"enable_kv_cache_events": true, "publisher": "zmq", "endpoint": %q, "replay_endpoint": %q, "topic": "kv@%s@%s"}`, kvEvents, replay, ip, baseModel),
	}
	procEnv := []string{
		"VLLM_TARGET_DEVICE=cpu", "VLLM_CPU_KVCACHE_SPACE=1", "OMP_NUM_THREADS=1",
		"VLLM_CPU_OMP_THREADS_BIND=" + strconv.Itoa(core),
		"HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1", "VLLM_NO_USAGE_STATS=1", "DO_NOT_TRACK=1",
		"PYTHONHASHSEED=0", "PYTHONUNBUFFERED=1",
		"VLLM_SERVER_DEV_MODE=1", // POST /reset_prefix_cache (the precise-routing check clears a cache)
	}
	p := startProc(t, name, filepath.Join(logDir, name+".log"), procEnv, filepath.Join(env.venv, "bin", "python"), args...)
	return &vllmServer{proc: p, addr: net.JoinHostPort(ip, strconv.Itoa(port)), ip: ip, replay: replay}
}

// waitHealthy waits for GET /health to answer 200, printing progress; it fails when the
// server exits or the deadline passes.
func (s *vllmServer) waitHealthy(deadline time.Time) error {
	client := &http.Client{Timeout: 2 * time.Second}
	start, lastNote := time.Now(), time.Now()
	for {
		if s.exited() {
			return fmt.Errorf("%s exited during startup (%v); log tail:\n%s", s.name, s.err, s.tail(40))
		}
		resp, err := client.Get(s.url("/health"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				progress("%s healthy at %s after %.0fs", s.name, s.addr, time.Since(start).Seconds())
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not healthy within %.0fs; log tail:\n%s", s.name, time.Since(start).Seconds(), s.tail(40))
		}
		if time.Since(lastNote) > 20*time.Second {
			lastNote = time.Now()
			progress("waiting for %s (%.0fs): %s", s.name, time.Since(start).Seconds(), lastLine(s.tail(1)))
		}
		time.Sleep(time.Second)
	}
}

func lastLine(s string) string {
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}

// loopbackPair returns two distinct 127.0.0.x addresses and a port free on both (the pool
// has one target port; its pods differ by address).
func loopbackPair(t *testing.T) (string, string, int) {
	t.Helper()
	for attempt := 0; attempt < 50; attempt++ {
		a := 20 + rand.IntN(200)
		ips := []string{fmt.Sprintf("127.0.0.%d", a), fmt.Sprintf("127.0.0.%d", a+1+rand.IntN(30))}
		port := freePort(t, ips[0])
		if l, err := net.Listen("tcp", net.JoinHostPort(ips[1], strconv.Itoa(port))); err == nil {
			l.Close()
			return ips[0], ips[1], port
		}
	}
	t.Fatal("no port free on two loopback addresses")
	return "", "", 0
}

// handedOut holds every port freePort returned in this test binary. A port is free only
// until the process it is meant for binds it, minutes later for the gateway's listener
// (chosen before the vLLM servers start); meanwhile the kernel may offer it again, and once
// Envoy's admin and the gateway listener got the same port (the chat went to the admin
// page). Test-binary state, not product state: one process, one set.
var handedOut sync.Map

func freePort(t *testing.T, ip string) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if _, taken := handedOut.LoadOrStore(port, true); !taken {
			return port
		}
	}
	t.Fatal("no port that was not handed out already")
	return 0
}

// gateway is `infergw up --no-sims` in front of the vLLM servers.
type gateway struct {
	*proc
	url        string // Envoy listener
	metricsURL string // the picker's /metrics
}

// startGateway runs infergw up and waits for the URL it prints once a request went
// through Envoy.
func startGateway(t *testing.T, env testEnv, logDir, manifests string, extra ...string) *gateway {
	metrics := fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1"))
	args := append([]string{"up", "--no-sims", "--manifests", manifests, "--model", baseModel,
		"--envoy", env.envoy,
		"--xds-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1")),
		"--envoy-admin-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1")),
		"--metrics-addr", metrics,
		"--log-level", "debug", "--ready-timeout", "120s"}, extra...)
	// stdout carries the welcome text with the URL; logs go to stderr. Both to one file.
	p := startProc(t, "infergw", filepath.Join(logDir, "infergw.log"), nil, env.infergw, args...)
	re := regexp.MustCompile(`(?m)^\s*gateway\s+(http://\S+)`)
	deadline := time.Now().Add(150 * time.Second)
	for time.Now().Before(deadline) {
		if p.exited() {
			t.Fatalf("infergw up exited: %v\n%s", p.err, p.tail(60))
		}
		b, _ := os.ReadFile(p.log)
		if m := re.FindSubmatch(b); m != nil {
			return &gateway{proc: p, url: string(m[1]), metricsURL: "http://" + metrics + "/metrics"}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("infergw up printed no gateway URL within 150s\n%s", p.tail(60))
	return nil
}

// logLine finds the picker's debug line for a request id (the picker's own record of
// what it chose).
func (g *gateway) logLine(requestID string) (string, error) {
	needle := "msg=picked request_id=" + requestID + " "
	for i := 0; i < 40; i++ {
		f, err := os.Open(g.log)
		if err != nil {
			return "", err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if strings.Contains(sc.Text(), needle) {
				f.Close()
				return sc.Text(), nil
			}
		}
		f.Close()
		time.Sleep(50 * time.Millisecond)
	}
	return "", fmt.Errorf("no picker log line for request %s", requestID)
}

var destinationRE = regexp.MustCompile(`destination=([0-9.:]+)`)

// pickedDestination returns the primary endpoint the picker chose for a request.
func (g *gateway) pickedDestination(requestID string) (string, error) {
	line, err := g.logLine(requestID)
	if err != nil {
		return "", err
	}
	m := destinationRE.FindStringSubmatch(line)
	if m == nil {
		return "", fmt.Errorf("picker log line without destination: %s", line)
	}
	return m[1], nil
}

// writeManifests writes what `infergw up` reads: a Gateway on a free port, a route to the
// pool, the pool (one target port, the servers' Pods by address), the picker Service on a
// free port and a rewrite of canaryModel to the LoRA adapter.
func writeManifests(t *testing.T, ips []string, port int) string {
	t.Helper()
	dir := t.TempDir()
	gwPort, pickerPort := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1")
	var pods strings.Builder
	for i, ip := range ips {
		fmt.Fprintf(&pods, `---
apiVersion: v1
kind: Pod
metadata:
  name: vllm-tiny-%d
  namespace: default
  labels: {app: vllm-tiny, inference.networking.k8s.io/engine-type: vllm}
spec:
  containers: [{name: vllm, image: vllm-cpu}]
status:
  phase: Running
  podIP: %s
  podIPs: [{ip: %s}]
  conditions: [{type: Ready, status: "True"}]
`, i, ip, ip)
	}
	files := map[string]string{
		"gateway.yaml": fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: infergw}
spec: {controllerName: infergw.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: inference-gateway, namespace: default}
spec:
  gatewayClassName: infergw
  listeners: [{name: http, protocol: HTTP, port: %d}]
`, gwPort),
		"route.yaml": `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: llm-route, namespace: default}
spec:
  parentRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: inference-gateway}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /}}]
      backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: vllm-tiny}]
      timeouts: {request: 120s}
`,
		"pool.yaml": fmt.Sprintf(`apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: vllm-tiny, namespace: default}
spec:
  selector: {matchLabels: {app: vllm-tiny}}
  targetPorts: [{number: %d}]
  appProtocol: http
  endpointPickerRef: {group: "", kind: Service, name: infergw-picker, port: {number: %d}, failureMode: FailClose}
`, port, pickerPort),
		"picker.yaml": fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: infergw-picker, namespace: default}
spec:
  type: ClusterIP
  clusterIP: 127.0.0.1
  selector: {app: infergw-picker}
  ports: [{name: grpc-ext-proc, protocol: TCP, port: %d, targetPort: %d, appProtocol: http2}]
`, pickerPort, pickerPort),
		"rewrite.yaml": fmt.Sprintf(`apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata: {name: canary, namespace: default}
spec:
  poolRef: {group: inference.networking.k8s.io, kind: InferencePool, name: vllm-tiny}
  rules:
    - matches: [{model: {type: Exact, value: %s}}]
      targets: [{modelRewrite: %s, weight: 100}]
`, canaryModel, loraModel),
		"pods.yaml": pods.String(),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// getBody GETs a URL and returns status and body.
func getBody(ctx context.Context, url string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}
