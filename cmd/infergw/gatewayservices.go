package main

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"

	"github.com/infergw/infergw/discovery/kubesource"
	"github.com/infergw/infergw/model"
)

// gatewayServiceFlags are the flags that give every Gateway its own address (a Service per
// Gateway pointing at Envoy ports allocated to it).
type gatewayServiceFlags struct {
	namespace string
	selector  map[string]string
	svcType   string
	prefix    string
}

func (g *gatewayServiceFlags) register(fl *pflag.FlagSet, ports *model.PortRange, readyPort *int32) {
	fl.Var(portRangeValue{ports}, "gateway-port-range", "give each Gateway its own address: every (Gateway, listener port) gets an Envoy port from this range, FIRST-LAST (e.g. 20000-29999; needs --gateway-services-namespace)")
	fl.StringVar(&g.namespace, "gateway-services-namespace", "", "namespace of the proxy, where a Service per Gateway is kept (selecting --gateway-services-selector, targeting the Gateway's allocated ports; its address goes into the Gateway's status.addresses)")
	fl.StringToStringVar(&g.selector, "gateway-services-selector", nil, "labels of the proxy's Pods, k=v,... (the per-Gateway Services' selector)")
	fl.StringVar(&g.svcType, "gateway-services-type", string(corev1.ServiceTypeClusterIP), "type of the per-Gateway Services: ClusterIP, NodePort or LoadBalancer")
	fl.StringVar(&g.prefix, "gateway-services-prefix", "infergw-gw", "first part of every per-Gateway Service's name")
	fl.Int32Var(readyPort, "ready-port", 0, "add an Envoy listener on this port answering 200 (the proxy's readiness probe when its ports are allocated per Gateway; 0: none)")
}

// options returns the Kubernetes source's per-Gateway Service options, nil when off.
func (g *gatewayServiceFlags) options(ports model.PortRange, kubernetes, writeStatus bool) (*kubesource.GatewayServiceOptions, error) {
	if g.namespace == "" {
		if ports.Enabled() {
			return nil, errors.New("--gateway-port-range needs --gateway-services-namespace: the allocated ports are reached only through the per-Gateway Services")
		}
		return nil, nil //nolint:nilnil // off
	}
	if !kubernetes || !writeStatus || !ports.Enabled() {
		return nil, errors.New("--gateway-services-namespace needs --kubernetes, --write-status and --gateway-port-range")
	}
	t := corev1.ServiceType(g.svcType)
	if !slices.Contains([]corev1.ServiceType{corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer}, t) {
		return nil, fmt.Errorf("--gateway-services-type %q: want ClusterIP, NodePort or LoadBalancer", g.svcType)
	}
	return &kubesource.GatewayServiceOptions{Namespace: g.namespace, Selector: maps.Clone(g.selector), Type: t, Prefix: g.prefix}, nil
}

// portRangeValue is the flag value of --gateway-port-range: "20000-29999".
type portRangeValue struct{ r *model.PortRange }

func (v portRangeValue) Type() string { return "first-last" }

func (v portRangeValue) String() string {
	if v.r == nil {
		return ""
	}
	return v.r.String()
}

func (v portRangeValue) Set(s string) error {
	from, to, ok := strings.Cut(strings.TrimSpace(s), "-")
	a, errA := strconv.ParseUint(from, 10, 16)
	b, errB := strconv.ParseUint(to, 10, 16)
	if !ok || errA != nil || errB != nil {
		return fmt.Errorf("%q is not FIRST-LAST", s)
	}
	r := model.PortRange{First: int32(a), Last: int32(b)}
	if err := r.Validate(); err != nil || !r.Enabled() {
		return fmt.Errorf("%q: want 1 <= FIRST <= LAST <= 65535", s)
	}
	*v.r = r
	return nil
}
