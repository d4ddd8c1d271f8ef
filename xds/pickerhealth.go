package xds

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// pickerReadinessService is the grpc.health.v1 service a picker reports SERVING only once
// its pools are loaded (extproc.HealthExtProc).
const pickerReadinessService = "envoy.service.ext_proc.v3.ExternalProcessor"

// addPickerHealthCheck makes Envoy check a picker cluster's hosts actively, over gRPC
// health against the picker's readiness, so that a picker that is down or not ready yet
// (restarting, pools not loaded) gets no ext_proc stream: its pools then fail open or
// closed at once, as their failureMode says. The checks run at the same interval with or
// without traffic (Envoy's default idle interval is 60 s, which would keep a restarted
// picker out of use for a minute on a quiet gateway). Panic mode is off: with every picker
// host unhealthy Envoy must not send to them anyway, as it would with the default 50 %
// panic threshold. A picker removed from its Service's endpoints (a terminating Pod, a
// replica taken out for a restart) leaves the cluster at once: by default Envoy keeps a
// removed host while it still passes health checks, and it would send new streams to a
// picker about to get SIGTERM until two checks had failed.
func (b *builder) addPickerHealthCheck(c *clusterv3.Cluster) {
	iv := b.opts.PickerHealthInterval
	if iv <= 0 {
		return
	}
	d := durationpb.New(iv)
	c.HealthChecks = []*corev3.HealthCheck{{
		Timeout:                  d,
		Interval:                 d,
		NoTrafficInterval:        d,
		NoTrafficHealthyInterval: d,
		UnhealthyThreshold:       wrapperspb.UInt32(2),
		HealthyThreshold:         wrapperspb.UInt32(1),
		ReuseConnection:          wrapperspb.Bool(true),
		HealthChecker: &corev3.HealthCheck_GrpcHealthCheck_{GrpcHealthCheck: &corev3.HealthCheck_GrpcHealthCheck{
			ServiceName: pickerReadinessService,
		}},
	}}
	c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 0}}
	c.IgnoreHealthOnHostRemoval = true
}
