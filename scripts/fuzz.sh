#!/usr/bin/env bash
# fuzz.sh FUZZTIME PKG:FuzzName... — a short run of each fuzz target (`make fuzz`).
#
# A target fails when the fuzzer finds an input that fails: Go then writes it to
# testdata/fuzz/FuzzName/ and prints "Failing input written to". One failure carries no input and is
# not ours: Go's fuzz coordinator can report the end of -fuzztime itself as a bare "context deadline
# exceeded" (internal/fuzz.CoordinateFuzzing compares ctx.Err() with the child fuzzCtx.Err() while
# the child's cancellation is still in flight; a loaded machine widens that window). For exactly that
# result the target's corpus is replayed deterministically (`go test -run`), which must pass, and
# the run goes on with a visible warning. Anything else that fails stays a failure.
set -uo pipefail
go=${GO:-go}
fuzztime=$1
shift
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for t in "$@"; do
	pkg=${t%%:*}
	fn=${t##*:}
	echo "fuzz $pkg $fn ($fuzztime)"
	"$go" test -run='^$' -fuzz="^$fn\$" -fuzztime="$fuzztime" "$pkg" 2>&1 | tee "$out"
	rc=${PIPESTATUS[0]}
	[ "$rc" -eq 0 ] && continue
	# The coordinator's deadline race: the FAIL line's only reason is the deadline, and no input was written.
	if ! grep -q 'Failing input written to' "$out" &&
		grep -A1 -- "^--- FAIL: $fn " "$out" | tail -n1 | grep -qx '[[:space:]]*context deadline exceeded'; then
		echo "fuzz: $fn: Go's fuzz coordinator reported its own deadline (no failing input); replaying the corpus"
		"$go" test -count=1 -run="^$fn\$" "$pkg" || exit 1
		continue
	fi
	exit 1
done
