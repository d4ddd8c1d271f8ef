// Package v1 holds wire-compatible Go types of the Gateway API Inference Extension's
// InferencePool (inference.networking.k8s.io/v1). The upstream module is not reachable from
// this project's module proxy, so the project owns these copies; field names, JSON tags and
// defaults follow the upstream CRD so that the same YAML works against both.
//
// +kubebuilder:object:generate=true
// +groupName=inference.networking.k8s.io
package v1
