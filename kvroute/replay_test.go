package kvroute

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/infergw/infergw/kvindex"
	"github.com/infergw/infergw/router"
	"github.com/infergw/infergw/sim"
)

// TestRestartedPickerReplaysThePodsBuffer: a picker that starts after a pod has cached a
// prompt (a restarted replica) hears none of that prompt's BlockStored events live; with
// the pod's replay endpoint (a real sim serving vLLM's replay protocol) it asks for the
// publisher's buffer on joining, and the index holds the prompt at once, exactly (the
// buffer reaches back to sequence 0). Without the replay port the same picker knows
// nothing of it and the pod is only partial.
func TestRestartedPickerReplaysThePodsBuffer(t *testing.T) {
	for _, replay := range []bool{true, false} {
		t.Run(fmt.Sprintf("replay=%v", replay), func(t *testing.T) {
			host := "127.0.0.91"
			if !replay {
				host = "127.0.0.92"
			}
			ports := make([]int, 2)
			for i := range ports {
				l, err := net.Listen("tcp", host+":0")
				if err != nil {
					t.Fatal(err)
				}
				ports[i] = l.Addr().(*net.TCPAddr).Port
				l.Close()
			}
			cfg := sim.DefaultConfig()
			cfg.Addr, cfg.TimeScale, cfg.Model = host+":0", 0.01, "tiny"
			cfg.Tokenizer = "../kvprompt/testdata/tiny"
			cfg.KVEvents = sim.KVEventsConfig{Enable: true, Publisher: "zmq",
				Endpoint: "tcp://*:" + strconv.Itoa(ports[0]), ReplayEndpoint: "tcp://*:" + strconv.Itoa(ports[1])}
			s, err := sim.New(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Start(); err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			body := func(text string) []byte {
				b, _ := json.Marshal(map[string]any{"model": "tiny", "max_tokens": 1,
					"messages": []map[string]string{{"role": "user", "content": text}}})
				return b
			}
			send := func(b []byte) {
				resp, err := http.Post("http://"+s.Addr()+"/v1/chat/completions", "application/json", strings.NewReader(string(b)))
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
			}
			early := body(strings.Repeat("kalo mine ruta vozi pesu doba ", 60))
			send(early) // before any picker listens: its events reach no one live

			o := Options{Connect: []string{"tcp://" + net.JoinHostPort(host, strconv.Itoa(ports[0]))},
				Tokenizers: map[string]string{"": "../kvprompt/testdata/tiny"}}
			if replay {
				o.ReplayPort = ports[1]
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			rt, err := Start(ctx, o, testLog(), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer rt.Close()
			// Live batches (seq > 0) until the picker hears the pod: ZMQ drops what a PUB
			// sends before the SUB's subscription reaches it.
			deadline := time.Now().Add(10 * time.Second)
			for i := 0; rt.Index.Info(host).State == kvindex.StateUnknown; i++ {
				if time.Now().After(deadline) {
					t.Fatal("the picker never heard the pod")
				}
				send(body(fmt.Sprintf("the a of and to in is %d ", i) + strings.Repeat("for on with ", 30)))
				time.Sleep(50 * time.Millisecond)
			}
			hit, total, exact := make([]int, 1), make([]int, 1), make([]router.PrefixExactness, 1)
			rt.Source.MatchPrefix(&router.Request{Model: "tiny", Body: early}, false, []string{host}, hit, total, exact)
			if replay {
				if exact[0] != router.PrefixExact || total[0] == 0 || hit[0] != total[0] {
					t.Errorf("with replay: hit %d of %d, exactness %d; want the early prompt held, exactly", hit[0], total[0], exact[0])
				}
			} else if exact[0] != router.PrefixAtLeast || hit[0] != 0 {
				t.Errorf("without replay: hit %d of %d, exactness %d; want nothing known, partial", hit[0], total[0], exact[0])
			}
		})
	}
}
