package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// fleetLayout is where one run's gateway, picker and pods listen. Every port is chosen free
// at run time so that a benchmark never collides with `infergw up` or a parallel test.
type fleetLayout struct {
	Namespace   string
	Pool        string
	Pods        int
	FirstPodIP  net.IP // 127.0.0.2: pod i listens on FirstPodIP + i
	TargetPort  int
	GatewayPort int
	PickerPort  int
	// ReplicaPorts, when set, are the ports of picker replicas run apart on 127.0.0.1:
	// the picker Service gets an EndpointSlice per replica, and Envoy balances over them.
	ReplicaPorts []int
	Model        string
	LoRAAdapters []string
}

// podIP is the loopback address of pod i.
func (l fleetLayout) podIP(i int) string {
	ip := l.FirstPodIP.To4()
	v := uint32(ip[0])<<24 | uint32(ip[1])<<16 | uint32(ip[2])<<8 | uint32(ip[3])
	v += uint32(i)                                                          //nolint:gosec // G115: pod index < 65,536 (checked by the flag)
	return net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v)).String() //nolint:gosec // G115: the bytes of an IPv4 address, truncation intended
}

// writeManifests writes the Gateway, HTTPRoute, InferencePool, picker Service and one Pod per
// sim into dir, the same YAML a user would kubectl apply (see examples/local).
func writeManifests(dir string, l fleetLayout) error {
	if l.Pods < 1 {
		return fmt.Errorf("manifests: need at least one pod, got %d", l.Pods)
	}
	if ip := l.FirstPodIP.To4(); ip == nil || ip[0] != 127 {
		return fmt.Errorf("manifests: first pod IP %v is not an IPv4 loopback address", l.FirstPodIP)
	}
	files := map[string]string{
		"gateway.yaml": fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: infergw
spec:
  controllerName: infergw.dev/gateway-controller
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: bench-gateway
  namespace: %[1]s
spec:
  gatewayClassName: infergw
  listeners:
    - name: http
      protocol: HTTP
      port: %[2]d
`, l.Namespace, l.GatewayPort),
		"httproute.yaml": fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: bench-route
  namespace: %[1]s
spec:
  parentRefs:
    - group: gateway.networking.k8s.io
      kind: Gateway
      name: bench-gateway
  rules:
    - matches:
        - path:
            type: PathPrefix
            value: /
      backendRefs:
        - group: inference.networking.k8s.io
          kind: InferencePool
          name: %[2]s
      timeouts:
        request: 600s
`, l.Namespace, l.Pool),
		"pool.yaml": fmt.Sprintf(`apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata:
  name: %[2]s
  namespace: %[1]s
spec:
  selector:
    matchLabels:
      app: %[2]s
  targetPorts:
    - number: %[3]d
  appProtocol: http
  endpointPickerRef:
    group: ""
    kind: Service
    name: bench-picker
    port:
      number: %[4]d
    failureMode: FailClose
`, l.Namespace, l.Pool, l.TargetPort, l.PickerPort),
		"picker-service.yaml": fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: bench-picker
  namespace: %[1]s
spec:
  type: ClusterIP
  clusterIP: 127.0.0.1
  ports:
    - name: grpc-ext-proc
      protocol: TCP
      port: %[2]d
      targetPort: %[2]d
      appProtocol: http2
`, l.Namespace, l.PickerPort),
	}
	var pods strings.Builder
	for i := 0; i < l.Pods; i++ {
		if i > 0 {
			pods.WriteString("---\n")
		}
		fmt.Fprintf(&pods, `apiVersion: v1
kind: Pod
metadata:
  name: %[2]s-%[3]d
  namespace: %[1]s
  labels:
    app: %[2]s
    inference.networking.k8s.io/engine-type: vllm
spec:
  containers:
    - name: vllm
      image: vllm/vllm-openai:latest
      args: ["--model", %[5]q, "--port", "%[6]d", "--enable-lora"]
status:
  phase: Running
  podIP: %[4]s
  podIPs:
    - ip: %[4]s
  conditions:
    - type: Ready
      status: "True"
`, l.Namespace, l.Pool, i, l.podIP(i), l.Model, l.TargetPort)
	}
	files["pods.yaml"] = pods.String()
	if len(l.ReplicaPorts) > 0 {
		files[replicasFile] = replicaSlices(l.Namespace, l.ReplicaPorts)
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return fmt.Errorf("manifests: %w", err)
		}
	}
	return nil
}

// replicasFile holds the picker Service's EndpointSlices.
const replicasFile = "picker-replicas.yaml"

// replicaSlices is one EndpointSlice per picker replica (a slice has one port for all its
// endpoints, and the replicas share 127.0.0.1), named by the replica's port.
func replicaSlices(namespace string, ports []int) string {
	var b strings.Builder
	for _, port := range ports {
		fmt.Fprintf(&b, `---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: bench-picker-%[2]d
  namespace: %[1]s
  labels:
    kubernetes.io/service-name: bench-picker
addressType: IPv4
ports:
  - name: grpc-ext-proc
    port: %[2]d
endpoints:
  - addresses: ["127.0.0.1"]
`, namespace, port)
	}
	return b.String()
}

// writeReplicaSlices rewrites the picker Service's slices to ports (the control plane
// watches the directory): taking a replica out before stopping it is what Kubernetes does
// when a picker Pod terminates.
func writeReplicaSlices(dir, namespace string, ports []int) error {
	body := replicaSlices(namespace, ports)
	if body == "" {
		body = "# no picker replicas\n"
	}
	tmp := filepath.Join(dir, "."+replicasFile)
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		return fmt.Errorf("manifests: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, replicasFile)); err != nil {
		return fmt.Errorf("manifests: %w", err)
	}
	return nil
}
