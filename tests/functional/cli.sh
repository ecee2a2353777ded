#!/bin/sh
# Functional tests of the command line: help, version, exit codes.
. "$(dirname "$0")/lib.sh"

run_mlpipe
expect_eq "no command is a usage error" 2 "$rc"
expect_match "and shows the commands" "Commands:" "$out"

run_mlpipe help
expect_eq "help exits 0" 0 "$rc"
help_out=$out
for c in run validate runs logs version help; do
	expect_match "help lists $c" "^  $c " "$(printf '%s\n' "$help_out" | grep "^  $c " || true)"
	run_mlpipe "$c" --help
	expect_eq "$c --help exits 0" 0 "$rc"
	expect_match "$c --help shows its usage" "^usage: mlpipe $c" "$out"
	run_mlpipe help "$c"
	expect_match "help $c shows its usage" "^usage: mlpipe $c" "$out"
done

run_mlpipe version
expect_match "version prints the version" "^mlpipe [0-9]+\.[0-9]+\.[0-9]+" "$out"

run_mlpipe rnu
expect_eq "an unknown command exits 2" 2 "$rc"
expect_eq "and suggests the nearest" "mlpipe: unknown command 'rnu' (did you mean 'run'?)" "$err"
# every public command can be suggested, the last in the table too
for c in $("$MLPIPE" help | awk '/^  [a-z]/ && $0 !~ /internal/ { print $1 }'); do
	typo=$(printf '%s' "$c" | sed 's/^\(.\)\(.\)/\2\1/')
	[ "$typo" = "$c" ] && continue
	run_mlpipe "$typo"
	case "$err" in
	*"did you mean '$c'?"*) ;;
	*) missed="${missed:-} $typo->$c" ;;
	esac
done
expect_eq "every public command is suggested for a transposition typo (hepl -> help)" "" "${missed:-}"
run_mlpipe xyzzy
expect_eq "without a near one it points to help" "mlpipe: unknown command 'xyzzy' (see 'mlpipe help')" "$err"
run_mlpipe val --help
expect_match "a unique prefix finds the command" "^usage: mlpipe validate" "$out"
run_mlpipe r
expect_eq "an ambiguous prefix exits 2" 2 "$rc"
run_mlpipe stage
expect_eq "internal commands are not found by a prefix" "mlpipe: unknown command 'stage' (see 'mlpipe help')" "$err"

run_mlpipe run
expect_eq "run without a file exits 2" 2 "$rc"
expect_match "and says so" "no pipeline file given" "$err"
run_mlpipe run -j zero x.yml
expect_eq "a bad -j exits 2" 2 "$rc"
run_mlpipe run --var 1X=2 x.yml
expect_eq "a bad --var exits 2" 2 "$rc"
run_mlpipe run --bogus x.yml
expect_eq "an unknown option exits 2" 2 "$rc"

# The ready pipelines and the examples shipped with mlpipe are valid.
for f in "$MLPIPE_TEST_SRCDIR"/../pipelines/*.yml "$MLPIPE_TEST_SRCDIR"/../examples/*/pipeline.yml; do
	run_mlpipe validate "$f"
	expect_eq "$(basename "$(dirname "$f")")/$(basename "$f") is valid" 0 "$rc"
done

finish
