package xds

import (
	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	earlyhmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/early_header_mutation/header_mutation/v3"
)

// stripPickerHeaders removes, before routing and before any filter, the headers only the
// picker may set: the destination endpoint and the pool, and on a listener with body-based
// routing the model headers (bodyrouting.go), which the picker sets from the body. A client that sent them could
// otherwise choose its endpoint or pool whenever the picker does not answer (every pool
// route fails open in ext_proc; a FailClose pool is closed only because the request then
// carries no choice).
func (b *builder) stripPickerHeaders(bodyRouting bool) []*corev3.TypedExtensionConfig {
	muts := []*mutationrulesv3.HeaderMutation{
		{Action: &mutationrulesv3.HeaderMutation_Remove{Remove: HeaderDestinationEndpoint}},
		{Action: &mutationrulesv3.HeaderMutation_Remove{Remove: HeaderPool}},
	}
	if bodyRouting {
		muts = append(muts, modelHeaderRemovals()...)
	}
	return []*corev3.TypedExtensionConfig{{
		Name:        "envoy.http.early_header_mutation.header_mutation",
		TypedConfig: b.any(&earlyhmv3.HeaderMutation{Mutations: muts}),
	}}
}
