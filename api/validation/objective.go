package validation

import (
	"k8s.io/apimachinery/pkg/util/validation/field"

	infv1alpha2 "github.com/infergw/infergw/api/v1alpha2"
)

// Objective checks an InferenceObjective: metadata and a poolRef naming an InferencePool.
// Any priority is valid (negative means sheddable).
func Objective(o *infv1alpha2.InferenceObjective) Errors {
	var es Errors
	if o == nil {
		es.add("", "object is empty")
		return es
	}
	validateMeta(&o.ObjectMeta, &es)
	validatePoolRef(field.NewPath("spec", "poolRef"), o.Spec.PoolRef, &es)
	return es
}

// validatePoolRef accepts only references to InferencePools of inference.networking.k8s.io
// (group and kind default to those).
func validatePoolRef(path *field.Path, ref infv1alpha2.PoolObjectReference, es *Errors) {
	validateObjectName(path.Child("name").String(), string(ref.Name), es)
	if ref.Group != "" && ref.Group != inferencePoolGroup {
		es.add(path.Child("group").String(), "unsupported value %q: must be %q", ref.Group, inferencePoolGroup)
	}
	if ref.Kind != "" && ref.Kind != inferencePoolKind {
		es.add(path.Child("kind").String(), "unsupported value %q: must be %q", ref.Kind, inferencePoolKind)
	}
}
