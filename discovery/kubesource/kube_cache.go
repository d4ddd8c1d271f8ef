package kubesource

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	infv1 "github.com/infergw/infergw/api/v1"
	infv1alpha2 "github.com/infergw/infergw/api/v1alpha2"
)

// lastAppliedAnnotation is written by `kubectl apply` and holds a full copy of the object;
// infergw never reads it, so the informers drop it to halve their memory.
const lastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration"

// newKubeScheme registers exactly the types the source reads.
func newKubeScheme() (*runtime.Scheme, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, discoveryv1.AddToScheme, gwapiv1.Install, infv1.AddToScheme, infv1alpha2.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			return nil, fmt.Errorf("discovery/kube: build scheme: %w", err)
		}
	}
	return scheme, nil
}

// kubeCacheOptions limits the informers to the namespaces asked for and trims what they keep:
// managed fields and last-applied annotations everywhere, and Pods down to the few fields a
// snapshot uses (a cluster may hold many more Pods than pools select).
func kubeCacheOptions(scheme *runtime.Scheme, namespaces []string, gatewayAPI bool) cache.Options {
	opts := cache.Options{
		Scheme:           scheme,
		DefaultTransform: stripMetadata,
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}: {Transform: slimPod},
		},
	}
	if gatewayAPI {
		// Only TLS Secrets can be listener certificates: the API server filters the
		// others out, so their contents never reach infergw.
		opts.ByObject[&corev1.Secret{}] = cache.ByObject{Field: fields.OneTermEqualSelector("type", string(corev1.SecretTypeTLS))}
	}
	if len(namespaces) > 0 {
		opts.DefaultNamespaces = make(map[string]cache.Config, len(namespaces))
		for _, ns := range namespaces {
			opts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return opts
}

// stripMetadata drops managed fields and the last-applied annotation. The informer hands it
// freshly decoded objects, so changing them in place is safe.
func stripMetadata(in any) (any, error) {
	obj, ok := in.(client.Object)
	if !ok {
		return in, nil
	}
	if obj.GetManagedFields() != nil {
		obj.SetManagedFields(nil)
	}
	if ann := obj.GetAnnotations(); ann != nil {
		if _, ok := ann[lastAppliedAnnotation]; ok {
			delete(ann, lastAppliedAnnotation)
			obj.SetAnnotations(ann)
		}
	}
	return in, nil
}

// slimPod keeps what PodReady, SelectorMatches and Endpoint need: identity, labels,
// deletion timestamp, IPs and the Ready condition.
func slimPod(in any) (any, error) {
	pod, ok := in.(*corev1.Pod)
	if !ok {
		return in, nil
	}
	out := &corev1.Pod{
		TypeMeta: pod.TypeMeta,
		// Annotations, owner references and managed fields are left behind.
		ObjectMeta: metav1.ObjectMeta{
			Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID,
			ResourceVersion: pod.ResourceVersion, Generation: pod.Generation,
			Labels: pod.Labels, DeletionTimestamp: pod.DeletionTimestamp,
		},
		Status: corev1.PodStatus{
			PodIP:  pod.Status.PodIP,
			PodIPs: pod.Status.PodIPs,
		},
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			out.Status.Conditions = []corev1.PodCondition{{Type: c.Type, Status: c.Status}}
		}
	}
	return out, nil
}

// registerHandlers creates one informer per kind and a handler that records its objects in
// the store and asks for a rebuild. It returns the handlers' HasSynced functions: a handler
// has synced once it has seen every object of the initial list.
func (s *KubeSource) registerHandlers(ctx context.Context) ([]toolscache.InformerSynced, error) {
	type kind struct {
		name  string
		obj   client.Object
		store objectMap
		// relevant filters updates; nil means every update counts.
		relevant func(old, new any) bool
	}
	kinds := []kind{
		{"InferencePool", &infv1.InferencePool{}, s.store.pools, specChanged},
		{"InferenceObjective", &infv1alpha2.InferenceObjective{}, s.store.objectives, specChanged},
		{"InferenceModelRewrite", &infv1alpha2.InferenceModelRewrite{}, s.store.rewrites, specChanged},
		{"Gateway", &gwapiv1.Gateway{}, s.store.gateways, specChanged},
		{"HTTPRoute", &gwapiv1.HTTPRoute{}, s.store.routes, specChanged},
		{"Service", &corev1.Service{}, s.store.services, nil},
		{"Pod", &corev1.Pod{}, s.store.pods, podChanged},
	}
	if s.opts.GatewayAPI {
		kinds = append(kinds,
			kind{"GatewayClass", &gwapiv1.GatewayClass{}, s.store.classes, specChanged},
			kind{"ReferenceGrant", &gwapiv1.ReferenceGrant{}, s.store.grants, nil},
			kind{"Secret", &corev1.Secret{}, s.store.secrets, nil},
			kind{"Namespace", &corev1.Namespace{}, s.store.namespaces, nil},
			kind{"EndpointSlice", &discoveryv1.EndpointSlice{}, s.store.slices, nil},
		)
	}
	if s.client != nil {
		// Status is derived from pools and routes, and must be rewritten when someone else
		// changes it; with status writing on, every pool and route update counts.
		kinds[0].relevant, kinds[3].relevant, kinds[4].relevant = nil, nil, nil
		if s.opts.GatewayAPI {
			kinds[7].relevant = nil // GatewayClass
		}
	}
	synced := make([]toolscache.InformerSynced, 0, len(kinds))
	for _, k := range kinds {
		inf, err := s.cache.GetInformer(ctx, k.obj)
		if err != nil {
			return nil, fmt.Errorf("discovery/kube: informer for %s (is its CRD installed?): %w", k.name, err)
		}
		reg, err := inf.AddEventHandler(s.handler(k.name, k.store, k.relevant))
		if err != nil {
			return nil, fmt.Errorf("discovery/kube: handler for %s: %w", k.name, err)
		}
		synced = append(synced, reg.HasSynced)
	}
	return synced, nil
}

func (s *KubeSource) handler(kind string, m objectMap, relevant func(old, new any) bool) toolscache.ResourceEventHandler {
	events := s.metrics.events
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			events.WithLabelValues(kind, "add").Inc()
			if s.store.put(m, obj) {
				s.poke()
			}
		},
		UpdateFunc: func(old, obj any) {
			events.WithLabelValues(kind, "update").Inc()
			changed := relevant == nil || relevant(old, obj)
			// Always store the newest object, even when the change does not matter, so the
			// next snapshot and status writes see the current resourceVersion.
			if s.store.put(m, obj) && changed {
				s.poke()
			}
		},
		DeleteFunc: func(obj any) {
			events.WithLabelValues(kind, "delete").Inc()
			if s.store.remove(m, obj) {
				s.poke()
			}
		},
	}
}
