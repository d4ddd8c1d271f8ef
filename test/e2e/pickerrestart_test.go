package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/infergw/infergw/stack"
)

// pickerProcess is `infergw picker` as its own process, as in a deployment, so that a
// test can SIGKILL it.
type pickerProcess struct {
	bin, manifests, grpcAddr, metricsAddr, logPath string
	cmd                                            *exec.Cmd
	exited                                         chan struct{}
}

// startPickerProcess starts `infergw picker` on the world's picker port, reading the
// stack's manifests, and waits until it is ready.
func startPickerProcess(t *testing.T, bin, manifests string, pickerPort int) *pickerProcess {
	t.Helper()
	p := &pickerProcess{bin: bin, manifests: manifests, grpcAddr: fmt.Sprintf("127.0.0.1:%d", pickerPort),
		metricsAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1")), logPath: filepath.Join(t.TempDir(), "picker.log")}
	p.start(t)
	p.waitReady(t)
	return p
}

// stopAndReport kills the picker and, when the test failed, logs what it wrote.
func (p *pickerProcess) stopAndReport(t *testing.T) {
	p.kill(t)
	if t.Failed() {
		b, _ := os.ReadFile(p.logPath)
		t.Logf("picker log:\n%s", b)
	}
}

// buildInfergw builds the infergw binary into a temporary directory.
func buildInfergw(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "infergw")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/infergw/infergw/cmd/infergw").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func (p *pickerProcess) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(p.bin, "picker", "--manifests", p.manifests, "--grpc-addr", p.grpcAddr,
		"--metrics-addr", p.metricsAddr, "--log-level", "warn")
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.exited = make(chan struct{})
	go func() { _ = p.cmd.Wait(); logf.Close(); close(p.exited) }()
}

// kill SIGKILLs the picker (a crash: no drain, no GOAWAY) and waits for it to exit.
func (p *pickerProcess) kill(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("picker did not exit after SIGKILL")
	}
}

// waitReady polls /readyz until the picker is ready.
func (p *pickerProcess) waitReady(t *testing.T) {
	t.Helper()
	eventually(t, 15*time.Second, "picker /readyz", func() bool {
		resp, err := http.Get("http://" + p.metricsAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// outcome is one request of the load during the restarts.
type outcome struct {
	status     int
	body       []byte
	err        error
	start, end time.Time
}

// TestPickerCrashLoop: the picker runs as its own process and is SIGKILLed and restarted 10
// times under 20 requests/s to a FailOpen pool and 10/s to a FailClose pool (real Envoy,
// health-checking the picker). The FailOpen pool fails no request. The FailClose pool
// answers 200 or the JSON 503 "endpoint picker unavailable", never the picker's "unknown
// pool" of a picker serving before its pools are loaded, never another status; a request
// cut at the transport level is one whose response was passing through the picker at the
// instant it was killed (the limit extproc/README.md explains), and no other.
func TestPickerCrashLoop(t *testing.T) {
	bin := buildInfergw(t)
	ips := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"}
	w := newWorld(t, ips)
	w.Pools = []pool{{Name: "open", App: "open", FailureMode: "FailOpen"}, {Name: "closed", App: "closed", FailureMode: "FailClose"}}
	w.Pods = []pod{{Name: "open-0", IP: ips[0], App: "open"}, {Name: "open-1", IP: ips[1], App: "open"},
		{Name: "closed-0", IP: ips[2], App: "closed"}, {Name: "closed-1", IP: ips[3], App: "closed"}}
	w.Routes = `  rules:
    - matches: [{headers: [{name: x-pool, value: open}]}]
      backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: open}]
    - matches: [{headers: [{name: x-pool, value: closed}]}]
      backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: closed}]
    - backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: open}]`
	var picker *pickerProcess
	gw := startGateway(t, w, func(c *stack.Config) {
		c.ExternalPicker = true
		picker = startPickerProcess(t, bin, c.ManifestDir, w.PickerPort)
	})
	t.Cleanup(func() { picker.stopAndReport(t) })

	body := []byte(`{"model":"` + baseModel + `","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}`)
	hc := &http.Client{Timeout: 20 * time.Second}
	send := func(pool string) outcome {
		o := outcome{start: time.Now()}
		defer func() { o.end = time.Now() }()
		req, _ := http.NewRequest(http.MethodPost, gw.url+"/v1/chat/completions", bytes.NewReader(body))
		req.Header.Set("content-type", "application/json")
		req.Header.Set("x-pool", pool)
		// Headers only the picker may set, as a client trying to pick for itself would send
		// them: Envoy strips them, so with the picker down a FailClose pool stays closed.
		req.Header.Set("x-gateway-destination-endpoint", fmt.Sprintf("%s:%d", ips[2], w.TargetPort))
		req.Header.Set("x-infergw-pool", "default/"+pool)
		resp, err := hc.Do(req)
		if err != nil {
			o.err, o.end = err, time.Now()
			return o
		}
		o.status = resp.StatusCode
		o.body, o.err = io.ReadAll(resp.Body)
		resp.Body.Close()
		o.end = time.Now()
		return o
	}

	// Load: a fixed rate per pool, each request on its own goroutine, until stop.
	var mu sync.Mutex
	results := map[string][]outcome{}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	load := func(pool string, every time.Duration) {
		defer wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for sent := 0; sent < 5000; sent++ { // bound: far above what the loop below needs
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				o := send(pool)
				mu.Lock()
				results[pool] = append(results[pool], o)
				mu.Unlock()
			}()
		}
	}
	wg.Add(2)
	go load("open", 50*time.Millisecond)
	go load("closed", 100*time.Millisecond)

	var kills []time.Time
	time.Sleep(time.Second)
	for i := 0; i < 10; i++ {
		kills = append(kills, time.Now())
		picker.kill(t)
		time.Sleep(300 * time.Millisecond) // the outage
		picker.start(t)
		picker.waitReady(t)
		time.Sleep(1500 * time.Millisecond) // Envoy's health check (1 s) finds it ready
	}
	close(stop)
	wg.Wait()

	open, closed := results["open"], results["closed"]
	var openFailed []string
	for _, o := range open {
		if o.err != nil || o.status != 200 {
			openFailed = append(openFailed, fmt.Sprintf("%d %v %.100s", o.status, o.err, o.body))
		}
	}
	if len(open) < 300 || len(openFailed) > 0 {
		t.Errorf("FailOpen: %d of %d requests failed: %q", len(openFailed), len(open), openFailed)
	}
	var ok, unavailable, cut int
	for _, o := range closed {
		switch {
		case o.err != nil:
			inFlightAtKill := false
			for _, k := range kills {
				inFlightAtKill = inFlightAtKill || (o.start.Before(k) && o.end.After(k))
			}
			if !inFlightAtKill {
				t.Errorf("FailClose: a request failed at the transport level away from any kill: %v", o.err)
			}
			cut++
		case o.status == 200:
			ok++
		case o.status == 503:
			var e openAIError
			if json.Unmarshal(o.body, &e) != nil || e.Error.Message != "endpoint picker unavailable" ||
				string(e.Error.Code) != `"endpoint_picker_unavailable"` {
				t.Errorf("FailClose: 503 that is not the picker-unavailable JSON: %s", o.body)
			}
			unavailable++
		default:
			t.Errorf("FailClose: status %d: %s", o.status, o.body)
		}
	}
	if ok == 0 || unavailable == 0 {
		t.Errorf("FailClose: %d ok, %d unavailable: the loop did not show both served and outage periods (with none unavailable, was a spoofed destination header honoured?)", ok, unavailable)
	}
	t.Logf("FailOpen: %d requests, %d failed. FailClose: %d requests: %d ok, %d JSON 503, %d cut mid-response at a kill",
		len(open), len(openFailed), len(closed), ok, unavailable, cut)
}
