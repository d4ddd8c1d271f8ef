package validation

import (
	infv1 "github.com/infergw/infergw/api/v1"
	infv1alpha2 "github.com/infergw/infergw/api/v1alpha2"
)

// DefaultPool fills the defaults the CRD declares (a kube-apiserver applies them on
// admission; manifests read from a directory need them applied by hand): endpointPickerRef
// group "", kind Service, failureMode FailClose.
func DefaultPool(p *infv1.InferencePool) {
	ref := &p.Spec.EndpointPickerRef
	if ref.Group == nil {
		empty := infv1.Group("")
		ref.Group = &empty
	}
	if ref.Kind == "" {
		ref.Kind = serviceKind
	}
	if ref.FailureMode == "" {
		ref.FailureMode = infv1.EndpointPickerFailClose
	}
}

// DefaultObjective fills poolRef group and kind.
func DefaultObjective(o *infv1alpha2.InferenceObjective) {
	defaultPoolRef(&o.Spec.PoolRef)
}

// DefaultRewrite fills poolRef group and kind and each match's type (Exact).
func DefaultRewrite(r *infv1alpha2.InferenceModelRewrite) {
	defaultPoolRef(&r.Spec.PoolRef)
	for i := range r.Spec.Rules {
		for j := range r.Spec.Rules[i].Matches {
			m := &r.Spec.Rules[i].Matches[j].Model
			if m.Type == nil {
				exact := infv1alpha2.MatchExact
				m.Type = &exact
			}
		}
	}
}

func defaultPoolRef(ref *infv1alpha2.PoolObjectReference) {
	if ref.Group == "" {
		ref.Group = inferencePoolGroup
	}
	if ref.Kind == "" {
		ref.Kind = inferencePoolKind
	}
}
