// Package chart holds the tests of the Helm chart in charts/infergw: they render it with the
// Helm Go SDK, lint it, decode every rendered object strictly with the typed Kubernetes
// scheme, and check the properties the chart promises (least-privilege RBAC, probes on
// declared ports, Envoy bootstrapped to the control plane Service, TLS wiring, PDBs).
package chart
