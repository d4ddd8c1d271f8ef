package discovery

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	infv1 "github.com/infergw/infergw/api/v1"
)

// DefaultControllerName is the Gateway API controller name infergw writes into
// HTTPRoute status.parents[].controllerName.
const DefaultControllerName = "infergw.dev/gateway-controller"

// The CRDs' limits on InferencePool and HTTPRoute status.parents.
const (
	maxPoolParents  = 32
	maxRouteParents = 32
)

// Route condition reasons of the Gateway API that infergw uses.
const (
	routeReasonAccepted         = string(gwapiv1.RouteReasonAccepted)
	routeReasonNoMatchingParent = string(gwapiv1.RouteReasonNoMatchingParent)
	routeReasonResolvedRefs     = string(gwapiv1.RouteReasonResolvedRefs)
	routeReasonBackendNotFound  = string(gwapiv1.RouteReasonBackendNotFound)
	routeReasonInvalidKind      = string(gwapiv1.RouteReasonInvalidKind)
)

// StatusWorld is everything status computation looks at, indexed once per round. Build it
// with NewStatusWorld from the same objects a snapshot is built from (all gateways, not only
// infergw's, so that entries other controllers own are recognised and kept).
type StatusWorld struct {
	controllerName string
	// ours holds the keys of Gateways of infergw's class; all those of every Gateway seen.
	ours, all map[string]*gwapiv1.Gateway
	pools     map[string]*infv1.InferencePool
	services  map[string]*corev1.Service
	// poolParents maps a pool key to the keys of infergw Gateways whose attached routes send
	// to that pool.
	poolParents map[string][]string
	// watched reports whether a namespace is read; an entry for a Gateway that does not exist
	// is only removed when its namespace is watched (otherwise it may well exist).
	watched func(namespace string) bool
}

// NewStatusWorld indexes objs for DesiredPoolStatus and DesiredRouteStatus. watched reports
// whether a namespace is read by the source (nil means every namespace is).
func NewStatusWorld(objs Objects, gatewayClass, controllerName string, watched func(string) bool) *StatusWorld {
	if watched == nil {
		watched = func(string) bool { return true }
	}
	w := &StatusWorld{
		controllerName: controllerName,
		ours:           make(map[string]*gwapiv1.Gateway),
		all:            make(map[string]*gwapiv1.Gateway, len(objs.Gateways)),
		pools:          make(map[string]*infv1.InferencePool, len(objs.Pools)),
		services:       make(map[string]*corev1.Service, len(objs.Services)),
		poolParents:    make(map[string][]string),
		watched:        watched,
	}
	for _, gw := range objs.Gateways {
		if gw == nil {
			continue
		}
		k := Key(gw.Namespace, gw.Name)
		w.all[k] = gw
		if string(gw.Spec.GatewayClassName) == gatewayClass {
			w.ours[k] = gw
		}
	}
	for _, p := range objs.Pools {
		if p != nil {
			w.pools[Key(p.Namespace, p.Name)] = p
		}
	}
	for _, s := range objs.Services {
		if s != nil {
			w.services[Key(s.Namespace, s.Name)] = s
		}
	}
	for _, rt := range objs.HTTPRoutes {
		if rt == nil {
			continue
		}
		parents := w.ourParentKeys(rt)
		if len(parents) == 0 {
			continue
		}
		for _, rule := range rt.Spec.Rules {
			for _, br := range rule.BackendRefs {
				if !IsPoolBackendRef(br.BackendObjectReference) {
					continue
				}
				pk := Key(backendNamespace(rt, br.BackendObjectReference), string(br.Name))
				for _, gk := range parents {
					if !slices.Contains(w.poolParents[pk], gk) {
						w.poolParents[pk] = append(w.poolParents[pk], gk)
					}
				}
			}
		}
	}
	for k := range w.poolParents {
		slices.Sort(w.poolParents[k])
	}
	return w
}

// ourParentKeys returns the keys of the infergw Gateways a route's parentRefs name.
func (w *StatusWorld) ourParentKeys(rt *gwapiv1.HTTPRoute) []string {
	var keys []string
	for _, ref := range rt.Spec.ParentRefs {
		if !IsGatewayParentRef(ref) {
			continue
		}
		k := Key(parentNamespace(rt, ref), string(ref.Name))
		if _, ok := w.ours[k]; ok && !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	return keys
}

func parentNamespace(rt *gwapiv1.HTTPRoute, ref gwapiv1.ParentReference) string {
	if ref.Namespace != nil && *ref.Namespace != "" {
		return string(*ref.Namespace)
	}
	return rt.Namespace
}

func backendNamespace(rt *gwapiv1.HTTPRoute, ref gwapiv1.BackendObjectReference) string {
	if ref.Namespace != nil && *ref.Namespace != "" {
		return string(*ref.Namespace)
	}
	return rt.Namespace
}

// DesiredPoolStatus returns the status pool should have and whether it differs from the
// pool's current status (ignoring condition transition times, so that an unchanged status is
// never rewritten). infergw owns the parent entries of its own Gateways and of Gateways that
// no longer exist in a watched namespace; entries of other Gateways are kept as they are.
// Conditions keep their lastTransitionTime while their status does not change; now stamps
// the others.
func DesiredPoolStatus(pool *infv1.InferencePool, w *StatusWorld, now metav1.Time) (infv1.InferencePoolStatus, bool) {
	pk := Key(pool.Namespace, pool.Name)
	var parents []infv1.ParentStatus
	for _, ps := range pool.Status.Parents {
		if !w.ownsPoolParent(pool, ps.ParentRef) {
			parents = append(parents, ps)
		}
	}
	resolved, reason, msg := w.pickerRefResolved(pool)
	for _, gk := range w.poolParents[pk] {
		gw := w.ours[gk]
		ref := infv1.ParentReference{
			Group:     new(infv1.Group(gwapiv1.GroupName)),
			Kind:      "Gateway",
			Name:      infv1.ObjectName(gw.Name),
			Namespace: infv1.Namespace(gw.Namespace),
		}
		var conds []metav1.Condition
		if old := findPoolParent(pool.Status.Parents, ref, pool.Namespace); old != nil {
			conds = slices.Clone(old.Conditions)
		}
		setCondition(&conds, infv1.PoolConditionAccepted, metav1.ConditionTrue, infv1.PoolReasonAccepted,
			"InferencePool is referenced by an HTTPRoute of this Gateway", pool.Generation, now)
		setCondition(&conds, infv1.PoolConditionResolvedRefs, resolved, reason, msg, pool.Generation, now)
		parents = append(parents, infv1.ParentStatus{ParentRef: ref, Conditions: conds})
	}
	if len(parents) > maxPoolParents {
		parents = parents[:maxPoolParents]
	}
	want := infv1.InferencePoolStatus{Parents: parents}
	return want, !poolStatusEqual(pool.Status, want, pool.Namespace)
}

// ownsPoolParent reports whether infergw manages a pool status entry: it names a Gateway of
// infergw's class, or a Gateway that no longer exists in a namespace this source reads.
func (w *StatusWorld) ownsPoolParent(pool *infv1.InferencePool, ref infv1.ParentReference) bool {
	if ref.Group != nil && string(*ref.Group) != gwapiv1.GroupName {
		return false
	}
	if ref.Kind != "" && ref.Kind != "Gateway" {
		return false
	}
	ns := string(ref.Namespace)
	if ns == "" {
		ns = pool.Namespace
	}
	k := Key(ns, string(ref.Name))
	if _, ok := w.ours[k]; ok {
		return true
	}
	_, exists := w.all[k]
	return !exists && w.watched(ns)
}

// pickerRefResolved checks the pool's endpointPickerRef: it must name a Service that exists
// in the pool's namespace and exposes the referenced port.
func (w *StatusWorld) pickerRefResolved(pool *infv1.InferencePool) (metav1.ConditionStatus, string, string) {
	ref := pool.Spec.EndpointPickerRef
	invalid := func(format string, args ...any) (metav1.ConditionStatus, string, string) {
		return metav1.ConditionFalse, infv1.PoolReasonInvalidExtRef, fmt.Sprintf(format, args...)
	}
	if !IsServicePickerRef(ref) {
		group := ""
		if ref.Group != nil {
			group = string(*ref.Group)
		}
		return invalid("endpointPickerRef must name a core Service, not group %q kind %q", group, ref.Kind)
	}
	if ref.Name == "" {
		return invalid("endpointPickerRef.name is empty")
	}
	svc, ok := w.services[Key(pool.Namespace, string(ref.Name))]
	if !ok {
		return invalid("endpointPickerRef Service %s/%s not found", pool.Namespace, ref.Name)
	}
	if ref.Port == nil {
		return invalid("endpointPickerRef.port is required when kind is Service")
	}
	for _, p := range svc.Spec.Ports {
		if p.Port == int32(ref.Port.Number) {
			return metav1.ConditionTrue, infv1.PoolReasonResolvedRefs, "endpointPickerRef resolved"
		}
	}
	return invalid("endpointPickerRef Service %s/%s has no port %d", pool.Namespace, ref.Name, ref.Port.Number)
}

func findPoolParent(parents []infv1.ParentStatus, ref infv1.ParentReference, poolNS string) *infv1.ParentStatus {
	for i := range parents {
		if samePoolParentRef(parents[i].ParentRef, ref, poolNS) {
			return &parents[i]
		}
	}
	return nil
}

// samePoolParentRef compares parent references with the CRD defaults applied (group
// gateway.networking.k8s.io, kind Gateway, namespace of the pool).
func samePoolParentRef(a, b infv1.ParentReference, poolNS string) bool {
	norm := func(r infv1.ParentReference) [4]string {
		g := gwapiv1.GroupName
		if r.Group != nil {
			g = string(*r.Group)
		}
		k := string(r.Kind)
		if k == "" {
			k = "Gateway"
		}
		ns := string(r.Namespace)
		if ns == "" {
			ns = poolNS
		}
		return [4]string{g, k, ns, string(r.Name)}
	}
	return norm(a) == norm(b)
}

func poolStatusEqual(a, b infv1.InferencePoolStatus, poolNS string) bool {
	return slices.EqualFunc(a.Parents, b.Parents, func(x, y infv1.ParentStatus) bool {
		return samePoolParentRef(x.ParentRef, y.ParentRef, poolNS) && conditionsEqual(x.Conditions, y.Conditions)
	})
}

// DesiredRouteStatus returns the status a route should have and whether it differs from its
// current status (ignoring transition times). infergw writes one entry, with its controller
// name, per parentRef that names an infergw Gateway, for routes that send to at least one
// InferencePool; it removes its own entries that no longer apply and keeps other
// controllers' entries.
func DesiredRouteStatus(rt *gwapiv1.HTTPRoute, w *StatusWorld, now metav1.Time) (gwapiv1.HTTPRouteStatus, bool) {
	// Never nil: the HTTPRoute CRD requires status.parents, and a nil slice would make the
	// merge patch delete it.
	parents := []gwapiv1.RouteParentStatus{}
	for _, ps := range rt.Status.Parents {
		if string(ps.ControllerName) != w.controllerName {
			parents = append(parents, ps)
		}
	}
	if routeHasPoolBackend(rt) {
		resolved, reason, msg := w.routeRefsResolved(rt)
		var seen []gwapiv1.ParentReference
		for _, ref := range rt.Spec.ParentRefs {
			if !IsGatewayParentRef(ref) {
				continue
			}
			gw, ok := w.ours[Key(parentNamespace(rt, ref), string(ref.Name))]
			if !ok || slices.ContainsFunc(seen, func(s gwapiv1.ParentReference) bool { return sameRouteParentRef(s, ref, rt.Namespace) }) {
				continue
			}
			seen = append(seen, ref)
			var conds []metav1.Condition
			if old := w.findRouteParent(rt.Status.Parents, ref, rt.Namespace); old != nil {
				conds = slices.Clone(old.Conditions)
			}
			accepted, aReason, aMsg := metav1.ConditionTrue, routeReasonAccepted, "Route is accepted"
			if !parentListenerExists(gw, ref) {
				accepted, aReason = metav1.ConditionFalse, routeReasonNoMatchingParent
				aMsg = fmt.Sprintf("Gateway %s/%s has no listener matching the parentRef's sectionName/port", gw.Namespace, gw.Name)
			}
			setCondition(&conds, string(gwapiv1.RouteConditionAccepted), accepted, aReason, aMsg, rt.Generation, now)
			setCondition(&conds, string(gwapiv1.RouteConditionResolvedRefs), resolved, reason, msg, rt.Generation, now)
			parents = append(parents, gwapiv1.RouteParentStatus{
				ParentRef:      ref,
				ControllerName: gwapiv1.GatewayController(w.controllerName),
				Conditions:     conds,
			})
		}
	}
	if len(parents) > maxRouteParents {
		parents = parents[:maxRouteParents]
	}
	want := gwapiv1.HTTPRouteStatus{RouteStatus: gwapiv1.RouteStatus{Parents: parents}}
	return want, !routeStatusEqual(rt.Status, want, rt.Namespace)
}

// routeRefsResolved checks every backendRef of the route: pools and Services must exist;
// other kinds are not supported.
func (w *StatusWorld) routeRefsResolved(rt *gwapiv1.HTTPRoute) (metav1.ConditionStatus, string, string) {
	var missing, badKind []string
	for _, rule := range rt.Spec.Rules {
		for _, br := range rule.BackendRefs {
			ref := br.BackendObjectReference
			k := Key(backendNamespace(rt, ref), string(ref.Name))
			switch {
			case IsPoolBackendRef(ref):
				if _, ok := w.pools[k]; !ok {
					missing = append(missing, "InferencePool "+k)
				}
			case IsServiceBackendRef(ref):
				if _, ok := w.services[k]; !ok {
					missing = append(missing, "Service "+k)
				}
			default:
				group, kind := "", "Service"
				if ref.Group != nil {
					group = string(*ref.Group)
				}
				if ref.Kind != nil {
					kind = string(*ref.Kind)
				}
				badKind = append(badKind, fmt.Sprintf("%s.%s %s", kind, group, k))
			}
		}
	}
	switch {
	case len(badKind) > 0:
		return metav1.ConditionFalse, routeReasonInvalidKind, "unsupported backendRef kind: " + strings.Join(dedupe(badKind), ", ")
	case len(missing) > 0:
		return metav1.ConditionFalse, routeReasonBackendNotFound, "backend not found: " + strings.Join(dedupe(missing), ", ")
	}
	return metav1.ConditionTrue, routeReasonResolvedRefs, "all backendRefs resolved"
}

func dedupe(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

func routeHasPoolBackend(rt *gwapiv1.HTTPRoute) bool {
	for _, rule := range rt.Spec.Rules {
		for _, br := range rule.BackendRefs {
			if IsPoolBackendRef(br.BackendObjectReference) {
				return true
			}
		}
	}
	return false
}

// parentListenerExists checks a parentRef's sectionName and port against the Gateway's
// listeners; a parentRef without them attaches to the Gateway as a whole.
func parentListenerExists(gw *gwapiv1.Gateway, ref gwapiv1.ParentReference) bool {
	if ref.SectionName == nil && ref.Port == nil {
		return true
	}
	return slices.ContainsFunc(gw.Spec.Listeners, func(l gwapiv1.Listener) bool {
		return (ref.SectionName == nil || l.Name == *ref.SectionName) && (ref.Port == nil || l.Port == *ref.Port)
	})
}

func (w *StatusWorld) findRouteParent(parents []gwapiv1.RouteParentStatus, ref gwapiv1.ParentReference, routeNS string) *gwapiv1.RouteParentStatus {
	for i := range parents {
		if string(parents[i].ControllerName) == w.controllerName && sameRouteParentRef(parents[i].ParentRef, ref, routeNS) {
			return &parents[i]
		}
	}
	return nil
}

// sameRouteParentRef compares parentRefs with the API defaults applied.
func sameRouteParentRef(a, b gwapiv1.ParentReference, routeNS string) bool {
	type normRef struct {
		group, kind, namespace, name, section string
		port                                  int32
	}
	norm := func(r gwapiv1.ParentReference) normRef {
		n := normRef{group: gwapiv1.GroupName, kind: "Gateway", namespace: routeNS, name: string(r.Name), port: -1}
		if r.Group != nil {
			n.group = string(*r.Group)
		}
		if r.Kind != nil {
			n.kind = string(*r.Kind)
		}
		if r.Namespace != nil && *r.Namespace != "" {
			n.namespace = string(*r.Namespace)
		}
		if r.SectionName != nil {
			n.section = string(*r.SectionName)
		}
		if r.Port != nil {
			n.port = *r.Port
		}
		return n
	}
	return norm(a) == norm(b)
}

func routeStatusEqual(a, b gwapiv1.HTTPRouteStatus, routeNS string) bool {
	return slices.EqualFunc(a.Parents, b.Parents, func(x, y gwapiv1.RouteParentStatus) bool {
		return x.ControllerName == y.ControllerName && sameRouteParentRef(x.ParentRef, y.ParentRef, routeNS) &&
			conditionsEqual(x.Conditions, y.Conditions)
	})
}

// setCondition sets a condition, keeping its lastTransitionTime when the status does not
// change (apimeta.SetStatusCondition semantics).
func setCondition(conds *[]metav1.Condition, typ string, status metav1.ConditionStatus, reason, msg string, gen int64, now metav1.Time) {
	apimeta.SetStatusCondition(conds, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg,
		ObservedGeneration: gen, LastTransitionTime: now,
	})
}

// conditionsEqual compares condition sets by type, ignoring order and lastTransitionTime.
// Sets are small (the CRDs allow 8), so a quadratic scan beats sorting copies.
func conditionsEqual(a, b []metav1.Condition) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		y := apimeta.FindStatusCondition(b, x.Type)
		if y == nil || x.Status != y.Status || x.Reason != y.Reason || x.Message != y.Message ||
			x.ObservedGeneration != y.ObservedGeneration {
			return false
		}
	}
	return true
}
