/*
 * shell-scan.c - the quoting context of ${{ }} expressions in /bin/sh
 * commands (see shell.h): quotes, expansions, here-documents and lists.
 *
 * The scanner follows the token rules of POSIX sh (XCU 2.2-2.3, 2.6.3,
 * 2.7.4) as far as quoting goes: backslash, '...', "...", $(...), `...`,
 * ${...}, $((...)), comments, here-documents read at the next newline, and
 * case patterns (whose ')' does not close a $( ).  It does not build a
 * syntax tree: the only thing it must get right is, for each "${{", which
 * quoting the shell is in when it reads that spot.  An expression is an
 * atom to the scanner ("${{" through "}}"), exactly as substitution
 * replaces it.
 *
 * Words are tracked only to notice commands that run their arguments as
 * code: once such a command word appears in a simple command, every later
 * expression of that simple command (and of anything nested in it) is
 * "uncertain": its quoting is right for the shell, but the program then
 * parses the value as code of its own.
 */
#include "config.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "base/shell-int.h"
#include "base/util.h"

static int scan_list(struct scanner *sc, char term);
static void scan_dollar(struct scanner *sc, enum mlp_sh_context ctx);
static void scan_backquote(struct scanner *sc, bool in_dquote);

/* Records the first error: message is a whole sentence, or names the
 * construct left open ("unterminated X in the command"). */
static void fail_at(struct scanner *sc, size_t offset, const char *message)
{
	if (sc->failed)
		return;
	sc->failed = true;
	sc->err_offset = offset;
	mlp_error_set("%s", message);
}

static void unterminated(struct scanner *sc, size_t offset, const char *what)
{
	if (sc->failed)
		return;
	sc->failed = true;
	sc->err_offset = offset;
	mlp_error_set("unterminated %s in the command", what);
}

static bool at(const struct scanner *sc, size_t i, const char *lit)
{
	size_t len = strlen(lit);

	return i + len <= sc->n && memcmp(sc->s + i, lit, len) == 0;
}

/* The end of the expression at i ("${{"): just past "}}", or the scan
 * limit when it has none (the expression parser reports that). */
static size_t expr_end(const struct scanner *sc, size_t i)
{
	for (size_t j = i + 3; j + 1 < sc->n; j++)
		if (sc->s[j] == '}' && sc->s[j + 1] == '}')
			return j + 2;
	return sc->n;
}

struct mlp_sh_site *mlp_sh_add_site(struct scanner *sc, size_t offset, enum mlp_sh_context ctx,
                                    const char *uncertain)
{
	struct mlp_sh_sites *o = sc->out;
	struct mlp_sh_site *site;

	xgrow((void **)&o->items, &o->cap, o->len + 1, sizeof(*o->items));
	site = &o->items[o->len++];
	memset(site, 0, sizeof(*site));
	site->offset = offset;
	site->context = ctx;
	site->backtick = sc->backtick;
	if (sc->uncertain || uncertain)
		site->uncertain = xstrdup(sc->uncertain ? sc->uncertain : uncertain);
	return site;
}

/* Records the expression at sc->i in ctx and steps over it. */
static void expression(struct scanner *sc, enum mlp_sh_context ctx, const char *uncertain)
{
	mlp_sh_add_site(sc, sc->i, ctx, uncertain);
	sc->i = expr_end(sc, sc->i);
}

/* Every expression in [from, to) gets ctx (text the shell takes literally
 * or that is uncertain as a whole). */
static void expressions_in(struct scanner *sc, size_t from, size_t to, enum mlp_sh_context ctx,
                           const char *uncertain, const struct heredoc *hd)
{
	for (size_t j = from; j + 2 < to;) {
		if (memcmp(sc->s + j, "${{", 3) == 0) {
			struct mlp_sh_site *site = mlp_sh_add_site(sc, j, ctx, uncertain);

			if (hd) {
				site->delimiter = xstrdup(hd->delimiter);
				site->strip_tabs = hd->strip_tabs;
			}
			j = expr_end(sc, j);
		} else {
			j++;
		}
	}
}

/* A backslash at sc->i outside single quotes: it escapes the next
 * character, so an expression right after it is not one to the shell
 * ("\${{ x }}" would splice the value after a literal '$'). */
static void backslash(struct scanner *sc, enum mlp_sh_context ctx)
{
	if (at(sc, sc->i + 1, "${{")) {
		sc->i++;
		expression(sc, ctx, "after a backslash");
		return;
	}
	sc->i += sc->i + 1 < sc->n ? 2 : 1;
}

/* '...': sc->i just past the opening quote. */
static void scan_squote(struct scanner *sc)
{
	size_t open = sc->i - 1;

	while (sc->i < sc->n) {
		if (sc->s[sc->i] == '\'') {
			sc->i++;
			return;
		}
		if (at(sc, sc->i, "${{"))
			expression(sc, MLP_SH_SQUOTE, NULL);
		else
			sc->i++;
	}
	unterminated(sc, open, "'");
}

/* "...": sc->i just past the opening quote. */
static void scan_dquote(struct scanner *sc)
{
	size_t open = sc->i - 1;

	while (sc->i < sc->n && !sc->failed) {
		char c = sc->s[sc->i];

		if (c == '"') {
			sc->i++;
			return;
		}
		if (c == '\\')
			backslash(sc, MLP_SH_DQUOTE);
		else if (c == '$')
			scan_dollar(sc, MLP_SH_DQUOTE);
		else if (c == '`')
			scan_backquote(sc, true);
		else
			sc->i++;
	}
	unterminated(sc, open, "\"");
}

/* $'...' (bash, ksh, zsh; not dash): sc->i at the '$'. */
static void scan_ansi_c(struct scanner *sc)
{
	size_t open = sc->i;
	const char *saved = sc->uncertain;

	if (!sc->uncertain)
		sc->uncertain = "inside $'...' (shells disagree on what it means)";
	sc->i += 2;
	while (sc->i < sc->n) {
		char c = sc->s[sc->i];

		if (c == '\'') {
			sc->i++;
			sc->uncertain = saved;
			return;
		}
		if (c == '\\')
			sc->i += 2;
		else if (at(sc, sc->i, "${{"))
			expression(sc, MLP_SH_UNQUOTED, NULL);
		else
			sc->i++;
	}
	sc->uncertain = saved;
	unterminated(sc, open, "$'");
}

/* ${...}: sc->i at the '$'.  Quoting inside a parameter expansion's word
 * differs between shells (and between "${x:-...}" and ${x:-...}). */
static void scan_braces(struct scanner *sc, enum mlp_sh_context ctx)
{
	size_t open = sc->i;
	const char *saved = sc->uncertain;

	if (!sc->uncertain)
		sc->uncertain = "inside ${...}";
	sc->i += 2;
	while (sc->i < sc->n && !sc->failed) {
		char c = sc->s[sc->i];

		if (c == '}') {
			sc->i++;
			sc->uncertain = saved;
			return;
		}
		if (c == '\\') {
			backslash(sc, ctx);
		} else if (c == '$') {
			scan_dollar(sc, ctx);
		} else if (c == '`') {
			scan_backquote(sc, ctx != MLP_SH_UNQUOTED);
		} else if (c == '"') {
			sc->i++;
			scan_dquote(sc);
		} else if (c == '\'' && ctx == MLP_SH_UNQUOTED) {
			sc->i++;
			scan_squote(sc);
		} else {
			sc->i++;
		}
	}
	sc->uncertain = saved;
	unterminated(sc, open, "${");
}

/* $((...)): sc->i at the '$'.  An arithmetic expression is evaluated, not
 * quoted: only numbers belong there. */
static void scan_arith(struct scanner *sc)
{
	size_t open = sc->i;
	const char *saved = sc->uncertain;
	int depth = 0;

	if (!sc->uncertain)
		sc->uncertain = "inside $((...))";
	sc->i += 3;
	while (sc->i < sc->n && !sc->failed) {
		char c = sc->s[sc->i];

		if (c == '(') {
			depth++;
			sc->i++;
		} else if (c == ')') {
			if (depth == 0 && at(sc, sc->i, "))")) {
				sc->i += 2;
				sc->uncertain = saved;
				return;
			}
			depth--;
			sc->i++;
		} else if (c == '\\') {
			backslash(sc, MLP_SH_UNQUOTED);
		} else if (c == '$') {
			scan_dollar(sc, MLP_SH_UNQUOTED);
		} else if (c == '`') {
			scan_backquote(sc, true);
		} else if (c == '"') {
			sc->i++;
			scan_dquote(sc);
		} else if (c == '\'') {
			sc->i++;
			scan_squote(sc);
		} else {
			sc->i++;
		}
	}
	sc->uncertain = saved;
	unterminated(sc, open, "$((");
}

/* A '$' at sc->i, read in ctx (unquoted, "...", or a here-document). */
static void scan_dollar(struct scanner *sc, enum mlp_sh_context ctx)
{
	if (at(sc, sc->i, "${{")) {
		expression(sc, ctx, NULL);
	} else if (at(sc, sc->i, "$((")) {
		scan_arith(sc);
	} else if (at(sc, sc->i, "$(")) {
		size_t open = sc->i;
		bool backtick = sc->backtick;

		sc->i += 2;
		if (scan_list(sc, ')') != 0 && !sc->failed)
			unterminated(sc, open, "$(");
		sc->backtick = backtick;
	} else if (at(sc, sc->i, "${")) {
		scan_braces(sc, ctx);
	} else if (at(sc, sc->i, "$'") && ctx == MLP_SH_UNQUOTED) {
		scan_ansi_c(sc);
	} else if (at(sc, sc->i, "$$")) {
		sc->i += 2; /* the shell's pid: the second '$' is not the start of anything */
	} else {
		sc->i++;
	}
}

/*
 * `...`: sc->i at the opening backquote.  Its text is read again by the
 * shell after removing the backslashes before \ ` $ (and " inside double
 * quotes), so a value inside it needs one more level of escaping.  That is
 * done for one level of backquotes outside double quotes and without
 * backslashes of its own; anything else is uncertain ($(...) nests
 * without these rules).
 */
static void scan_backquote(struct scanner *sc, bool in_dquote)
{
	size_t open = sc->i, j = sc->i + 1, limit = sc->n;
	bool has_backslash = false;

	while (j < sc->n && sc->s[j] != '`') {
		if (sc->s[j] == '\\') {
			has_backslash = true;
			j += 2;
		} else if (j + 2 < sc->n && memcmp(sc->s + j, "${{", 3) == 0) {
			j = expr_end(sc, j);
		} else {
			j++;
		}
	}
	if (j >= sc->n) {
		unterminated(sc, open, "`");
		sc->i = sc->n;
		return;
	}
	if (in_dquote || sc->backtick || has_backslash) {
		expressions_in(sc, open + 1, j, MLP_SH_UNQUOTED,
		               "inside `...` within quotes, nested, or with backslashes "
		               "(use $(...))",
		               NULL);
		sc->i = j + 1;
		return;
	}
	{
		bool saved_backtick = sc->backtick;

		sc->backtick = true;
		sc->n = j;
		sc->i = open + 1;
		scan_list(sc, 0);
		sc->n = limit;
		sc->backtick = saved_backtick;
		sc->i = j + 1;
	}
}

/* ---- here-documents --------------------------------------------------- */

static bool is_meta(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == ';' || c == '&' || c == '|' || c == '(' ||
	       c == ')' || c == '<' || c == '>';
}

/* << or <<- at sc->i: reads the delimiter word and queues the body. */
static void heredoc_operator(struct scanner *sc)
{
	struct heredoc hd = {.offset = sc->i};
	struct mlp_buf d = {0};

	sc->i += 2;
	if (sc->i < sc->n && sc->s[sc->i] == '-') {
		hd.strip_tabs = true;
		sc->i++;
	}
	while (sc->i < sc->n && (sc->s[sc->i] == ' ' || sc->s[sc->i] == '\t'))
		sc->i++;
	while (sc->i < sc->n && !is_meta(sc->s[sc->i])) {
		char c = sc->s[sc->i];

		if (at(sc, sc->i, "${{")) {
			fail_at(sc, sc->i, "an expression cannot be a here-document's delimiter");
			break;
		}
		if (c == '\\' && sc->i + 1 < sc->n) {
			hd.quoted = true;
			mlp_buf_putc(&d, sc->s[sc->i + 1]);
			sc->i += 2;
		} else if (c == '\'' || c == '"') {
			size_t close = sc->i + 1;

			while (close < sc->n && sc->s[close] != c)
				close++;
			if (close >= sc->n) {
				unterminated(sc, sc->i,
				             c == '\'' ? "' in a here-document delimiter"
				                       : "\" in a here-document delimiter");
				break;
			}
			hd.quoted = true;
			mlp_buf_add(&d, sc->s + sc->i + 1, close - sc->i - 1);
			sc->i = close + 1;
		} else {
			mlp_buf_putc(&d, c);
			sc->i++;
		}
	}
	if (sc->failed || d.len == 0) {
		if (!sc->failed)
			fail_at(sc, hd.offset, "a here-document operator without a delimiter");
		mlp_buf_free(&d);
		return;
	}
	if (sc->npending == MLP_ARRAY_SIZE(sc->pending)) {
		fail_at(sc, hd.offset, "too many here-documents on one line");
		mlp_buf_free(&d);
		return;
	}
	hd.delimiter = mlp_buf_detach(&d);
	sc->pending[sc->npending++] = hd;
}

/* The body of an unquoted here-document, [sc->i, sc->n): like "..."
 * except that '"' is an ordinary character. */
static void scan_heredoc_body(struct scanner *sc, const struct heredoc *hd)
{
	while (sc->i < sc->n && !sc->failed) {
		char c = sc->s[sc->i];
		size_t before = sc->out->len;

		if (c == '\\')
			backslash(sc, MLP_SH_HEREDOC);
		else if (c == '$')
			scan_dollar(sc, MLP_SH_HEREDOC);
		else if (c == '`')
			scan_backquote(sc, true);
		else
			sc->i++;
		for (size_t k = before; k < sc->out->len; k++) {
			struct mlp_sh_site *site = &sc->out->items[k];

			if (site->context == MLP_SH_HEREDOC && site->delimiter == NULL) {
				site->delimiter = xstrdup(hd->delimiter);
				site->strip_tabs = hd->strip_tabs;
			}
		}
	}
}

/* After a newline: the bodies of the here-documents queued on that line. */
static void read_heredocs(struct scanner *sc)
{
	struct heredoc pending[MLP_ARRAY_SIZE(sc->pending)];
	size_t npending = sc->npending;

	/* A body may hold a $( ) with newlines of its own: those must not read
	 * these bodies again. */
	memcpy(pending, sc->pending, npending * sizeof(*pending));
	sc->npending = 0;
	for (size_t h = 0; h < npending && !sc->failed; h++) {
		struct heredoc *hd = &pending[h];
		size_t body = sc->i, end = sc->n, next = sc->n, limit = sc->n;

		for (size_t line = sc->i; line < sc->n;) {
			const char *nl = memchr(sc->s + line, '\n', sc->n - line);
			size_t eol = nl ? (size_t)(nl - sc->s) : sc->n, start = line;

			if (hd->strip_tabs)
				while (start < eol && sc->s[start] == '\t')
					start++;
			if (eol - start == strlen(hd->delimiter) &&
			    memcmp(sc->s + start, hd->delimiter, eol - start) == 0) {
				end = line;
				next = nl ? eol + 1 : eol;
				break;
			}
			line = nl ? eol + 1 : sc->n;
		}
		if (hd->quoted) {
			expressions_in(sc, body, end, MLP_SH_HEREDOC_LITERAL, NULL, hd);
		} else {
			sc->i = body;
			sc->n = end;
			scan_heredoc_body(sc, hd);
			sc->n = limit;
		}
		sc->i = next;
	}
	for (size_t h = 0; h < npending; h++)
		free(pending[h].delimiter);
}

/* ---- lists of commands ------------------------------------------------ */

/* An operator or blank at sc->i ends the current word: ; & | ( ) < >,
 * newline.  Returns false when c is none of those. */
static bool list_operator(struct scanner *sc, struct list_state *st, char c)
{
	if (!strchr(" \t\n;&|()<>", c))
		return false;
	mlp_sh_finish_word(sc, st);
	switch (c) {
	case '\n':
		mlp_sh_end_simple_command(sc, st, true);
		sc->i++;
		if (sc->npending)
			read_heredocs(sc);
		break;
	case ';':
		if (at(sc, sc->i, ";;") || at(sc, sc->i, ";&")) {
			sc->i += 2;
			if (st->case_depth > 0)
				st->in_pattern = true;
		} else {
			sc->i++;
		}
		mlp_sh_end_simple_command(sc, st, true);
		break;
	case '&':
		sc->i += at(sc, sc->i, "&&") ? 2 : 1;
		mlp_sh_end_simple_command(sc, st, true);
		break;
	case '|':
		if (at(sc, sc->i, "||")) {
			sc->i += 2;
			mlp_sh_end_simple_command(sc, st, true);
		} else {
			sc->i++;
			mlp_sh_end_simple_command(sc, st, false);
			st->after_pipe = true;
		}
		break;
	case '(': {
		size_t open = sc->i++;

		/* in a pattern: the optional '(' before it */
		if (!st->in_pattern && scan_list(sc, ')') != 0 && !sc->failed)
			unterminated(sc, open, "(");
		break;
	}
	case ')':
		sc->i++;
		if (st->in_pattern) {
			st->in_pattern = false;
			st->nwords = 0;
		} else {
			mlp_sh_end_simple_command(sc, st, true);
		}
		break;
	case '<':
	case '>':
		if (at(sc, sc->i, "<<<")) {
			sc->i += 3; /* a here-string: a word follows */
		} else if (at(sc, sc->i, "<<")) {
			heredoc_operator(sc);
			break;
		} else {
			sc->i++;
			if (sc->i < sc->n && strchr("<>&|", sc->s[sc->i]))
				sc->i++;
		}
		st->redir_target = true;
		break;
	default: /* blank */
		sc->i++;
		break;
	}
	return true;
}

/* A part of a word at sc->i: a quoted string, an expansion, a backslash,
 * a comment (a '#' that starts a word) or a plain character. */
static void list_word_part(struct scanner *sc, struct list_state *st, char c)
{
	switch (c) {
	case '\\':
		mlp_sh_word_complex(st, c);
		backslash(sc, MLP_SH_UNQUOTED);
		break;
	case '\'':
		mlp_sh_word_complex(st, c);
		sc->i++;
		scan_squote(sc);
		break;
	case '"':
		mlp_sh_word_complex(st, c);
		sc->i++;
		scan_dquote(sc);
		break;
	case '`':
		mlp_sh_word_complex(st, c);
		scan_backquote(sc, false);
		break;
	case '$':
		mlp_sh_word_complex(st, c);
		scan_dollar(sc, MLP_SH_UNQUOTED);
		break;
	case '#':
		if (!st->word) {
			const char *nl = memchr(sc->s + sc->i, '\n', sc->n - sc->i);
			size_t eol = nl ? (size_t)(nl - sc->s) : sc->n;

			expressions_in(sc, sc->i, eol, MLP_SH_COMMENT, NULL, NULL);
			sc->i = eol;
			break;
		}
		/* '#' inside a word is a plain character */
		__attribute__((fallthrough));
	default:
		mlp_sh_word_char(st, c);
		sc->i++;
		break;
	}
}

/*
 * Reads commands until term (')' for $( and subshells, 0 for the end of
 * the scan limit).  Returns 0 when term was found (or the end reached with
 * term 0), 1 when the text ended first.
 */
static int scan_list(struct scanner *sc, char term)
{
	struct list_state st = {.pipeline_first_site = sc->out->len};
	const char *saved = sc->uncertain;

	while (sc->i < sc->n && !sc->failed) {
		char c = sc->s[sc->i];
		size_t before = sc->out->len;

		if (c == term)
			mlp_sh_finish_word(sc, &st); /* "esac)" ends the case first */
		if (c == term && !(c == ')' && st.in_pattern)) {
			sc->i++;
			sc->uncertain = saved;
			return 0;
		}
		/* A word that is code makes whatever is nested in it code too:
		 * eval "$(echo ${{ x }})".  (A word's start decides.) */
		if (!st.word && !strchr(" \t\n;&|()<>#", c))
			mlp_sh_begin_word(&st, c);
		if (st.word_is_code && !sc->uncertain && !strchr(" \t\n;&|()<>", c))
			sc->uncertain = st.code_reason;
		if (!list_operator(sc, &st, c))
			list_word_part(sc, &st, c);
		if (st.word_is_code)
			for (size_t k = before; k < sc->out->len; k++)
				if (!sc->out->items[k].uncertain)
					sc->out->items[k].uncertain = xstrdup(st.code_reason);
		sc->uncertain = saved;
	}
	mlp_sh_finish_word(sc, &st);
	sc->uncertain = saved;
	return term == 0 ? 0 : 1;
}

int mlp_sh_scan(struct mlp_sh_sites *out, const char *command, size_t *err_offset)
{
	struct scanner sc = {.s = command, .n = strlen(command), .out = out};

	if (strstr(command, "${{") == NULL)
		return 0;
	scan_list(&sc, 0);
	if (!sc.failed && sc.npending) {
		/* here-documents on the last line, with no body */
		read_heredocs(&sc);
	}
	for (size_t h = 0; h < sc.npending; h++)
		free(sc.pending[h].delimiter);
	if (sc.failed) {
		if (err_offset)
			*err_offset = sc.err_offset;
		return MLP_EINVAL;
	}
	return 0;
}
