package e2e

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/infergw/infergw/router"
	"github.com/infergw/infergw/sim"
	"github.com/infergw/infergw/stack"
)

// faultFleet is a world of n pods whose sims the test starts itself (the stack's own sims
// are off) so that it can make one of them fail and recover while traffic flows.
type faultFleet struct {
	gw   *gateway
	sims []*sim.Server
}

func startFaultFleet(t *testing.T, n int, outlier func(*router.OutlierConfig)) *faultFleet {
	t.Helper()
	return startFaultFleetWith(t, n, func(c *stack.Config) {
		if outlier != nil {
			outlier(&c.Router.Outlier)
		}
	})
}

// startFaultFleetWith is startFaultFleet with any change to the stack's configuration.
func startFaultFleetWith(t *testing.T, n int, tweak func(*stack.Config)) *faultFleet {
	t.Helper()
	ips := make([]string, n)
	for i := range ips {
		ips[i] = fmt.Sprintf("127.0.0.%d", 2+i)
	}
	w := newWorld(t, ips)
	w.Pools = []pool{{Name: "pool", App: "vllm"}}
	for i, ip := range ips {
		w.Pods = append(w.Pods, pod{Name: fmt.Sprintf("vllm-%d", i), IP: ip, App: "vllm"})
	}
	w.Routes = `  rules:
    - backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: pool}]`
	f := &faultFleet{}
	for i, ip := range ips {
		cfg := sim.DefaultConfig()
		cfg.Addr = fmt.Sprintf("%s:%d", ip, w.TargetPort)
		cfg.Name = fmt.Sprintf("vllm-%d", i)
		cfg.TimeScale = 0.05
		s, err := sim.New(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		f.sims = append(f.sims, s)
	}
	f.gw = startGateway(t, w, func(c *stack.Config) {
		c.Sims = false
		tweak(c)
	})
	return f
}

// received is every sim's count of generation requests.
func (f *faultFleet) received() []uint64 {
	out := make([]uint64, len(f.sims))
	for i, s := range f.sims {
		out[i] = s.GenerationRequests()
	}
	return out
}

func minus(a, b []uint64) []uint64 {
	out := make([]uint64, len(a))
	for i := range a {
		out[i] = a[i] - b[i]
	}
	return out
}

func sum(v []uint64) (n uint64) {
	for _, x := range v {
		n += x
	}
	return n
}

// tryStream sends one small streamed chat completion, reads it to the end and returns its
// status, or 0 on a transport error.
func tryStream(url string) int {
	body := []byte(`{"model":"` + baseModel + `","max_tokens":2,"stream":true,"messages":[{"role":"user","content":"poll"}]}`)
	resp, err := client.Post(url+"/v1/chat/completions", "application/json", bytes.NewReader(body))
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// load sends total streamed requests from `workers` concurrent clients (a bounded loop) and
// returns the statuses seen (0 = transport error).
func (f *faultFleet) load(workers, total int) map[int]int {
	var mu sync.Mutex
	statuses := map[int]int{}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(total) {
				st := tryStream(f.gw.url)
				mu.Lock()
				statuses[st]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return statuses
}

// ejectedGauge reads infergw_router_endpoint_ejected of one endpoint from the picker's
// /metrics (-1 when the series is missing).
func (f *faultFleet) ejectedGauge(t *testing.T, i int) int {
	t.Helper()
	addr := f.sims[i].Addr()
	for _, line := range strings.Split(getText(t, "http://"+f.gw.metrics+"/metrics"), "\n") {
		if strings.HasPrefix(line, "infergw_router_endpoint_ejected{") && strings.Contains(line, `endpoint="`+addr+`"`) {
			if strings.HasSuffix(line, " 1") {
				return 1
			}
			return 0
		}
	}
	return -1
}

// TestFailingPodsAreAvoidedAndReadmitted: a pod answering 500, one resetting connections
// and one slow to its first byte are each, in turn, avoided within a bounded number of
// requests, and readmitted once they recover.
func TestFailingPodsAreAvoidedAndReadmitted(t *testing.T) {
	f := startFaultFleet(t, 4, func(c *router.OutlierConfig) {
		c.BaseEjection, c.MaxEjection = 2*time.Second, 4*time.Second
		c.FirstByteTimeout = 300 * time.Millisecond
	})
	cases := []struct {
		name    string
		faults  sim.Faults
		workers int
		batch   int    // requests per batch; batches go on until the pod is ejected (at most 40)
		bound   uint64 // requests the bad pod may get before it is avoided
	}{
		// 3 failures in a row eject; a probation request after the 2 s backoff may add one.
		{"answers 500", sim.Faults{ErrorRate: 1}, 2, 40, 6},
		// Envoy retries a reset on the next endpoint the picker listed: the client sees 200s,
		// the picker sees another endpoint answer and counts the primary's failure.
		{"resets connections", sim.Faults{ResetRate: 1}, 2, 40, 6},
		// Requests in flight when the 300 ms first-byte timeout passes (8 workers) plus the
		// probation request; the stall is noticed at the first pick after the timeout, so
		// the load goes on (in batches) until then.
		{"slow to first byte", sim.Faults{FirstByteDelay: 1500 * time.Millisecond}, 8, 100, 14},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bad := i
			if err := f.sims[bad].SetFaults(tc.faults); err != nil {
				t.Fatal(err)
			}
			before := f.received()
			statuses, sent := map[int]int{}, 0
			for b := 0; b < 40 && (b == 0 || f.ejectedGauge(t, bad) != 1); b++ {
				for st, n := range f.load(tc.workers, tc.batch) {
					statuses[st] += n
				}
				sent += tc.batch
			}
			got := minus(f.received(), before)
			t.Logf("requests per pod %v, statuses %v", got, statuses)
			if got[bad] == 0 || got[bad] > tc.bound {
				t.Fatalf("failing pod got %d of %d requests, want 1..%d", got[bad], sum(got), tc.bound)
			}
			if g := f.ejectedGauge(t, bad); g != 1 {
				t.Fatalf("ejected gauge %d while failing, want 1", g)
			}
			if tc.faults.ResetRate > 0 && statuses[200] != sent {
				t.Fatalf("statuses %v: resets must be retried on a fallback", statuses)
			}

			// Recovered: back in the rotation after its backoff, on probation.
			if err := f.sims[bad].SetFaults(sim.Faults{}); err != nil {
				t.Fatal(err)
			}
			eventually(t, 20*time.Second, "the recovered pod to get traffic again", func() bool {
				before := f.received()
				f.load(2, 20)
				return minus(f.received(), before)[bad] > 0 && f.ejectedGauge(t, bad) == 0
			})
		})
	}
}

// TestHalfFailingPodGetsUnderFivePercent: with the default outlier settings, a pod failing
// half of its requests receives under 5 % of the traffic after 10 s of load.
func TestHalfFailingPodGetsUnderFivePercent(t *testing.T) {
	f := startFaultFleet(t, 4, nil)
	const bad = 0
	if err := f.sims[bad].SetFaults(sim.Faults{ErrorRate: 0.5}); err != nil {
		t.Fatal(err)
	}
	// 10 s of load from 4 clients, bounded in requests too.
	start, deadline := f.received(), time.Now().Add(10*time.Second)
	for sent := 0; time.Now().Before(deadline) && sent < 20000; sent += 100 {
		f.load(4, 100)
	}
	warm := minus(f.received(), start)
	before := f.received()
	statuses := f.load(4, 400)
	got := minus(f.received(), before)
	share := float64(got[bad]) / float64(sum(got))
	t.Logf("first 10 s: requests per pod %v; then %v (share of the failing pod %.1f %%), statuses %v", warm, got, 100*share, statuses)
	if sum(got) < 400 || share >= 0.05 {
		t.Fatalf("failing pod got %d of %d requests (%.1f %%), want under 5 %%", got[bad], sum(got), 100*share)
	}
}
