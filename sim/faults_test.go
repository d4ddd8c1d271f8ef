package sim

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"
)

func genBody(t *testing.T) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"model": DefaultConfig().Model, "prompt": "hello there", "max_tokens": 2})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFaultInjection: each fault does what it says to generation requests only, and
// SetFaults turns it off again.
func TestFaultInjection(t *testing.T) {
	s := startSim(t, func(c *Config) { c.Faults = Faults{ErrorRate: 1} })
	url := "http://" + s.Addr()
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	gen := func() (*http.Response, error) {
		return client.Post(url+"/v1/completions", "application/json", bytes.NewReader(genBody(t)))
	}

	resp, err := gen()
	if err != nil {
		t.Fatal(err)
	}
	var e struct {
		Error struct{ Message, Type string } `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || resp.StatusCode != 500 || e.Error.Type == "" {
		t.Fatalf("error fault: status %d body %+v (%v), want a 500 with an OpenAI error", resp.StatusCode, e, err)
	}
	resp.Body.Close()
	if m, err := client.Get(url + "/metrics"); err != nil || m.StatusCode != 200 {
		t.Fatalf("/metrics must stay healthy under faults: %v %v", m, err)
	} else {
		_, _ = io.Copy(io.Discard, m.Body)
		m.Body.Close()
	}

	if err := s.SetFaults(Faults{ResetRate: 1}); err != nil {
		t.Fatal(err)
	}
	if resp, err := gen(); err == nil {
		resp.Body.Close()
		t.Fatalf("reset fault: got status %d, want a connection error", resp.StatusCode)
	}

	const delay = 300 * time.Millisecond
	if err := s.SetFaults(Faults{FirstByteDelay: delay}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	resp, err = gen()
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if took := time.Since(start); resp.StatusCode != 200 || took < delay {
		t.Fatalf("first-byte delay: status %d after %v, want 200 after at least %v", resp.StatusCode, took, delay)
	}

	if err := s.SetFaults(Faults{}); err != nil {
		t.Fatal(err)
	}
	resp, err = gen()
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("faults off: %v %v", resp, err)
	}
	resp.Body.Close()

	for _, bad := range []Faults{{ErrorRate: -0.1}, {ResetRate: 1.5}, {ErrorRate: 0.6, ResetRate: 0.6}, {FirstByteDelay: -1}} {
		if err := s.SetFaults(bad); err == nil {
			t.Errorf("SetFaults(%+v) accepted", bad)
		}
	}
}
