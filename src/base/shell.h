/*
 * shell.h - where a ${{ }} expression sits in a /bin/sh command, and how
 * its value must be written there so that it stays data.
 *
 * A scanner of POSIX sh quoting walks a command (expressions still in it)
 * and gives each expression its context: a word of its own, inside "...",
 * inside '...', in a here-document (delimiter quoted or not), in a comment,
 * and whether it sits inside one level of `...`.  mlp_sh_quote() then
 * writes a value so that the shell reads back exactly that value and
 * nothing else: single-quoted as a word, backslash-escaped inside double
 * quotes, '\'' spliced inside single quotes, and so on (docs/pipeline.md
 * has the table).
 *
 * Where the context cannot be known for sure, the site carries a reason
 * instead: inside ${...}, $((...)), $'...', a backquote inside double
 * quotes, after a backslash, or in the arguments of a command that runs
 * its arguments as code (eval, sh -c, ssh, python -c, a pipe into sh ...).
 * A value that can hold any text may not be placed there (validate refuses
 * it with a hint to pass it through `env:`); a value that is always a
 * number (run.id, a metric) can, since digits mean nothing to any shell.
 *
 * This is the base layer: it includes only util.h and error.h.
 */
#ifndef MLP_SHELL_H
#define MLP_SHELL_H

#include <stdbool.h>
#include <stddef.h>

#include "base/util.h"

enum mlp_sh_context {
	MLP_SH_UNQUOTED,        /* a word, or part of one: '...'-quoted */
	MLP_SH_DQUOTE,          /* inside "...": \ " $ ` escaped */
	MLP_SH_SQUOTE,          /* inside '...': each ' spliced as '\'' */
	MLP_SH_HEREDOC,         /* here-document, unquoted delimiter: \ $ ` escaped */
	MLP_SH_HEREDOC_LITERAL, /* here-document, quoted delimiter: as is */
	MLP_SH_COMMENT,         /* after #: newlines become spaces */
};

struct mlp_sh_site {
	size_t offset; /* of "${{" in the command */
	enum mlp_sh_context context;
	bool backtick;   /* inside `...`: escaped once more for it */
	char *delimiter; /* here-documents: the delimiter, quotes removed (owned) */
	bool strip_tabs; /* here-documents opened with <<- */
	/* Non-NULL: the context is not known for sure, and this says why
	 * ("inside $((...))", "in the arguments of 'eval', ..."; owned). */
	char *uncertain;
};

struct mlp_sh_sites {
	struct mlp_sh_site *items;
	size_t len, cap;
};

/*
 * Scans a command for the contexts of its ${{ }} expressions, appending one
 * site per expression to *out (which the caller frees with
 * mlp_sh_sites_free, also on failure).  A command the scanner cannot read
 * to its end (an unterminated quote, $( or here-document delimiter) is
 * MLP_EINVAL with a message set and *err_offset where the construct starts;
 * a command with no expression is not scanned and always succeeds.
 */
int mlp_sh_scan(struct mlp_sh_sites *out, const char *command, size_t *err_offset);

void mlp_sh_sites_free(struct mlp_sh_sites *sites);

/* The site of the expression at offset, or NULL when the scanner found
 * none there (an expression the shell would not see as one, such as after
 * a backslash: treat as uncertain). */
const struct mlp_sh_site *mlp_sh_sites_find(const struct mlp_sh_sites *sites, size_t offset);

/*
 * Appends value to out, written for site's context.  For here-documents,
 * out must hold the command expanded so far and rest the command text
 * after the expression: a value that would put the delimiter alone on a
 * line (ending the here-document early) is MLP_EINVAL with a message set,
 * and nothing is appended.  Uncertain sites are the caller's to refuse.
 */
int mlp_sh_quote(struct mlp_buf *out, const struct mlp_sh_site *site, const char *value,
                 const char *rest);

/*
 * The argv that runs an expanded command: /bin/sh -c COMMAND, or, for a
 * command longer than the kernel takes in one argument (128 KiB), /bin/sh
 * SCRIPT after writing it to script_path (mode 0600).
 */
int mlp_sh_argv(struct mlp_strv *argv, char *command, const char *script_path);

#endif
