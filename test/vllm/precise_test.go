package vllm

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/infergw/infergw/kvevents"
	"github.com/infergw/infergw/kvindex"
	"github.com/infergw/infergw/kvprompt"
	"github.com/infergw/infergw/kvroute"
	"github.com/infergw/infergw/router"
)

// direct sends a completion straight to one server, bypassing the gateway: the picker's
// approximate prefix guess never hears of it, only the server's KV events tell.
func direct(t *testing.T, s *vllmServer, prompt string) {
	t.Helper()
	resp, err := http.Post(s.url("/v1/completions"), "application/json",
		strings.NewReader(completionBody(baseModel, prompt, false, 1, "")))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%s: status %d: %s", s.name, resp.StatusCode, b)
	}
}

// pickerGauge reads one of the picker's own series (0 when absent).
func (h *harness) pickerGauge(t *testing.T, name, state string) float64 {
	fams := scrape(t, h.gw.metricsURL)
	f := fams[name]
	if f == nil {
		return 0
	}
	for _, m := range f.GetMetric() {
		if state == "" || labelValue(m, "state") == state {
			return metricValue(m)
		}
	}
	return 0
}

// waitPicker polls a condition on the picker's metrics for up to 10 s.
func (h *harness) waitPicker(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("picker: %s not seen within 10 s", what)
		}
	}
}

// viaGateway sends prompt through the gateway and returns the server the picker chose.
func (h *harness) viaGateway(t *testing.T, prompt string) string {
	t.Helper()
	r := h.post(t, "/v1/completions", completionBody(baseModel, prompt, false, 1, ""))
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	dest, err := h.gw.pickedDestination(r.requestID)
	if err != nil {
		t.Fatal(err)
	}
	return dest
}

// checkPreciseRouting: with both servers' KV events feeding the picker, a long prompt
// prefilled on one server directly (the picker's approximate guess never saw it) is routed
// to that server, whose vllm:prefix_cache_hits rise while the other's do not; once that
// server's prefix cache is reset (vLLM publishes AllBlocksCleared) and the prompt sits on
// the other server instead, it follows the cache there.
func (h *harness) checkPreciseRouting(t *testing.T) {
	a, b := h.servers[0], h.servers[1]
	// Both servers must have published (each stores blocks of a long prompt of its own).
	direct(t, a, longPrompt(fmt.Sprintf("warm a %d", time.Now().UnixNano())))
	direct(t, b, longPrompt(fmt.Sprintf("warm b %d", time.Now().UnixNano())))
	// Consistent when the picker saw each server's first batch (sequence 0), partial when
	// the publisher connected after it (the subscriber binds after the servers start).
	h.waitPicker(t, "both pods' KV events", func() bool {
		return h.pickerGauge(t, "infergw_kv_index_pods", "consistent")+h.pickerGauge(t, "infergw_kv_index_pods", "partial") == 2
	})
	for _, target := range []*vllmServer{b, a} {
		prompt := longPrompt(fmt.Sprintf("precise %s %d", target.name, time.Now().UnixNano()))
		blocks := h.pickerGauge(t, "infergw_kv_index_blocks", "")
		direct(t, target, prompt)
		h.waitPicker(t, "the prompt's blocks indexed", func() bool {
			return h.pickerGauge(t, "infergw_kv_index_blocks", "") >= blocks+8
		})
		before := h.prefixHits(t)
		dest := h.viaGateway(t, prompt)
		after := h.prefixHits(t)
		if dest != target.addr {
			t.Fatalf("prompt cached on %s went to %s", target.addr, dest)
		}
		for _, s := range h.servers {
			d := after[s.addr] - before[s.addr]
			if s == target && d < 8*128 {
				t.Errorf("%s: prefix_cache_hits +%v, want the prompt's ≥ 8 blocks of 128", s.name, d)
			}
			if s != target && d != 0 {
				t.Errorf("%s did not serve it, yet its prefix_cache_hits rose by %v", s.name, d)
			}
		}
		t.Logf("prompt prefilled on %s directly: the gateway sent it there, prefix_cache_hits +%v", target.name, after[target.addr]-before[target.addr])
	}

	// Clear b's cache; vLLM publishes AllBlocksCleared with its next step's batch.
	prompt := longPrompt(fmt.Sprintf("cleared %d", time.Now().UnixNano()))
	direct(t, b, prompt)
	resp, err := http.Post(b.url("/reset_prefix_cache"), "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("reset_prefix_cache: %d (VLLM_SERVER_DEV_MODE=1 needed)", resp.StatusCode)
	}
	blocks := h.pickerGauge(t, "infergw_kv_index_blocks", "")
	direct(t, b, "a short prompt so that the engine steps")
	h.waitPicker(t, "b's blocks dropped", func() bool {
		return h.pickerGauge(t, "infergw_kv_index_blocks", "") < blocks
	})
	direct(t, a, prompt)
	h.waitPicker(t, "the prompt's blocks indexed on a", func() bool {
		return h.pickerGauge(t, "infergw_kv_index_blocks", "") >= 8
	})
	before := h.prefixHits(t)
	dest := h.viaGateway(t, prompt)
	after := h.prefixHits(t)
	if dest != a.addr || after[a.addr]-before[a.addr] < 8*128 || after[b.addr] != before[b.addr] {
		t.Fatalf("after b's cache was cleared the prompt (now on a) went to %s; prefix_cache_hits a +%v, b +%v",
			dest, after[a.addr]-before[a.addr], after[b.addr]-before[b.addr])
	}
	t.Logf("after b's prefix cache was reset, the prompt (now on a) went to a: prefix_cache_hits a +%v, b +0", after[a.addr]-before[a.addr])
	if n := h.pickerGauge(t, "infergw_kv_index_pods", "consistent"); n < 1 {
		t.Errorf("%v pods consistent after b's reset, want b at least (AllBlocksCleared makes its index exact)", n)
	}
}

// checkReplay: a picker that starts after vLLM cached a prompt (a restarted replica) hears
// none of its events live; vLLM's replay endpoint (ROUTER, buffer_steps batches) gives them
// back. A fresh index fed only by kvevents.Replay from server a holds the prompt a
// prefilled, all of it and exactly (the buffer reaches back to sequence 0), and one fed by
// server b's replay holds none of it.
func (h *harness) checkReplay(t *testing.T, tokenizerDir string) {
	a, b := h.servers[0], h.servers[1]
	prompt := longPrompt(fmt.Sprintf("replay %d", time.Now().UnixNano()))
	direct(t, a, prompt)
	body := []byte(completionBody(baseModel, prompt, false, 1, ""))
	tok, err := kvprompt.Load(tokenizerDir, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*vllmServer{a, b} {
		ix, err := kvindex.New(kvindex.Config{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		n, last, err := kvevents.Replay(context.Background(), s.replay, s.ip, ix, 10*time.Second)
		if err != nil {
			t.Fatalf("%s: replay: %v", s.name, err)
		}
		src, err := kvroute.New(ix, map[string]*kvprompt.Model{"": tok}, 0, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		hit, total, exact := make([]int, 1), make([]int, 1), make([]router.PrefixExactness, 1)
		src.MatchPrefix(&router.Request{Model: baseModel, Body: body}, false, []string{s.ip}, hit, total, exact)
		t.Logf("%s: replayed %d batches (last seq %d): the prompt's %d of %d blocks held, state %v", s.name, n, last, hit[0], total[0], ix.Info(s.ip).State)
		switch {
		case n == 0:
			t.Errorf("%s: replay gave no batch", s.name)
		case s == a && (hit[0] != total[0] || total[0] < 8 || exact[0] != router.PrefixExact):
			t.Errorf("a: %d of %d blocks, exactness %v; want the whole prompt, exactly", hit[0], total[0], exact[0])
		case s == b && hit[0] != 0:
			t.Errorf("b holds %d of the prompt's blocks, never having seen it", hit[0])
		}
	}
}
