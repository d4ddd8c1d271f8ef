package main

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/infergw/infergw/discovery/dirsource"
	"github.com/infergw/infergw/model"
)

// TestManifestsLoadAsOnePoolOfNPods reads the generated manifests with the real
// manifest-directory source: one Gateway of class infergw, one route, one pool whose N ready
// endpoints are 127.0.0.2… and the picker Service at 127.0.0.1.
func TestManifestsLoadAsOnePoolOfNPods(t *testing.T) {
	dir := t.TempDir()
	l := fleetLayout{Namespace: "bench", Pool: "bench-pool", Pods: 8, FirstPodIP: net.IPv4(127, 0, 0, 2),
		TargetPort: 18001, GatewayPort: 18080, PickerPort: 19002, ReplicaPorts: []int{19003, 19004}, Model: baseModel}
	if err := writeManifests(dir, l); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	src, err := dirsource.NewDirSource(dir, dirsource.DirOptions{}, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	updates, unsubscribe := src.Subscribe()
	defer unsubscribe()
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	snap := src.Current()
	if snap == nil {
		select {
		case snap = <-updates:
		case <-ctx.Done():
			t.Fatal("no snapshot from the generated manifests")
		}
	}
	cancel()
	<-done
	if len(snap.Gateways) != 1 || len(snap.HTTPRoutes) != 1 || len(snap.Pools) != 1 {
		t.Fatalf("want 1 gateway, route, pool; got %d, %d, %d", len(snap.Gateways), len(snap.HTTPRoutes), len(snap.Pools))
	}
	pool := snap.Pools[0]
	if len(pool.Endpoints) != 8 {
		t.Fatalf("pool endpoints = %d, want 8", len(pool.Endpoints))
	}
	seen := map[string]bool{}
	for _, ep := range pool.Endpoints {
		seen[ep.IP] = true
	}
	for i := 0; i < 8; i++ {
		if ip := l.podIP(i); !seen[ip] {
			t.Errorf("pod IP %s missing from the pool's endpoints %v", ip, seen)
		}
	}
	// The picker Service's replicas: one slice each, which the model resolves to both.
	if len(snap.EndpointSlices) != 2 {
		t.Fatalf("picker slices = %d, want 2", len(snap.EndpointSlices))
	}
	if pk := model.Resolve(snap, model.Options{}).Pools[0].Picker; pk == nil || len(pk.Upstream.Addrs) != 2 || pk.Upstream.Addrs[1].Port != 19004 {
		t.Errorf("picker upstream = %+v, want the two replicas", pk)
	}
	if l.podIP(7) != "127.0.0.9" {
		t.Errorf("podIP(7) = %s, want 127.0.0.9", l.podIP(7))
	}
}

func TestManifestsRejectBadLayout(t *testing.T) {
	base := fleetLayout{Namespace: "bench", Pool: "p", Pods: 2, FirstPodIP: net.IPv4(127, 0, 0, 2), TargetPort: 1, GatewayPort: 2, PickerPort: 3}
	zero := base
	zero.Pods = 0
	if err := writeManifests(t.TempDir(), zero); err == nil {
		t.Error("zero pods: want an error")
	}
	public := base
	public.FirstPodIP = net.IPv4(10, 0, 0, 1)
	if err := writeManifests(t.TempDir(), public); err == nil {
		t.Error("non-loopback pod IP: want an error")
	}
}
