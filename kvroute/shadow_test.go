package kvroute

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/infergw/infergw/kvevents"
	"github.com/infergw/infergw/kvindex"
	"github.com/infergw/infergw/router"
	"github.com/infergw/infergw/sim"
)

// TestShadowNamesEachDisagreement: with a real sim as the oracle, the shadow comparison
// counts a prompt the index holds only by speculation as over_spec, one it indexes as
// stored but the sim never ran as over_stored, one the sim holds and the index does not as
// under, and the sim's own prompt once indexed as agree; the routing answer is the
// events' in every case.
func TestShadowNamesEachDisagreement(t *testing.T) {
	cfg := sim.DefaultConfig()
	cfg.Addr, cfg.TimeScale, cfg.Model = "127.0.0.83:0", 0.01, "tiny"
	cfg.Tokenizer = "../kvprompt/testdata/tiny"
	srv, err := sim.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	_, portText, _ := net.SplitHostPort(srv.Addr())
	port, _ := strconv.Atoi(portText)
	o, err := NewOracle(port)
	if err != nil {
		t.Fatal(err)
	}
	s, ix, m := setup(t)
	reg := prometheus.NewRegistry()
	if err := s.EnableShadow(o, reg); err != nil {
		t.Fatal(err)
	}
	const host = "127.0.0.83"
	ran := chatBody(strings.Repeat("kalo mine ruta vozi pesu doba ", 60))
	resp, err := http.Post("http://"+srv.Addr()+"/v1/chat/completions", "application/json", strings.NewReader(string(ran)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	bs := cfg.BlockSize
	tokensOf := func(b []byte) []uint32 {
		tok, err := m.Tokens(nil, b)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	seq := uint64(0)
	publish := func(ev kvevents.Event) {
		ix.HandleBatch(host, "tiny", seq, &kvevents.Batch{Events: []kvevents.Event{ev}})
		seq++
	}
	publish(stored(tokensOf(chatBody("an unrelated prompt of a few words, long enough for one block or two")), bs, 1, ""))
	match := func(b []byte) int {
		hit, total, exact := make([]int, 1), make([]int, 1), make([]router.PrefixExactness, 1)
		h := s.MatchPrefix(&router.Request{Model: "tiny", Body: b}, false, []string{host}, hit, total, exact)
		if h == nil || exact[0] != router.PrefixExact || total[0] == 0 {
			t.Fatalf("no exact answer: %v %v %v", hit, total, exact)
		}
		s.work.Put(h)
		return hit[0]
	}
	count := func(verdict string) float64 {
		return testutil.ToFloat64(s.shadow.hosts.WithLabelValues(verdict))
	}

	if match(ran) != 0 || count("under") != 1 {
		t.Errorf("the sim's prompt, not indexed: under %v", count("under"))
	}
	spec := chatBody(strings.Repeat("the a of and to in is ", 60))
	var hasher kvindex.Hasher
	keys := hasher.AppendKeys(nil, kvindex.RootKey(""), tokensOf(spec), bs, 0)
	ix.Speculate(host, keys)
	if match(spec) != len(keys) || count("over_spec") != 1 {
		t.Errorf("speculated, never sent: over_spec %v", count("over_spec"))
	}
	never := chatBody(strings.Repeat("ne ru ta po zi ", 80))
	publish(stored(tokensOf(never), bs, 1<<20, ""))
	if match(never) == 0 || count("over_stored") != 1 {
		t.Errorf("indexed as stored, not in the sim: over_stored %v", count("over_stored"))
	}
	publish(stored(tokensOf(ran), bs, 1<<30, ""))
	if match(ran) == 0 || count("agree") != 1 {
		t.Errorf("the sim's prompt indexed: agree %v", count("agree"))
	}
	if got := testutil.ToFloat64(s.shadow.picks.WithLabelValues("same_best")); got != 4 {
		t.Errorf("same_best %v, want 4 (one candidate is always its own best)", got)
	}
}
