package router

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"
)

// TestScrapeTimeoutIsTimeout: a server that does not answer in time gives an error that
// isTimeout recognises (the endpoint then turns stale by age, not at once); a refused
// connection does not.
func TestScrapeTimeoutIsTimeout(t *testing.T) {
	ms := newModelServer(t, fastVLLM, "")
	ms.setHang(true)
	c := newEndpointClient(ms.addr())
	defer c.close()
	var buf bytes.Buffer
	_, err := c.get(context.Background(), "/metrics", 100*time.Millisecond, 1<<20, &buf)
	if err == nil || !isTimeout(err) {
		t.Fatalf("hanging server: err %v, isTimeout %v", err, isTimeout(err))
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now: refused
	c2 := newEndpointClient(addr)
	defer c2.close()
	_, err = c2.get(context.Background(), "/metrics", time.Second, 1<<20, &buf)
	if err == nil || isTimeout(err) {
		t.Fatalf("refused connection: err %v, isTimeout %v", err, isTimeout(err))
	}
}

// TestIdleScrapeInterval: an idle endpoint (nothing waiting or running, nothing in flight)
// is scraped at the idle interval, a busy one at the regular interval, and a pick on the
// idle one brings it back to the regular interval. Counts over one shared window, with
// wide bounds: the machine may be slow, but the idle endpoint cannot be scraped more
// often than its interval allows.
func TestIdleScrapeInterval(t *testing.T) {
	idle := newModelServer(t, fastVLLM, "")
	busy := newModelServer(t, fastVLLM+"# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 2\n", "")
	r, _ := newTestRouter(t, func(c *Config) {
		c.ScrapeInterval, c.IdleScrapeInterval, c.StalenessThreshold = 10*time.Millisecond, 200*time.Millisecond, time.Second
	})
	r.SetPool("ns/p", []EndpointSpec{{Name: "idle", Address: idle.addr()}, {Name: "busy", Address: busy.addr()}})
	eventually(t, 3*time.Second, "both fresh", func() bool { return r.PoolStats("ns/p").Ready == 2 })
	i0, b0, start := idle.scrapeCount(), busy.scrapeCount(), time.Now()
	time.Sleep(time.Second)
	i1, b1, window := idle.scrapeCount(), busy.scrapeCount(), time.Since(start)
	maxIdle := int(window/(200*time.Millisecond)) + 2
	if i1-i0 > maxIdle || b1-b0 <= 2*(i1-i0) {
		t.Fatalf("in %v: idle endpoint scraped %d times (at most %d), busy %d (want more than twice the idle)",
			window, i1-i0, maxIdle, b1-b0)
	}
	// Traffic on the idle endpoint: a pick wakes its loop onto the regular interval.
	d, err := r.Pick(&Request{Pool: "ns/p", Model: "m", Subset: []string{idle.addr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Done()
	i2 := idle.scrapeCount()
	eventually(t, 3*time.Second, "regular scrapes after a pick", func() bool { return idle.scrapeCount() >= i2+10 })
}

func TestIdleScrapeIntervalValidated(t *testing.T) {
	cfg := DefaultConfig()
	cfg.IdleScrapeInterval = cfg.StalenessThreshold
	if _, err := New(cfg, nil, nil); err == nil {
		t.Fatal("idle scrape interval equal to the staleness threshold accepted")
	}
	cfg = DefaultConfig().withDefaults()
	if cfg.IdleScrapeInterval != 500*time.Millisecond {
		t.Fatalf("default idle scrape interval %v, want 500ms", cfg.IdleScrapeInterval)
	}
}
