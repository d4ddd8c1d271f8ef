package discovery

import (
	"runtime"
	"sync"
	"testing"
	"time"

	dt "github.com/infergw/infergw/discovery/discoverytest"
)

func TestPublisherCurrentAndSubscribe(t *testing.T) {
	var p Publisher
	if p.Current() != nil {
		t.Fatal("Current before Publish must be nil")
	}
	if v := p.NextVersion(); v != 1 {
		t.Fatalf("NextVersion = %d, want 1", v)
	}
	ch, cancel := p.Subscribe()
	defer cancel()

	if !p.Publish(&Snapshot{Version: 1}) {
		t.Fatal("Publish(1) refused")
	}
	if got := <-ch; got.Version != 1 {
		t.Fatalf("got version %d, want 1", got.Version)
	}
	// A slow reader sees only the newest snapshot.
	p.Publish(&Snapshot{Version: 2})
	p.Publish(&Snapshot{Version: 3})
	if got := <-ch; got.Version != 3 {
		t.Fatalf("got version %d, want 3 (stale value must be replaced)", got.Version)
	}
	select {
	case s := <-ch:
		t.Fatalf("unexpected extra snapshot %d", s.Version)
	default:
	}
	// Versions only go up.
	if p.Publish(&Snapshot{Version: 3}) || p.Publish(&Snapshot{Version: 2}) || p.Publish(nil) {
		t.Fatal("Publish accepted a non-increasing version or nil")
	}
	if p.Current().Version != 3 || p.NextVersion() != 4 {
		t.Fatalf("Current = %d, NextVersion = %d", p.Current().Version, p.NextVersion())
	}
	// A late subscriber starts with the current snapshot.
	late, cancelLate := p.Subscribe()
	if got := <-late; got.Version != 3 {
		t.Fatalf("late subscriber got %d, want 3", got.Version)
	}
	cancelLate()
	cancelLate() // idempotent
	if _, open := <-late; open {
		t.Fatal("channel still open after cancel")
	}
	if n := p.Subscribers(); n != 1 {
		t.Fatalf("Subscribers = %d, want 1", n)
	}
}

func TestPublisherConcurrentUseLeaksNothing(t *testing.T) {
	before := runtime.NumGoroutine()
	var p Publisher
	var wg sync.WaitGroup
	const readers, versions = 8, 500
	for r := 0; r < readers; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch, cancel := p.Subscribe()
			defer cancel()
			var last uint64
			for s := range ch {
				if s.Version <= last {
					t.Errorf("reader saw version %d after %d", s.Version, last)
					return
				}
				last = s.Version
				if last == versions {
					return
				}
			}
		}()
	}
	// Wait until all readers are subscribed so that each must see the final version.
	deadline := time.Now().Add(5 * time.Second)
	for p.Subscribers() < readers && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	var writers sync.WaitGroup
	for w := 0; w < 2; w++ {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for v := uint64(1); v <= versions; v++ {
				p.Publish(&Snapshot{Version: v})
				_ = p.Current()
			}
		}()
	}
	writers.Wait()
	wg.Wait()
	if p.Current().Version != versions {
		t.Fatalf("final version %d, want %d", p.Current().Version, versions)
	}
	if n := p.Subscribers(); n != 0 {
		t.Fatalf("%d subscriptions left", n)
	}
	dt.WaitGoroutines(t, before)
}
