package kvroute

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/infergw/infergw/kvevents"
	"github.com/infergw/infergw/kvindex"
	"github.com/infergw/infergw/kvprompt"
	"github.com/infergw/infergw/router"
)

func setup(t testing.TB) (*Source, *kvindex.Index, *kvprompt.Model) {
	t.Helper()
	m, err := kvprompt.Load("../kvprompt/testdata/tiny", 1)
	if err != nil {
		t.Fatal(err)
	}
	ix, err := kvindex.New(kvindex.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(ix, map[string]*kvprompt.Model{"": m}, 0, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, ix, m
}

// stored is the BlockStored event an engine with blockSize-token blocks would publish
// after prefilling tokens (engine hashes made up: the index must not depend on them).
func stored(tokens []uint32, blockSize int, salt uint64, lora string) kvevents.Event {
	ev := kvevents.Event{Kind: kvevents.BlockStored, BlockSize: blockSize, Medium: "GPU", LoRAName: lora}
	for i := 0; i+blockSize <= len(tokens); i += blockSize {
		ev.BlockHashes = append(ev.BlockHashes, salt+uint64(i))
		ev.TokenIDs = append(ev.TokenIDs, tokens[i:i+blockSize]...)
	}
	return ev
}

func chatBody(text string) []byte {
	b, _ := json.Marshal(map[string]any{"model": "tiny", "messages": []map[string]string{{"role": "user", "content": text}}})
	return b
}

func TestMatchPrefixFromEvents(t *testing.T) {
	s, ix, m := setup(t)
	long := strings.Repeat("kalo mine ruta vozi pesu doba the a of and ", 40)
	body := chatBody(long)
	tokens, err := m.Tokens(nil, body)
	if err != nil {
		t.Fatal(err)
	}
	// Pod A (32-token blocks) prefilled the prompt; pod B (64-token blocks) a different one;
	// pod C is silent about everything; pod D joined mid-stream and saw the prompt.
	ix.HandleBatch("10.0.0.1", "tiny", 0, &kvevents.Batch{Events: []kvevents.Event{stored(tokens, 32, 1000, "")}})
	other, _ := m.Tokens(nil, chatBody("ne ru ta "+long))
	ix.HandleBatch("10.0.0.2", "tiny", 0, &kvevents.Batch{Events: []kvevents.Event{stored(other, 64, 2000, "")}})
	ix.HandleBatch("10.0.0.4", "tiny", 17, &kvevents.Batch{Events: []kvevents.Event{stored(tokens[:128], 64, 4000, "")}})
	hosts := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"}
	hit, total := make([]int, 4), make([]int, 4)
	exact := make([]router.PrefixExactness, 4)
	s.MatchPrefix(&router.Request{Model: "tiny", Body: body}, false, hosts, hit, total, exact)
	if exact[0] != router.PrefixExact || total[0] != len(tokens)/32 || hit[0] != total[0] {
		t.Errorf("A: %d/%d %v, want all %d blocks, exact", hit[0], total[0], exact[0], len(tokens)/32)
	}
	if exact[1] != router.PrefixExact || total[1] != len(tokens)/64 || hit[1] != 0 {
		t.Errorf("B: %d/%d %v, want 0/%d exact (its prompt starts differently)", hit[1], total[1], exact[1], len(tokens)/64)
	}
	if exact[2] != router.PrefixUnknown {
		t.Errorf("C: %v, want unknown", exact[2])
	}
	if exact[3] != router.PrefixAtLeast || hit[3] != 2 {
		t.Errorf("D: %d/%d %v, want 2 blocks, at least", hit[3], total[3], exact[3])
	}
	// The same prompt for an adapter is another set of blocks.
	clear(hit)
	s.MatchPrefix(&router.Request{Model: "tiny-lora", Body: body}, true, hosts[:1], hit, total, exact)
	if hit[0] != 0 {
		t.Errorf("adapter request matched base-model blocks: %d", hit[0])
	}
	// Sent to B (which lacks the prompt): its blocks count as B's until the events come,
	// so the next identical request sees them there.
	h := s.MatchPrefix(&router.Request{Model: "tiny", Body: body}, false, hosts[1:2], hit, total, exact)
	s.Sent(h, "10.0.0.2", hit[0], total[0])
	s.MatchPrefix(&router.Request{Model: "tiny", Body: body}, false, hosts[1:2], hit, total, exact)
	if hit[0] != total[0] || total[0] == 0 {
		t.Errorf("right after Sent, B: %d of %d blocks, want all (speculative)", hit[0], total[0])
	}
}

func TestMatchPrefixNoTokenizerOrBody(t *testing.T) {
	s, ix, _ := setup(t)
	ix.HandleBatch("10.0.0.1", "tiny", 0, &kvevents.Batch{})
	s.models = map[string]*kvprompt.Model{"other": s.models[""]}
	exact := make([]router.PrefixExactness, 1)
	s.MatchPrefix(&router.Request{Model: "tiny", Body: chatBody("x")}, false, []string{"10.0.0.1"}, make([]int, 1), make([]int, 1), exact)
	if exact[0] != router.PrefixUnknown {
		t.Fatal("a model without a tokenizer was matched")
	}
	s.MatchPrefix(&router.Request{Model: "other"}, false, []string{"10.0.0.1"}, make([]int, 1), make([]int, 1), exact)
	if exact[0] != router.PrefixUnknown {
		t.Fatal("a request without a body was matched")
	}
}

// BenchmarkMatchPrefix8K: the precise scorer's added cost for an 8 KB chat prompt and
// 4 candidate pods of 64 blocks each holding it (tokenize, chain keys, 4 lookups).
func BenchmarkMatchPrefix8K(b *testing.B) { benchMatchPrefix8K(b, false) }

// BenchmarkMatchPrefix8KCold is BenchmarkMatchPrefix8K with the tokenizer's piece cache
// emptied before every pick: the added pick cost for a prompt of words the picker has
// never seen (the chat template, every piece through the BPE, chain keys, 4 lookups).
func BenchmarkMatchPrefix8KCold(b *testing.B) { benchMatchPrefix8K(b, true) }

func benchMatchPrefix8K(b *testing.B, cold bool) {
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
		if cold {
			m.ResetCache()
		}
		s.MatchPrefix(req, false, hosts, hit, total, exact)
	}
	if hit[3] != total[3] || total[3] == 0 {
		b.Fatalf("hit %v of %v", hit, total)
	}
}
