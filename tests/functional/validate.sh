#!/bin/sh
# validate.sh - `mlpipe validate` as a user runs it: every good pipeline in
# tests/pipelines/good passes with "FILE: ok (N stages)"; every bad one
# fails with exit 2 and exactly the problems in its NAME.expected file
# ("LINE:COL: message" lines, printed as "FILE:LINE:COL: message"); and
# the files no one writes on purpose (empty, binary, huge, Latin-1, tabs,
# absurdly nested, missing) get one clear line each.
. "$(dirname "$0")/lib.sh"

fixtures="$MLPIPE_TEST_SRCDIR/pipelines"

# expect_invalid NAME FILE EXPECTED_STDERR: exit 2, nothing on stdout.
expect_invalid() {
	run_mlpipe validate "$2"
	expect_eq "$1: exit status" 2 "$rc"
	expect_eq "$1: stdout" "" "$out"
	expect_eq "$1: problems" "$3" "$err"
}

# --- good fixtures -------------------------------------------------------
ngood=0
for f in "$fixtures"/good/*.yml; do
	name=$(basename "$f")
	case $name in
	full.yml) n=4 ;;
	all-keys.yml) n=8 ;;
	anchors.yml) n=3 ;;
	flow.yml) n=4 ;;
	minimal.yml) n=1 ;;
	*) n='[0-9]+' ;;
	esac
	run_mlpipe validate "$f"
	expect_eq "good/$name: exit status" 0 "$rc"
	expect_match "good/$name: ok line" "^$f: ok \\($n stages?\\)\$" "$out"
	expect_eq "good/$name: nothing on stderr" "" "$err"
	ngood=$((ngood + 1))
done
if [ "$ngood" -ge 4 ]; then ok "found the good fixtures ($ngood)"
else not_ok "found the good fixtures" "only $ngood in $fixtures/good"; fi

# --- bad fixtures --------------------------------------------------------
nbad=0
for f in "$fixtures"/bad/*.yml; do
	name=$(basename "$f")
	expected_file="${f%.yml}.expected"
	if [ ! -s "$expected_file" ]; then
		not_ok "bad/$name: has a .expected file" "missing or empty: $expected_file"
		continue
	fi
	expected=$(sed "s|^|$f:|" "$expected_file")
	expect_invalid "bad/$name" "$f" "$expected"
	nbad=$((nbad + 1))
done
if [ "$nbad" -ge 25 ]; then ok "found the bad fixtures ($nbad)"
else not_ok "found the bad fixtures" "only $nbad in $fixtures/bad"; fi

# --- files no one writes on purpose --------------------------------------
: >"$T/empty.yml"
expect_invalid "empty file" "$T/empty.yml" "$T/empty.yml:1:1: empty pipeline file"

printf '\n# only a comment\n\n' >"$T/comments.yml"
expect_invalid "only comments" "$T/comments.yml" \
	"$T/comments.yml:1:1: empty pipeline file"

# The start of an ELF executable: someone passed a binary.
printf '\177ELF\002\001\001\000\000\000\000\000\003\000>\000' >"$T/garbage.yml"
expect_invalid "binary garbage" "$T/garbage.yml" \
	"$T/garbage.yml:1:1: binary data in pipeline file"

printf 'stages:\n  a:\n    run: make\n\000\000\000' >"$T/nul.yml"
expect_invalid "NUL bytes" "$T/nul.yml" "$T/nul.yml:4:1: binary data in pipeline file"

head -c 10485760 /dev/zero | tr '\000' '#' >"$T/huge.yml"
expect_invalid "10 MB file" "$T/huge.yml" \
	"$T/huge.yml:1:1: file is too large (10485760 bytes; the limit is 1048576)"

# Latin-1 "café": the e-acute is the single byte 0xe9.
printf 'stages:\n  build:\n    run: echo caf\351\n' >"$T/latin1.yml"
expect_invalid "non-UTF-8" "$T/latin1.yml" \
	"$T/latin1.yml:3:18: invalid UTF-8 byte 0xe9"

printf 'stages:\n  build:\n\trun: make\n' >"$T/tabs.yml"
expect_invalid "tab indentation" "$T/tabs.yml" \
	"$T/tabs.yml:3:1: tab character used for indentation (YAML allows spaces only)"

printf 'stages:\n  build:\n    run: make\n  test:\n    run: make check\n\t  needs: build\n' \
	>"$T/tabs2.yml"
expect_invalid "tab indentation, deeper" "$T/tabs2.yml" \
	"$T/tabs2.yml:6:1: tab character used for indentation (YAML allows spaces only)"

# 3 mappings + 200 lists; the 65th level is list 62, at column 10 + 61.
awk 'BEGIN {
	printf "stages:\n  deep:\n    run: make\n    env: "
	for (i = 0; i < 200; i++) printf "["
	for (i = 0; i < 200; i++) printf "]"
	printf "\n"
}' >"$T/deep.yml"
expect_invalid "deep nesting" "$T/deep.yml" \
	"$T/deep.yml:4:71: nesting too deep (more than 64 levels)"

# A million '[' fits in the size limit and must not hurt either.
awk 'BEGIN { for (i = 0; i < 1000000; i++) printf "["; printf "\n" }' >"$T/deeper.yml"
expect_invalid "very deep nesting" "$T/deeper.yml" \
	"$T/deeper.yml:1:65: nesting too deep (more than 64 levels)"

run_mlpipe validate "$T/nope.yml"
expect_eq "missing file: exit status" 2 "$rc"
expect_eq "missing file: one line" "mlpipe: $T/nope.yml: No such file or directory" "$err"
expect_eq "missing file: stdout" "" "$out"

# --- several files at once ------------------------------------------------
bad1="$fixtures/bad/needs.yml"
bad2="$fixtures/bad/cycles.yml"
good="$fixtures/good/minimal.yml"
expected=$(sed "s|^|$bad1:|" "${bad1%.yml}.expected"; sed "s|^|$bad2:|" "${bad2%.yml}.expected")
run_mlpipe validate "$bad1" "$bad2"
expect_eq "two bad files: exit status" 2 "$rc"
expect_eq "two bad files: problems of both, in order" "$expected" "$err"

run_mlpipe validate "$good" "$bad2"
expect_eq "good and bad: exit status" 2 "$rc"
expect_match "good and bad: the good one is ok" "^$good: ok \\(1 stages?\\)\$" "$out"
expect_eq "good and bad: problems of the bad one" \
	"$(sed "s|^|$bad2:|" "${bad2%.yml}.expected")" "$err"

full="$fixtures/good/full.yml"
all="$fixtures/good/all-keys.yml"
run_mlpipe validate "$full" "$all"
expect_eq "two good files: exit status" 0 "$rc"
expect_eq "two good files: both ok" "$full: ok (4 stages)
$all: ok (8 stages)" "$out"

finish
