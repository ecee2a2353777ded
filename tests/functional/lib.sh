# lib.sh - a tiny TAP harness for functional tests that drive the mlpipe
# binary.  Source it, call `check NAME CMD...` or ok/not_ok, then `finish`.
#
# $MLPIPE is the binary under test (set by `make check`); every test gets a
# private temporary directory $T and database $T/mlpipe.db that are removed
# at exit.
set -u
: "${MLPIPE:?MLPIPE must name the mlpipe binary (run through make check)}"
: "${MLPIPE_TEST_SRCDIR:=$(cd "$(dirname "$0")/.." && pwd)}"
export NO_COLOR=1
T=$(mktemp -d "${TMPDIR:-/tmp}/mlpipe-test.XXXXXX")
export MLPIPE_DB="$T/mlpipe.db"
trap 'rm -rf "$T"' EXIT
tap_n=0
tap_failed=0

ok() { tap_n=$((tap_n + 1)); echo "ok $tap_n - $1"; }
not_ok() {
	tap_n=$((tap_n + 1)); tap_failed=$((tap_failed + 1))
	echo "not ok $tap_n - $1"
	shift
	for line in "$@"; do printf '#   %s\n' "$line"; done
}
# expect_eq NAME EXPECTED ACTUAL
expect_eq() {
	if [ "$2" = "$3" ]; then ok "$1"; else not_ok "$1" "expected: $2" "actual:   $3"; fi
}
# expect_match NAME REGEX TEXT
expect_match() {
	if printf '%s' "$3" | grep -Eq -- "$2"; then ok "$1"
	else not_ok "$1" "expected to match: $2" "actual: $(printf '%s' "$3" | head -c 2000)"; fi
}
# run_mlpipe ARGS...: runs the binary, leaving its stdout in $out, its
# stderr in $err and its exit code in $rc.
run_mlpipe() {
	set +e
	"$MLPIPE" "$@" >"$T/.out" 2>"$T/.err"
	rc=$?
	set -e
	out=$(cat "$T/.out")
	err=$(cat "$T/.err")
}
finish() {
	echo "1..$tap_n"
	[ "$tap_failed" -eq 0 ]
}
set -e
