package kvroute

import (
	"context"
	"encoding/binary"
	"log/slog"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"

	"github.com/infergw/infergw/kvevents"
	"github.com/infergw/infergw/router"
)

func TestParseTokenizers(t *testing.T) {
	got, err := ParseTokenizers([]string{"/models/a", "b=/models/b"})
	if err != nil || got[""] != "/models/a" || got["b"] != "/models/b" {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range [][]string{{"a=", ""}, {"/x", "/y"}, {"m=/x", "m=/y"}} {
		if _, err := ParseTokenizers(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestStartEndToEnd: the runtime's bound subscriber receives a real ZMQ PUB's batches
// (as a vLLM pod sends them) and a Ref set to its Source answers from them.
func TestStartEndToEnd(t *testing.T) {
	if _, err := Start(context.Background(), Options{Bind: "tcp://127.0.0.1:0"}, nil, nil); err == nil {
		t.Fatal("started without a tokenizer")
	}
	rt, err := Start(context.Background(), Options{Bind: "tcp://127.0.0.1:0", Tokenizers: map[string]string{"": "../kvprompt/testdata/tiny"}}, testLog(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	ref := new(Ref)
	body := chatBody("kalo mine ruta vozi pesu doba the a of and to in is for on with kalo mine ruta vozi")
	hit, total := make([]int, 1), make([]int, 1)
	exact := make([]router.PrefixExactness, 1)
	ref.MatchPrefix(&router.Request{Model: "tiny", Body: body}, false, []string{"10.0.0.9"}, hit, total, exact)
	if exact[0] != router.PrefixUnknown {
		t.Fatal("an unset Ref answered")
	}
	ref.Set(rt.Source)
	m := rt.Source.model("tiny")
	tokens, err := m.Tokens(nil, body)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := kvevents.NewEncoder().Encode(&kvevents.Batch{Events: []kvevents.Event{stored(tokens, 8, 77, "")}})
	if err != nil {
		t.Fatal(err)
	}
	pub := zmq4.NewPub(context.Background())
	defer pub.Close()
	if err := pub.Dial("tcp://" + rt.Sub.Addr()); err != nil {
		t.Fatal(err)
	}
	seq := make([]byte, 8)
	for deadline := time.Now().Add(10 * time.Second); ; {
		binary.BigEndian.PutUint64(seq, 0)
		_ = pub.Send(zmq4.NewMsgFrom([]byte("kv@10.0.0.9@tiny"), seq, payload))
		time.Sleep(50 * time.Millisecond)
		ref.MatchPrefix(&router.Request{Model: "tiny", Body: body}, false, []string{"10.0.0.9"}, hit, total, exact)
		if exact[0] == router.PrefixExact && hit[0] == len(tokens)/8 && hit[0] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no match after 10 s: %d of %d (%v)", hit[0], total[0], exact[0])
		}
	}
}

func testLog() *slog.Logger { return slog.New(slog.DiscardHandler) }
