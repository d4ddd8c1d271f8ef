// Package v1alpha2 holds wire-compatible Go types of the Gateway API Inference Extension's
// InferenceObjective and InferenceModelRewrite (inference.networking.x-k8s.io/v1alpha2).
//
// +kubebuilder:object:generate=true
// +groupName=inference.networking.x-k8s.io
package v1alpha2
