package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/infergw/infergw/internal/wirescan"
	"github.com/infergw/infergw/stack"
)

// streamOutcome is what a client saw of one streamed completion.
type streamOutcome struct {
	status int
	events int
	done   bool  // the stream ended with data: [DONE]
	err    error // the read error that ended it, if any
}

// TestPickerCrashMidStream: the picker is SIGKILLed while a streamed response passes
// through it, on a FailOpen and on a FailClose pool (real Envoy 1.40). Both streams run to
// [DONE]: every pool route fails open in ext_proc (FailClose pools fail closed in their
// cluster instead), with a BUFFERED request body and a STREAMED response body, the only
// modes in which Envoy 1.40 lets a response continue once its processor is gone. With
// FULL_DUPLEX_STREAMED request bodies or failure_mode_allow false (main before this
// change) the FailClose stream was cut after its first events: HTTP 200, then no [DONE].
// extproc/README.md ("Picker crash during a streamed response") has the details.
func TestPickerCrashMidStream(t *testing.T) {
	bin := buildInfergw(t)
	ips := []string{"127.0.0.2", "127.0.0.3"}
	w := newWorld(t, ips)
	w.Pools = []pool{{Name: "open", App: "open", FailureMode: "FailOpen"}, {Name: "closed", App: "closed", FailureMode: "FailClose"}}
	w.Pods = []pod{{Name: "open-0", IP: ips[0], App: "open"}, {Name: "closed-0", IP: ips[1], App: "closed"}}
	w.Routes = `  rules:
    - matches: [{headers: [{name: x-pool, value: closed}]}]
      backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: closed}]
    - backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: open}]`
	var picker *pickerProcess
	gw := startGateway(t, w, func(c *stack.Config) {
		c.ExternalPicker = true
		c.Sim.TimeScale = 1 // real-time decoding: a 300-token stream lasts over a second
		picker = startPickerProcess(t, bin, c.ManifestDir, w.PickerPort)
	})
	t.Cleanup(func() { picker.stopAndReport(t) })

	// stream sends a streamed completion, kills the picker after the first event, and
	// reads the rest.
	stream := func(pool string) streamOutcome {
		body, _ := json.Marshal(map[string]any{"model": baseModel, "stream": true, "max_tokens": 300, "ignore_eos": true,
			"messages": []map[string]string{{"role": "user", "content": "a long story please"}}})
		req, _ := http.NewRequest(http.MethodPost, gw.url+"/v1/chat/completions", bytes.NewReader(body))
		req.Header.Set("content-type", "application/json")
		req.Header.Set("x-pool", pool)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", pool, err)
		}
		defer resp.Body.Close()
		o := streamOutcome{status: resp.StatusCode}
		sse := wirescan.NewSSEReader(resp.Body, 0)
		for {
			ev, err := sse.Next()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					o.err = err
				}
				return o
			}
			o.events++
			o.done = string(ev.Data) == "[DONE]"
			if o.events == 1 {
				picker.kill(t)
			}
		}
	}

	open := stream("open")
	picker.start(t)
	picker.waitReady(t)
	time.Sleep(1500 * time.Millisecond) // Envoy's health check finds it ready again
	closed := stream("closed")
	t.Logf("FailOpen: %d events, [DONE] %v, error %v; FailClose: %d events, [DONE] %v, error %v", open.events, open.done, open.err, closed.events, closed.done, closed.err)

	for name, o := range map[string]streamOutcome{"FailOpen": open, "FailClose": closed} {
		if o.status != 200 || !o.done || o.err != nil || o.events < 100 {
			t.Errorf("%s stream did not survive the picker crash: %d events, [DONE] %v, error %v", name, o.events, o.done, o.err)
		}
	}
}
