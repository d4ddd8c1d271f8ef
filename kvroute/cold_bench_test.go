package kvroute

import (
	"strings"
	"testing"

	"github.com/infergw/infergw/kvevents"
	"github.com/infergw/infergw/router"
)

// BenchmarkMatchPrefix8KCold is BenchmarkMatchPrefix8K with the tokenizer's piece cache
// emptied before every pick: the added pick cost for a prompt of words the picker has
// never seen (the chat template, every piece through the BPE, chain keys, 4 lookups).
func BenchmarkMatchPrefix8KCold(b *testing.B) {
	s, ix, m := setup(b)
	var sb strings.Builder
	words := strings.Fields("kalo mine ruta vozi pesu doba gifa the a of and to in is for on with")
	for i := 0; sb.Len() < 8192; i++ {
		sb.WriteString(words[(i*7)%len(words)] + " ")
	}
	body := chatBody(sb.String())
	tokens, _ := m.Tokens(nil, body)
	hosts := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"}
	for i, h := range hosts {
		ix.HandleBatch(h, "tiny", 0, &kvevents.Batch{Events: []kvevents.Event{stored(tokens[:len(tokens)*(i+1)/4], 32, uint64(i)<<40, "")}})
	}
	hit, total := make([]int, 4), make([]int, 4)
	exact := make([]router.PrefixExactness, 4)
	req := &router.Request{Model: "tiny", Body: body}
	b.ReportAllocs()
	for b.Loop() {
		m.ResetCache()
		s.MatchPrefix(req, false, hosts, hit, total, exact)
	}
	if hit[3] != total[3] || total[3] == 0 {
		b.Fatalf("hit %v of %v", hit, total)
	}
}
