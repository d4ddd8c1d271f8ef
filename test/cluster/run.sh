#!/usr/bin/env bash
# run.sh is `make test-cluster`: host packages, Kubernetes binaries (cached), images, then the
# cluster tests (test/cluster/*_test.go), printing how long each step took.
#
#   GO          go command (default go)
#   IMAGES_DIR  where `make images` wrote the tarballs (default dist/images)
#   IMAGE_TAG   their tag (default dev)
#   RUN         go test -run pattern (default: all)
#   TEST_TIMEOUT go test -timeout (default 30m; a timeout panic skips the teardown)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
GO=${GO:-go}
IMAGES_DIR=${IMAGES_DIR:-dist/images}
IMAGE_TAG=${IMAGE_TAG:-dev}
total=$SECONDS

step=$SECONDS
test/cluster/host-packages.sh
echo "test-cluster: host packages step $((SECONDS - step))s" >&2
step=$SECONDS
bins=$(GO=$GO test/k8sbin/build.sh --cluster | tail -n1)
echo "test-cluster: Kubernetes binaries step $((SECONDS - step))s ($bins)" >&2

step=$SECONDS
set +e
INFERGW_CLUSTER=1 INFERGW_K8S_BIN="$bins" INFERGW_IMAGES="$PWD/$IMAGES_DIR" INFERGW_IMAGE_TAG="$IMAGE_TAG" \
	"$GO" test -count=1 -v -timeout "${TEST_TIMEOUT:-30m}" -run "${RUN:-.}" ./test/cluster/
rc=$?
set -e
echo "test-cluster: cluster tests step $((SECONDS - step))s (exit $rc); total $((SECONDS - total))s" >&2
exit $rc
