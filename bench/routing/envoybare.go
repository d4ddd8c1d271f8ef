package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// envoyBare is a reference routing layer, not a product configuration: Envoy alone, from a
// static bootstrap with one listener, the router filter and a round-robin cluster of the
// sims — no picker, no ext_proc, no xDS, no infergw process. Its CPU per request is what
// proxying the workload costs Envoy before anything infergw adds, so it separates the
// data plane's floor from the gateway's own cost when infergw is compared with the peer
// routers (issue 22).
const envoyBare = "envoy-bare"

// envoyBareBootstrap is the static configuration: the same HTTP/1.1 upstreams and no
// route timeout (streams last as long as their completions), Envoy's defaults elsewhere.
func envoyBareBootstrap(adminPort, gatewayPort int, workers []string) (string, error) {
	var eps strings.Builder
	for _, w := range workers {
		host, port, err := net.SplitHostPort(w)
		if err != nil {
			return "", fmt.Errorf("%s: worker %q: %w", envoyBare, w, err)
		}
		fmt.Fprintf(&eps, "        - endpoint: {address: {socket_address: {address: %q, port_value: %s}}}\n", host, port)
	}
	return fmt.Sprintf(`admin:
  address: {socket_address: {address: 127.0.0.1, port_value: %d}}
static_resources:
  listeners:
  - name: gateway
    address: {socket_address: {address: 127.0.0.1, port_value: %d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: gateway
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: fleet, timeout: 0s}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: fleet
    type: STATIC
    lb_policy: ROUND_ROBIN
    connect_timeout: 2s
    load_assignment:
      cluster_name: fleet
      endpoints:
      - lb_endpoints:
%s`, adminPort, gatewayPort, eps.String()), nil
}

// envoyBareArgs writes the bootstrap next to the cell's manifests and returns Envoy's
// command line: two workers, as `infergw up` runs it.
func envoyBareArgs(s layerSpec) ([]string, error) {
	admin, err := freePort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	yaml, err := envoyBareBootstrap(admin, s.gateway, s.workers)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(filepath.Dir(filepath.Clean(s.manifests)), "envoy-bare-"+strconv.Itoa(s.gateway)+".yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		return nil, fmt.Errorf("%s: write bootstrap: %w", envoyBare, err)
	}
	return []string{"-c", path, "--concurrency", "2", "--disable-hot-restart", "--log-level", "error"}, nil
}
