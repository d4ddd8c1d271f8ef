package kvroute

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"

	"github.com/infergw/infergw/kvevents"
	"github.com/infergw/infergw/kvindex"
)

// TestTwoReplicasFollowEveryPod: two picker runtimes (two replicas) following the same two
// pods, whose publishers bind (vLLM with tcp://*:PORT), both index both pods; a pod that
// leaves the pools is no longer dialled and its entries are forgotten.
func TestTwoReplicasFollowEveryPod(t *testing.T) {
	hosts := []string{"127.0.0.61", "127.0.0.62"}
	var port int
	for attempt := 0; ; attempt++ {
		l, err := net.Listen("tcp", hosts[0]+":0")
		if err != nil {
			t.Fatal(err)
		}
		port = l.Addr().(*net.TCPAddr).Port
		l.Close()
		if l2, err := net.Listen("tcp", net.JoinHostPort(hosts[1], strconv.Itoa(port))); err == nil {
			l2.Close()
			break
		}
		if attempt > 20 {
			t.Fatal("no port free on both addresses")
		}
	}
	var pubs []zmq4.Socket
	for _, h := range hosts {
		pub := zmq4.NewPub(context.Background())
		defer pub.Close()
		if err := pub.Listen("tcp://" + net.JoinHostPort(h, strconv.Itoa(port))); err != nil {
			t.Fatal(err)
		}
		pubs = append(pubs, pub)
	}
	var mu sync.Mutex
	pods := slices.Clone(hosts)
	list := func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(pods) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var replicas []*Runtime
	for range 2 {
		rt, err := Start(ctx, Options{Tokenizers: map[string]string{"": "../kvprompt/testdata/tiny"}, PodPort: port}, testLog(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer rt.Close()
		rt.FollowPods(ctx, list, port, 20*time.Millisecond)
		replicas = append(replicas, rt)
	}
	payload, _ := kvevents.NewEncoder().Encode(&kvevents.Batch{Events: []kvevents.Event{stored([]uint32{1, 2, 3, 4}, 4, 9, "")}})
	seq := make([]byte, 8)
	binary.BigEndian.PutUint64(seq, 0)
	allKnown := func() bool {
		for _, rt := range replicas {
			for _, h := range hosts {
				if rt.Index.Info(h).State != kvindex.StateConsistent {
					return false
				}
			}
		}
		return true
	}
	for deadline := time.Now().Add(10 * time.Second); !allKnown(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("replicas did not hear every pod within 10 s")
		}
		for i, pub := range pubs {
			_ = pub.Send(zmq4.NewMsgFrom([]byte(fmt.Sprintf("kv@%s@tiny", hosts[i])), seq, payload))
		}
	}
	// Pod 2 leaves the pools.
	mu.Lock()
	pods = pods[:1]
	mu.Unlock()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		done := true
		for _, rt := range replicas {
			if len(rt.Sub.Publishers()) != 1 || rt.Index.Info(hosts[1]).State != kvindex.StateUnknown {
				done = false
			}
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a departed pod is still dialled or indexed")
		}
	}
}
