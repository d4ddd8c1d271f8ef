// Package discovery reads the resources infergw is configured with (Gateway API Gateways and
// HTTPRoutes, GIE InferencePools, InferenceObjectives and InferenceModelRewrites, the Pods of
// each pool, and the Services that pools and routes name) from a directory of manifests or
// from the Kubernetes API, and publishes them as immutable, internally consistent snapshots.
package discovery

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	infv1 "github.com/infergw/infergw/api/v1"
	infv1alpha2 "github.com/infergw/infergw/api/v1alpha2"
)

// Snapshot is one consistent view of every resource. It is immutable once published:
// consumers must not modify anything reachable from it. Slices are sorted by
// namespace/name so that equal inputs give equal snapshots.
type Snapshot struct {
	// Version increases by one for every snapshot a Source publishes.
	Version uint64

	Gateways   []*gwapiv1.Gateway
	HTTPRoutes []*gwapiv1.HTTPRoute
	Pools      []*Pool
	Objectives []*infv1alpha2.InferenceObjective
	Rewrites   []*infv1alpha2.InferenceModelRewrite
	// Services are those named by a pool's endpointPickerRef or by a route's backendRef.
	Services []*corev1.Service

	// GatewayClasses are every GatewayClass (infergw writes the status of those whose
	// controllerName is its own).
	GatewayClasses []*gwapiv1.GatewayClass
	// ReferenceGrants allow cross-namespace references (backendRefs, certificateRefs).
	ReferenceGrants []*gwapiv1.ReferenceGrant
	// Secrets are those a kept Gateway's HTTPS listeners name in certificateRefs.
	Secrets []*corev1.Secret
	// Namespaces carry the labels allowedRoutes namespace selectors match.
	Namespaces []*corev1.Namespace
	// EndpointSlices are those of the Services kept (label kubernetes.io/service-name):
	// Service backends are sent to their endpoints when there are any.
	EndpointSlices []*discoveryv1.EndpointSlice
}

// Pool is an InferencePool with the ready endpoints its selector matches right now.
type Pool struct {
	*infv1.InferencePool
	// Endpoints are the ready pods selected by the pool, sorted by name.
	Endpoints []Endpoint
}

// Endpoint is one ready model-server pod of a pool. The pool's target ports apply to it.
type Endpoint struct {
	// Name is the pod's name; Namespace the pod's (and the pool's) namespace.
	Name      string
	Namespace string
	// IP is the pod's IP address (status.podIP).
	IP string
	// Labels are the pod's labels, among them inference.networking.k8s.io/engine-type.
	Labels map[string]string
}

// Key returns "namespace/name", the key used for every resource in infergw.
func Key(namespace, name string) string { return namespace + "/" + name }

// Source publishes snapshots. Both the manifest-directory source and the Kubernetes source
// implement it.
type Source interface {
	// Run reads resources until ctx is done. It publishes a first snapshot as soon as the
	// initial read is complete.
	Run(ctx context.Context) error
	// Current returns the latest snapshot, or nil before the first one.
	Current() *Snapshot
	// Subscribe returns a channel that receives every new snapshot (only the newest is
	// kept if the reader is slow: the channel has capacity one and stale values are
	// replaced) and a function that ends the subscription.
	Subscribe() (<-chan *Snapshot, func())
}

// DefaultGatewayClass is the GatewayClass name whose Gateways infergw serves by default.
const DefaultGatewayClass = "infergw"
