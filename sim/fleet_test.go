package sim

import (
	"net/http"
	"runtime"
	"strings"
	"testing"
)

func TestFleetStartsSimsOnConsecutiveLoopbackIPs(t *testing.T) {
	before := runtime.NumGoroutine()
	base := DefaultConfig()
	base.TimeScale = 0.01
	f, err := StartFleet(FleetConfig{N: 3, Base: base, Adapters: func(i int, c *Config) {
		if i == 1 {
			c.LoRAAdapters = []string{"only-on-1"}
		}
	}}, nil)
	if err != nil {
		t.Fatalf("StartFleet: %v", err)
	}
	servers := f.Servers()
	if len(servers) != 3 {
		t.Fatalf("%d servers", len(servers))
	}
	port := ""
	for i, s := range servers {
		host, p, _ := strings.Cut(s.Addr(), ":")
		if want := "127.0.0." + string(rune('2'+i)); host != want {
			t.Errorf("sim %d on %s, want %s", i, host, want)
		}
		if port == "" {
			port = p
		} else if p != port {
			t.Errorf("sim %d port %s, want shared %s", i, p, port)
		}
		resp, err := http.Get("http://" + s.Addr() + "/health")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got, want := resp.Header.Get("x-sim-instance"), "sim-"+string(rune('0'+i)); got != want {
			t.Errorf("instance header %q, want %q", got, want)
		}
		resp = post(t, "http://"+s.Addr()+"/v1/completions", map[string]any{"model": "only-on-1", "prompt": "x", "max_tokens": 1})
		resp.Body.Close()
		if wantOK := i == 1; (resp.StatusCode == 200) != wantOK {
			t.Errorf("sim %d adapter request status %d", i, resp.StatusCode)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	http.DefaultClient.CloseIdleConnections()
	waitGoroutines(t, before)
}

func TestFleetRejectsBadConfig(t *testing.T) {
	if _, err := StartFleet(FleetConfig{N: 0, Base: DefaultConfig()}, nil); err == nil {
		t.Error("N=0 accepted")
	}
	if _, err := StartFleet(FleetConfig{N: 1, FirstIP: "not-an-ip", Base: DefaultConfig()}, nil); err == nil {
		t.Error("bad first IP accepted")
	}
	bad := DefaultConfig()
	bad.KVBlocks = 1
	if _, err := StartFleet(FleetConfig{N: 2, Base: bad}, nil); err == nil || !strings.Contains(err.Error(), "kv cache") {
		t.Errorf("tiny KV cache: err %v", err)
	}
}
