#!/usr/bin/env bash
# build.sh builds kube-apiserver (k8s.io/kubernetes v1.37.2) and etcd (go.etcd.io/etcd/server/v3
# v3.6.16) from the Go module proxy, for envtest (KUBEBUILDER_ASSETS / INFERGW_K8S_BIN).
# With --cluster it also builds kubelet, kube-controller-manager, kube-scheduler and kube-proxy
# for the one-node cluster of test/cluster (kubelet first: it compiles most of what the others
# share, so each later build reuses the Go build cache).
# The binaries go to a cache directory outside the repository and are reused when present.
# The last line of stdout is that directory.
#
#   K8S_BIN_DIR   output directory (default ${XDG_CACHE_HOME:-$HOME/.cache}/infergw/k8s-bin/<versions>)
#   GO            go command (default go)
#   NICE          prefix for the compiler (default "nice -n 10": the builds share the machine)
set -euo pipefail

GO=${GO:-go}
NICE=${NICE-nice -n 10}
cluster=false
if [ "${1:-}" = "--cluster" ]; then
	cluster=true
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Versions come from the helper modules so that the cache key follows their go.mod files.
kube_version=$(cd "$here/apiserver" && "$GO" list -m -f '{{.Version}}' k8s.io/kubernetes)
etcd_version=$(cd "$here/etcd" && "$GO" list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
go_version=$("$GO" env GOVERSION)
out=${K8S_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/infergw/k8s-bin/kube-${kube_version}_etcd-${etcd_version}_${go_version}}
mkdir -p "$out"

# build NAME MODULE_DIR PACKAGE: builds into a temporary name and renames, so an interrupted
# build never leaves a half-written binary that a later run would take as cached.
build() {
	local name=$1 dir=$2 pkg=$3 ldflags=${4:-}
	if [ -x "$out/$name" ]; then
		echo "$name: cached in $out" >&2
		return
	fi
	echo "$name: building $pkg (this takes minutes on a cold cache; cached afterwards in $out)" >&2
	local start=$SECONDS
	# A line every 30 s, so that a long build never looks hung in a CI log.
	(while sleep 30; do echo "$name: still building ($((SECONDS - start))s so far)" >&2; done) &
	local ticker=$!
	local rc=0
	(cd "$dir" && CGO_ENABLED=0 $NICE "$GO" build -trimpath -ldflags "-s -w $ldflags" -o "$out/$name.tmp" "$pkg") || rc=$?
	kill "$ticker" 2>/dev/null || true
	wait "$ticker" 2>/dev/null || true
	if [ "$rc" -ne 0 ]; then
		echo "$name: build failed (exit $rc)" >&2
		return "$rc"
	fi
	mv "$out/$name.tmp" "$out/$name"
	echo "$name: built in $((SECONDS - start))s" >&2
}

# Stamp the version the way Kubernetes' release build does, so /version reports it (and the
# kubelet reports a real version to the API server, which checks node version skew).
minor=${kube_version#v1.}
minor=${minor%%.*}
cv=k8s.io/component-base/version
stamp="-X $cv.gitVersion=$kube_version -X $cv.gitMajor=1 -X $cv.gitMinor=$minor -X $cv.gitTreeState=clean"
if $cluster; then
	build kubelet "$here/apiserver" k8s.io/kubernetes/cmd/kubelet "$stamp"
fi
build etcd "$here/etcd" .
build kube-apiserver "$here/apiserver" k8s.io/kubernetes/cmd/kube-apiserver "$stamp"
if $cluster; then
	for name in kube-controller-manager kube-scheduler kube-proxy; do
		build "$name" "$here/apiserver" "k8s.io/kubernetes/cmd/$name" "$stamp"
	done
fi
echo "$out"
