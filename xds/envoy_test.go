package xds

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/infergw/infergw/discovery"
	"github.com/infergw/infergw/internal/envoytest"
)

// envoyBinary finds a real Envoy (envoytest.Binary): skipped without one, except in CI.
func envoyBinary(t *testing.T) string { return envoytest.Binary(t) }

// freePort returns a port that was free on host a moment ago.
func freePort(t *testing.T, host string) int32 {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return int32(l.Addr().(*net.TCPAddr).Port)
}

// backends starts one HTTP server per IP, all on the same port (as pool endpoints share the
// target port), each answering with its address.
func backends(t *testing.T, ips ...string) int32 {
	t.Helper()
	for attempt := 0; attempt < 20; attempt++ {
		port := freePort(t, ips[0])
		var ls []net.Listener
		for _, ip := range ips {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
			if err != nil {
				break
			}
			ls = append(ls, l)
		}
		if len(ls) != len(ips) {
			for _, l := range ls {
				l.Close()
			}
			continue
		}
		for _, l := range ls {
			addr := l.Addr().String()
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("x-sim-instance", addr)
				fmt.Fprintf(w, "hello from %s", addr)
			})}
			go srv.Serve(l)
			t.Cleanup(func() { srv.Close() })
		}
		return port
	}
	t.Fatal("no common free port for the backends")
	return 0
}

type envoyProc struct {
	admin  string
	listen string
	logf   string
}

func startEnvoy(t *testing.T, bin, xdsAddr string, listenPort int32) *envoyProc {
	t.Helper()
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1"))
	boot, err := Bootstrap(BootstrapOptions{XDSAddr: xdsAddr, AdminAddr: admin, NodeID: "test-envoy"})
	if err != nil {
		t.Fatal(err)
	}
	logf := runEnvoy(t, bin, boot)
	return &envoyProc{admin: admin, listen: fmt.Sprintf("127.0.0.1:%d", listenPort), logf: logf}
}

// runEnvoy starts Envoy on a bootstrap (YAML) until the test ends, and returns its log
// file, whose tail is logged if the test failed.
func runEnvoy(t *testing.T, bin string, boot []byte) string {
	t.Helper()
	return envoytest.Run(t, bin, boot).Log
}

// configVersions reads Envoy's /config_dump: the accepted version of every dynamic
// listener, route configuration and cluster, by name.
func (e *envoyProc) configVersions() (map[string]string, error) {
	resp, err := http.Get("http://" + e.admin + "/config_dump")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var dump struct {
		Configs []map[string]json.RawMessage `json:"configs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&dump); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, c := range dump.Configs {
		var d struct {
			DynamicListeners []struct {
				Name        string `json:"name"`
				ActiveState struct {
					VersionInfo string `json:"version_info"`
				} `json:"active_state"`
			} `json:"dynamic_listeners"`
			DynamicRouteConfigs []struct {
				VersionInfo string `json:"version_info"`
				RouteConfig struct {
					Name string `json:"name"`
				} `json:"route_config"`
			} `json:"dynamic_route_configs"`
			DynamicActiveClusters []struct {
				VersionInfo string `json:"version_info"`
				Cluster     struct {
					Name string `json:"name"`
				} `json:"cluster"`
			} `json:"dynamic_active_clusters"`
		}
		raw, _ := json.Marshal(c)
		if err := json.Unmarshal(raw, &d); err != nil {
			return nil, err
		}
		for _, l := range d.DynamicListeners {
			out["listener:"+l.Name] = l.ActiveState.VersionInfo
		}
		for _, r := range d.DynamicRouteConfigs {
			out["route:"+r.RouteConfig.Name] = r.VersionInfo
		}
		for _, cl := range d.DynamicActiveClusters {
			out["cluster:"+cl.Cluster.Name] = cl.VersionInfo
		}
	}
	return out, nil
}

// waitAccepted waits until Envoy runs version of every resource in res.
func (e *envoyProc) waitAccepted(t *testing.T, res *Resources, version string) {
	t.Helper()
	want := map[string]bool{}
	for _, l := range res.Listeners {
		want["listener:"+l.GetName()] = true
	}
	for _, r := range res.Routes {
		want["route:"+r.GetName()] = true
	}
	for _, c := range res.Clusters {
		want["cluster:"+c.GetName()] = true
	}
	deadline := time.Now().Add(20 * time.Second)
	var last map[string]string
	for time.Now().Before(deadline) {
		got, err := e.configVersions()
		if err == nil {
			last = got
			missing := 0
			for k := range want {
				if got[k] != version {
					missing++
				}
			}
			if missing == 0 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("envoy did not accept version %s of %v; it runs %v", version, want, last)
}

// waitEndpoints waits until the admin /clusters output lists want and not gone for cluster.
func (e *envoyProc) waitEndpoints(t *testing.T, cluster, want, gone string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var hosts []string
	for time.Now().Before(deadline) {
		hosts = hosts[:0]
		resp, err := http.Get("http://" + e.admin + "/clusters")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			seen := map[string]bool{}
			for _, line := range strings.Split(string(b), "\n") {
				if parts := strings.Split(line, "::"); len(parts) > 2 && parts[0] == cluster && !seen[parts[1]] {
					seen[parts[1]] = true
					hosts = append(hosts, parts[1])
				}
			}
			if seen[want] && !seen[gone] {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("cluster %s hosts = %v, want %s without %s", cluster, hosts, want, gone)
}

type reply struct {
	status   int
	body     string
	upstream string
	ctype    string
}

func get(t *testing.T, url string) reply {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, body: string(b), upstream: resp.Header.Get(HeaderUpstream), ctype: resp.Header.Get("content-type")}
}

// TestRealEnvoyAcceptsConfigAndRoutes runs Envoy against the ADS server and checks that it
// ACKs every generated resource and routes as the translation says: with the picker down a
// FailOpen pool still answers from a pool endpoint (override-host fallback), a FailClose pool
// answers 503 with a JSON body, and an endpoint update is applied live.
func TestRealEnvoyAcceptsConfigAndRoutes(t *testing.T) {
	bin := envoyBinary(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	port := backends(t, "127.0.0.2", "127.0.0.3")
	pickerPort := freePort(t, "127.0.0.1") // nothing listens: the picker is down
	listenPort := freePort(t, "127.0.0.1")
	snap := failModes(port, pickerPort)
	snap.Gateways[0].Spec.Listeners[0].Port = listenPort
	snap.Services = append(snap.Services, service("web", "127.0.0.2", port))
	snap.HTTPRoutes[0].Spec.Rules = append(snap.HTTPRoutes[0].Spec.Rules,
		gwapiv1.HTTPRouteRule{Matches: prefix("/svc"), BackendRefs: []gwapiv1.HTTPBackendRef{serviceRef("web", port)}})

	reg := prometheus.NewRegistry()
	srv, err := NewServer(ServerOptions{Translate: Options{ListenerAddress: "127.0.0.1"}, Registerer: reg, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	res, err := srv.Update(ctx, snap)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis) }()

	env := startEnvoy(t, bin, lis.Addr().String(), listenPort)
	env.waitAccepted(t, res, "1")
	if n := metricValue(t, reg, "infergw_xds_connected_proxies"); n != 1 {
		t.Errorf("connected proxies = %v, want 1", n)
	}
	base := "http://" + env.listen

	r := get(t, base+"/open/v1/models")
	if r.status != 200 || !strings.HasPrefix(r.body, "hello from 127.0.0.") || r.upstream == "" {
		t.Errorf("FailOpen with picker down: %+v", r)
	}
	r = get(t, base+"/close/v1/models")
	if r.status != 503 || !strings.Contains(r.body, `"endpoint picker unavailable"`) || !strings.Contains(r.body, `"code":"endpoint_picker_unavailable"`) || r.ctype != "application/json" {
		t.Errorf("FailClose with picker down: %+v", r)
	}
	r = get(t, base+"/nopicker")
	if r.status != 503 || !strings.Contains(r.body, `"endpoint picker unavailable"`) || r.ctype != "application/json" {
		t.Errorf("FailClose without picker Service: %+v", r)
	}
	r = get(t, base+"/svc")
	if r.status != 200 || r.upstream != "" || !strings.Contains(r.body, "127.0.0.2") {
		t.Errorf("Service route: %+v", r)
	}
	if r = get(t, base+"/elsewhere"); r.status != 404 {
		t.Errorf("unmatched path: %+v", r)
	}

	// Endpoint update: the FailOpen pool keeps only 127.0.0.3.
	snap2 := *snap
	snap2.Version = 2
	snap2.Pools = append([]*discovery.Pool(nil), snap.Pools...)
	open := *snap.Pools[2]
	open.Endpoints = open.Endpoints[1:]
	snap2.Pools[2] = &open
	res2, err := srv.Update(ctx, &snap2)
	if err != nil {
		t.Fatal(err)
	}
	// Envoy keeps the version of resources whose content did not change, so wait for the
	// new endpoint set itself.
	env.waitEndpoints(t, "pool/default/open", fmt.Sprintf("127.0.0.3:%d", port), fmt.Sprintf("127.0.0.2:%d", port))
	for i := 0; i < 5; i++ {
		if r := get(t, base+"/open/x"); r.status != 200 || !strings.Contains(r.body, "127.0.0.3") {
			t.Fatalf("after endpoint update, request %d: %+v", i, r)
		}
	}

	// A resource Envoy rejects (an unknown load-balancer type) is NACKed, counted, and
	// traffic keeps flowing on the last accepted configuration.
	bad := *res2
	bad.Clusters = append(append([]*clusterv3.Cluster(nil), res2.Clusters...), &clusterv3.Cluster{
		Name:                 "bad",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadBalancingPolicy: &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{{
			TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: "no.such.policy", TypedConfig: mustAny(t, &structpb.Struct{})},
		}}},
	})
	if err := srv.set(ctx, &bad); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for metricValue(t, reg, "infergw_xds_nacks_total", "type_url", "type.googleapis.com/envoy.config.cluster.v3.Cluster") < 1 {
		if time.Now().After(deadline) {
			t.Fatal("no NACK counted for a cluster Envoy rejects")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := get(t, base+"/open/x"); r.status != 200 {
		t.Errorf("after NACK: %+v", r)
	}
	// The rejected version is not pushed again and again.
	time.Sleep(500 * time.Millisecond)
	if n := metricValue(t, reg, "infergw_xds_nacks_total", "type_url", "type.googleapis.com/envoy.config.cluster.v3.Cluster"); n != 1 {
		t.Errorf("NACKs = %v, want exactly 1 (no resend storm)", n)
	}
	// The next good version is accepted.
	snap3 := snap2
	snap3.Version = 3
	snap3.Pools = snap.Pools
	if _, err := srv.Update(ctx, &snap3); err != nil {
		t.Fatal(err)
	}
	env.waitEndpoints(t, "pool/default/open", fmt.Sprintf("127.0.0.2:%d", port), "none")
	if n := metricValue(t, reg, "infergw_xds_pushes_total", "type_url", "type.googleapis.com/envoy.config.cluster.v3.Cluster"); n < 3 {
		t.Errorf("cluster pushes = %v, want >= 3", n)
	}

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("Serve did not return after cancel")
	}
}

func mustAny(t *testing.T, m *structpb.Struct) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// serveToEnvoy starts a control plane with opts serving snap on a free port, and a real
// Envoy bootstrapped to it, and waits until Envoy has accepted that first configuration.
// The server stays up until ctx ends; Envoy until the test ends.
func serveToEnvoy(ctx context.Context, t *testing.T, bin string, opts Options, snap *discovery.Snapshot, listenPort int32) (*Server, *envoyProc) {
	t.Helper()
	srv, err := NewServer(ServerOptions{Translate: opts, Registerer: prometheus.NewRegistry(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	res, err := srv.Update(ctx, snap)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ctx, lis)
	env := startEnvoy(t, bin, lis.Addr().String(), listenPort)
	env.waitAccepted(t, res, "1")
	return srv, env
}
