/*
 * shell.c - writing ${{ }} values for the quoting context the scanner
 * (shell-scan.c) found them in, and running the expanded command (see
 * shell.h).
 */
#include "config.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "base/shell.h"

/* The kernel refuses one argument longer than 32 pages (MAX_ARG_STRLEN). */
#define ARG_MAX_ONE (128 * 1024)

void mlp_sh_sites_free(struct mlp_sh_sites *sites)
{
	for (size_t k = 0; k < sites->len; k++) {
		free(sites->items[k].delimiter);
		free(sites->items[k].uncertain);
	}
	free(sites->items);
	memset(sites, 0, sizeof(*sites));
}

const struct mlp_sh_site *mlp_sh_sites_find(const struct mlp_sh_sites *sites, size_t offset)
{
	for (size_t k = 0; k < sites->len; k++)
		if (sites->items[k].offset == offset)
			return &sites->items[k];
	return NULL;
}

/* ---- writing values ---------------------------------------------------- */

static void escape(struct mlp_buf *out, const char *s, size_t len, const char *special)
{
	for (size_t k = 0; k < len; k++) {
		if (strchr(special, s[k]) && s[k] != '\0')
			mlp_buf_putc(out, '\\');
		mlp_buf_putc(out, s[k]);
	}
}

enum heredoc_problem { HEREDOC_OK, HEREDOC_ENDS, HEREDOC_DASH_BYTE };

/*
 * What the lines of line_prefix + text + the rest of the command's line
 * would do to the here-document: one that is its delimiter ends it early;
 * one that starts with part of the delimiter followed by a byte >= 0x80
 * loses that byte in dash 0.5.12 (Debian's /bin/sh: "E\xc3\xa9" under
 * <<EOF reads back as "E\xa9"), so the value would not arrive whole.
 */
static enum heredoc_problem heredoc_lines(const struct mlp_sh_site *site, const struct mlp_buf *out,
                                          const char *text, size_t len, const char *rest)
{
	const char *prefix = out->len ? mlp_buf_str(out) : "";
	const char *last_nl = strrchr(prefix, '\n');
	struct mlp_buf all = {0};
	const char *rest_nl = strchr(rest, '\n');
	enum heredoc_problem found = HEREDOC_OK;
	size_t dlen = strlen(site->delimiter), plen;

	mlp_buf_puts(&all, last_nl ? last_nl + 1 : prefix);
	plen = all.len;
	mlp_buf_add(&all, text, len);
	mlp_buf_add(&all, rest, rest_nl ? (size_t)(rest_nl - rest) : strlen(rest));
	for (const char *line = mlp_buf_str(&all); line && !found;) {
		const char *nl = strchr(line, '\n');
		size_t l = nl ? (size_t)(nl - line) : strlen(line);

		if (site->strip_tabs)
			while (l > 0 && *line == '\t') {
				line++;
				l--;
			}
		if (l == dlen && memcmp(line, site->delimiter, l) == 0) {
			found = HEREDOC_ENDS;
		} else {
			size_t k = 0;

			while (k < l && k < dlen && line[k] == site->delimiter[k])
				k++;
			/* A byte before the value is the command's own: the value
			 * does not change what dash does to it. */
			if (k > 0 && k < l && (unsigned char)line[k] >= 0x80 &&
			    (size_t)(line + k - all.data) >= plen)
				found = HEREDOC_DASH_BYTE;
		}
		line = nl ? nl + 1 : NULL;
	}
	mlp_buf_free(&all);
	return found;
}

int mlp_sh_quote(struct mlp_buf *out, const struct mlp_sh_site *site, const char *value,
                 const char *rest)
{
	struct mlp_buf q = {0};
	size_t len = strlen(value);

	switch (site->context) {
	case MLP_SH_UNQUOTED:
		mlp_shell_quote(&q, value);
		break;
	case MLP_SH_DQUOTE:
		escape(&q, value, len, "\\\"$`");
		break;
	case MLP_SH_SQUOTE:
		for (size_t k = 0; k < len; k++) {
			if (value[k] == '\'')
				mlp_buf_puts(&q, "'\\''");
			else
				mlp_buf_putc(&q, value[k]);
		}
		break;
	case MLP_SH_HEREDOC:
		escape(&q, value, len, "\\$`");
		break;
	case MLP_SH_HEREDOC_LITERAL:
		mlp_buf_add(&q, value, len);
		break;
	case MLP_SH_COMMENT:
		for (size_t k = 0; k < len; k++)
			mlp_buf_putc(&q, value[k] == '\n' ? ' ' : value[k]);
		break;
	}
	if ((site->context == MLP_SH_HEREDOC || site->context == MLP_SH_HEREDOC_LITERAL) &&
	    site->strip_tabs && strstr(value, "\n\t")) {
		mlp_error_set("the value has a line that starts with a tab, which <<- would "
		              "remove (use << or pass it through env: instead)");
		mlp_buf_free(&q);
		return MLP_EINVAL;
	}
	if (site->context == MLP_SH_HEREDOC || site->context == MLP_SH_HEREDOC_LITERAL) {
		switch (heredoc_lines(site, out, q.len ? q.data : "", q.len, rest)) {
		case HEREDOC_OK:
			break;
		case HEREDOC_ENDS:
			mlp_error_set("the value has a line '%s' that would end the here-document "
			              "early (pass it through env: instead)",
			              site->delimiter);
			mlp_buf_free(&q);
			return MLP_EINVAL;
		case HEREDOC_DASH_BYTE:
			mlp_error_set(
			        "the value makes a line that starts like the here-document's "
			        "delimiter '%s' and goes on with a non-ASCII byte, which dash "
			        "(/bin/sh on Debian) drops; pass it through env: instead",
			        site->delimiter);
			mlp_buf_free(&q);
			return MLP_EINVAL;
		}
	}
	if (site->backtick)
		escape(out, q.len ? q.data : "", q.len, "\\`$");
	else
		mlp_buf_add(out, q.len ? q.data : "", q.len);
	mlp_buf_free(&q);
	return 0;
}

int mlp_sh_argv(struct mlp_strv *argv, char *command, const char *script_path)
{
	size_t len = strlen(command);

	if (len < ARG_MAX_ONE - 1) {
		mlp_strv_push(argv, "/bin/sh");
		mlp_strv_push(argv, "-c");
		mlp_strv_push_owned(argv, command);
		return 0;
	}
	if (mlp_write_file_atomic(script_path, command, len, 0600) != 0) {
		free(command);
		return MLP_EIO;
	}
	free(command);
	mlp_strv_push(argv, "/bin/sh");
	mlp_strv_push(argv, script_path);
	return 0;
}
