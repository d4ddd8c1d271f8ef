package xds

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	leastrequestv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	overridehostv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/override_host/v3"
	roundrobinv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	subsetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/subset/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	metadatav3 "github.com/envoyproxy/go-control-plane/envoy/type/metadata/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const httpProtocolOptionsName = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// poolCluster is an EDS cluster of a pool's endpoints whose load balancer sends each request
// to the endpoint the picker chose (header or envoy.lb metadata). Without a choice (the
// picker down) a FailOpen pool falls back to least request; a FailClose pool has no
// endpoint to fall back to, so Envoy answers 503 (the mapper writes "endpoint picker
// unavailable"). Failing closed here, rather than with ext_proc's failure_mode_allow, lets
// every pool route fail open in ext_proc, so that a picker crash does not cut responses
// already streaming (extproc/README.md, "Picker crash during a streamed response").
func (b *builder) poolCluster(p *poolModel) *clusterv3.Cluster {
	c := b.edsCluster(p.cluster, p.h2c)
	b.addRetryBudget(c)
	c.LoadBalancingPolicy = &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{{
		TypedExtensionConfig: &corev3.TypedExtensionConfig{
			Name:        "envoy.load_balancing_policies.override_host",
			TypedConfig: b.overrideHostAny(p.failOpen || b.opts.DisablePicker),
		},
	}}}
	if p.failOpen {
		c.OutlierDetection = poolOutlierDetection()
	}
	return c
}

// poolOutlierDetection is Envoy's counterpart of the picker's outlier ejection
// (router.DefaultOutlierConfig): with FailOpen the proxy picks endpoints itself while the
// picker is down, and must then avoid failing pods on its own. Three failures in a row
// (5xx, or resets and connect failures counted apart as local-origin errors) or 30 % of at
// least 5 requests in an interval eject a host for 1 s, doubling per repeated ejection up
// to 30 s, at most half of the pool at once. An ejected host is unhealthy, so the
// override-host policy does not use it even when the picker names it, and falls back.
func poolOutlierDetection() *clusterv3.OutlierDetection {
	return &clusterv3.OutlierDetection{
		Consecutive_5Xx:                       wrapperspb.UInt32(3),
		SplitExternalLocalOriginErrors:        true,
		ConsecutiveLocalOriginFailure:         wrapperspb.UInt32(3),
		Interval:                              durationpb.New(time.Second),
		BaseEjectionTime:                      durationpb.New(time.Second),
		MaxEjectionTime:                       durationpb.New(30 * time.Second),
		MaxEjectionPercent:                    wrapperspb.UInt32(50),
		EnforcingSuccessRate:                  wrapperspb.UInt32(0),
		FailurePercentageThreshold:            wrapperspb.UInt32(30),
		EnforcingFailurePercentage:            wrapperspb.UInt32(100),
		EnforcingFailurePercentageLocalOrigin: wrapperspb.UInt32(100),
		FailurePercentageMinimumHosts:         wrapperspb.UInt32(2),
		FailurePercentageRequestVolume:        wrapperspb.UInt32(5),
	}
}

// overrideHostAny is one of two configurations (fail open or closed): marshal each once
// per translation.
func (b *builder) overrideHostAny(failOpen bool) *anyMsg {
	i := 0
	if failOpen {
		i = 1
	}
	if b.overrideHostCache[i] == nil {
		b.overrideHostCache[i] = b.any(b.overrideHost(failOpen))
	}
	return b.overrideHostCache[i]
}

func (b *builder) overrideHost(failOpen bool) *overridehostv3.OverrideHost {
	fallback := b.fallbackPolicy()
	if !failOpen {
		fallback = b.noHostPolicy()
	}
	return &overridehostv3.OverrideHost{
		OverrideHostSources: []*overridehostv3.OverrideHost_OverrideHostSource{
			{Header: HeaderDestinationEndpoint},
			{Metadata: &metadatav3.MetadataKey{
				Key:  MetadataNamespaceLB,
				Path: []*metadatav3.MetadataKey_PathSegment{{Segment: &metadatav3.MetadataKey_PathSegment_Key{Key: HeaderDestinationEndpoint}}},
			}},
		},
		FallbackPolicy: &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{{
			TypedExtensionConfig: fallback,
		}}},
	}
}

// noHostPolicy selects no endpoint: a subset load balancer without fallback whose only
// subset needs endpoint metadata no endpoint has, and which no route asks for.
func (b *builder) noHostPolicy() *corev3.TypedExtensionConfig {
	return &corev3.TypedExtensionConfig{
		Name: "envoy.load_balancing_policies.subset",
		TypedConfig: b.any(&subsetv3.Subset{
			FallbackPolicy:  subsetv3.Subset_NO_FALLBACK,
			SubsetSelectors: []*subsetv3.Subset_LbSubsetSelector{{Keys: []string{"infergw.dev/no-endpoint"}}},
			SubsetLbPolicy: &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{{
				TypedExtensionConfig: &corev3.TypedExtensionConfig{
					Name:        "envoy.load_balancing_policies.round_robin",
					TypedConfig: b.any(&roundrobinv3.RoundRobin{}),
				},
			}}},
		}),
	}
}

// fallbackPolicy is least request normally; with DisablePicker it is plain round robin, the
// policy a gateway without a picker would use (the benchmark's baseline).
func (b *builder) fallbackPolicy() *corev3.TypedExtensionConfig {
	if b.opts.DisablePicker {
		return &corev3.TypedExtensionConfig{
			Name:        "envoy.load_balancing_policies.round_robin",
			TypedConfig: b.any(&roundrobinv3.RoundRobin{}),
		}
	}
	return &corev3.TypedExtensionConfig{
		Name:        "envoy.load_balancing_policies.least_request",
		TypedConfig: b.any(&leastrequestv3.LeastRequest{}),
	}
}

// upstreamCluster is a cluster for a Service (a backend or a picker): EDS when the Service
// has an IP, STRICT_DNS with an inline assignment when only a DNS name is known.
func (b *builder) upstreamCluster(name string, up upstream, h2 bool) *clusterv3.Cluster {
	if up.dnsName == "" {
		return b.edsCluster(name, h2)
	}
	c := b.baseCluster(name, h2)
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
	c.DnsLookupFamily = clusterv3.Cluster_V4_PREFERRED
	// Envoy pauses CDS while any cluster is warming, and a DNS cluster warms until its first
	// resolution answers or times out: one Service name that does not resolve (a headless
	// Service in a cluster without DNS) would hold back every other cluster update, so
	// routes to new clusters got 503 "cluster not found" for as long. Do not wait.
	c.WaitForWarmOnInit = wrapperspb.Bool(false)
	c.LoadAssignment = &endpointv3.ClusterLoadAssignment{
		ClusterName: name,
		Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(up.dnsName, up.dnsPort)}}},
	}
	return c
}

func (b *builder) edsCluster(name string, h2 bool) *clusterv3.Cluster {
	c := b.baseCluster(name, h2)
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
	c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsConfigSource(), ServiceName: name}
	return c
}

func (b *builder) baseCluster(name string, h2 bool) *clusterv3.Cluster {
	limit := wrapperspb.UInt32(b.opts.MaxRequestsPerCluster)
	c := &clusterv3.Cluster{
		Name:           name,
		AltStatName:    statName(name),
		ConnectTimeout: durationpb.New(b.opts.ConnectTimeout),
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			MaxConnections: limit, MaxPendingRequests: limit, MaxRequests: limit,
		}}},
	}
	if h2 {
		c.TypedExtensionProtocolOptions = map[string]*anyMsg{httpProtocolOptionsName: b.any(&httpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
			}},
		})}
	}
	return c
}

// adsConfigSource says "this resource comes over the ADS stream".
func adsConfigSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}
