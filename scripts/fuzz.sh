#!/usr/bin/env bash
# fuzz.sh runs every Go fuzz target of the module for FUZZTIME each (default 5s).
#
# Go 1.26's fuzz coordinator can report a bare "context deadline exceeded" failure when the
# -fuzztime deadline fires while a worker is mid-call (go.dev/issue/75804, fixed in Go 1.27).
# That is not a finding: a real one prints "Failing input written to testdata/fuzz/...". So a
# target that fails with only that message is run once more, and a second bare deadline is
# reported as a warning; any other failure fails the run.
set -uo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-5s}

status=0
for dir in $(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do
	for target in $(grep -h '^func Fuzz' "$dir"/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do
		for attempt in 1 2; do
			echo "fuzz $dir $target ($FUZZTIME, attempt $attempt)"
			out=$("$GO" test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$dir" 2>&1)
			rc=$?
			echo "$out" | tail -n 4
			if [ $rc -eq 0 ]; then
				break
			fi
			if echo "$out" | grep -q 'context deadline exceeded' &&
				! echo "$out" | grep -qE 'Failing input written|panic:|_test\.go:[0-9]+:'; then
				if [ $attempt -eq 2 ]; then
					echo "warning: $target: bare 'context deadline exceeded' twice (go.dev/issue/75804), no failing input"
				fi
				continue
			fi
			echo "$out"
			status=1
			break
		done
	done
done
exit $status
