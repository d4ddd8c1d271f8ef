//go:build tools

// Package tools pins the Kubernetes commands this helper module builds, so that
// `go build k8s.io/kubernetes/cmd/<name>` resolves from go.mod and go.sum: kube-apiserver for
// the discovery package's envtest, and the rest of a one-node cluster for test/cluster.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
