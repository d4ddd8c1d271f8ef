package xds

import (
	"time"

	xdscorev3 "github.com/cncf/xds/go/xds/core/v3"
	xdsmatcherv3 "github.com/cncf/xds/go/xds/type/matcher/v3"
	matchingv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/matching/v3"
	skipactionv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/matcher/action/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/infergw/infergw/contract"
)

// The response observer. A streamed completion crosses the picker's ext_proc filter once
// per SSE chunk, and in STREAMED mode every chunk waits for the picker's answer: most of
// the gateway's CPU per request. The picker changes few responses (a model name written
// back, a usage chunk it asked for removed); the others it only reads, for TTFT, tokens and
// the end of the request. The observer is a second ext_proc filter in observability mode
// ("send and go": Envoy sends without waiting, and nothing is answered) that reads those
// bodies; at the response headers the picker turns its own filter's body processing off
// with mode_override when the observer has the response (extproc/observe.go). It comes
// after the picker's filter, so it sees the request with the picker's id header on it.
//
// Only with STREAMED responses: Envoy does not override FULL_DUPLEX_STREAMED modes, and
// there the picker must keep every body.

// observerOn reports whether a route's response bodies reach the picker in STREAMED mode
// and the observer is wanted.
func (b *builder) observerOn(failOpen bool) bool {
	return !b.opts.NoResponseObserver && (failOpen || b.opts.ResponseBodyMode == BodyStreamed)
}

// observerFilter is the listener-level observer, disabled by default and enabled on the
// pool routes that have it (observerPerRoute).
func (b *builder) observerFilter(defaultPicker string) *hcmv3.HttpFilter {
	cfg := &extprocv3.ExternalProcessor{
		GrpcService:       grpcService(defaultPicker),
		ObservabilityMode: true,
		ProcessingMode: &extprocv3.ProcessingMode{
			// Request headers: the picker's id (contract.HeaderExchange) that joins the
			// two streams. Response headers: the content type the body is read by.
			RequestHeaderMode:   extprocv3.ProcessingMode_SEND,
			ResponseHeaderMode:  extprocv3.ProcessingMode_SEND,
			RequestBodyMode:     extprocv3.ProcessingMode_NONE,
			ResponseBodyMode:    extprocv3.ProcessingMode_STREAMED,
			RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
			ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
		},
		// An observer that cannot be reached never affects the request: the picker's
		// filter then keeps the body (it hands over only to an observer it has heard).
		FailureModeAllow: true,
		// After a response ends, Envoy holds the observer's stream open this long (default
		// 5 s) before closing it, though every message was sent before the end: at a
		// thousand requests a second that is thousands of idle streams at the picker. The
		// picker records a response at its last body message, not at the close.
		DeferredCloseTimeout: durationpb.New(time.Second),
	}
	// The filter runs only on requests the picker tagged for it: a request whose response
	// the picker keeps (one it changes) carries no exchange id, and the observer is skipped
	// instead of opening a stream the picker would end at once. Envoy evaluates the match
	// when the request reaches this filter, after the picker's header mutations.
	skipUntagged := &xdsmatcherv3.Matcher{MatcherType: &xdsmatcherv3.Matcher_MatcherList_{MatcherList: &xdsmatcherv3.Matcher_MatcherList{
		Matchers: []*xdsmatcherv3.Matcher_MatcherList_FieldMatcher{{
			Predicate: &xdsmatcherv3.Matcher_MatcherList_Predicate{MatchType: &xdsmatcherv3.Matcher_MatcherList_Predicate_NotMatcher{
				NotMatcher: &xdsmatcherv3.Matcher_MatcherList_Predicate{MatchType: &xdsmatcherv3.Matcher_MatcherList_Predicate_SinglePredicate_{
					SinglePredicate: &xdsmatcherv3.Matcher_MatcherList_Predicate_SinglePredicate{
						Input: &xdscorev3.TypedExtensionConfig{Name: "exchange-id",
							TypedConfig: b.any(&matcherv3.HttpRequestHeaderMatchInput{HeaderName: contract.HeaderExchange})},
						Matcher: &xdsmatcherv3.Matcher_MatcherList_Predicate_SinglePredicate_ValueMatch{ValueMatch: &xdsmatcherv3.StringMatcher{
							MatchPattern: &xdsmatcherv3.StringMatcher_SafeRegex{SafeRegex: &xdsmatcherv3.RegexMatcher{
								EngineType: &xdsmatcherv3.RegexMatcher_GoogleRe2{GoogleRe2: &xdsmatcherv3.RegexMatcher_GoogleRE2{}},
								Regex:      ".+",
							}},
						}},
					},
				}},
			}},
			OnMatch: &xdsmatcherv3.Matcher_OnMatch{OnMatch: &xdsmatcherv3.Matcher_OnMatch_Action{Action: &xdscorev3.TypedExtensionConfig{
				Name: "skip", TypedConfig: b.any(&skipactionv3.SkipFilter{}),
			}}},
		}},
	}}}
	wrapped := &matchingv3.ExtensionWithMatcher{
		XdsMatcher:      skipUntagged,
		ExtensionConfig: &corev3.TypedExtensionConfig{Name: ObserverFilterName, TypedConfig: b.any(cfg)},
	}
	return &hcmv3.HttpFilter{
		Name:       ObserverFilterName,
		Disabled:   true,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: b.any(wrapped)},
	}
}

// observerPerRoute enables the observer on a route, on the route's picker.
func (b *builder) observerPerRoute(picker string) *anyMsg {
	per := &extprocv3.ExtProcPerRoute{Override: &extprocv3.ExtProcPerRoute_Overrides{Overrides: &extprocv3.ExtProcOverrides{
		GrpcService:         grpcService(picker),
		GrpcInitialMetadata: []*corev3.HeaderValue{{Key: contract.MetadataObserver, Value: "1"}},
		FailureModeAllow:    wrapperspb.Bool(true),
	}}}
	return b.any(&routev3.FilterConfig{Config: b.any(per)})
}

// withObserver adds the observer to a pool route's per-filter configs and tells the picker
// (in the picker's stream metadata) that the route has it.
func (b *builder) withObserver(cfgs map[string]*anyMsg, per *extprocv3.ExtProcPerRoute, picker string, failOpen bool) map[string]*anyMsg {
	if !b.observerOn(failOpen) {
		return cfgs
	}
	o := per.GetOverrides()
	o.GrpcInitialMetadata = append(o.GrpcInitialMetadata, &corev3.HeaderValue{Key: contract.MetadataObserved, Value: "1"})
	cfgs[ExtProcFilterName] = b.any(&routev3.FilterConfig{Config: b.any(per)})
	cfgs[ObserverFilterName] = b.observerPerRoute(picker)
	return cfgs
}
