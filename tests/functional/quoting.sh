#!/bin/sh
# Functional tests of how ${{ }} values reach the shell (issue: values in
# quotes or here-documents ran as code).  A first stage writes hostile
# values to $MLPIPE_OUTPUT; the next stage prints each one in every quoting
# context of docs/pipeline.md, through `mlpipe run` and /bin/sh.  Each
# must come back byte for byte, and nothing may create the marker file.
. "$(dirname "$0")/lib.sh"

mkdir -p "$T/p"
cd "$T/p"
M="$T/PWNED"

# --- the hostile values, one file each ---------------------------------------
mkdir values
printf '%s' "\$(touch $M)" > values/cmdsub
printf '%s' "\`touch $M\`" > values/backtick
printf '%s' "x\"; touch $M; echo \"" > values/dquote
printf '%s' "x'; touch $M; echo '" > values/squote
printf '%s' "'" > values/lone_squote
printf '%s' '\' > values/backslash
printf 'a\\\n$(touch %s)' "$M" > values/backslash_newline
printf 'line one\n"$(touch %s)"\nline three' "$M" > values/newlines
printf '%s' '${{ env.HOME }}' > values/expression
printf '%s' '$HOME ${HOME} $1 $$ * ? [a] ~' > values/expansions
printf '%s' "\$(touch $M)\`touch $M\`\"\$(touch $M)\"'\$(touch $M)'\\" > values/everything
# 1 MB: larger than one argument of execve can be (128 KiB)
awk 'BEGIN { for (i = 0; i < 15625; i++) printf "%s", "0123456789abcdef$(touch '"$M"')`x`\"'"'"'\\;|&<>\n*?[]{}~#%^+=,.:/-_ ABCD" }' \
	| head -c 999999 > values/big
printf 'Z' >> values/big
names=$(ls values)

{
	for n in $names; do
		printf '%s<<__MLPIPE_END__\n' "$n"
		cat "values/$n"
		printf '\n__MLPIPE_END__\n'
	done
} > all.out

out_expr() { printf '${{ stages.make.outputs.%s }}' "$1"; }

# --- one stage per value, every context ---------------------------------------
{
	echo "stages:"
	echo "  make:"
	echo "    run: cat all.out >> \"\$MLPIPE_OUTPUT\""
	for n in $names; do
		e=$(out_expr "$n")
		echo "  use_$n:"
		echo "    needs: [make]"
		echo "    run: |"
		echo "      mkdir -p got"
		echo "      printf '%s' $e > got/$n.unquoted"
		echo "      printf '%s' \"$e\" > got/$n.dquote"
		echo "      printf '%s' '$e' > got/$n.squote"
		echo "      printf '%s' x$e\"y\"'$e' > got/$n.mixed"
		echo "      cat > got/$n.heredoc <<EOF"
		echo "      $e"
		echo "      EOF"
		echo "      cat > got/$n.heredoc_quoted <<'EOF'"
		echo "      $e"
		echo "      EOF"
		echo "      v=\$(printf '%s.' \"$e\"); printf '%s' \"\${v%.}\" > got/$n.cmdsub"
		echo "      v=\`printf '%s.' $e\`; printf '%s' \"\${v%.}\" > got/$n.backtick"
		echo "      case x in x) printf '%s' \"$e\" > got/$n.case;; esac"
		echo "      printf '%s' ok > got/$n.comment # $e"
	done
} > quoting.yml

run_mlpipe validate quoting.yml
expect_eq "validate accepts every context it can quote" 0 "$rc"
run_mlpipe run quoting.yml
expect_eq "the run succeeds" 0 "$rc"
[ "$rc" = 0 ] || printf '%s\n%s\n' "$out" "$err" | head -20 | sed 's/^/# /'

for n in $names; do
	bad=
	for ctx in unquoted dquote squote cmdsub backtick case; do
		cmp -s "values/$n" "got/$n.$ctx" || bad="$bad $ctx"
	done
	{ printf x; cat "values/$n"; printf y; cat "values/$n"; } > want.mixed
	cmp -s want.mixed "got/$n.mixed" || bad="$bad mixed"
	{ cat "values/$n"; echo; } > want.heredoc
	cmp -s want.heredoc "got/$n.heredoc" || bad="$bad heredoc"
	cmp -s want.heredoc "got/$n.heredoc_quoted" || bad="$bad heredoc_quoted"
	[ "$(cat "got/$n.comment" 2>/dev/null)" = ok ] || bad="$bad comment"
	expect_eq "value '$n' comes back byte for byte in every context" "" "$bad"
done
if [ -e "$M" ]; then not_ok "no value ran as code" "$M exists"; else ok "no value ran as code"; fi

# --- GitHub Actions habits read right ------------------------------------------
cat > acc.yml <<'Y'
stages:
  eval:
    run: |
      echo '{"accuracy": 0.93}' > "$MLPIPE_METRICS"
  report:
    needs: [eval]
    run: |
      echo "acc=${{ stages.eval.metrics.accuracy }}" && echo 'id=${{ run.id }}'
Y
run_mlpipe run acc.yml
expect_eq "a metric inside double quotes" 0 "$rc"
run_mlpipe logs 2 report
expect_eq "prints the number, not a quoted one" "acc=0.93
id=2" "$out"

# --- a here-document value that would end it early is refused at run time -----
cat > hd.yml <<'Y'
stages:
  make:
    run: printf 'v<<END\na\nEOF\ntouch PWNED_HD\nEND\n' >> "$MLPIPE_OUTPUT"
  use:
    needs: [make]
    run: |
      cat <<EOF
      ${{ stages.make.outputs.v }}
      EOF
Y
run_mlpipe run hd.yml
expect_eq "a value that ends the here-document fails the stage" 1 "$rc"
expect_match "and says why" "line 'EOF' that would end the here-document early" "$out$err"
if [ -e PWNED_HD ]; then not_ok "and runs nothing" "PWNED_HD exists"; else ok "and runs nothing"; fi

# --- contexts that cannot be known are refused by validate --------------------
cat > refused.yml <<'Y'
stages:
  a:
    run: echo hi
  b:
    needs: [a]
    run: |
      eval "echo ${{ stages.a.outputs.v }}"
      sh -c 'echo ${{ stages.a.outputs.v }}'
      echo "$(( ${{ env.N }} + 1 ))"
      echo ${X:-${{ env.N }}}
      echo \${{ env.N }}
      echo ${{ env.N }} | sh
      echo "`echo ${{ env.N }}`"
      echo $(( ${{ run.id }} + ${{ stages.a.metrics.n }} ))
Y
run_mlpipe validate refused.yml
expect_eq "validate refuses expressions whose context is not known" 2 "$rc"
expect_match "eval, with FILE:LINE:COL and the hint" "refused.yml:7:18: \\$\\{\\{ stages.a.outputs.v \\}\\} is in the arguments of 'eval', so its value could run as code; pass it through env: and use \"\\\$NAME\" instead" "$err"
expect_match "sh -c" "refused.yml:8:19: .* 'sh -c'" "$err"
expect_match "arithmetic" "refused.yml:9:17: .*inside \\$\\(\\(\\.\\.\\.\\)\\)" "$err"
expect_match "parameter expansion" "refused.yml:10:17: .*inside \\$\\{\\.\\.\\.\\}" "$err"
expect_match "after a backslash" "refused.yml:11:13: .*after a backslash" "$err"
expect_match "a pipe into sh" "refused.yml:12:12: .*pipeline into 'sh'" "$err"
expect_match "a backquote in double quotes" "refused.yml:13:19: .*use \\$\\(\\.\\.\\.\\)" "$err"
expect_eq "seven problems, one line each (numbers may go anywhere)" 7 "$(printf '%s\n' "$err" | grep -c 'refused.yml:')"

cat > unterminated.yml <<'Y'
stages:
  a:
    run: echo "it is ${{ env.HOME }}
Y
run_mlpipe validate unterminated.yml
expect_eq "an unterminated quote around an expression is refused" 2 "$rc"
expect_match "where it opens" "unterminated.yml:3:15: unterminated \" in the command" "$err"

cat > train.yml <<'Y'
stages:
  a:
    run: echo hi
  t:
    needs: [a]
    train:
      ranks: 1
      command: eval "${{ stages.a.outputs.v }}"
Y
run_mlpipe validate train.yml
expect_eq "train.command follows the same rule" 2 "$rc"
expect_match "and says so" "train.yml:8:22: .*'eval'" "$err"

finish
