#!/usr/bin/env bash
# h2spec.sh runs h2spec (github.com/summerwind/h2spec, built from the Go module proxy and
# cached under ~/.cache/infergw/) against the picker's gRPC port on each transport (h2c,
# plaintext) and prints the pass/fail counts per transport; non-zero exit if a run fails
# to start or passes fewer tests than the floor recorded for its transport. Usage: scripts/h2spec.sh [bin/infergw]. H2SPEC_REPORT=dir keeps the JUnit
# reports and logs there.
set -euo pipefail
GO=${GO:-go}
BIN=${1:-bin/infergw}
H2SPEC_VERSION=v2.2.1+incompatible
CACHE=${H2SPEC_CACHE:-$HOME/.cache/infergw/h2spec-${H2SPEC_VERSION%%+*}}
H2SPEC=$CACHE/h2spec
if [[ ! -x $H2SPEC ]]; then
  mkdir -p "$CACHE"
  # h2spec has no go.mod; its module-less build must not see this repository's GOFLAGS.
  GOFLAGS= GOBIN=$CACHE $GO install "github.com/summerwind/h2spec/cmd/h2spec@$H2SPEC_VERSION"
fi
[[ -x $BIN ]] || { echo "h2spec.sh: $BIN not built (make build)" >&2; exit 2; }
REPORT=${H2SPEC_REPORT:-$(mktemp -d)}
mkdir -p "$REPORT"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

status=0
for transport in inline grpc-go; do
  port=$(free_port) mport=$(free_port)
  "$BIN" picker --manifests "${H2SPEC_MANIFESTS:-examples/local}" --grpc-transport "$transport" --grpc-addr "127.0.0.1:$port" --metrics-addr "127.0.0.1:$mport" \
    --log-level error >"$REPORT/picker-$transport.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  # h2spec exits non-zero when a test fails; the counts are the result.
  "$H2SPEC" -h 127.0.0.1 -p "$port" -o 2 -j "$REPORT/h2spec-$transport.xml" >"$REPORT/h2spec-$transport.txt" 2>&1 || true
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  summary=$(grep -aE '^[0-9]+ tests, [0-9]+ passed' "$REPORT/h2spec-$transport.txt" || true)
  if [[ -z $summary ]]; then
    echo "h2spec $transport: no result (see $REPORT/h2spec-$transport.txt)" >&2
    status=1
    continue
  fi
  echo "h2spec $transport: $summary"
  # A floor per transport: the counts recorded in internal/inlinegrpc/README.md, less a
  # margin for h2spec's timing-dependent cases (grpc-go's count varies between runs).
  passed=$(sed -E 's/^[0-9]+ tests, ([0-9]+) passed.*/\1/' <<<"$summary")
  floor=${H2SPEC_FLOOR_INLINE:-131}
  [[ $transport == grpc-go ]] && floor=${H2SPEC_FLOOR_GRPCGO:-110}
  if ((passed < floor)); then
    echo "h2spec $transport: $passed passed, below the recorded floor of $floor; failures:" >&2
    grep -aE '^\s+×|^  [0-9.]+\. ' "$REPORT/h2spec-$transport.txt" | head -40 >&2 || true
    status=1
  fi
done
echo "reports: $REPORT"
exit $status
