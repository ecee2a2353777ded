/*
 * fuzz-shell.c - fuzz target for the quoting-context scanner (src/base/shell.c).
 *
 * Each input is split in two.  The first part drives a small grammar that
 * builds a command around one ${{ env.V }}: nested $( ), backquotes,
 * "...", '...', here-documents (<<, <<'EOF', <<-), subshells, if, case,
 * pipes and comments, with filler words between them.  The second part is
 * the value.  The command is expanded as `run:` expands it and run with
 * /bin/sh; the property is the promise of docs/pipeline.md: the shell
 * prints the value byte for byte where the grammar put it, exits 0, and
 * runs nothing else (the value may try `touch` on a marker file, which
 * must not appear).  Only here-documents may refuse a value (a line that
 * is their delimiter, or a tab after a newline in <<-).
 *
 * Besides, the whole input is also scanned as an arbitrary command (no
 * shell is run for that): the scanner must not crash, leak or misbehave
 * on any text, which ASan/UBSan and libFuzzer check.
 *
 * Built two ways: with clang's -fsanitize=fuzzer by `make fuzz`, and with
 * tests/fuzz/driver.c into a test of `make check` that runs the seed
 * corpus and a few thousand pseudo-random inputs.
 */
#include "config.h"

#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/error.h"
#include "pipeline/expr.h"
#include "base/shell.h"
#include "base/util.h"

#define MARKER "/tmp/mlpipe-fuzz-pwned"

struct reader {
	const uint8_t *p;
	size_t n;
};

static unsigned next(struct reader *r)
{
	if (r->n == 0)
		return 0;
	r->n--;
	return *r->p++;
}

struct gen {
	struct mlp_buf cmd;
	struct mlp_buf before; /* what the command prints before the value */
	struct mlp_buf after;  /* ... and after it */
	bool comment;          /* the value sits in a comment: not printed */
	bool heredoc;          /* a here-document may refuse the value */
	int depth;
};

static const char *const fillers[] = {"a", "b-c", "x_1", "42", "%", "é", ".", ""};

static const char *filler(struct reader *r)
{
	return fillers[next(r) % MLP_ARRAY_SIZE(fillers)];
}

/*
 * Appends to g->cmd a command that prints, on its stdout, before + value
 * + after, where before/after are what this call adds to g->before and
 * g->after around the inner part.  in_backtick / in_dquote restrict what
 * may nest (a backquote inside either is refused by design).
 */
static void gen_command(struct gen *g, struct reader *r, bool in_backtick)
{
	unsigned choice = next(r) % (g->depth >= 4 ? 7 : 15);
	const char *p = filler(r), *s = filler(r);
	int d = g->depth;

	switch (choice) {
	case 0:
		mlp_buf_printf(&g->cmd, "printf '%%s' '%s'${{ env.V }}'%s'", p, s);
		break;
	case 1:
		mlp_buf_printf(&g->cmd, "printf '%%s' \"%s${{ env.V }}%s\"", p, s);
		break;
	case 2:
		mlp_buf_printf(&g->cmd, "printf '%%s' '%s${{ env.V }}%s'", p, s);
		break;
	case 3:
		if (in_backtick)
			goto plain; /* a newline in `...` is fine, but keep bodies flat */
		mlp_buf_printf(&g->cmd, "cat <<EOF%d\n%s${{ env.V }}%s\nEOF%d\n", d, p, s, d);
		g->heredoc = true;
		break;
	case 4:
		if (in_backtick)
			goto plain;
		mlp_buf_printf(&g->cmd, "cat <<'EOF%d'\n%s${{ env.V }}%s\nEOF%d\n", d, p, s, d);
		g->heredoc = true;
		break;
	case 5:
		if (in_backtick)
			goto plain;
		mlp_buf_printf(&g->cmd, "cat <<-EOF%d\n\t%s${{ env.V }}%s\n\tEOF%d\n", d, p, s, d);
		g->heredoc = true;
		break;
	case 6:
		mlp_buf_printf(&g->cmd, "printf '%%s' '%s%s' # ${{ env.V }}", p, s);
		g->comment = true;
		break;
	case 7: /* v=$(...) keeps trailing newlines with a '.' */
		mlp_buf_printf(&g->cmd, "v%d=$(", d);
		g->depth++;
		gen_command(g, r, in_backtick);
		g->depth--;
		mlp_buf_printf(&g->cmd, "\nprintf .); printf '%%s' \"${v%d%%.}\"", d);
		return;
	case 8:
		mlp_buf_printf(&g->cmd, "v%d=\"$(", d);
		g->depth++;
		gen_command(g, r, in_backtick);
		g->depth--;
		mlp_buf_printf(&g->cmd, "\nprintf .)\"; printf '%%s' \"${v%d%%.}\"", d);
		return;
	case 9:
		if (in_backtick)
			goto plain;
		mlp_buf_printf(&g->cmd, "v%d=`", d);
		g->depth++;
		gen_command(g, r, true);
		g->depth--;
		mlp_buf_printf(&g->cmd, "\nprintf .`; printf '%%s' \"${v%d%%.}\"", d);
		return;
	case 10:
		mlp_buf_puts(&g->cmd, " ( "); /* "$( (" is not "$((" */
		g->depth++;
		gen_command(g, r, in_backtick);
		g->depth--;
		mlp_buf_puts(&g->cmd, "\n)");
		return;
	case 11:
		mlp_buf_puts(&g->cmd, "if true; then ");
		g->depth++;
		gen_command(g, r, in_backtick);
		g->depth--;
		mlp_buf_puts(&g->cmd, "\nfi");
		return;
	case 12:
		mlp_buf_puts(&g->cmd, "case x in (x) ");
		g->depth++;
		gen_command(g, r, in_backtick);
		g->depth--;
		mlp_buf_puts(&g->cmd, "\n;; esac");
		return;
	case 13:
		mlp_buf_puts(&g->cmd, "true && { ");
		g->depth++;
		gen_command(g, r, in_backtick);
		g->depth--;
		mlp_buf_puts(&g->cmd, "\n} | cat");
		return;
	default:
plain:
		mlp_buf_printf(&g->cmd, "printf '%%s' %s${{ env.V }}%s", p, s);
		break;
	}
	/* a leaf: it printed p, the value, s (a here-document adds "\n") */
	mlp_buf_puts(&g->before, p);
	if (choice >= 3 && choice <= 5 && !in_backtick)
		mlp_buf_printf(&g->after, "%s\n", s);
	else
		mlp_buf_puts(&g->after, s);
}

static const char *value_now;

static int resolve(const char **out, const struct mlp_expr_ref *ref, void *payload)
{
	(void)ref;
	(void)payload;
	*out = value_now;
	return 0;
}

static char *run_sh(const char *command, int *status, size_t *len)
{
	int fds[2];
	pid_t pid;
	struct mlp_buf out = {0};
	char chunk[4096];
	ssize_t n;

	if (pipe(fds) != 0)
		abort();
	pid = fork();
	if (pid < 0)
		abort();
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		dup2(fds[1], 1);
		dup2(null, 0);
		dup2(null, 2);
		close(fds[0]);
		close(fds[1]);
		alarm(10);
		execl("/bin/sh", "sh", "-c", command, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	while ((n = read(fds[0], chunk, sizeof(chunk))) > 0)
		mlp_buf_add(&out, chunk, (size_t)n);
	close(fds[0]);
	while (waitpid(pid, status, 0) < 0)
		;
	*len = out.len;
	mlp_buf_putc(&out, '\0');
	return mlp_buf_detach(&out);
}

static void check_generated(const uint8_t *data, size_t size)
{
	struct reader r = {data, size};
	struct gen g = {0};
	size_t split = size ? data[0] % 32 : 0;
	char *value, *cmd = NULL, *got, *want;
	size_t vlen, len;
	int status;

	if (split > size)
		split = size;
	r.n = split;
	if (size)
		r.p = data + 1, r.n = split ? split - 1 : 0;
	gen_command(&g, &r, false);
	vlen = size - split;
	value = xmalloc(vlen + 1);
	for (size_t k = 0; k < vlen; k++)
		value[k] = data[split + k] ? (char)data[split + k] : 'x';
	value[vlen] = '\0';
	value_now = value;
	if (mlp_expr_expand(&cmd, mlp_buf_str(&g.cmd), MLP_EXPR_SHELL, resolve, NULL) != 0) {
		if (!g.heredoc) {
			fprintf(stderr, "refused outside a here-document: %s\ncommand: %s\n",
			        mlp_error_last(), mlp_buf_str(&g.cmd));
			abort();
		}
		goto done;
	}
	unlink(MARKER);
	got = run_sh(cmd, &status, &len);
	want = g.comment
	               ? xasprintf("%s%s", mlp_buf_str(&g.before), mlp_buf_str(&g.after))
	               : xasprintf("%s%s%s", mlp_buf_str(&g.before), value, mlp_buf_str(&g.after));
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || len != strlen(want) ||
	    memcmp(got, want, len) != 0) {
		size_t at = 0;

		while (at < len && got[at] == want[at])
			at++;
		fprintf(stderr,
		        "command:\n%s\nprinted [%s] (status %d, %zu bytes)\nexpected [%s] (%zu "
		        "bytes)\nfirst difference at byte %zu\n",
		        cmd, got, status, len, want, strlen(want), at);
		if (getenv("FUZZ_DUMP")) {
			FILE *f = fopen("/tmp/fz.got", "w");
			fwrite(got, 1, len, f);
			fclose(f);
			f = fopen("/tmp/fz.want", "w");
			fputs(want, f);
			fclose(f);
			f = fopen("/tmp/fz.cmd", "w");
			fputs(cmd, f);
			fclose(f);
		}
		abort();
	}
	if (access(MARKER, F_OK) == 0) {
		fprintf(stderr, "the value ran code: %s\n", cmd);
		abort();
	}
	free(got);
	free(want);
	free(cmd);
done:
	free(value);
	mlp_buf_free(&g.cmd);
	mlp_buf_free(&g.before);
	mlp_buf_free(&g.after);
}

/* Any text as a command: scan, check and expand without crashing. */
static void check_arbitrary(const uint8_t *data, size_t size)
{
	char *text = xmalloc(size + 1), *out = NULL;
	struct mlp_sh_sites sites = {0};

	for (size_t k = 0; k < size; k++)
		text[k] = data[k] ? (char)data[k] : ' ';
	text[size] = '\0';
	(void)mlp_sh_scan(&sites, text, NULL);
	mlp_sh_sites_free(&sites);
	value_now = "v'\"`$\\\n";
	if (mlp_expr_expand(&out, text, MLP_EXPR_SHELL, resolve, NULL) == 0)
		free(out);
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 1 << 16)
		return 0;
	check_arbitrary(data, size);
	check_generated(data, size);
	return 0;
}
