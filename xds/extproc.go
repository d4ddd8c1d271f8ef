package xds

import (
	"regexp"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/infergw/infergw/contract"
)

// extProcFilter is the listener-level ext_proc filter. It is disabled by default and
// enabled only on pool routes (FilterConfig in typed_per_filter_config), which also name the
// pool's picker; defaultPicker only satisfies the filter's need for a default service.
func (b *builder) extProcFilter(defaultPicker string) *hcmv3.HttpFilter {
	cfg := &extprocv3.ExternalProcessor{
		GrpcService:    grpcService(defaultPicker),
		ProcessingMode: b.processingMode(),
		// A picker that fails where Envoy cannot fail open (mid-request in a duplex mode)
		// answers 503; the local reply mapper writes the JSON body. Pool routes set
		// failure_mode_allow per route (see extProcPerRoute).
		StatusOnError: &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
		MetadataOptions: &extprocv3.MetadataOptions{
			// The picker writes its choice under envoy.lb; Envoy drops metadata from
			// namespaces not listed here.
			ReceivingNamespaces: &extprocv3.MetadataOptions_MetadataNamespaces{Untyped: []string{MetadataNamespaceLB}},
			// A proxy-side candidate subset, when one is set, reaches the picker.
			ForwardingNamespaces: &extprocv3.MetadataOptions_MetadataNamespaces{Untyped: []string{MetadataSubsetHint}},
		},
		// Keep content-length: the picker sets a corrected one when it rewrites the body
		// (model rewrite), so upstreams get a sized body instead of chunked encoding.
		AllowContentLengthHeader: true,
		// The picker turns its response body processing off when the observer has the
		// response (observer.go).
		AllowModeOverride: true,
		// x-envoy-* headers are closed to ext_proc by default; the picker may set the one
		// that bounds a streaming request's wait for its first byte (per try).
		MutationRules: &mutationrulesv3.HeaderMutationRules{AllowExpression: &matcherv3.RegexMatcher{
			Regex: "^" + regexp.QuoteMeta(HeaderPerTryTimeout) + "$",
		}},
	}
	// Always set: pool routes use BUFFERED/STREAMED by default (see failOpenProcessingMode),
	// where Envoy's 200 ms default would fail requests the picker is still queueing.
	cfg.MessageTimeout = durationpb.New(b.opts.PickerMessageTimeout)
	return &hcmv3.HttpFilter{
		Name:       ExtProcFilterName,
		Disabled:   true,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: b.any(cfg)},
	}
}

func (b *builder) processingMode() *extprocv3.ProcessingMode {
	m := &extprocv3.ProcessingMode{
		RequestHeaderMode:   extprocv3.ProcessingMode_SEND,
		ResponseHeaderMode:  extprocv3.ProcessingMode_SEND,
		RequestBodyMode:     extprocv3.ProcessingMode_FULL_DUPLEX_STREAMED,
		RequestTrailerMode:  extprocv3.ProcessingMode_SEND,
		ResponseBodyMode:    extprocv3.ProcessingMode_FULL_DUPLEX_STREAMED,
		ResponseTrailerMode: extprocv3.ProcessingMode_SEND,
	}
	if b.opts.RequestBodyMode == BodyBuffered {
		m.RequestBodyMode = extprocv3.ProcessingMode_BUFFERED
		m.RequestTrailerMode = extprocv3.ProcessingMode_SKIP
	}
	if b.opts.ResponseBodyMode == BodyStreamed {
		m.ResponseBodyMode = extprocv3.ProcessingMode_STREAMED
		// Trailers would be one more message the picker must answer; it needs none.
		m.ResponseTrailerMode = extprocv3.ProcessingMode_SKIP
	}
	return m
}

// extProcPerRoute enables the ext_proc filter on a pool route, pointing it at the pool's
// picker and telling the picker which pools (and weights) the route may use.
func (b *builder) extProcPerRoute(picker string, failOpen bool, pools []weightedPool) map[string]*anyMsg {
	// Every pool route fails open in ext_proc: a FailClose pool fails closed in its
	// cluster instead (poolCluster), so that a picker lost mid-response lets the rest of
	// the response through rather than cutting it.
	per := &extprocv3.ExtProcPerRoute{Override: &extprocv3.ExtProcPerRoute_Overrides{Overrides: &extprocv3.ExtProcOverrides{
		GrpcService:         grpcService(picker),
		GrpcInitialMetadata: []*corev3.HeaderValue{{Key: MetadataPools, Value: poolsMetadata(pools)}},
		FailureModeAllow:    wrapperspb.Bool(true),
	}}}
	if failOpen {
		per.GetOverrides().ProcessingMode = failOpenProcessingMode()
	} else {
		per.GetOverrides().ProcessingMode = b.processingMode()
	}
	cfgs := map[string]*anyMsg{ExtProcFilterName: b.any(&routev3.FilterConfig{Config: b.any(per)})}
	return b.withObserver(cfgs, per, picker, failOpen)
}

// failOpenProcessingMode is the processing mode of FailOpen routes. Envoy can fail open in
// FULL_DUPLEX_STREAMED mode only until the first body chunk has been handed to the picker's
// stream; with the picker down, a POST's first chunk is queued on the stream before the
// connection failure is known, so the request fails closed anyway (seen with Envoy 1.40;
// envoyproxy/envoy#41276 describes the limit). BUFFERED keeps the body in Envoy until the
// picker has answered the headers, so a dead picker is detected while failing open is still
// possible. STREAMED responses likewise let a picker failure mid-response pass the rest through.
func failOpenProcessingMode() *extprocv3.ProcessingMode {
	return &extprocv3.ProcessingMode{
		RequestHeaderMode:   extprocv3.ProcessingMode_SEND,
		RequestBodyMode:     extprocv3.ProcessingMode_BUFFERED,
		RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
		ResponseHeaderMode:  extprocv3.ProcessingMode_SEND,
		ResponseBodyMode:    extprocv3.ProcessingMode_STREAMED,
		ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
	}
}

// weightedPool is one pool of a route with its weight, as the picker reads it.
type weightedPool = contract.WeightedPool

// poolsMetadata renders x-infergw-pools (contract.EncodePools).
func poolsMetadata(pools []weightedPool) string { return contract.EncodePools(pools) }

func grpcService(cluster string) *corev3.GrpcService {
	return &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: cluster}}}
}
