package model

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	infv1 "github.com/infergw/infergw/api/v1"
	"github.com/infergw/infergw/discovery"
	dt "github.com/infergw/infergw/discovery/discoverytest"
)

var (
	statusNow     = metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	statusEarlier = metav1.NewTime(time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC))
)

func gwParent(ns, name string) infv1.ParentReference {
	return infv1.ParentReference{Group: new(infv1.Group("gateway.networking.k8s.io")), Kind: "Gateway", Name: infv1.ObjectName(name), Namespace: infv1.Namespace(ns)}
}

func cond(typ string, status metav1.ConditionStatus, reason, msg string, gen int64, t metav1.Time) metav1.Condition {
	return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen, LastTransitionTime: t}
}

func poolAccepted(gen int64, t metav1.Time) metav1.Condition {
	return cond("Accepted", metav1.ConditionTrue, "Accepted", "InferencePool is referenced by an HTTPRoute of this Gateway", gen, t)
}

func poolResolved(gen int64, t metav1.Time) metav1.Condition {
	return cond("ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs", "endpointPickerRef resolved", gen, t)
}

func poolUnresolved(msg string, gen int64, t metav1.Time) metav1.Condition {
	return cond("ResolvedRefs", metav1.ConditionFalse, "InvalidExtensionRef", msg, gen, t)
}

// allNamespacesGateway is a Gateway of class whose listener takes routes from every
// namespace (the routes of these tests live in "ns", the Gateways in "gw").
func allNamespacesGateway(ns, name, class string) *gwapiv1.Gateway {
	gw := dt.Gateway(ns, name, class)
	gw.Spec.Listeners[0].AllowedRoutes = &gwapiv1.AllowedRoutes{Namespaces: &gwapiv1.RouteNamespaces{From: new(gwapiv1.NamespacesFromAll)}}
	return gw
}

// statusModel resolves objs as the Kubernetes source does before writing status.
func statusModel(objs discovery.Objects, watched func(string) bool) (*Model, StatusScope) {
	m := Resolve(discovery.Build(1, objs, "infergw"), Options{})
	all := map[string]bool{}
	for _, gw := range objs.Gateways {
		all[discovery.Key(gw.Namespace, gw.Name)] = true
	}
	return m, StatusScope{GatewayExists: func(k string) bool { return all[k] }, Watched: watched}
}

func TestDesiredPoolStatus(t *testing.T) {
	sel := map[string]string{"app": "m"}
	ourGW := allNamespacesGateway("gw", "main", "infergw")
	ourGW2 := allNamespacesGateway("gw", "second", "infergw")
	otherGW := dt.Gateway("gw", "theirs", "other-class")
	route := dt.Route("ns", "r", "gw", "main", "pool")

	tests := []struct {
		name        string
		pool        *infv1.InferencePool
		objs        discovery.Objects
		watched     func(string) bool
		want        []infv1.ParentStatus
		wantChanged bool
	}{
		{
			name: "referenced pool with a resolvable picker is accepted and resolved",
			pool: dt.WithGeneration(dt.Pool("ns", "pool", sel, 8000), 3),
			objs: discovery.Objects{Gateways: []*gwapiv1.Gateway{ourGW}, HTTPRoutes: []*gwapiv1.HTTPRoute{route}, Services: []*corev1.Service{dt.Service("ns", "pool-epp")}},
			want: []infv1.ParentStatus{{ParentRef: gwParent("gw", "main"), Conditions: []metav1.Condition{
				poolAccepted(3, statusNow), poolResolved(3, statusNow)}}},
			wantChanged: true,
		},
		{
			name: "missing picker Service gives InvalidExtensionRef",
			pool: dt.Pool("ns", "pool", sel, 8000),
			objs: discovery.Objects{Gateways: []*gwapiv1.Gateway{ourGW}, HTTPRoutes: []*gwapiv1.HTTPRoute{route}},
			want: []infv1.ParentStatus{{ParentRef: gwParent("gw", "main"), Conditions: []metav1.Condition{
				poolAccepted(0, statusNow), poolUnresolved("endpoint picker Service ns/pool-epp not found", 0, statusNow)}}},
			wantChanged: true,
		},
		{
			name: "picker Service without the referenced port gives InvalidExtensionRef",
			pool: func() *infv1.InferencePool {
				p := dt.Pool("ns", "pool", sel, 8000)
				p.Spec.EndpointPickerRef.Port = &infv1.Port{Number: 9100}
				return p
			}(),
			objs: discovery.Objects{Gateways: []*gwapiv1.Gateway{ourGW}, HTTPRoutes: []*gwapiv1.HTTPRoute{route}, Services: []*corev1.Service{dt.Service("ns", "pool-epp")}},
			want: []infv1.ParentStatus{{ParentRef: gwParent("gw", "main"), Conditions: []metav1.Condition{
				poolAccepted(0, statusNow), poolUnresolved("endpointPickerRef Service ns/pool-epp has no port 9100", 0, statusNow)}}},
			wantChanged: true,
		},
		{
			name: "picker ref without a port gives InvalidExtensionRef",
			pool: func() *infv1.InferencePool {
				p := dt.Pool("ns", "pool", sel, 8000)
				p.Spec.EndpointPickerRef.Port = nil
				return p
			}(),
			objs: discovery.Objects{Gateways: []*gwapiv1.Gateway{ourGW}, HTTPRoutes: []*gwapiv1.HTTPRoute{route}, Services: []*corev1.Service{dt.Service("ns", "pool-epp")}},
			want: []infv1.ParentStatus{{ParentRef: gwParent("gw", "main"), Conditions: []metav1.Condition{
				poolAccepted(0, statusNow), poolUnresolved("endpointPickerRef pool-epp has no port", 0, statusNow)}}},
			wantChanged: true,
		},
		{
			name: "picker ref of another kind gives InvalidExtensionRef",
			pool: func() *infv1.InferencePool {
				p := dt.Pool("ns", "pool", sel, 8000)
				p.Spec.EndpointPickerRef.Group = new(infv1.Group("example.com"))
				p.Spec.EndpointPickerRef.Kind = "Picker"
				return p
			}(),
			objs: discovery.Objects{Gateways: []*gwapiv1.Gateway{ourGW}, HTTPRoutes: []*gwapiv1.HTTPRoute{route}, Services: []*corev1.Service{dt.Service("ns", "pool-epp")}},
			want: []infv1.ParentStatus{{ParentRef: gwParent("gw", "main"), Conditions: []metav1.Condition{
				poolAccepted(0, statusNow), poolUnresolved(`endpointPickerRef must name a core Service, not group "example.com" kind "Picker"`, 0, statusNow)}}},
			wantChanged: true,
		},
		{
			name: "unreferenced pool with empty status is left alone",
			pool: dt.Pool("ns", "pool", sel, 8000),
			objs: discovery.Objects{Gateways: []*gwapiv1.Gateway{ourGW}, Services: []*corev1.Service{dt.Service("ns", "pool-epp")}},
		},
		{
			name: "pool referenced through another class's Gateway keeps that controller's entry",
			pool: func() *infv1.InferencePool {
				p := dt.Pool("ns", "pool", sel, 8000)
				p.Status.Parents = []infv1.ParentStatus{{ParentRef: gwParent("gw", "theirs"), Conditions: []metav1.Condition{poolAccepted(1, statusEarlier)}}}
				return p
			}(),
			objs: discovery.Objects{Gateways: []*gwapiv1.Gateway{ourGW, otherGW}, HTTPRoutes: []*gwapiv1.HTTPRoute{dt.Route("ns", "r", "gw", "theirs", "pool")}},
			want: []infv1.ParentStatus{{ParentRef: gwParent("gw", "theirs"), Conditions: []metav1.Condition{poolAccepted(1, statusEarlier)}}},
		},
		{
			name: "stale entry of an infergw Gateway no longer routing to the pool is removed",
			pool: func() *infv1.InferencePool {
				p := dt.Pool("ns", "pool", sel, 8000)
				p.Status.Parents = []infv1.ParentStatus{{ParentRef: gwParent("gw", "main"), Conditions: []metav1.Condition{poolAccepted(0, statusEarlier)}}}
				return p
			}(),
			objs:        discovery.Objects{Gateways: []*gwapiv1.Gateway{ourGW}, HTTPRoutes: []*gwapiv1.HTTPRoute{dt.Route("ns", "r", "gw", "main", "other-pool")}},
			want:        nil,
			wantChanged: true,
		},
		{
			name: "entry of a deleted Gateway in a watched namespace is removed",
			pool: func() *infv1.InferencePool {
				p := dt.Pool("ns", "pool", sel, 8000)
				p.Status.Parents = []infv1.ParentStatus{{ParentRef: gwParent("gw", "gone"), Conditions: []metav1.Condition{poolAccepted(0, statusEarlier)}}}
				return p
			}(),
			objs:        discovery.Objects{Gateways: []*gwapiv1.Gateway{ourGW}},
			wantChanged: true,
		},
		{
			name: "entry of an unknown Gateway in an unwatched namespace is kept",
			pool: func() *infv1.InferencePool {
				p := dt.Pool("ns", "pool", sel, 8000)
				p.Status.Parents = []infv1.ParentStatus{{ParentRef: gwParent("elsewhere", "gw"), Conditions: []metav1.Condition{poolAccepted(0, statusEarlier)}}}
				return p
			}(),
			objs:    discovery.Objects{Gateways: []*gwapiv1.Gateway{ourGW}},
			watched: func(ns string) bool { return ns == "ns" || ns == "gw" },
			want:    []infv1.ParentStatus{{ParentRef: gwParent("elsewhere", "gw"), Conditions: []metav1.Condition{poolAccepted(0, statusEarlier)}}},
		},
		{
			name: "unchanged status is not rewritten and keeps its transition times",
			pool: func() *infv1.InferencePool {
				p := dt.WithGeneration(dt.Pool("ns", "pool", sel, 8000), 2)
				// Written without defaults (group, kind, namespace) as a user might; they
				// still match.
				p.Status.Parents = []infv1.ParentStatus{{ParentRef: infv1.ParentReference{Name: "main", Namespace: "gw"}, Conditions: []metav1.Condition{
					poolResolved(2, statusEarlier), poolAccepted(2, statusEarlier)}}}
				return p
			}(),
			objs: discovery.Objects{Gateways: []*gwapiv1.Gateway{ourGW}, HTTPRoutes: []*gwapiv1.HTTPRoute{route}, Services: []*corev1.Service{dt.Service("ns", "pool-epp")}},
			want: []infv1.ParentStatus{{ParentRef: gwParent("gw", "main"), Conditions: []metav1.Condition{
				poolResolved(2, statusEarlier), poolAccepted(2, statusEarlier)}}},
		},
		{
			name: "a condition that flips gets a new transition time, the other keeps its own",
			pool: func() *infv1.InferencePool {
				p := dt.Pool("ns", "pool", sel, 8000)
				p.Status.Parents = []infv1.ParentStatus{{ParentRef: gwParent("gw", "main"), Conditions: []metav1.Condition{
					poolAccepted(0, statusEarlier), poolUnresolved("endpoint picker Service ns/pool-epp not found", 0, statusEarlier)}}}
				return p
			}(),
			objs: discovery.Objects{Gateways: []*gwapiv1.Gateway{ourGW}, HTTPRoutes: []*gwapiv1.HTTPRoute{route}, Services: []*corev1.Service{dt.Service("ns", "pool-epp")}},
			want: []infv1.ParentStatus{{ParentRef: gwParent("gw", "main"), Conditions: []metav1.Condition{
				poolAccepted(0, statusEarlier), poolResolved(0, statusNow)}}},
			wantChanged: true,
		},
		{
			name: "a new generation updates observedGeneration",
			pool: func() *infv1.InferencePool {
				p := dt.WithGeneration(dt.Pool("ns", "pool", sel, 8000), 5)
				p.Status.Parents = []infv1.ParentStatus{{ParentRef: gwParent("gw", "main"), Conditions: []metav1.Condition{
					poolAccepted(4, statusEarlier), poolResolved(4, statusEarlier)}}}
				return p
			}(),
			objs: discovery.Objects{Gateways: []*gwapiv1.Gateway{ourGW}, HTTPRoutes: []*gwapiv1.HTTPRoute{route}, Services: []*corev1.Service{dt.Service("ns", "pool-epp")}},
			want: []infv1.ParentStatus{{ParentRef: gwParent("gw", "main"), Conditions: []metav1.Condition{
				poolAccepted(5, statusEarlier), poolResolved(5, statusEarlier)}}},
			wantChanged: true,
		},
		{
			name: "one entry per infergw Gateway, however many routes lead there",
			pool: dt.Pool("ns", "pool", sel, 8000),
			objs: discovery.Objects{
				Gateways: []*gwapiv1.Gateway{ourGW2, ourGW, otherGW},
				HTTPRoutes: []*gwapiv1.HTTPRoute{
					dt.Route("ns", "r1", "gw", "second", "pool"), dt.Route("ns", "r2", "gw", "main", "pool"),
					dt.Route("ns", "r3", "gw", "main", "pool", "svc:x"), dt.Route("ns", "r4", "gw", "theirs", "pool"),
				},
				Services: []*corev1.Service{dt.Service("ns", "pool-epp")},
			},
			want: []infv1.ParentStatus{
				{ParentRef: gwParent("gw", "main"), Conditions: []metav1.Condition{poolAccepted(0, statusNow), poolResolved(0, statusNow)}},
				{ParentRef: gwParent("gw", "second"), Conditions: []metav1.Condition{poolAccepted(0, statusNow), poolResolved(0, statusNow)}},
			},
			wantChanged: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs := tc.objs
			objs.Pools = append(objs.Pools, tc.pool)
			before := tc.pool.DeepCopy()
			m, scope := statusModel(objs, tc.watched)
			got, changed := m.DesiredPoolStatus(tc.pool, scope, statusNow)
			if diff := cmp.Diff(tc.want, got.Parents, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("parents (-want +got):\n%s", diff)
			}
			if changed != tc.wantChanged {
				t.Errorf("changed = %v, want %v", changed, tc.wantChanged)
			}
			if diff := cmp.Diff(before, tc.pool); diff != "" {
				t.Errorf("DesiredPoolStatus modified its input (-before +after):\n%s", diff)
			}
			// Applying the result must be a fixed point: no further write.
			applied := tc.pool.DeepCopy()
			applied.Status = got
			if _, again := m.DesiredPoolStatus(applied, scope, metav1.NewTime(statusNow.Add(time.Hour))); again {
				t.Error("status is not stable: applying it asks for another write")
			}
		})
	}
}

func TestDesiredPoolStatusCapsParents(t *testing.T) {
	pool := dt.Pool("ns", "pool", map[string]string{"app": "m"}, 8000)
	objs := discovery.Objects{Pools: []*infv1.InferencePool{pool}, Services: []*corev1.Service{dt.Service("ns", "pool-epp")}}
	for i := range 40 {
		name := fmt.Sprintf("gw-%02d", i)
		objs.Gateways = append(objs.Gateways, allNamespacesGateway("gw", name, "infergw"))
		objs.HTTPRoutes = append(objs.HTTPRoutes, dt.Route("ns", "r-"+name, "gw", name, "pool"))
	}
	m, scope := statusModel(objs, nil)
	got, changed := m.DesiredPoolStatus(pool, scope, statusNow)
	if !changed || len(got.Parents) != 32 {
		t.Fatalf("got %d parents (changed=%v), want the CRD maximum of 32", len(got.Parents), changed)
	}
	if got.Parents[0].ParentRef.Name != "gw-00" || got.Parents[31].ParentRef.Name != "gw-31" {
		t.Errorf("parents not the first 32 by Gateway key: first %s, last %s", got.Parents[0].ParentRef.Name, got.Parents[31].ParentRef.Name)
	}
}

func routeEntry(gwNS, gwName string, conds ...metav1.Condition) gwapiv1.RouteParentStatus {
	ref := gwapiv1.ParentReference{Name: gwapiv1.ObjectName(gwName)}
	if gwNS != "" {
		ref.Namespace = new(gwapiv1.Namespace(gwNS))
	}
	return gwapiv1.RouteParentStatus{ParentRef: ref, ControllerName: DefaultControllerName, Conditions: conds}
}

func routeAccepted(gen int64, t metav1.Time) metav1.Condition {
	return cond("Accepted", metav1.ConditionTrue, "Accepted", "Route is accepted", gen, t)
}

func routeResolved(gen int64, t metav1.Time) metav1.Condition {
	return cond("ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs", "all backendRefs resolved", gen, t)
}

func TestDesiredRouteStatus(t *testing.T) {
	sel := map[string]string{"app": "m"}
	ourGW := allNamespacesGateway("gw", "main", "infergw")
	otherGW := dt.Gateway("gw", "theirs", "other-class")
	pool := dt.Pool("ns", "pool", sel, 8000)
	theirEntry := gwapiv1.RouteParentStatus{
		ParentRef:      gwapiv1.ParentReference{Name: "theirs", Namespace: new(gwapiv1.Namespace("gw"))},
		ControllerName: "example.com/other",
		Conditions:     []metav1.Condition{routeAccepted(1, statusEarlier)},
	}

	tests := []struct {
		name        string
		route       *gwapiv1.HTTPRoute
		objs        discovery.Objects
		want        []gwapiv1.RouteParentStatus
		wantChanged bool
	}{
		{
			name:  "route to an existing pool is accepted and resolved",
			route: dt.WithGeneration(dt.Route("ns", "r", "gw", "main", "pool"), 7),
			objs:  discovery.Objects{Gateways: []*gwapiv1.Gateway{ourGW}, Pools: []*infv1.InferencePool{pool}},
			want:  []gwapiv1.RouteParentStatus{routeEntry("gw", "main", routeAccepted(7, statusNow), routeResolved(7, statusNow))},

			wantChanged: true,
		},
		{
			name:  "route to a missing pool has ResolvedRefs False BackendNotFound",
			route: dt.Route("ns", "r", "gw", "main", "pool", "nope"),
			objs:  discovery.Objects{Gateways: []*gwapiv1.Gateway{ourGW}, Pools: []*infv1.InferencePool{pool}},
			want: []gwapiv1.RouteParentStatus{routeEntry("gw", "main", routeAccepted(0, statusNow),
				cond("ResolvedRefs", metav1.ConditionFalse, "BackendNotFound", "InferencePool ns/nope not found", 0, statusNow))},
			wantChanged: true,
		},
		{
			name:  "a missing Service backend next to a pool is reported too",
			route: dt.Route("ns", "r", "gw", "main", "pool", "svc:web"),
			objs:  discovery.Objects{Gateways: []*gwapiv1.Gateway{ourGW}, Pools: []*infv1.InferencePool{pool}},
			want: []gwapiv1.RouteParentStatus{routeEntry("gw", "main", routeAccepted(0, statusNow),
				cond("ResolvedRefs", metav1.ConditionFalse, "BackendNotFound", "backend Service ns/web not found", 0, statusNow))},
			wantChanged: true,
		},
		{
			name: "unsupported backend kind has ResolvedRefs False InvalidKind",
			route: func() *gwapiv1.HTTPRoute {
				r := dt.Route("ns", "r", "gw", "main", "pool")
				r.Spec.Rules[0].BackendRefs = append(r.Spec.Rules[0].BackendRefs, gwapiv1.HTTPBackendRef{BackendRef: gwapiv1.BackendRef{
					BackendObjectReference: gwapiv1.BackendObjectReference{Group: new(gwapiv1.Group("example.com")), Kind: new(gwapiv1.Kind("Bucket")), Name: "b"}}})
				return r
			}(),
			objs: discovery.Objects{Gateways: []*gwapiv1.Gateway{ourGW}, Pools: []*infv1.InferencePool{pool}},
			want: []gwapiv1.RouteParentStatus{routeEntry("gw", "main", routeAccepted(0, statusNow),
				cond("ResolvedRefs", metav1.ConditionFalse, "InvalidKind", "backendRef kind example.com/Bucket is not supported", 0, statusNow))},
			wantChanged: true,
		},
		{
			name: "parentRef naming a listener the Gateway lacks is not accepted",
			route: func() *gwapiv1.HTTPRoute {
				r := dt.Route("ns", "r", "gw", "main", "pool")
				r.Spec.ParentRefs[0].SectionName = new(gwapiv1.SectionName("https"))
				return r
			}(),
			objs: discovery.Objects{Gateways: []*gwapiv1.Gateway{ourGW}, Pools: []*infv1.InferencePool{pool}},
			want: []gwapiv1.RouteParentStatus{{
				ParentRef:      gwapiv1.ParentReference{Name: "main", Namespace: new(gwapiv1.Namespace("gw")), SectionName: new(gwapiv1.SectionName("https"))},
				ControllerName: DefaultControllerName,
				Conditions: []metav1.Condition{
					cond("Accepted", metav1.ConditionFalse, "NoMatchingParent", "Gateway gw/main has no listener matching the parentRef's sectionName/port", 0, statusNow),
					routeResolved(0, statusNow),
				},
			}},
			wantChanged: true,
		},
		{
			name:  "route to a Service alone gets an entry too",
			route: dt.Route("ns", "r", "gw", "main", "svc:web"),
			objs:  discovery.Objects{Gateways: []*gwapiv1.Gateway{ourGW}, Services: []*corev1.Service{dt.Service("ns", "web")}},
			want:  []gwapiv1.RouteParentStatus{routeEntry("gw", "main", routeAccepted(0, statusNow), routeResolved(0, statusNow))},

			wantChanged: true,
		},
		{
			name: "infergw entry is removed when the route stops naming infergw's Gateway; others' entries stay",
			route: func() *gwapiv1.HTTPRoute {
				r := dt.Route("ns", "r", "gw", "theirs", "pool")
				r.Status.Parents = []gwapiv1.RouteParentStatus{theirEntry, routeEntry("gw", "main", routeAccepted(0, statusEarlier))}
				return r
			}(),
			objs:        discovery.Objects{Gateways: []*gwapiv1.Gateway{ourGW, otherGW}},
			want:        []gwapiv1.RouteParentStatus{theirEntry},
			wantChanged: true,
		},
		{
			name: "route attached only to another class's Gateway is left alone",
			route: func() *gwapiv1.HTTPRoute {
				r := dt.Route("ns", "r", "gw", "theirs", "pool")
				r.Status.Parents = []gwapiv1.RouteParentStatus{theirEntry}
				return r
			}(),
			objs: discovery.Objects{Gateways: []*gwapiv1.Gateway{ourGW, otherGW}, Pools: []*infv1.InferencePool{pool}},
			want: []gwapiv1.RouteParentStatus{theirEntry},
		},
		{
			name: "unchanged status is not rewritten",
			route: func() *gwapiv1.HTTPRoute {
				r := dt.WithGeneration(dt.Route("ns", "r", "gw", "main", "pool"), 2)
				r.Status.Parents = []gwapiv1.RouteParentStatus{routeEntry("gw", "main", routeAccepted(2, statusEarlier), routeResolved(2, statusEarlier))}
				return r
			}(),
			objs: discovery.Objects{Gateways: []*gwapiv1.Gateway{ourGW}, Pools: []*infv1.InferencePool{pool}},
			want: []gwapiv1.RouteParentStatus{routeEntry("gw", "main", routeAccepted(2, statusEarlier), routeResolved(2, statusEarlier))},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs := tc.objs
			objs.HTTPRoutes = append(objs.HTTPRoutes, tc.route)
			before := tc.route.DeepCopy()
			m, _ := statusModel(objs, nil)
			got, changed := m.DesiredRouteStatus(tc.route, statusNow)
			if diff := cmp.Diff(tc.want, got.Parents, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("parents (-want +got):\n%s", diff)
			}
			if changed != tc.wantChanged {
				t.Errorf("changed = %v, want %v", changed, tc.wantChanged)
			}
			if diff := cmp.Diff(before, tc.route); diff != "" {
				t.Errorf("DesiredRouteStatus modified its input (-before +after):\n%s", diff)
			}
			applied := tc.route.DeepCopy()
			applied.Status = got
			if _, again := m.DesiredRouteStatus(applied, metav1.NewTime(statusNow.Add(time.Hour))); again {
				t.Error("status is not stable: applying it asks for another write")
			}
		})
	}
}

// BenchmarkStatusRound measures one status round for 1,000 pools and 1,000 routes, all up
// to date (the common case: every informer event recomputes status and writes nothing).
func BenchmarkStatusRound(b *testing.B) {
	objs := discovery.Objects{Gateways: []*gwapiv1.Gateway{allNamespacesGateway("gw", "main", "infergw")}}
	for i := range 1000 {
		name := fmt.Sprintf("pool-%04d", i)
		objs.Pools = append(objs.Pools, dt.Pool("ns", name, map[string]string{"app": name}, 8000))
		objs.Services = append(objs.Services, dt.Service("ns", name+"-epp"))
		objs.HTTPRoutes = append(objs.HTTPRoutes, dt.Route("ns", "r-"+name, "gw", "main", name))
	}
	m, scope := statusModel(objs, nil)
	for _, p := range objs.Pools {
		p.Status, _ = m.DesiredPoolStatus(p, scope, statusNow)
	}
	for _, r := range objs.HTTPRoutes {
		r.Status, _ = m.DesiredRouteStatus(r, statusNow)
	}
	b.ReportAllocs()
	for b.Loop() {
		m, scope := statusModel(objs, nil)
		for _, p := range objs.Pools {
			if _, changed := m.DesiredPoolStatus(p, scope, statusNow); changed {
				b.Fatal("pool status changed")
			}
		}
		for _, r := range objs.HTTPRoutes {
			if _, changed := m.DesiredRouteStatus(r, statusNow); changed {
				b.Fatal("route status changed")
			}
		}
	}
}
