/*
 * test-shell.c - the quoting-context scanner (src/base/shell.c): a table of
 * commands and the context it must find for their expression, and every
 * context run through real shells (/bin/sh, and bash and dash when
 * installed) with hostile values, which must come back byte for byte with
 * nothing else run.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/error.h"
#include "pipeline/expr.h"
#include "base/shell.h"

enum {
	U = MLP_SH_UNQUOTED,
	D = MLP_SH_DQUOTE,
	S = MLP_SH_SQUOTE,
	H = MLP_SH_HEREDOC,
	L = MLP_SH_HEREDOC_LITERAL,
	C = MLP_SH_COMMENT
};

struct context_case {
	const char *command; /* one ${{ x }}, unless noted */
	int context;
	bool backtick;
	bool uncertain;
};

/* X stands for the expression. */
#define X "${{ env.V }}"

static const struct context_case context_cases[] = {
        {"echo " X, U, false, false},
        {"echo a" X "b", U, false, false},
        {"echo \"" X "\"", D, false, false},
        {"echo \"a'b" X "\"", D, false, false},
        {"echo '" X "'", S, false, false},
        {"echo 'a\"b" X "'", S, false, false},
        {"echo \"it's\" " X, U, false, false},
        {"echo 'a\\' " X, U, false, false}, /* a backslash in '...' is literal */
        {"echo \"a\\\"\" " X, U, false, false},
        {"echo \"a\\\"" X "\"", D, false, false},
        {"echo $(echo " X ")", U, false, false},
        {"echo \"$(echo '" X "')\"", S, false, false},
        {"echo \"$(echo \"" X "\")\"", D, false, false},
        {"echo \"$(echo " X ")\"", U, false, false},
        {"echo $(case a in a) echo " X ";; esac)", U, false, false},
        {"echo $(case a in (a) echo \"" X "\";; esac)", D, false, false},
        {"echo `echo " X "`", U, true, false},
        {"echo `echo \"" X "\"`", D, true, false},
        {"echo `echo '" X "'`", S, true, false},
        {"echo \"`echo " X "`\"", U, false, true},
        {"echo `echo \\`echo " X "\\``", U, false, true},
        {"echo # " X, C, false, false},
        {"echo a#" X, U, false, false},
        {"echo \"# \"" X, U, false, false},
        {"cat <<EOF\n" X "\nEOF\n", H, false, false},
        {"cat <<EOF\n\"" X "\"\nEOF\n", H, false, false},
        {"cat <<EOF\n'" X "'\nEOF\n", H, false, false},
        {"cat <<'EOF'\n" X "\nEOF\n", L, false, false},
        {"cat <<\"EOF\"\n$(" X ")\nEOF\n", L, false, false},
        {"cat <<\\EOF\n" X "\nEOF\n", L, false, false},
        {"cat <<E'O'F\n" X "\nEOF\n", L, false, false},
        {"cat <<-EOF\n\t" X "\n\tEOF\n", H, false, false},
        {"cat <<EOF\n$(echo " X ")\nEOF\n", U, false, false},
        {"cat <<EOF; echo " X "\nbody\nEOF\n", U, false, false},
        {"cat <<A <<B\na\nA\n" X "\nB\n", H, false, false},
        {"cat <<EOF\nEOF\necho '" X "'\n", S, false, false},
        {"cat <<'EOF'\n'\nEOF\necho \"" X "\"\n", D, false, false},
        {"echo \"" X "\" | tr a b", D, false, false},
        {"x=" X " y=\""
         "a"
         "\"",
         U, false, false},
        {"for i in " X "; do echo \"$i\"; done", U, false, false},
        {"if true; then echo \"" X "\"; fi", D, false, false},
        {"echo $" X, U, false, true}, /* "$${{": the shell reads $$ */
        {"echo $$" X, U, false, false},
        /* not known for sure */
        {"eval \"echo " X "\"", D, false, true},
        {"eval echo " X, U, false, true},
        {"eval \"$(echo " X ")\"", U, false, true},
        {"sh -c 'echo " X "'", S, false, true},
        {"/bin/bash -ec \"echo " X "\"", D, false, true},
        {"env FOO=1 sh -c 'echo " X "'", S, false, true},
        {"echo " X " | sh", U, false, true},
        {"echo " X " | bash -s", U, false, true},
        {"ssh host echo " X, U, false, true},
        {"python3 -c \"print('" X "')\"", S, false, true},
        {"perl -e 'print \"" X "\"'", D, false, true},
        {"awk '{ print \"" X "\" }'", D, false, true},
        {"sed \"s/a/" X "/\"", D, false, true},
        {"echo $((" X " + 1))", U, false, true},
        {"echo ${A:-" X "}", U, false, true},
        {"echo \"${A:-" X "}\"", D, false, true},
        {"echo $'" X "'", U, false, true},
        {"echo \\" X, U, false, true},
        {"echo \"\\" X "\"", D, false, true},
        {"cat <<EOF\n\\" X "\nEOF\n", H, false, true},
        {"sudo sh -c \"" X "\"", D, false, true},
        {"bash -c -e 'echo " X "'", S, false, true},
        {"awk -F, '{ print \"" X "\" }' file", D, false, true},
        {"awk -v n=1 \"" X "\"", D, false, true},
        {"sed -n -e \"s/a/" X "/\" file", D, false, true},
        {"perl -pe 's/a/" X "/'", S, false, true},
        {"xargs rm " X, U, false, true},
        {". " X, U, false, true},
        /* ...but the words that are data are not */
        {"sh -c 'echo \"$1\"' sh " X, U, false, false},
        {"python3 -c 'import sys; print(sys.argv[1])' " X, U, false, false},
        {"awk -F, '{ print }' " X, U, false, false},
        {"awk -v n=" X " '{ print n }' f", U, false, false},
        {"awk -f prog.awk " X, U, false, false},
        {"sed -e 's/a/b/' " X, U, false, false},
        {"sed -i 's/a/b/' \"" X "\"", D, false, false},
        {"sudo rm -f " X, U, false, false},
        /* ...and neither is the next command */
        {"eval true; echo " X, U, false, false},
        {"sh -c true && echo \"" X "\"", D, false, false},
        {"sh script.sh " X, U, false, false},
        {"python3 train.py --lr " X, U, false, false},
        {"echo " X " | tr a b; echo x | sh", U, false, false},
};

static void test_shell__contexts(void **state)
{
	(void)state;
	for (size_t k = 0; k < sizeof(context_cases) / sizeof(context_cases[0]); k++) {
		const struct context_case *c = &context_cases[k];
		struct mlp_sh_sites sites = {0};
		const struct mlp_sh_site *site;
		const char *at = strstr(c->command, "${{");
		int rc = mlp_sh_scan(&sites, c->command, NULL);

		if (rc != 0)
			fail_msg("case %zu: %s: scan failed: %s", k, c->command, mlp_error_last());
		site = mlp_sh_sites_find(&sites, (size_t)(at - c->command));
		if (c->uncertain) {
			if (site != NULL && site->uncertain == NULL)
				fail_msg("case %zu: %s: expected uncertain, got context %d", k,
				         c->command, site->context);
		} else {
			if (site == NULL)
				fail_msg("case %zu: %s: no site", k, c->command);
			if (site->uncertain)
				fail_msg("case %zu: %s: unexpectedly uncertain: %s", k, c->command,
				         site->uncertain);
			if ((int)site->context != c->context || site->backtick != c->backtick)
				fail_msg("case %zu: %s: context %d backtick %d, expected %d %d", k,
				         c->command, site->context, site->backtick, c->context,
				         c->backtick);
		}
		mlp_sh_sites_free(&sites);
	}
}

static void test_shell__heredoc_sites_name_their_delimiter(void **state)
{
	struct mlp_sh_sites sites = {0};

	(void)state;
	assert_int_equal(
	        mlp_sh_scan(&sites, "cat <<-'END'\n\t" X "\n\tEND\ncat <<EOF\n" X "\nEOF\n", NULL),
	        0);
	assert_int_equal(sites.len, 2);
	assert_string_equal(sites.items[0].delimiter, "END");
	assert_true(sites.items[0].strip_tabs);
	assert_int_equal(sites.items[0].context, MLP_SH_HEREDOC_LITERAL);
	assert_string_equal(sites.items[1].delimiter, "EOF");
	assert_false(sites.items[1].strip_tabs);
	mlp_sh_sites_free(&sites);
}

static void test_shell__unreadable_commands_are_errors(void **state)
{
	static const struct {
		const char *command;
		size_t offset;
	} cases[] = {
	        {"echo \"" X, 5},    {"echo '" X, 5},      {"echo $(echo " X, 5}, {"echo `" X, 5},
	        {"echo ${A:-" X, 5}, {"cat <<" X "\n", 6}, {"(echo " X, 0},       {"echo $((" X, 5},
	};

	(void)state;
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		struct mlp_sh_sites sites = {0};
		size_t off = 999;

		if (mlp_sh_scan(&sites, cases[k].command, &off) != MLP_EINVAL)
			fail_msg("case %zu: %s: expected an error", k, cases[k].command);
		if (off != cases[k].offset)
			fail_msg("case %zu: %s: error at %zu, expected %zu", k, cases[k].command,
			         off, cases[k].offset);
		mlp_sh_sites_free(&sites);
	}
}

static void test_shell__commands_without_expressions_are_not_scanned(void **state)
{
	struct mlp_sh_sites sites = {0};

	(void)state;
	assert_int_equal(mlp_sh_scan(&sites, "echo \"unterminated", NULL), 0);
	assert_int_equal(sites.len, 0);
}

/* ---- through real shells ---------------------------------------------- */

static char marker_dir[64];
static const char *value_now;

static int resolve(const char **out, const struct mlp_expr_ref *ref, void *payload)
{
	(void)ref;
	(void)payload;
	*out = value_now;
	return 0;
}

/* Runs command with shell; returns its stdout (caller frees) and exit
 * status in *status. */
static char *run_shell(const char *shell, const char *command, int *status, size_t *len)
{
	int fds[2];
	pid_t pid;
	struct mlp_buf out = {0};
	char chunk[65536];
	ssize_t n;

	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		dup2(fds[1], 1);
		dup2(null, 2);
		dup2(null, 0);
		close(fds[0]);
		close(fds[1]);
		execl(shell, shell, "-c", command, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	while ((n = read(fds[0], chunk, sizeof(chunk))) > 0)
		mlp_buf_add(&out, chunk, (size_t)n);
	close(fds[0]);
	assert_int_equal(waitpid(pid, status, 0), pid);
	*len = out.len;
	if (out.len == 0)
		mlp_buf_putc(&out, '\0');
	return mlp_buf_detach(&out);
}

struct template
{
	const char *command;        /* V stands for the expression */
	const char *before, *after; /* what it prints around the value */
	bool heredoc;
};

static const struct template templates[] = {
        {"printf '%s' x" X "y", "x", "y", false},
        {"printf '%s' \"x" X "y\"", "x", "y", false},
        {"printf '%s' 'x" X "y'", "x", "y", false},
        {"printf '%s' \"x\"'" X "'\"y\"", "x", "y", false},
        {"cat <<EOF\nx" X "y\nEOF", "x", "y\n", true},
        {"cat <<'EOF'\nx" X "y\nEOF", "x", "y\n", true},
        {"cat <<-EOF\n\tx" X "y\n\tEOF", "x", "y\n", true},
        {"v=$(printf '%s.' \"x" X "y\"); printf '%s' \"${v%.}\"", "x", "y", false},
        {"v=\"$(printf '%s.' x" X "y)\"; printf '%s' \"${v%.}\"", "x", "y", false},
        {"v=$(cat <<EOF\nx" X "y.\nEOF\n); printf '%s' \"${v%.}\"", "x", "y", true},
        {"v=`printf '%s.' x" X "y`; printf '%s' \"${v%.}\"", "x", "y", false},
        {"v=`printf '%s.' \"x" X "y\"`; printf '%s' \"${v%.}\"", "x", "y", false},
        {"v=`printf '%s.' 'x" X "y'`; printf '%s' \"${v%.}\"", "x", "y", false},
        {"case a in a) printf '%s' \"x" X "y\";; esac", "x", "y", false},
        {"printf '%s' x # " X, "x", "", false},
        {"printf '%s' \"x" X "y\" | cat", "x", "y", false},
};

static const char *values[] = {
        "plain",
        "",
        "$(touch MARK/a)",
        "`touch MARK/b`",
        "'; touch MARK/c; '",
        "\"; touch MARK/d; echo \"",
        "x\"; touch MARK/e; echo \"",
        "'",
        "\"",
        "\\",
        "\\\\",
        "a\\",
        "\\'",
        "\\\"",
        "$HOME ${HOME} $1 $$ $? $#",
        "line one\nline two\n",
        "\n\n",
        "a\nEOF2\nb",
        "${{ env.V }}",
        "*?[a] ~ !x {a,b}",
        "\t tab",
        "trailing\\\n$(touch MARK/f)",
        "'\"'\"`$(`",
        "\xc3\xa9\xe2\x82\xac \x80\xff\x81\x88",
        "\r\n",
        "-n",
        "--",
        "a; touch MARK/g",
        "a && touch MARK/h",
        "a | touch MARK/i",
        "$(touch MARK/j)`touch MARK/k`\"$(touch MARK/l)\"'$(touch MARK/m)'",
};

static int count_files(const char *dir)
{
	char *cmd = xasprintf("ls -A %s | wc -l", dir);
	FILE *f = popen(cmd, "r");
	int n = -1;

	free(cmd);
	if (f) {
		if (fscanf(f, "%d", &n) != 1)
			n = -1;
		pclose(f);
	}
	return n;
}

static char *with_marker(const char *value)
{
	struct mlp_buf b = {0};

	for (const char *p = value; *p; p++) {
		if (strncmp(p, "MARK", 4) == 0) {
			mlp_buf_puts(&b, marker_dir);
			p += 3;
		} else {
			mlp_buf_putc(&b, *p);
		}
	}
	mlp_buf_putc(&b, '\0');
	return mlp_buf_detach(&b);
}

static void clear_markers(void)
{
	char *cmd = xasprintf("rm -rf %s/* %s/.[!.]*", marker_dir, marker_dir);

	assert_int_equal(system(cmd), 0);
	free(cmd);
}

static void round_trip(const char *shell)
{
	clear_markers();
	for (size_t v = 0; v < sizeof(values) / sizeof(values[0]); v++) {
		char *value = with_marker(values[v]);

		for (size_t t = 0; t < sizeof(templates) / sizeof(templates[0]); t++) {
			const struct template *tp = &templates[t];
			char *cmd = NULL, *got, *want;
			int status, rc;
			size_t len;

			value_now = value;
			rc = mlp_expr_expand(&cmd, tp->command, MLP_EXPR_SHELL, resolve, NULL);
			if (rc != 0) {
				/* only a here-document may refuse a value: one with its
				 * delimiter alone on a line, or a tab after a newline in <<- */
				if (!tp->heredoc)
					fail_msg("%s: template %zu refused value %zu: %s", shell, t,
					         v, mlp_error_last());
				continue;
			}
			got = run_shell(shell, cmd, &status, &len);
			if (strstr(tp->command, "# ")) {
				want = xasprintf("%s%s", tp->before, tp->after);
			} else {
				want = xasprintf("%s%s%s", tp->before, value, tp->after);
			}
			if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || len != strlen(want) ||
			    memcmp(got, want, len) != 0)
				fail_msg("%s: template %zu value %zu: command\n%s\nprinted [%.*s] "
				         "(status %d), expected [%s]",
				         shell, t, v, cmd, (int)len, got, status, want);
			if (count_files(marker_dir) != 0)
				fail_msg("%s: template %zu value %zu ran code: %s", shell, t, v,
				         cmd);
			free(got);
			free(want);
			free(cmd);
		}
		free(value);
	}
}

static void test_shell__values_come_back_byte_for_byte_in_sh(void **state)
{
	(void)state;
	round_trip("/bin/sh");
}

static void test_shell__values_come_back_byte_for_byte_in_other_shells(void **state)
{
	static const char *const shells[] = {"/bin/dash", "/bin/bash", "/usr/bin/dash",
	                                     "/usr/bin/bash"};
	int ran = 0;

	(void)state;
	for (size_t k = 0; k < sizeof(shells) / sizeof(shells[0]); k++) {
		if (access(shells[k], X_OK) == 0) {
			round_trip(shells[k]);
			ran++;
		}
	}
	if (ran == 0)
		print_message("# neither dash nor bash is installed\n");
}

static void test_shell__heredoc_refuses_a_value_that_ends_it(void **state)
{
	char *cmd = NULL;

	(void)state;
	value_now = "a\nEOF\ntouch /tmp/x";
	assert_int_equal(
	        mlp_expr_expand(&cmd, "cat <<EOF\n" X "\nEOF\n", MLP_EXPR_SHELL, resolve, NULL),
	        MLP_EINVAL);
	assert_non_null(strstr(mlp_error_last(), "line 'EOF' that would end the here-document"));
	value_now = "EO";
	assert_int_equal(
	        mlp_expr_expand(&cmd, "cat <<EOF\n" X "F\nEOF\n", MLP_EXPR_SHELL, resolve, NULL),
	        MLP_EINVAL);
	value_now = "a\n\tEOF";
	assert_int_equal(
	        mlp_expr_expand(&cmd, "cat <<-EOF\n" X "\nEOF\n", MLP_EXPR_SHELL, resolve, NULL),
	        MLP_EINVAL);
	value_now = "a\n\tb";
	assert_int_equal(
	        mlp_expr_expand(&cmd, "cat <<-EOF\n" X "\nEOF\n", MLP_EXPR_SHELL, resolve, NULL),
	        MLP_EINVAL);
	assert_non_null(strstr(mlp_error_last(), "tab"));
	value_now = "EOF";
	assert_int_equal(
	        mlp_expr_expand(&cmd, "cat <<'EOF'\n" X "\nEOF\n", MLP_EXPR_SHELL, resolve, NULL),
	        MLP_EINVAL);
	/* the same value elsewhere on the line is fine */
	assert_int_equal(
	        mlp_expr_expand(&cmd, "cat <<EOF\n[" X "]\nEOF\n", MLP_EXPR_SHELL, resolve, NULL),
	        0);
	assert_string_equal(cmd, "cat <<EOF\n[EOF]\nEOF\n");
	free(cmd);
}

static void test_shell__uncertain_contexts_take_numbers_only(void **state)
{
	char *cmd = NULL;

	(void)state;
	value_now = "5";
	assert_int_equal(mlp_expr_expand(&cmd,
	                                 "echo $((${{ run.id }} + ${{ stages.a.metrics.n }}))",
	                                 MLP_EXPR_SHELL, resolve, NULL),
	                 0);
	assert_string_equal(cmd, "echo $((5 + 5))");
	free(cmd);
	assert_int_equal(
	        mlp_expr_expand(&cmd, "echo $((" X " + 1))", MLP_EXPR_SHELL, resolve, NULL),
	        MLP_EINVAL);
	assert_non_null(strstr(mlp_error_last(), "inside $((...))"));
}

static int setup(void **state)
{
	(void)state;
	snprintf(marker_dir, sizeof(marker_dir), "%s", "/tmp/mlpipe-shell-XXXXXX");
	return mkdtemp(marker_dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char *cmd = xasprintf("rm -rf %s", marker_dir);
	int rc;

	(void)state;
	rc = system(cmd);
	free(cmd);
	return rc == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_shell__contexts),
	        cmocka_unit_test(test_shell__heredoc_sites_name_their_delimiter),
	        cmocka_unit_test(test_shell__unreadable_commands_are_errors),
	        cmocka_unit_test(test_shell__commands_without_expressions_are_not_scanned),
	        cmocka_unit_test(test_shell__values_come_back_byte_for_byte_in_sh),
	        cmocka_unit_test(test_shell__values_come_back_byte_for_byte_in_other_shells),
	        cmocka_unit_test(test_shell__heredoc_refuses_a_value_that_ends_it),
	        cmocka_unit_test(test_shell__uncertain_contexts_take_numbers_only),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
