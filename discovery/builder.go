package discovery

import (
	"cmp"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	infv1 "github.com/infergw/infergw/api/v1"
	infv1alpha2 "github.com/infergw/infergw/api/v1alpha2"
)

// Objects is the raw set of resources a Source has read, before selection. Build never
// modifies them, but the snapshot it returns points into them: once built, they must be
// treated as immutable (informer caches and freshly decoded manifests both satisfy this).
type Objects struct {
	Gateways   []*gwapiv1.Gateway
	HTTPRoutes []*gwapiv1.HTTPRoute
	Pools      []*infv1.InferencePool
	Objectives []*infv1alpha2.InferenceObjective
	Rewrites   []*infv1alpha2.InferenceModelRewrite
	Services   []*corev1.Service
	Pods       []*corev1.Pod

	GatewayClasses  []*gwapiv1.GatewayClass
	ReferenceGrants []*gwapiv1.ReferenceGrant
	Secrets         []*corev1.Secret
	Namespaces      []*corev1.Namespace
	EndpointSlices  []*discoveryv1.EndpointSlice
}

// Build turns a set of objects into a consistent snapshot. It is a pure function:
//   - Gateways are kept when spec.gatewayClassName equals gatewayClass;
//   - HTTPRoutes are kept when one of their parentRefs names a kept Gateway;
//   - every InferencePool is kept, with the ready pods (Ready condition True, podIP set,
//     not terminating) of its namespace whose labels match all of spec.selector.matchLabels;
//   - all objectives and rewrites are kept;
//   - Services are kept only when a pool's endpointPickerRef or a kept route's backendRef
//     (kind Service) names them.
//
// Every slice is sorted by namespace/name and endpoints by pod name, so equal inputs give
// equal snapshots.
func Build(version uint64, objs Objects, gatewayClass string) *Snapshot {
	snap := &Snapshot{Version: version}

	gatewayKeys := make(map[string]struct{})
	for _, gw := range objs.Gateways {
		if gw == nil || string(gw.Spec.GatewayClassName) != gatewayClass {
			continue
		}
		snap.Gateways = append(snap.Gateways, gw)
		gatewayKeys[Key(gw.Namespace, gw.Name)] = struct{}{}
	}

	for _, rt := range objs.HTTPRoutes {
		if rt != nil && routeAttached(rt, gatewayKeys) {
			snap.HTTPRoutes = append(snap.HTTPRoutes, rt)
		}
	}

	podIndex := indexReadyPods(objs.Pods)
	for _, ip := range objs.Pools {
		if ip == nil {
			continue
		}
		snap.Pools = append(snap.Pools, &Pool{InferencePool: ip, Endpoints: podIndex.selectEndpoints(ip)})
	}

	for _, o := range objs.Objectives {
		if o != nil {
			snap.Objectives = append(snap.Objectives, o)
		}
	}
	for _, r := range objs.Rewrites {
		if r != nil {
			snap.Rewrites = append(snap.Rewrites, r)
		}
	}

	wanted := referencedServices(snap.Pools, snap.HTTPRoutes)
	for _, svc := range objs.Services {
		if svc == nil {
			continue
		}
		if _, ok := wanted[Key(svc.Namespace, svc.Name)]; ok {
			snap.Services = append(snap.Services, svc)
		}
	}

	for _, gc := range objs.GatewayClasses {
		if gc != nil {
			snap.GatewayClasses = append(snap.GatewayClasses, gc)
		}
	}
	for _, rg := range objs.ReferenceGrants {
		if rg != nil {
			snap.ReferenceGrants = append(snap.ReferenceGrants, rg)
		}
	}
	for _, ns := range objs.Namespaces {
		if ns != nil {
			snap.Namespaces = append(snap.Namespaces, ns)
		}
	}
	certs := referencedSecrets(snap.Gateways)
	for _, sec := range objs.Secrets {
		if sec == nil {
			continue
		}
		if _, ok := certs[Key(sec.Namespace, sec.Name)]; ok {
			snap.Secrets = append(snap.Secrets, sec)
		}
	}

	for _, es := range objs.EndpointSlices {
		if es == nil {
			continue
		}
		if _, ok := wanted[Key(es.Namespace, es.Labels[discoveryv1.LabelServiceName])]; ok {
			snap.EndpointSlices = append(snap.EndpointSlices, es)
		}
	}
	sortByKey(snap.EndpointSlices, func(e *discoveryv1.EndpointSlice) (string, string) { return e.Namespace, e.Name })
	sortByKey(snap.GatewayClasses, func(g *gwapiv1.GatewayClass) (string, string) { return "", g.Name })
	sortByKey(snap.ReferenceGrants, func(r *gwapiv1.ReferenceGrant) (string, string) { return r.Namespace, r.Name })
	sortByKey(snap.Secrets, func(s *corev1.Secret) (string, string) { return s.Namespace, s.Name })
	sortByKey(snap.Namespaces, func(n *corev1.Namespace) (string, string) { return "", n.Name })
	sortByKey(snap.Gateways, func(g *gwapiv1.Gateway) (string, string) { return g.Namespace, g.Name })
	sortByKey(snap.HTTPRoutes, func(r *gwapiv1.HTTPRoute) (string, string) { return r.Namespace, r.Name })
	sortByKey(snap.Pools, func(p *Pool) (string, string) { return p.Namespace, p.Name })
	sortByKey(snap.Objectives, func(o *infv1alpha2.InferenceObjective) (string, string) { return o.Namespace, o.Name })
	sortByKey(snap.Rewrites, func(r *infv1alpha2.InferenceModelRewrite) (string, string) { return r.Namespace, r.Name })
	sortByKey(snap.Services, func(s *corev1.Service) (string, string) { return s.Namespace, s.Name })
	return snap
}

// sortByKey sorts objects by namespace, then name. The sort is stable so that duplicates
// (which validation rejects for manifests) keep their input order.
func sortByKey[T any](items []T, key func(T) (string, string)) {
	slices.SortStableFunc(items, func(a, b T) int {
		ans, an := key(a)
		bns, bn := key(b)
		if c := cmp.Compare(ans, bns); c != 0 {
			return c
		}
		return cmp.Compare(an, bn)
	})
}

// routeAttached reports whether one of the route's parentRefs names a selected Gateway.
// Group and kind default to the Gateway API's, the namespace to the route's.
func routeAttached(rt *gwapiv1.HTTPRoute, gatewayKeys map[string]struct{}) bool {
	for _, ref := range rt.Spec.ParentRefs {
		if !IsGatewayParentRef(ref) {
			continue
		}
		ns := rt.Namespace
		if ref.Namespace != nil && *ref.Namespace != "" {
			ns = string(*ref.Namespace)
		}
		if _, ok := gatewayKeys[Key(ns, string(ref.Name))]; ok {
			return true
		}
	}
	return false
}

// IsGatewayParentRef reports whether a parentRef names a Gateway (group and kind default to
// gateway.networking.k8s.io / Gateway).
func IsGatewayParentRef(ref gwapiv1.ParentReference) bool {
	if ref.Group != nil && string(*ref.Group) != gwapiv1.GroupName {
		return false
	}
	return ref.Kind == nil || string(*ref.Kind) == "Gateway"
}

// IsPoolBackendRef reports whether a route backendRef names an InferencePool.
func IsPoolBackendRef(ref gwapiv1.BackendObjectReference) bool {
	return ref.Group != nil && string(*ref.Group) == infv1.GroupVersion.Group &&
		ref.Kind != nil && string(*ref.Kind) == "InferencePool"
}

// IsServiceBackendRef reports whether a route backendRef names a core Service (the Gateway
// API default when group and kind are unset).
func IsServiceBackendRef(ref gwapiv1.BackendObjectReference) bool {
	if ref.Group != nil && *ref.Group != "" && string(*ref.Group) != "core" {
		return false
	}
	return ref.Kind == nil || string(*ref.Kind) == "Service"
}

// IsServicePickerRef reports whether a pool's endpointPickerRef names a core Service (kind
// defaults to Service, group to the core group).
func IsServicePickerRef(ref infv1.EndpointPickerRef) bool {
	if ref.Group != nil && *ref.Group != "" {
		return false
	}
	return ref.Kind == "" || ref.Kind == "Service"
}

// referencedServices returns the namespace/name keys of the Services named by the pools'
// endpoint pickers and by the routes' Service backendRefs.
func referencedServices(pools []*Pool, routes []*gwapiv1.HTTPRoute) map[string]struct{} {
	keys := make(map[string]struct{}, len(pools))
	for _, p := range pools {
		if IsServicePickerRef(p.Spec.EndpointPickerRef) && p.Spec.EndpointPickerRef.Name != "" {
			keys[Key(p.Namespace, string(p.Spec.EndpointPickerRef.Name))] = struct{}{}
		}
	}
	for _, rt := range routes {
		for _, rule := range rt.Spec.Rules {
			for _, br := range rule.BackendRefs {
				if !IsServiceBackendRef(br.BackendObjectReference) {
					continue
				}
				ns := rt.Namespace
				if br.Namespace != nil && *br.Namespace != "" {
					ns = string(*br.Namespace)
				}
				keys[Key(ns, string(br.Name))] = struct{}{}
			}
		}
	}
	return keys
}

// referencedSecrets returns the keys of the Secrets the Gateways' listeners name as TLS
// certificates (group core, kind Secret, the namespace defaulting to the Gateway's).
func referencedSecrets(gateways []*gwapiv1.Gateway) map[string]struct{} {
	keys := map[string]struct{}{}
	for _, gw := range gateways {
		for _, l := range gw.Spec.Listeners {
			if l.TLS == nil {
				continue
			}
			for _, ref := range l.TLS.CertificateRefs {
				if (ref.Group != nil && *ref.Group != "") || (ref.Kind != nil && *ref.Kind != "Secret") {
					continue
				}
				ns := gw.Namespace
				if ref.Namespace != nil && *ref.Namespace != "" {
					ns = string(*ref.Namespace)
				}
				keys[Key(ns, string(ref.Name))] = struct{}{}
			}
		}
	}
	return keys
}
