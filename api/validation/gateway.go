package validation

import (
	"k8s.io/apimachinery/pkg/util/validation/field"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Limits of the Gateway API CRDs that matter to infergw.
const (
	maxListeners   = 64
	maxParentRefs  = 32
	maxRouteRules  = 16
	maxRouteWeight = 1000000
)

// Gateway checks the parts of a Gateway infergw uses: metadata, gatewayClassName, and 1–64
// listeners with unique names, a protocol and a port in 1–65535.
func Gateway(gw *gwapiv1.Gateway) Errors {
	var es Errors
	if gw == nil {
		es.add("", "object is empty")
		return es
	}
	validateMeta(&gw.ObjectMeta, &es)
	spec := field.NewPath("spec")
	if gw.Spec.GatewayClassName == "" {
		es.add(spec.Child("gatewayClassName").String(), "required")
	}
	listeners := spec.Child("listeners")
	switch {
	case len(gw.Spec.Listeners) == 0:
		es.add(listeners.String(), "must have at least 1 listener")
	case len(gw.Spec.Listeners) > maxListeners:
		es.add(listeners.String(), "must have at most %d listeners, has %d", maxListeners, len(gw.Spec.Listeners))
	}
	seen := make(map[gwapiv1.SectionName]int, len(gw.Spec.Listeners))
	for i, l := range gw.Spec.Listeners {
		lp := listeners.Index(i)
		if l.Name == "" {
			es.add(lp.Child("name").String(), "required")
		} else if first, dup := seen[l.Name]; dup {
			es.add(lp.Child("name").String(), "duplicate listener name %q (also listeners[%d])", l.Name, first)
		} else {
			seen[l.Name] = i
		}
		if l.Protocol == "" {
			es.add(lp.Child("protocol").String(), "required")
		}
		if l.Port < minPortNumber || l.Port > maxPortNumber {
			es.add(lp.Child("port").String(), "port %d out of range %d-%d", l.Port, minPortNumber, maxPortNumber)
		}
	}
	return es
}

// HTTPRoute checks the parts of an HTTPRoute infergw uses: metadata, at most 32 parentRefs
// with names, at most 16 rules, and backendRefs with a name, a port when they name a
// Service, the inference.networking.k8s.io group when they name an InferencePool, and a
// weight in 0–1,000,000.
func HTTPRoute(rt *gwapiv1.HTTPRoute) Errors {
	var es Errors
	if rt == nil {
		es.add("", "object is empty")
		return es
	}
	validateMeta(&rt.ObjectMeta, &es)
	spec := field.NewPath("spec")
	parents := spec.Child("parentRefs")
	if len(rt.Spec.ParentRefs) > maxParentRefs {
		es.add(parents.String(), "must have at most %d parentRefs, has %d", maxParentRefs, len(rt.Spec.ParentRefs))
	}
	for i, p := range rt.Spec.ParentRefs {
		validateObjectName(parents.Index(i).Child("name").String(), string(p.Name), &es)
	}
	rules := spec.Child("rules")
	if len(rt.Spec.Rules) > maxRouteRules {
		es.add(rules.String(), "must have at most %d rules, has %d", maxRouteRules, len(rt.Spec.Rules))
	}
	for i, rule := range rt.Spec.Rules {
		for j, br := range rule.BackendRefs {
			validateBackendRef(rules.Index(i).Child("backendRefs").Index(j), br.BackendRef, &es)
		}
	}
	return es
}

func validateBackendRef(path *field.Path, br gwapiv1.BackendRef, es *Errors) {
	validateObjectName(path.Child("name").String(), string(br.Name), es)
	group, kind := "", serviceKind
	if br.Group != nil {
		group = string(*br.Group)
	}
	if br.Kind != nil {
		kind = string(*br.Kind)
	}
	switch {
	case kind == serviceKind && (group == "" || group == "core"):
		// Gateway API CEL: "Must have port for Service reference".
		if br.Port == nil {
			es.add(path.Child("port").String(), "required when the backend is a Service")
		}
	case kind == inferencePoolKind && group != inferencePoolGroup:
		es.add(path.Child("group").String(), "must be %q for kind InferencePool, got %q", inferencePoolGroup, group)
	}
	if br.Port != nil && (*br.Port < minPortNumber || *br.Port > maxPortNumber) {
		es.add(path.Child("port").String(), "port %d out of range %d-%d", *br.Port, minPortNumber, maxPortNumber)
	}
	if br.Weight != nil && (*br.Weight < 0 || *br.Weight > maxRouteWeight) {
		es.add(path.Child("weight").String(), "weight %d out of range 0-%d", *br.Weight, maxRouteWeight)
	}
}
