// Package cluster runs infergw's Helm chart on a real one-node Kubernetes cluster started on
// this machine: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and
// kube-proxy built from the Go module proxy (test/k8sbin/build.sh --cluster), containerd and
// runc from Debian, a CNI bridge, and images built without Docker (cmd/imagebuild).
//
// The tests run only with INFERGW_CLUSTER=1 (`make test-cluster` sets it), as root, because
// they change the host: an address on lo, a bridge, iptables rules, mounts, sysctls. TestMain
// records every change before making it and undoes all of them at the end, stopping only the
// processes it started, then checks that nothing is left (processes, mounts, iptables rules,
// links, addresses, sysctls, cgroups, paths) and fails the run otherwise.
package cluster
