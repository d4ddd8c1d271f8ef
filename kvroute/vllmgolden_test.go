package kvroute

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/infergw/infergw/kvevents"
	"github.com/infergw/infergw/router"
)

// The files in testdata/vllm-0.32-cpu were recorded from a real vLLM 0.32 CPU server
// serving the tiny model of test/vllm (the same tokenizer as ../kvprompt/testdata/tiny):
// msg-*.bin are the ZMQ messages its KV-event publisher sent (each frame as a 4-byte
// big-endian length and the bytes), requests.json the three requests that caused them
// (a completion, a chat with a system message, a LoRA completion) with the token ids
// vLLM's /tokenize returned for each.

func readMessages(t *testing.T, dir string) [][][]byte {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "msg-*.bin"))
	if len(files) == 0 {
		t.Fatal("no recorded messages")
	}
	var msgs [][][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var frames [][]byte
		for len(b) >= 4 {
			n := binary.BigEndian.Uint32(b)
			frames = append(frames, b[4:4+n])
			b = b[4+n:]
		}
		msgs = append(msgs, frames)
	}
	return msgs
}

type recorded struct {
	Body   json.RawMessage `json:"body"`
	Tokens []uint32        `json:"tokens"`
}

// TestRealVLLMEventsAndTokens: our decoder reads vLLM's own messages; our tokenization of
// each request equals vLLM's; and the block keys of our tokens find every full block the
// server reported, for the base model and the adapter.
func TestRealVLLMEventsAndTokens(t *testing.T) {
	s, ix, m := setup(t)
	dec := kvevents.NewDecoder(kvevents.Limits{})
	for i, frames := range readMessages(t, "testdata/vllm-0.32-cpu") {
		if len(frames) != 3 {
			t.Fatalf("message %d: %d frames", i, len(frames))
		}
		pod, model, ok := kvevents.ParseTopic(frames[0], kvevents.DefaultTopicPrefix)
		if !ok || pod != "127.0.0.77" || model != "tiny" {
			t.Fatalf("topic %q", frames[0])
		}
		var b kvevents.Batch
		if err := dec.Decode(frames[2], &b); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if len(b.Events) == 0 || b.Events[0].Kind != kvevents.BlockStored || b.Events[0].BlockSize != 128 {
			t.Fatalf("message %d: %+v", i, b.Events)
		}
		ix.HandleBatch(pod, model, binary.BigEndian.Uint64(frames[1]), &b)
	}
	raw, err := os.ReadFile("testdata/vllm-0.32-cpu/requests.json")
	if err != nil {
		t.Fatal(err)
	}
	var reqs map[string]recorded
	if err := json.Unmarshal(raw, &reqs); err != nil {
		t.Fatal(err)
	}
	for name, r := range reqs {
		got, err := m.Tokens(nil, r.Body)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, r.Tokens) {
			t.Errorf("%s: our %d tokens differ from vLLM's %d:\n ours %v\nvLLM's %v", name, len(got), len(r.Tokens), got[:min(20, len(got))], r.Tokens[:min(20, len(r.Tokens))])
			continue
		}
		var model struct{ Model string }
		_ = json.Unmarshal(r.Body, &model)
		adapter := model.Model == "tiny-lora"
		hit, total := make([]int, 1), make([]int, 1)
		exact := make([]router.PrefixExactness, 1)
		s.MatchPrefix(&router.Request{Model: model.Model, Body: r.Body}, adapter, []string{"127.0.0.77"}, hit, total, exact)
		want := len(r.Tokens) / 128
		if exact[0] != router.PrefixExact || total[0] != want || hit[0] != want {
			t.Errorf("%s: matched %d of %d blocks (%v), want all %d", name, hit[0], total[0], exact[0], want)
		}
		// The same prompt as the other model (base vs adapter) holds nothing.
		s.MatchPrefix(&router.Request{Model: model.Model, Body: r.Body}, !adapter, []string{"127.0.0.77"}, hit, total, exact)
		if hit[0] != 0 {
			t.Errorf("%s: matched %d blocks under the other adapter", name, hit[0])
		}
	}
}

// TestRealVLLMClearAndEviction replays a second recording (testdata/vllm-0.32-cpu-evict:
// the server ran with 24 KV blocks): the three requests above, then POST
// /reset_prefix_cache (vLLM sends AllBlocksCleared with the next step's batch), then three
// distinct 1,500-token prompts of 11 full blocks each; the third evicted the first's 11
// blocks (BlockRemoved). The index must hold exactly what the server holds at each point.
func TestRealVLLMClearAndEviction(t *testing.T) {
	s, ix, _ := setup(t)
	dir := "testdata/vllm-0.32-cpu-evict"
	load := func(name string) map[string]recorded {
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		var reqs map[string]recorded
		if err := json.Unmarshal(raw, &reqs); err != nil {
			t.Fatal(err)
		}
		return reqs
	}
	before, long := load("before-clear.json"), load("requests.json")
	match := func(r recorded) (int, int) {
		var model struct{ Model string }
		_ = json.Unmarshal(r.Body, &model)
		hit, total := make([]int, 1), make([]int, 1)
		exact := make([]router.PrefixExactness, 1)
		s.MatchPrefix(&router.Request{Model: model.Model, Body: r.Body}, model.Model == "tiny-lora", []string{"127.0.0.77"}, hit, total, exact)
		if exact[0] != router.PrefixExact {
			t.Fatalf("pod not exact: %v", exact[0])
		}
		return hit[0], total[0]
	}
	dec := kvevents.NewDecoder(kvevents.Limits{})
	msgs := readMessages(t, dir)
	if len(msgs) != 6 {
		t.Fatalf("%d messages recorded, want 6", len(msgs))
	}
	for i, frames := range msgs {
		var b kvevents.Batch
		if err := dec.Decode(frames[2], &b); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		ix.HandleBatch("127.0.0.77", "tiny", binary.BigEndian.Uint64(frames[1]), &b)
		switch i {
		case 2: // all three first requests cached
			for name, r := range before {
				if h, n := match(r); h != n || n == 0 {
					t.Errorf("before the reset, %s: %d of %d blocks", name, h, n)
				}
			}
		case 3: // AllBlocksCleared, then long0 stored in the same batch
			if b.Events[0].Kind != kvevents.AllBlocksCleared {
				t.Fatalf("batch 3 starts with %v", b.Events[0].Kind)
			}
			for name, r := range before {
				if h, _ := match(r); h != 0 {
					t.Errorf("after the reset, %s still matches %d blocks", name, h)
				}
			}
			if h, n := match(long["long0"]); h != 11 || n != 11 {
				t.Errorf("long0 after its prefill: %d of %d", h, n)
			}
		case 5: // long2 stored after evicting long0
			if h, _ := match(long["long0"]); h != 0 {
				t.Errorf("evicted long0 still matches %d blocks", h)
			}
			for _, name := range []string{"long1", "long2"} {
				if h, n := match(long[name]); h != 11 || n != 11 {
					t.Errorf("%s: %d of %d", name, h, n)
				}
			}
		}
	}
	if got := ix.Blocks("127.0.0.77"); got != 22 {
		t.Errorf("%d blocks indexed at the end, want 22 (long1 and long2)", got)
	}
}
