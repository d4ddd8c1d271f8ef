package model

import (
	"slices"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	infv1 "github.com/infergw/infergw/api/v1"
	"github.com/infergw/infergw/discovery"
)

// The CRDs' limits on status lists.
const (
	maxPoolParents  = 32
	maxRouteParents = 32
)

// StatusScope tells the status functions about objects outside the model: which Gateways
// exist at all (of any class) and which namespaces the source reads. An InferencePool
// status entry for a Gateway that no longer exists is only removed when its namespace is
// read (otherwise it may well exist).
type StatusScope struct {
	// GatewayExists reports whether a Gateway of any class exists; nil means none outside
	// the model does.
	GatewayExists func(key string) bool
	// Watched reports whether a namespace is read; nil means every namespace is.
	Watched func(namespace string) bool
}

func (s StatusScope) exists(key string) bool { return s.GatewayExists != nil && s.GatewayExists(key) }
func (s StatusScope) watched(ns string) bool { return s.Watched == nil || s.Watched(ns) }

// mergeConditions returns old updated with want: a condition keeps its lastTransitionTime
// while its status does not change (apimeta.SetStatusCondition); now stamps the others.
// Conditions of types infergw does not set are kept.
func mergeConditions(old, want []metav1.Condition, now metav1.Time) []metav1.Condition {
	conds := slices.Clone(old)
	for _, c := range want {
		c.LastTransitionTime = now
		apimeta.SetStatusCondition(&conds, c)
	}
	return conds
}

// conditionsEqual compares condition sets by type, ignoring order and lastTransitionTime.
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

// DesiredClassStatus returns the status of a GatewayClass infergw owns and whether it
// differs from the current one; ok is false for a class infergw does not own.
func (m *Model) DesiredClassStatus(gc *gwapiv1.GatewayClass, now metav1.Time) (st gwapiv1.GatewayClassStatus, changed, ok bool) {
	for _, c := range m.GatewayClasses {
		if c.Name != gc.Name || !c.Ours {
			continue
		}
		st = *gc.Status.DeepCopy()
		st.Conditions = mergeConditions(gc.Status.Conditions, c.Conditions, now)
		return st, !conditionsEqual(gc.Status.Conditions, st.Conditions), true
	}
	return st, false, false
}

// DesiredGatewayStatus returns the status of a Gateway of infergw's class (conditions,
// addresses, one entry per listener) and whether it differs from the current one; ok is
// false for a Gateway the model does not hold.
func (m *Model) DesiredGatewayStatus(gw *gwapiv1.Gateway, now metav1.Time) (st gwapiv1.GatewayStatus, changed, ok bool) {
	g := m.gateways[discovery.Key(gw.Namespace, gw.Name)]
	if g == nil {
		return st, false, false
	}
	st.Addresses = slices.Clone(g.Addresses)
	st.Conditions = mergeConditions(gw.Status.Conditions, g.Conditions, now)
	st.Listeners = []gwapiv1.ListenerStatus{}
	for _, l := range g.Listeners {
		var old []metav1.Condition
		for _, ls := range gw.Status.Listeners {
			if ls.Name == l.Name {
				old = ls.Conditions
			}
		}
		st.Listeners = append(st.Listeners, gwapiv1.ListenerStatus{
			Name:           l.Name,
			SupportedKinds: slices.Clone(l.SupportedKinds),
			AttachedRoutes: l.AttachedRoutes(),
			Conditions:     mergeConditions(old, l.Conditions, now),
		})
	}
	return st, !gatewayStatusEqual(gw.Status, st), true
}

func gatewayStatusEqual(a, b gwapiv1.GatewayStatus) bool {
	sameAddress := func(x, y gwapiv1.GatewayStatusAddress) bool {
		return x.Value == y.Value && addressType(x) == addressType(y)
	}
	if !slices.EqualFunc(a.Addresses, b.Addresses, sameAddress) || !conditionsEqual(a.Conditions, b.Conditions) {
		return false
	}
	return slices.EqualFunc(a.Listeners, b.Listeners, func(x, y gwapiv1.ListenerStatus) bool {
		return x.Name == y.Name && x.AttachedRoutes == y.AttachedRoutes && conditionsEqual(x.Conditions, y.Conditions) &&
			slices.EqualFunc(x.SupportedKinds, y.SupportedKinds, func(p, q gwapiv1.RouteGroupKind) bool {
				return p.Kind == q.Kind && ((p.Group == nil) == (q.Group == nil)) && (p.Group == nil || *p.Group == *q.Group)
			})
	})
}

// addressType is an address's type with the API default (IPAddress) applied.
func addressType(a gwapiv1.GatewayStatusAddress) gwapiv1.AddressType {
	if a.Type == nil {
		return gwapiv1.IPAddressType
	}
	return *a.Type
}

// DesiredRouteStatus returns the status a route should have and whether it differs from its
// current status (ignoring transition times). infergw writes one entry, with its controller
// name, per parentRef that names one of its Gateways: Accepted (with the attachment reason)
// and ResolvedRefs. It removes its own entries that no longer apply and keeps other
// controllers' entries.
func (m *Model) DesiredRouteStatus(rt *gwapiv1.HTTPRoute, now metav1.Time) (gwapiv1.HTTPRouteStatus, bool) {
	ctrl := gwapiv1.GatewayController(m.Options.ControllerName)
	// Never nil: the HTTPRoute CRD requires status.parents, and a nil slice would make the
	// merge patch delete it.
	parents := []gwapiv1.RouteParentStatus{}
	for _, ps := range rt.Status.Parents {
		if ps.ControllerName != ctrl {
			parents = append(parents, ps)
		}
	}
	if r := m.routes[discovery.Key(rt.Namespace, rt.Name)]; r != nil {
		for _, p := range r.Parents {
			var old []metav1.Condition
			for _, ps := range rt.Status.Parents {
				if ps.ControllerName == ctrl && SameParentRef(ps.ParentRef, p.Ref, rt.Namespace) {
					old = ps.Conditions
				}
			}
			var want []metav1.Condition
			setCond(&want, string(gwapiv1.RouteConditionAccepted), rt.Generation, p.Accepted)
			setCond(&want, string(gwapiv1.RouteConditionResolvedRefs), rt.Generation, r.ResolvedRefs)
			parents = append(parents, gwapiv1.RouteParentStatus{
				ParentRef:      p.Ref,
				ControllerName: ctrl,
				Conditions:     mergeConditions(old, want, now),
			})
		}
	}
	if len(parents) > maxRouteParents {
		parents = parents[:maxRouteParents]
	}
	want := gwapiv1.HTTPRouteStatus{RouteStatus: gwapiv1.RouteStatus{Parents: parents}}
	return want, !routeStatusEqual(rt.Status, want, rt.Namespace)
}

func routeStatusEqual(a, b gwapiv1.HTTPRouteStatus, routeNS string) bool {
	return slices.EqualFunc(a.Parents, b.Parents, func(x, y gwapiv1.RouteParentStatus) bool {
		return x.ControllerName == y.ControllerName && SameParentRef(x.ParentRef, y.ParentRef, routeNS) &&
			conditionsEqual(x.Conditions, y.Conditions)
	})
}

// DesiredPoolStatus returns the status pool should have and whether it differs from the
// pool's current status (ignoring condition transition times). infergw writes one entry per
// of its Gateways with an accepted route sending to the pool, and owns the entries of its
// own Gateways and of Gateways that no longer exist in a watched namespace; entries of
// other Gateways are kept as they are.
func (m *Model) DesiredPoolStatus(pool *infv1.InferencePool, scope StatusScope, now metav1.Time) (infv1.InferencePoolStatus, bool) {
	var parents []infv1.ParentStatus
	for _, ps := range pool.Status.Parents {
		if !m.ownsPoolParent(pool, ps.ParentRef, scope) {
			parents = append(parents, ps)
		}
	}
	if p := m.pools[discovery.Key(pool.Namespace, pool.Name)]; p != nil {
		for _, gk := range p.Parents {
			g := m.gateways[gk]
			ref := infv1.ParentReference{
				Group:     ptr(infv1.Group(gwapiv1.GroupName)),
				Kind:      "Gateway",
				Name:      infv1.ObjectName(g.Name),
				Namespace: infv1.Namespace(g.Namespace),
			}
			var old []metav1.Condition
			for _, ps := range pool.Status.Parents {
				if samePoolParentRef(ps.ParentRef, ref, pool.Namespace) {
					old = ps.Conditions
				}
			}
			var want []metav1.Condition
			setCond(&want, infv1.PoolConditionAccepted, pool.Generation, Condition{metav1.ConditionTrue, infv1.PoolReasonAccepted,
				"InferencePool is referenced by an HTTPRoute of this Gateway"})
			setCond(&want, infv1.PoolConditionResolvedRefs, pool.Generation, p.ResolvedRefs)
			parents = append(parents, infv1.ParentStatus{ParentRef: ref, Conditions: mergeConditions(old, want, now)})
		}
	}
	if len(parents) > maxPoolParents {
		parents = parents[:maxPoolParents]
	}
	want := infv1.InferencePoolStatus{Parents: parents}
	return want, !poolStatusEqual(pool.Status, want, pool.Namespace)
}

// ownsPoolParent reports whether infergw manages a pool status entry: it names one of
// infergw's Gateways, or a Gateway that no longer exists in a namespace the source reads.
func (m *Model) ownsPoolParent(pool *infv1.InferencePool, ref infv1.ParentReference, scope StatusScope) bool {
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
	k := discovery.Key(ns, string(ref.Name))
	if m.gateways[k] != nil {
		return true
	}
	return !scope.exists(k) && scope.watched(ns)
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
