package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// layout is where one cell's gateway, picker and pods listen: ports chosen free at run time.
type layout struct {
	Pods                                int
	TargetPort, GatewayPort, PickerPort int
}

func podIP(i int) string { return "127.0.0." + strconv.Itoa(2+i) }

func newLayout(pods int) (layout, error) {
	l := layout{Pods: pods}
	var err error
	if l.GatewayPort, err = freePort("127.0.0.1"); err != nil {
		return l, err
	}
	if l.PickerPort, err = freePort("127.0.0.1"); err != nil {
		return l, err
	}
	for attempt := 0; attempt < 50; attempt++ {
		port, err := freePort(podIP(0))
		if err != nil {
			return l, err
		}
		ok := true
		for i := 1; i < pods && ok; i++ {
			lis, err := net.Listen("tcp", net.JoinHostPort(podIP(i), strconv.Itoa(port)))
			if err != nil {
				ok = false
				continue
			}
			lis.Close()
		}
		if ok {
			l.TargetPort = port
			return l, nil
		}
	}
	return l, errNoPort
}

// write lays out the manifests a user would apply: gateway, route, pool, picker service,
// the two objectives (critical 10, batch -1 = sheddable) and one Pod per sim.
func (l layout) write(dir string) error {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: infergw}
spec: {controllerName: infergw.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: bench}
spec:
  gatewayClassName: infergw
  listeners: [{name: http, protocol: HTTP, port: %[1]d}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: route, namespace: bench}
spec:
  parentRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
  rules:
    - backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: fc-pool}]
      timeouts: {request: 600s}
---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: fc-pool, namespace: bench}
spec:
  selector: {matchLabels: {app: fc}}
  targetPorts: [{number: %[2]d}]
  endpointPickerRef: {group: "", kind: Service, name: picker, port: {number: %[3]d}, failureMode: FailClose}
---
apiVersion: v1
kind: Service
metadata: {name: picker, namespace: bench}
spec:
  clusterIP: 127.0.0.1
  ports: [{name: grpc, port: %[3]d, protocol: TCP}]
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {name: critical, namespace: bench}
spec:
  priority: 10
  poolRef: {group: inference.networking.k8s.io, kind: InferencePool, name: fc-pool}
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {name: batch, namespace: bench}
spec:
  priority: -1
  poolRef: {group: inference.networking.k8s.io, kind: InferencePool, name: fc-pool}
`, l.GatewayPort, l.TargetPort, l.PickerPort)
	for i := 0; i < l.Pods; i++ {
		fmt.Fprintf(&b, `---
apiVersion: v1
kind: Pod
metadata:
  name: fc-%[1]d
  namespace: bench
  labels: {app: fc}
status:
  phase: Running
  podIP: %[2]s
  conditions: [{type: Ready, status: "True"}]
`, i, podIP(i))
	}
	if err := os.WriteFile(filepath.Join(dir, "bench.yaml"), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("manifests: %w", err)
	}
	return nil
}
