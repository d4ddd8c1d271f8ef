package kubesource

import (
	"maps"
	"slices"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/infergw/infergw/discovery"
)

// sameSnapshotContent reports whether two snapshots hold the same resources in the same
// versions and the same pool endpoints, so that a rebuild caused by an irrelevant event
// (an unselected pod, a status write) publishes nothing. Objects are compared by identity
// and generation (plus labels and annotations) where the API server tracks generations,
// and by resourceVersion otherwise.
func sameSnapshotContent(a, b *discovery.Snapshot) bool {
	return sameObjects(a.Gateways, b.Gateways) &&
		sameObjects(a.HTTPRoutes, b.HTTPRoutes) &&
		sameObjects(a.Objectives, b.Objectives) &&
		sameObjects(a.Rewrites, b.Rewrites) &&
		sameObjects(a.Services, b.Services) &&
		sameObjects(a.GatewayClasses, b.GatewayClasses) &&
		sameObjects(a.ReferenceGrants, b.ReferenceGrants) &&
		sameObjects(a.Secrets, b.Secrets) &&
		sameObjects(a.Namespaces, b.Namespaces) &&
		sameObjects(a.EndpointSlices, b.EndpointSlices) &&
		slices.EqualFunc(a.Pools, b.Pools, func(x, y *discovery.Pool) bool {
			return sameObject(x.InferencePool, y.InferencePool) &&
				slices.EqualFunc(x.Endpoints, y.Endpoints, func(e, f discovery.Endpoint) bool {
					return e.Name == f.Name && e.Namespace == f.Namespace && e.IP == f.IP && maps.Equal(e.Labels, f.Labels)
				})
		})
}

func sameObjects[T client.Object](a, b []T) bool {
	return slices.EqualFunc(a, b, func(x, y T) bool { return sameObject(x, y) })
}

func sameObject(x, y client.Object) bool {
	if x.GetNamespace() != y.GetNamespace() || x.GetName() != y.GetName() || x.GetUID() != y.GetUID() {
		return false
	}
	if x.GetGeneration() == 0 || y.GetGeneration() == 0 {
		return x.GetResourceVersion() == y.GetResourceVersion()
	}
	return x.GetGeneration() == y.GetGeneration() &&
		maps.Equal(x.GetLabels(), y.GetLabels()) && maps.Equal(x.GetAnnotations(), y.GetAnnotations())
}
