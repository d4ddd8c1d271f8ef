package kvroute

import (
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/infergw/infergw/router"
	"github.com/infergw/infergw/sim"
)

// TestOracleAsksTheSims: the oracle reports, from a real sim's own engine, that a prompt it
// ran is held in full and one it never saw is not; a host with no sim is left unknown (the
// approximate scorer decides for it).
func TestOracleAsksTheSims(t *testing.T) {
	cfg := sim.DefaultConfig()
	cfg.Addr, cfg.TimeScale, cfg.Model = "127.0.0.81:0", 0.01, "tiny"
	cfg.Tokenizer = "../kvprompt/testdata/tiny"
	s, err := sim.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, portText, _ := net.SplitHostPort(s.Addr())
	port, _ := strconv.Atoi(portText)
	o, err := NewOracle(port)
	if err != nil {
		t.Fatal(err)
	}
	body := func(text string) []byte {
		b, _ := json.Marshal(map[string]any{"model": "tiny", "max_tokens": 1,
			"messages": []map[string]string{{"role": "user", "content": text}}})
		return b
	}
	ran := body(strings.Repeat("kalo mine ruta vozi pesu doba ", 60))
	resp, err := http.Post("http://"+s.Addr()+"/v1/chat/completions", "application/json", strings.NewReader(string(ran)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	hosts := []string{"127.0.0.81", "127.0.0.82"}
	match := func(b []byte) ([]int, []int, []router.PrefixExactness) {
		hit, total, exact := make([]int, 2), make([]int, 2), make([]router.PrefixExactness, 2)
		o.MatchPrefix(&router.Request{Model: "tiny", Body: b}, false, hosts, hit, total, exact)
		return hit, total, exact
	}
	hit, total, exact := match(ran)
	if exact[0] != router.PrefixExact || total[0] == 0 || hit[0] != total[0] || exact[1] != router.PrefixUnknown {
		t.Errorf("prompt the sim ran: hit %v total %v exact %v, want all held on the sim, unknown elsewhere", hit, total, exact)
	}
	hit, total, exact = match(body(strings.Repeat("the a of and to in is ", 60)))
	if exact[0] != router.PrefixExact || total[0] == 0 || hit[0] != 0 {
		t.Errorf("prompt never run: hit %v total %v exact %v, want none held", hit, total, exact)
	}
	if _, err := NewOracle(0); err == nil {
		t.Error("port 0 accepted")
	}
}
