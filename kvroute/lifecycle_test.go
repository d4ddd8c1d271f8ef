package kvroute

import (
	"strings"
	"testing"
	"time"

	"github.com/infergw/infergw/kvevents"
	"github.com/infergw/infergw/kvindex"
	"github.com/infergw/infergw/kvprompt"
	"github.com/infergw/infergw/router"
)

// TestDecisionEndsSpeculation: the real router's Decision ends the speculation the
// precise-prefix source recorded at the pick: a request that gets no response stops
// counting at once; one that got its first token stays (the grace, here an hour, lets its
// BlockStored arrive) and its Done after that does not end it. The endpoints' ports
// refuse connections (no model server is needed: the picks use stale metrics).
func TestDecisionEndsSpeculation(t *testing.T) {
	m, err := kvprompt.Load("../kvprompt/testdata/tiny", 1)
	if err != nil {
		t.Fatal(err)
	}
	ix, err := kvindex.New(kvindex.Config{SpeculationGrace: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	src, err := New(ix, map[string]*kvprompt.Model{"": m}, 0, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	hosts := []string{"127.0.0.71", "127.0.0.72"}
	for _, h := range hosts { // both pods publish (8-token blocks), neither holds the prompt
		ix.HandleBatch(h, "tiny", 0, &kvevents.Batch{Events: []kvevents.Event{stored([]uint32{9, 9, 9, 9, 9, 9, 9, 9}, 8, 1, "")}})
	}
	ref := new(Ref)
	ref.Set(src)
	reg := router.NewRegistry()
	if err := Register(reg, ref); err != nil {
		t.Fatal(err)
	}
	cfg := router.DefaultConfig()
	cfg.Plugins = reg
	if cfg.Scheduler, err = router.PolicyConfig("precise"); err != nil {
		t.Fatal(err)
	}
	r, err := router.New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.SetPool("ns/p", []router.EndpointSpec{{Name: "a", Address: hosts[0] + ":1"}, {Name: "b", Address: hosts[1] + ":1"}})

	body := chatBody(strings.Repeat("kalo mine ruta vozi pesu doba the a of and ", 20))
	tokens, err := m.Tokens(nil, body)
	if err != nil {
		t.Fatal(err)
	}
	var hasher kvindex.Hasher
	keys := hasher.AppendKeys(nil, kvindex.RootKey(""), tokens, 8, 0)
	pick := func() (*router.Decision, string) {
		t.Helper()
		d, err := r.Pick(&router.Request{Pool: "ns/p", Model: "tiny", Prompt: body, Body: body, Stream: true})
		if err != nil {
			t.Fatal(err)
		}
		return d, d.Endpoints[0][:strings.LastIndexByte(d.Endpoints[0], ':')]
	}

	d, host := pick()
	if got := ix.Match(host, keys); got != len(keys) {
		t.Fatalf("after the pick: %s holds %d of %d blocks, want all (speculative)", host, got, len(keys))
	}
	d.NoResponse()
	d.Done()
	if got := ix.Match(host, keys); got != 0 {
		t.Fatalf("no response: %s still holds %d blocks speculatively", host, got)
	}

	d, host = pick()
	d.ResponseHeaders(200, d.Endpoints[0])
	d.FirstByte()
	d.Done()
	if got := ix.Match(host, keys); got != len(keys) {
		t.Fatalf("first token, within the grace: %s holds %d of %d blocks", host, got, len(keys))
	}
}

// TestQueuedRequestKeepsItsCachedPrefix: a request sent to the pod that holds its prefix
// does not pin those blocks while it waits in the queue; if the pod evicts them meanwhile,
// its prefill computes them again, so they still count as the pod's until the request
// ends (the model server's own view counts a queued request's whole prompt).
func TestQueuedRequestKeepsItsCachedPrefix(t *testing.T) {
	s, ix, m := setup(t)
	body := chatBody(strings.Repeat("kalo mine ruta vozi pesu doba the a of and ", 20))
	tokens, err := m.Tokens(nil, body)
	if err != nil {
		t.Fatal(err)
	}
	ev := stored(tokens, 8, 500, "")
	ix.HandleBatch("10.0.0.1", "tiny", 0, &kvevents.Batch{Events: []kvevents.Event{ev}})
	hosts := []string{"10.0.0.1"}
	hit, total, exact := make([]int, 1), make([]int, 1), make([]router.PrefixExactness, 1)
	h := s.MatchPrefix(&router.Request{Model: "tiny", Body: body}, false, hosts, hit, total, exact)
	if hit[0] != total[0] || total[0] == 0 {
		t.Fatalf("cached: %d of %d", hit[0], total[0])
	}
	w := s.Sent(h, hosts[0], hit[0], total[0])
	if w == nil {
		t.Fatal("no speculation for a request the pod holds")
	}
	ix.HandleBatch("10.0.0.1", "tiny", 1, &kvevents.Batch{Events: []kvevents.Event{{Kind: kvevents.BlockRemoved, BlockHashes: ev.BlockHashes, Medium: "GPU"}}})
	s.MatchPrefix(&router.Request{Model: "tiny", Body: body}, false, hosts, hit, total, exact)
	if hit[0] != total[0] {
		t.Fatalf("evicted while the request queues: %d of %d, want all", hit[0], total[0])
	}
	w.PrefillEnded(false)
	s.MatchPrefix(&router.Request{Model: "tiny", Body: body}, false, hosts, hit, total, exact)
	if hit[0] != 0 {
		t.Fatalf("evicted, and the request failed: %d blocks still counted", hit[0])
	}
}
