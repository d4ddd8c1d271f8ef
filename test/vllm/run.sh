#!/usr/bin/env bash
# run.sh: the real-vLLM test (`make test-vllm`). Installs vLLM's CPU build (cached), builds
# the tiny model (cached), builds infergw, then runs the Go test that starts two vLLM
# servers and the gateway in front of them. Every process it starts is stopped by the test
# (process groups), also on failure.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
START=$(date +%s)
say() { echo "test-vllm: $(date -u +%H:%M:%S) $*" >&2; }

: "${ENVOY_BIN:?set ENVOY_BIN (make test-vllm does)}"
VENV=$("$HERE/setup.sh")
MODEL=$("$HERE/model.sh" "$VENV")
say "building infergw"
mkdir -p "$ROOT/bin"
# A cold Go build cache takes minutes here and go build prints nothing meanwhile.
( while sleep 30; do say "still building infergw"; done ) &
TICKER=$!
trap 'kill $TICKER 2>/dev/null || true' EXIT
(cd "$ROOT" && ${GO:-go} build -o bin/infergw ./cmd/infergw)
kill $TICKER 2>/dev/null || true
say "running the test (two vLLM servers start in ~80-120 s)"
cd "$ROOT"
set +e
INFERGW_VLLM_VENV=$VENV INFERGW_VLLM_MODEL=$MODEL INFERGW_BIN=$ROOT/bin/infergw ENVOY_BIN=$ENVOY_BIN \
  ${GO:-go} test -count=1 -v -timeout 25m ./test/vllm/ -run 'TestRealVLLM' ${VLLM_TEST_ARGS:-}
rc=$?
set -e
say "finished (exit $rc) in $(( $(date +%s) - START )) s"
exit $rc
