// Package contract holds the names and encodings both sides of the proxy-picker wire rely
// on: the control plane writes them into Envoy's configuration (xds) and the picker reads or
// writes them (extproc). Keeping them in one package means a rename cannot reach only one
// side; the round-trip test pins the one encoding that is ours (x-infergw-pools).
package contract

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Headers of the GIE endpoint-picker protocol.
const (
	// HeaderDestinationEndpoint carries the picker's choice, "ip:port[,ip:port…]",
	// primary first; Envoy's override-host load balancer reads it.
	HeaderDestinationEndpoint = "x-gateway-destination-endpoint"
	// HeaderObjective names the InferenceObjective of a request.
	HeaderObjective = "x-gateway-inference-objective"
	// HeaderModelRewrite asks the picker to rewrite the request's model.
	HeaderModelRewrite = "x-gateway-model-name-rewrite"
	// HeaderFairnessID groups requests for fairness.
	HeaderFairnessID = "x-gateway-inference-fairness-id"
)

// infergw's own headers and metadata.
const (
	// HeaderPool is set by the picker to the pool it chose when a route has several; the
	// control plane generates one route per pool matching it (after clear_route_cache).
	// Envoy strips it from clients.
	HeaderPool = "x-infergw-pool"
	// HeaderUpstream is the response header pool routes set to the endpoint Envoy used
	// (%UPSTREAM_HOST%).
	HeaderUpstream = "x-infergw-upstream"
	// MetadataPools is the gRPC initial metadata key of the ext_proc stream listing the
	// route's pools, encoded by EncodePools.
	MetadataPools = "x-infergw-pools"
	// HeaderPerTryTimeout is the Envoy header the picker sets on streaming requests to
	// bound each try's wait for the first byte; the control plane's mutation rules allow it.
	HeaderPerTryTimeout = "x-envoy-upstream-rq-per-try-timeout-ms"
	// HeaderExchange is set by the picker on a request it may hand to the response
	// observer: an id, unique in the picker process, that the observer's stream (which
	// sees the request after the picker's mutations) uses to find the picker's exchange.
	// Any client value is overwritten.
	HeaderExchange = "x-infergw-exchange"
	// MetadataObserver is the gRPC initial metadata key of the observer filter's
	// ext_proc streams (value "1"): streams that watch a response in observability mode.
	MetadataObserver = "x-infergw-observer"
	// MetadataObserved is the gRPC initial metadata key of a pool route's picker streams
	// (value "1") when the route also has the response observer: the picker may then
	// leave the response body to it.
	MetadataObserved = "x-infergw-observed"
)

// Dynamic metadata of the GIE protocol.
const (
	// MetadataNamespaceLB and MetadataKeyDestination: where the picker writes its choice.
	MetadataNamespaceLB    = "envoy.lb"
	MetadataKeyDestination = HeaderDestinationEndpoint
	// MetadataNamespaceSubset and MetadataKeySubset: where the proxy's candidate subset
	// reaches the picker.
	MetadataNamespaceSubset = "envoy.lb.subset_hint"
	MetadataKeySubset       = "x-gateway-destination-endpoint-subset"
)

// MaxPools bounds the pools one x-infergw-pools value may list (a rule has at most 16
// backendRefs; the margin costs nothing).
const MaxPools = 64

// WeightedPool is one entry of x-infergw-pools: a pool key ("namespace/name") and its
// weight. A zero weight keeps the pool out of the draw.
type WeightedPool struct {
	Key    string
	Weight uint32
}

// EncodePools renders x-infergw-pools: "ns/pool" for one pool (its weight does not matter),
// "ns/a=3,ns/b=1" for several.
func EncodePools(pools []WeightedPool) string {
	if len(pools) == 1 {
		return pools[0].Key
	}
	var sb strings.Builder
	for i, p := range pools {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(p.Key)
		sb.WriteByte('=')
		sb.WriteString(strconv.FormatUint(uint64(p.Weight), 10))
	}
	return sb.String()
}

// ParsePools parses "ns/a[=w][,ns/b[=w]…]" (spaces around items are ignored). Weights
// default to 1. It refuses an empty list, a name that is not namespace/name, a weight that
// is not a uint32, and more than MaxPools entries.
func ParsePools(v string) ([]WeightedPool, error) {
	var out []WeightedPool
	for item := range strings.SplitSeq(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if len(out) == MaxPools {
			return nil, fmt.Errorf("pool list: more than %d pools", MaxPools)
		}
		name, w, hasW := strings.Cut(item, "=")
		weight := uint64(1)
		if hasW {
			n, err := strconv.ParseUint(strings.TrimSpace(w), 10, 32)
			if err != nil {
				return nil, fmt.Errorf("pool list %q: bad weight %q for %q", v, w, name)
			}
			weight = n
		}
		name = strings.TrimSpace(name)
		if ns, n, ok := strings.Cut(name, "/"); !ok || ns == "" || n == "" || strings.Contains(n, "/") {
			return nil, fmt.Errorf("pool list %q: %q is not namespace/name", v, name)
		}
		out = append(out, WeightedPool{Key: name, Weight: uint32(weight)})
	}
	if len(out) == 0 {
		return nil, errors.New("pool list names no pool")
	}
	return out, nil
}
