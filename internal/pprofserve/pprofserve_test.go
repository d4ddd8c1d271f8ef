package pprofserve

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestStartServesProfilesAndStops(t *testing.T) {
	// Find a free port, then hand it to Start (which listens itself).
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.Addr().String()
	probe.Close()
	ctx, cancel := context.WithCancel(context.Background())
	if err := Start(ctx, addr, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine profile") {
		t.Fatalf("status %d, body %.200q", resp.StatusCode, body)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break // closed
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("pprof server still accepting after its context ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStartWithoutAddressServesNothing(t *testing.T) {
	if err := Start(context.Background(), "", slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
}

func TestStartReportsABadAddress(t *testing.T) {
	err := Start(context.Background(), "127.0.0.1:notaport", slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "pprof: listen") {
		t.Fatalf("want a wrapped listen error, got %v", err)
	}
}
