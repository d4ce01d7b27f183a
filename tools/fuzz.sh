#!/usr/bin/env bash
# Runs every native Go fuzz target (func FuzzX(f *testing.F)) in the module
# for a bounded time, one after the other. `make test` (and so `make ci`)
# calls it after the unit tests; `make fuzz` runs it alone.
#
#   tools/fuzz.sh [package patterns]     default ./...
#
#   FUZZTIME=5s        how long each target fuzzes (a go test -fuzztime value:
#                      5s, 1m, or 1000x for a number of executions)
#   FUZZ_PARALLEL=2    fuzzing workers per target (-test.parallel)
#   FUZZ_MATCH=regexp  only the targets whose name matches
#   FUZZ_TIMEOUT=5m    a target still running after this fails (a hang)
#
# Targets are found by their declarations in *_test.go and confirmed by the
# test binary's own -test.list, so a new FuzzX anywhere in the module runs
# without touching this file. Each package's test binary is built once, with
# fuzzing instrumentation (the next package builds while one fuzzes), and
# run from the package directory so testdata/ (the committed seed corpus) is
# found and a crasher lands in it.
#
# A failing target fails the run, after the others have run. Go writes the
# input that failed to <package>/testdata/fuzz/FuzzX/<hash>; fix the cause,
# then commit that file: plain `go test` replays it as a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
FUZZTIME=${FUZZTIME:-5s}
FUZZ_PARALLEL=${FUZZ_PARALLEL:-2}
FUZZ_MATCH=${FUZZ_MATCH:-.}
FUZZ_TIMEOUT=${FUZZ_TIMEOUT:-5m}
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}

say() { printf 'fuzz: %s\n' "$*"; }
now() { date +%s%N; }
secs() { awk -v ns="$1" 'BEGIN { printf "%.1fs", ns / 1e9 }'; } # nanoseconds -> "1.2s"

run_start=$(now)
patterns=("$@")
[ ${#patterns[@]} -gt 0 ] || patterns=(./...)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Where go test -fuzz keeps what it learns; sharing it makes later runs
# start from the inputs earlier ones found interesting.
cache_root="$("$GO" env GOCACHE)/fuzz"
root=$(pwd)

# One line per package with test files: import path, directory, files.
"$GO" list -f '{{.ImportPath}}{{"\t"}}{{.Dir}}{{range .TestGoFiles}}{{"\t"}}{{.}}{{end}}{{range .XTestGoFiles}}{{"\t"}}{{.}}{{end}}' \
	"${patterns[@]}" >"$work/packages"

# Keep the packages whose test files declare a fuzz target.
while IFS=$'\t' read -r pkg dir files; do
	[ -n "${files:-}" ] || continue
	read -r -a tests <<<"$files"
	(cd "$dir" && grep -qE '^func Fuzz[A-Za-z0-9_]*\(' "${tests[@]}") || continue
	printf '%s\t%s\t%s\n' "$pkg" "$dir" "$work/$(printf '%s' "$pkg" | tr '/.' '__').test"
done <"$work/packages" >"$work/fuzzing"

# Build the test binaries one after the other in the background, so the
# next one builds while the previous one fuzzes. BIN.ok holds the build time.
build_all() {
	while IFS=$'\t' read -r pkg _ bin; do
		local t0
		t0=$(now)
		if "$GO" test -c -fuzz=. -ldflags='-s -w' -o "$bin" "$pkg" </dev/null >"$bin.log" 2>&1; then
			secs $(($(now) - t0)) >"$bin.ok"
		else
			touch "$bin.fail"
		fi
	done <"$work/fuzzing"
}
build_all &
builder=$!
trap 'kill "$builder" 2>/dev/null || true; rm -rf "$work"' EXIT

targets=0
failed=()
built=0
while IFS=$'\t' read -r pkg dir bin; do
	rel=./${dir#"$root"/}
	while [ ! -e "$bin.ok" ] && [ ! -e "$bin.fail" ]; do sleep 0.2; done
	if [ -e "$bin.fail" ]; then
		cat "$bin.log"
		say "FAIL: building $rel's test binary"
		failed+=("$rel (build)")
		continue
	fi
	built=$((built + 1))
	names=$(cd "$dir" && "$bin" -test.list '^Fuzz' </dev/null | grep -E '^Fuzz' | grep -E -- "$FUZZ_MATCH" || true)
	[ -n "$names" ] || continue
	say "$rel: built in $(cat "$bin.ok"); targets: $(echo $names)"
	for name in $names; do
		targets=$((targets + 1))
		log="$work/$name.log"
		t0=$(now)
		status=0
		(cd "$dir" && "$bin" -test.run '^$' -test.fuzz "^${name}\$" -test.fuzztime "$FUZZTIME" \
			-test.parallel "$FUZZ_PARALLEL" -test.timeout "$FUZZ_TIMEOUT" \
			-test.fuzzcachedir "$cache_root/$pkg") </dev/null >"$log" 2>&1 || status=$?
		took=$(secs $(($(now) - t0)))
		# From the coordinator's last progress line: "elapsed: 5s, execs: 12345 (2469/sec), ..."
		progress=$(grep -oE 'execs: [0-9]+' "$log" | tail -n1 || true)
		if [ "$status" -eq 0 ]; then
			if grep -q -- '--- SKIP' "$log"; then
				say "$name ($rel): skipped in $took: $(grep -A1 -- '--- SKIP' "$log" | tail -n1 | sed 's/^ *//')"
			else
				say "$name ($rel): ok in $took${progress:+, $progress}"
			fi
			continue
		fi
		cat "$log"
		failed+=("$name ($rel)")
		crasher=$(grep -oE 'testdata/fuzz/[^ ]+' "$log" | tail -n1 || true)
		if [ -n "$crasher" ]; then
			say "FAIL: $name ($rel) in $took: the input is in $rel/$crasher"
			say "      reproduce: go test -run '^$name/$(basename "$crasher")\$' $rel"
			say "      fix the cause, then commit $rel/$crasher as a regression seed"
		else
			say "FAIL: $name ($rel) in $took (exit $status, no crasher written: see the log above)"
		fi
	done
done <"$work/fuzzing"
wait "$builder"

total=$(secs $(($(now) - run_start)))
if [ ${#failed[@]} -gt 0 ]; then
	say "FAILED ${#failed[@]} of $targets targets in $total: ${failed[*]}"
	exit 1
fi
if [ "$targets" -eq 0 ]; then
	say "no fuzz targets found in ${patterns[*]}"
	exit 1
fi
say "ok: $targets targets in $built packages, ${FUZZTIME} each, $total in all"
