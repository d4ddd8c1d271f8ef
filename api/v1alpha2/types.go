package v1alpha2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/infergw/infergw/api/v1"
)

// InferenceObjective gives requests that name it (header x-gateway-inference-objective) a
// priority within a pool. A negative priority marks the requests as sheddable.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=infobj
// +kubebuilder:storageversion
type InferenceObjective struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   InferenceObjectiveSpec   `json:"spec,omitempty"`
	Status InferenceObjectiveStatus `json:"status,omitempty"`
}

// InferenceObjectiveList is a list of InferenceObjectives.
//
// +kubebuilder:object:root=true
type InferenceObjectiveList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []InferenceObjective `json:"items"`
}

// InferenceObjectiveSpec sets the priority of the objective's requests in one pool.
type InferenceObjectiveSpec struct {
	// Priority orders requests when the pool is busy: higher is served first, and a negative
	// priority may be shed (429) when the pool is saturated. Unset means 0.
	//
	// +optional
	Priority *int `json:"priority,omitempty"`

	// PoolRef is the pool this objective applies to.
	//
	// +required
	PoolRef PoolObjectReference `json:"poolRef"`
}

// InferenceObjectiveStatus reports whether the objective is accepted.
type InferenceObjectiveStatus struct {
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// PoolObjectReference names an InferencePool in the referrer's namespace.
type PoolObjectReference struct {
	// +optional
	// +kubebuilder:default="inference.networking.k8s.io"
	Group v1.Group `json:"group,omitempty"`
	// +optional
	// +kubebuilder:default="InferencePool"
	Kind v1.Kind `json:"kind,omitempty"`
	// +required
	Name v1.ObjectName `json:"name"`
}

// InferenceModelRewrite rewrites the model a request names, optionally splitting traffic by
// weight between several target models served by the same pool (for example a canary LoRA).
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=infmr
// +kubebuilder:storageversion
type InferenceModelRewrite struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   InferenceModelRewriteSpec   `json:"spec,omitempty"`
	Status InferenceModelRewriteStatus `json:"status,omitempty"`
}

// InferenceModelRewriteList is a list of InferenceModelRewrites.
//
// +kubebuilder:object:root=true
type InferenceModelRewriteList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []InferenceModelRewrite `json:"items"`
}

// InferenceModelRewriteSpec holds the rewrite rules of one pool.
type InferenceModelRewriteSpec struct {
	// PoolRef is the pool whose requests are rewritten.
	//
	// +required
	PoolRef PoolObjectReference `json:"poolRef"`

	// Rules are evaluated in order; the first rule whose matches accept the request wins.
	// A rule with no matches accepts every request no earlier rule accepted.
	//
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +required
	Rules []InferenceModelRewriteRule `json:"rules"`
}

// InferenceModelRewriteRule maps matching requests to one or more weighted target models.
//
// +kubebuilder:validation:XValidation:message="weights must be set on all targets or on none",rule="self.targets.all(t, has(t.weight)) || self.targets.all(t, !has(t.weight))"
type InferenceModelRewriteRule struct {
	// Matches select requests by model; any match accepts the request.
	//
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	Matches []Match `json:"matches,omitempty"`

	// Targets are the models to send matching requests to.
	//
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +required
	Targets []TargetModel `json:"targets"`
}

// Match selects requests.
type Match struct {
	// Model matches the request body's model field.
	//
	// +required
	Model ModelMatch `json:"model"`
}

// ModelMatch compares the request's model name.
type ModelMatch struct {
	// Type of comparison; only Exact is supported.
	//
	// +optional
	// +kubebuilder:default=Exact
	Type *MatchType `json:"type,omitempty"`

	// Value is the model name to compare with.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +required
	Value string `json:"value"`
}

// MatchType is how a model name is compared.
//
// +kubebuilder:validation:Enum=Exact
type MatchType string

// MatchExact compares model names for equality.
const MatchExact MatchType = "Exact"

// TargetModel is one destination model of a rewrite rule.
type TargetModel struct {
	// ModelRewrite is the model name written into the request.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +required
	ModelRewrite string `json:"modelRewrite"`

	// Weight is the relative share of matching traffic sent to this target.
	//
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	Weight *int32 `json:"weight,omitempty"`
}

// InferenceModelRewriteStatus reports whether the rewrite is accepted.
type InferenceModelRewriteStatus struct {
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}
