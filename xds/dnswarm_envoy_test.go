package xds

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	caresv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/network/dns_resolver/cares/v3"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/infergw/infergw/discovery"
)

// TestUnresolvableServiceDoesNotHoldBackOtherClusters, on real Envoy: a route to a Service
// reached by DNS name (a headless Service without slices) whose DNS never answers must not
// hold back other updates. Envoy pauses CDS while a cluster warms, and a DNS cluster warmed
// until its first resolution answered or timed out, so a route to a new Service added
// together with it got 503 "cluster not found" for that long (seen in the conformance suite
// on a cluster without DNS). Envoy's resolver here is a UDP socket that never answers.
func TestUnresolvableServiceDoesNotHoldBackOtherClusters(t *testing.T) {
	bin := envoyBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// A DNS server that reads every query and never answers.
	dns, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dns.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			if _, _, err := dns.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	backend := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "backend b")
	})}
	bl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go backend.Serve(bl)
	t.Cleanup(func() { backend.Close() })
	backendPort := int32(bl.Addr().(*net.TCPAddr).Port)

	listenPort := freePort(t, "127.0.0.1")
	// Version 1: a route to a Service with an IP; 2 adds a route to the headless Service
	// (a DNS cluster that never resolves); 3 adds a route to another new Service.
	snap := func(version uint64) *discovery.Snapshot {
		s := &discovery.Snapshot{
			Version:  version,
			Gateways: []*gwapiv1.Gateway{gateway("gw", listenPort, "")},
			HTTPRoutes: []*gwapiv1.HTTPRoute{httpRoute("a", "gw",
				gwapiv1.HTTPRouteRule{Matches: prefix("/a"), BackendRefs: []gwapiv1.HTTPBackendRef{serviceRef("a", backendPort)}})},
			Services: []*corev1.Service{service("a", "127.0.0.1", backendPort), service("headless", "None", 80), service("b", "127.0.0.1", backendPort)},
		}
		if version >= 2 {
			s.HTTPRoutes = append(s.HTTPRoutes, httpRoute("dns", "gw",
				gwapiv1.HTTPRouteRule{Matches: prefix("/dns"), BackendRefs: []gwapiv1.HTTPBackendRef{serviceRef("headless", 80)}}))
		}
		if version >= 3 {
			s.HTTPRoutes = append(s.HTTPRoutes, httpRoute("new", "gw",
				gwapiv1.HTTPRouteRule{Matches: prefix("/b"), BackendRefs: []gwapiv1.HTTPBackendRef{serviceRef("b", backendPort)}}))
		}
		return s
	}
	srv, err := NewServer(ServerOptions{Registerer: prometheus.NewRegistry(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Update(ctx, snap(1)); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ctx, lis)
	startEnvoyWithResolver(t, bin, lis.Addr().String(), dns.LocalAddr().String())
	waitServed(t, fmt.Sprintf("http://127.0.0.1:%d/a", listenPort), 20*time.Second)
	if _, err := srv.Update(ctx, snap(2)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the DNS cluster is now warming (its query unanswered)

	url := fmt.Sprintf("http://127.0.0.1:%d/b", listenPort)
	start := time.Now()
	if _, err := srv.Update(ctx, snap(3)); err != nil {
		t.Fatal(err)
	}
	deadline := start.Add(5 * time.Second)
	for {
		code, body := tryGet(url)
		if code == http.StatusOK && body == "backend b" {
			t.Logf("route to the new Service served %v after the update", time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /b = %d %q 5s after the update: the unresolvable DNS cluster holds back the new cluster", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startEnvoyWithResolver is startEnvoy with every DNS query sent to resolver.
func startEnvoyWithResolver(t *testing.T, bin, xdsAddr, resolver string) {
	t.Helper()
	boot, err := BootstrapProto(BootstrapOptions{XDSAddr: xdsAddr, AdminAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1")), NodeID: "test-envoy"})
	if err != nil {
		t.Fatal(err)
	}
	host, portStr, _ := net.SplitHostPort(resolver)
	port, _ := strconv.Atoi(portStr)
	b := &builder{}
	boot.TypedDnsResolverConfig = &corev3.TypedExtensionConfig{
		Name: "envoy.network.dns_resolver.cares",
		TypedConfig: b.any(&caresv3.CaresDnsResolverConfig{
			Resolvers: []*corev3.Address{{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Protocol: corev3.SocketAddress_UDP, Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
			}}}},
			DnsResolverOptions: &corev3.DnsResolverOptions{NoDefaultSearchDomain: true},
		}),
	}
	if b.err != nil {
		t.Fatal(b.err)
	}
	y, err := messageYAML(boot)
	if err != nil {
		t.Fatal(err)
	}
	runEnvoy(t, bin, y)
}

// waitServed waits (bounded) until GET url answers 200.
func waitServed(t *testing.T, url string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		code, body := tryGet(url)
		if code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s = %d %q after %v", url, code, body, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tryGet is one GET that reports a failure instead of failing the test.
func tryGet(url string) (int, string) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, string(b)
}
