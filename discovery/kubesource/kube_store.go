package kubesource

import (
	"maps"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	infv1 "github.com/infergw/infergw/api/v1"
	infv1alpha2 "github.com/infergw/infergw/api/v1alpha2"
	"github.com/infergw/infergw/discovery"
)

// objectMap holds one kind's objects by namespace/name.
type objectMap map[string]client.Object

// kubeStore mirrors the informers' objects, fed by their event handlers. It holds the
// informers' own pointers (no copies), which must therefore never be modified; a snapshot
// built from them shares them the same way.
type kubeStore struct {
	mu                                                            sync.Mutex
	pools, objectives, rewrites, gateways, routes, services, pods objectMap
	// Read only with KubeOptions.GatewayAPI (the control plane).
	classes, grants, secrets, namespaces, slices objectMap
}

func newKubeStore() *kubeStore {
	return &kubeStore{
		pools: objectMap{}, objectives: objectMap{}, rewrites: objectMap{},
		gateways: objectMap{}, routes: objectMap{}, services: objectMap{}, pods: objectMap{},
		classes: objectMap{}, grants: objectMap{}, secrets: objectMap{}, namespaces: objectMap{}, slices: objectMap{},
	}
}

// put records obj; it reports false for a value that is not a Kubernetes object.
func (st *kubeStore) put(m objectMap, obj any) bool {
	o, ok := obj.(client.Object)
	if !ok {
		return false
	}
	st.mu.Lock()
	m[discovery.Key(o.GetNamespace(), o.GetName())] = o
	st.mu.Unlock()
	return true
}

// remove forgets obj, which may be a tombstone for a delete the informer missed.
func (st *kubeStore) remove(m objectMap, obj any) bool {
	if tomb, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	o, ok := obj.(client.Object)
	if !ok {
		return false
	}
	st.mu.Lock()
	delete(m, discovery.Key(o.GetNamespace(), o.GetName()))
	st.mu.Unlock()
	return true
}

// objects returns the current objects in the form Build takes.
func (st *kubeStore) objects() discovery.Objects {
	st.mu.Lock()
	defer st.mu.Unlock()
	return discovery.Objects{
		Pools:      typed[*infv1.InferencePool](st.pools),
		Objectives: typed[*infv1alpha2.InferenceObjective](st.objectives),
		Rewrites:   typed[*infv1alpha2.InferenceModelRewrite](st.rewrites),
		Gateways:   typed[*gwapiv1.Gateway](st.gateways),
		HTTPRoutes: typed[*gwapiv1.HTTPRoute](st.routes),
		Services:   typed[*corev1.Service](st.services),
		Pods:       typed[*corev1.Pod](st.pods),

		GatewayClasses:  typed[*gwapiv1.GatewayClass](st.classes),
		ReferenceGrants: typed[*gwapiv1.ReferenceGrant](st.grants),
		Secrets:         typed[*corev1.Secret](st.secrets),
		Namespaces:      typed[*corev1.Namespace](st.namespaces),
		EndpointSlices:  typed[*discoveryv1.EndpointSlice](st.slices),
	}
}

// typed lists a map's objects of type T (the informer of a kind only delivers that kind;
// anything else is ignored rather than trusted).
func typed[T client.Object](m objectMap) []T {
	out := make([]T, 0, len(m))
	for _, o := range m {
		if t, ok := o.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// specChanged reports whether an update can change a snapshot: a new generation (spec
// change) or new labels or annotations. Status-only updates do not count. Objects without a
// generation always count.
func specChanged(oldObj, newObj any) bool {
	o, ok1 := oldObj.(client.Object)
	n, ok2 := newObj.(client.Object)
	if !ok1 || !ok2 || n.GetGeneration() == 0 {
		return true
	}
	return o.GetGeneration() != n.GetGeneration() ||
		!maps.Equal(o.GetLabels(), n.GetLabels()) || !maps.Equal(o.GetAnnotations(), n.GetAnnotations())
}

// podChanged reports whether a pod update can change the endpoints of a pool: its labels,
// IP, readiness or deletion.
func podChanged(oldObj, newObj any) bool {
	o, ok1 := oldObj.(*corev1.Pod)
	n, ok2 := newObj.(*corev1.Pod)
	if !ok1 || !ok2 {
		return true
	}
	return o.Status.PodIP != n.Status.PodIP || discovery.PodReady(o) != discovery.PodReady(n) ||
		(o.DeletionTimestamp == nil) != (n.DeletionTimestamp == nil) || !maps.Equal(o.Labels, n.Labels)
}
