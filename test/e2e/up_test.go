package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// upProcess is an `infergw up` the test started on a copy of examples/local.
type upProcess struct {
	cmd    *exec.Cmd
	url    string // the gateway URL it printed
	gwPort int
	admin  string // Envoy's admin address
	log    string // its stderr, read to explain a failure
	exited chan error
}

// startUp builds infergw and runs `infergw up` as a user would, on the bundled
// examples/local manifests (ports moved to free ones so the test never collides with a
// gateway already running), with extra flags, and waits for the gateway URL it prints.
// The process is killed when the test ends.
func startUp(t *testing.T, extra ...string) *upProcess {
	t.Helper()
	envoy := envoyBinary(t)
	bin := filepath.Join(t.TempDir(), "infergw")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/infergw")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build infergw: %v\n%s", err, out)
	}

	simIPs := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8"}
	gwPort, pickerPort, simPort := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1"), freePortOnAll(t, simIPs)
	dir := copyExamples(t, "../../examples/local", strings.NewReplacer(
		"port: 8080", fmt.Sprintf("port: %d", gwPort),
		"9002", strconv.Itoa(pickerPort),
		"number: 8000", fmt.Sprintf("number: %d", simPort),
	))
	up := &upProcess{gwPort: gwPort, admin: fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1")), exited: make(chan error, 1)}
	args := append([]string{"up", "--manifests", dir, "--envoy", envoy,
		"--xds-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1")),
		"--envoy-admin-addr", up.admin,
		"--metrics-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1")),
		"--time-scale", "0.1", "--envoy-log"}, extra...)
	cmd := exec.Command(bin, args...)
	up.cmd = cmd
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	// Logs go to a file: the test reads them only to explain a failure.
	stderr, err := os.Create(filepath.Join(t.TempDir(), "up.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stderr.Close() })
	up.log = stderr.Name()
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	// One goroutine owns stdout: it reports the gateway URL, then drains the rest so the
	// child never blocks on a full pipe; Wait runs only after the pipe is drained, as
	// os/exec requires.
	found := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`^\s*gateway\s+(http://\S+)`)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		up.exited <- cmd.Wait()
	}()
	select {
	case up.url = <-found:
	case err := <-up.exited:
		t.Fatalf("infergw up exited early: %v\nlog:\n%s", err, readLog(up.log))
	case <-time.After(150 * time.Second):
		t.Fatalf("infergw up printed no gateway URL within 150s\nlog:\n%s", readLog(up.log))
	}
	return up
}

// TestUpCommand runs `infergw up` as a user would, sends a streamed chat completion to the
// URL it prints, and stops it with SIGTERM: it must exit 0 and take Envoy down with it.
func TestUpCommand(t *testing.T) {
	// A loopback address other than the default 127.0.0.1: the listener must bind to it.
	up := startUp(t, "--listener-address", "127.0.0.9")
	url, gwPort := up.url, up.gwPort
	if want := fmt.Sprintf("http://127.0.0.9:%d", gwPort); url != want {
		t.Fatalf("gateway URL %s, want %s (--listener-address)", url, want)
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", gwPort), time.Second); err == nil {
		c.Close()
		t.Fatalf("the gateway also listens on 127.0.0.1:%d; --listener-address 127.0.0.9 should be the only address", gwPort)
	}
	res, events := streamChat(t, url, baseModel, "Hello from the up test", 8)
	if res.Status != 200 || len(events) < 9 || events[len(events)-1].Data != "[DONE]" {
		t.Fatalf("streamed chat through %s: status %d, %d events", url, res.Status, len(events))
	}

	if err := up.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-up.exited:
		if err != nil {
			t.Fatalf("infergw up exited with %v after SIGTERM\nlog:\n%s", err, readLog(up.log))
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("infergw up did not stop within 30s of SIGTERM\nlog:\n%s", readLog(up.log))
	}
	// Envoy must be gone too: its admin port no longer answers.
	if resp, err := (&http.Client{Timeout: time.Second}).Get("http://" + up.admin + "/ready"); err == nil {
		resp.Body.Close()
		t.Fatalf("Envoy admin %s still answers after infergw up stopped: orphaned Envoy", up.admin)
	}
}

func readLog(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// copyExamples copies a manifest directory, rewriting each file with r.
func copyExamples(t *testing.T, src string, r *strings.Replacer) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".yaml") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), []byte(r.Replace(string(b))), 0o644); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n == 0 {
		t.Fatal(errors.New("no manifests in " + src))
	}
	return dst
}

// TestUpRoundRobinRoutesByModel: `infergw up --policy round-robin` takes the picker off the
// endpoint choice, but examples/local routes by the model in the body, which only the
// picker reads. The picker must still route by model (each model to its own pool, an
// unknown model answered 404) while Envoy's round robin chooses the pod: the same prompt
// sent again and again lands on several pods (the picker's prefix affinity would keep it
// on one).
func TestUpRoundRobinRoutesByModel(t *testing.T) {
	up := startUp(t, "--policy", "round-robin")
	llama := map[string]bool{"127.0.0.2": true, "127.0.0.3": true, "127.0.0.4": true, "127.0.0.5": true}
	seen := map[string]int{}
	for i := 0; i < 12; i++ {
		res := chat(t, up.url, baseModel, "the same prompt every time, long enough to be a shared prefix", nil)
		host, _, err := net.SplitHostPort(res.Upstream)
		if res.Status != 200 || err != nil || !llama[host] {
			t.Fatalf("request %d: status %d from %q (want 200 from a Llama pod): %s\nlog:\n%s", i, res.Status, res.Upstream, res.Body, readLog(up.log))
		}
		seen[host]++
	}
	if len(seen) < 3 {
		t.Fatalf("12 identical requests reached %v: not Envoy's round robin", seen)
	}
	res := chat(t, up.url, "Qwen/Qwen2.5-1.5B-Instruct", "hello", nil)
	if host, _, _ := net.SplitHostPort(res.Upstream); res.Status != 200 || (host != "127.0.0.6" && host != "127.0.0.7") {
		t.Fatalf("Qwen request: status %d from %q, want 200 from a Qwen pod: %s", res.Status, res.Upstream, res.Body)
	}
	res = chat(t, up.url, "no-such-model", "hello", nil)
	if res.Status != 404 || !strings.Contains(string(res.Body), `"code":"model_not_found"`) {
		t.Fatalf("unknown model: status %d %s, want 404 model_not_found", res.Status, res.Body)
	}
}
