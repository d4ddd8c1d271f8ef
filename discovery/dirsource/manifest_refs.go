package dirsource

import (
	"fmt"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	infv1 "github.com/infergw/infergw/api/v1"
	infv1alpha2 "github.com/infergw/infergw/api/v1alpha2"
	"github.com/infergw/infergw/discovery"
)

// checkReferences finds what no single object can show: two documents declaring the same
// kind, namespace and name, and references to InferencePools that are not declared
// (objective and rewrite poolRefs, HTTPRoute backendRefs of kind InferencePool). A
// kube-apiserver would accept a dangling reference and report it in status; a manifest
// directory has no status to write, so it is an error the user sees at once.
func checkReferences(all []manifest) []error {
	var errs []error
	first := make(map[string]*manifest, len(all))
	pools := make(map[string]struct{})
	for i := range all {
		m := &all[i]
		id := m.kind + " " + discovery.Key(m.obj.GetNamespace(), m.obj.GetName())
		if prev, dup := first[id]; dup {
			errs = append(errs, fmt.Errorf("%s: metadata.name: duplicate %s, first declared in %s document %d",
				m.where(), id, prev.file, prev.index))
			continue
		}
		first[id] = m
		if p, ok := m.obj.(*infv1.InferencePool); ok {
			pools[discovery.Key(p.Namespace, p.Name)] = struct{}{}
		}
	}
	poolMissing := func(ns, name string) bool {
		_, ok := pools[discovery.Key(ns, name)]
		return !ok
	}
	for i := range all {
		m := &all[i]
		switch o := m.obj.(type) {
		case *infv1alpha2.InferenceObjective:
			if poolMissing(o.Namespace, string(o.Spec.PoolRef.Name)) {
				errs = append(errs, fmt.Errorf("%s: spec.poolRef.name: InferencePool %s not found",
					m.where(), discovery.Key(o.Namespace, string(o.Spec.PoolRef.Name))))
			}
		case *infv1alpha2.InferenceModelRewrite:
			if poolMissing(o.Namespace, string(o.Spec.PoolRef.Name)) {
				errs = append(errs, fmt.Errorf("%s: spec.poolRef.name: InferencePool %s not found",
					m.where(), discovery.Key(o.Namespace, string(o.Spec.PoolRef.Name))))
			}
		case *gwapiv1.HTTPRoute:
			errs = append(errs, checkRouteBackends(m, o, poolMissing)...)
		}
	}
	return errs
}

func checkRouteBackends(m *manifest, rt *gwapiv1.HTTPRoute, poolMissing func(ns, name string) bool) []error {
	var errs []error
	for i, rule := range rt.Spec.Rules {
		for j, br := range rule.BackendRefs {
			if !discovery.IsPoolBackendRef(br.BackendObjectReference) {
				continue
			}
			ns := rt.Namespace
			if br.Namespace != nil && *br.Namespace != "" {
				ns = string(*br.Namespace)
			}
			if poolMissing(ns, string(br.Name)) {
				errs = append(errs, fmt.Errorf("%s: spec.rules[%d].backendRefs[%d].name: InferencePool %s not found",
					m.where(), i, j, discovery.Key(ns, string(br.Name))))
			}
		}
	}
	return errs
}
