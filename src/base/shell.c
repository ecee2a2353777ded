/*
 * shell.c - the quoting context of ${{ }} expressions in /bin/sh commands
 * (see shell.h), and writing values for those contexts.
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
#include "base/shell.h"

/* The kernel refuses one argument longer than 32 pages (MAX_ARG_STRLEN). */
#define ARG_MAX_ONE (128 * 1024)

struct heredoc {
	char *delimiter;
	bool quoted;
	bool strip_tabs;
	size_t offset; /* of the << operator, for errors */
};

struct scanner {
	const char *s;
	size_t n; /* scan limit (moved in for backquotes and here-doc bodies) */
	size_t i;
	struct mlp_sh_sites *out;
	/* Set while inside a construct whose quoting is not known for sure;
	 * every site recorded meanwhile gets it. */
	const char *uncertain;
	bool backtick;
	struct heredoc pending[16];
	size_t npending;
	/* the first error */
	bool failed;
	size_t err_offset;
};

/* What a command word makes of the later words of its simple command. */
enum code_state {
	CODE_NONE,
	CODE_ALWAYS,    /* eval, trap, ssh ...: every later word is code */
	CODE_AFTER_OPT, /* sh -c, python -c, perl -e: the next operand is code */
	CODE_PROGRAM,   /* awk, sed: the first operand is code (unless -f/-e) */
};

/* One list of commands: the whole text, a $( ), a subshell, a backquote. */
struct list_state {
	int nwords;        /* words of the current simple command */
	bool redir_target; /* the next word is a redirection's target */
	enum code_state code;
	const char *code_opts; /* CODE_AFTER_OPT: option letters that take code */
	bool next_is_code;     /* the next operand is code */
	bool skip_next;        /* the next word is an option's argument */
	char code_reason[96];  /* why a word is code, naming the command */
	size_t pipeline_first_site;
	bool after_pipe;
	int case_state; /* 1: after 'case', 2: after its word (expecting 'in') */
	int case_depth;
	bool in_pattern;
	/* the word being read */
	bool word;
	bool word_is_code;
	bool word_literal; /* only plain characters so far */
	char lit[64];
	size_t litlen;
};

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

static struct mlp_sh_site *add_site(struct scanner *sc, size_t offset, enum mlp_sh_context ctx,
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
	add_site(sc, sc->i, ctx, uncertain);
	sc->i = expr_end(sc, sc->i);
}

/* Every expression in [from, to) gets ctx (text the shell takes literally
 * or that is uncertain as a whole). */
static void expressions_in(struct scanner *sc, size_t from, size_t to, enum mlp_sh_context ctx,
                           const char *uncertain, const struct heredoc *hd)
{
	for (size_t j = from; j + 2 < to;) {
		if (memcmp(sc->s + j, "${{", 3) == 0) {
			struct mlp_sh_site *site = add_site(sc, j, ctx, uncertain);

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

/* ---- words and simple commands --------------------------------------- */

static const char *basename_of(const char *w)
{
	const char *slash = strrchr(w, '/');

	return slash ? slash + 1 : w;
}

static bool in_list(const char *w, const char *const *list)
{
	for (; *list; list++)
		if (strcmp(w, *list) == 0)
			return true;
	return false;
}

static const char *const shells[] = {"sh",      "bash", "dash", "ksh",  "mksh", "zsh",  "ash",
                                     "busybox", "fish", "yash", "posh", "csh",  "tcsh", NULL};
/* Like a shell: -c makes the next operand a command line. */
static const char *const c_runners[] = {"su", "runuser", "flock", "script", NULL};
/* Every argument is code, or joined into a shell command line. */
static const char *const code_commands[] = {"eval",     "trap",   "ssh", "watch", "xargs",
                                            "parallel", "source", ".",   NULL};
/* The first operand is a program. */
static const char *const programs[] = {"awk",         "gawk", "mawk", "nawk",
                                       "busybox-awk", "sed",  "gsed", NULL};
static const char *const interpreters[] = {"python", "python2", "python3", "perl", "ruby",  "node",
                                           "nodejs", "php",     "Rscript", "lua",  "tclsh", NULL};

static bool is_python(const char *w)
{
	/* python3.11 and the like */
	return strncmp(w, "python", 6) == 0 && w[6] != '\0' &&
	       strspn(w + 6, "0123456789.") == strlen(w + 6);
}

static bool is_assignment(const char *w)
{
	size_t k = 0;

	if (!(w[0] == '_' || (w[0] >= 'A' && w[0] <= 'Z') || (w[0] >= 'a' && w[0] <= 'z')))
		return false;
	while (w[k] == '_' || (w[k] >= 'A' && w[k] <= 'Z') || (w[k] >= 'a' && w[k] <= 'z') ||
	       (w[k] >= '0' && w[k] <= '9'))
		k++;
	return w[k] == '=';
}

static void end_simple_command(struct scanner *sc, struct list_state *st, bool end_pipeline)
{
	st->nwords = 0;
	st->redir_target = false;
	st->code = CODE_NONE;
	st->next_is_code = st->skip_next = false;
	st->code_reason[0] = '\0';
	st->case_state = 0;
	if (end_pipeline) {
		st->pipeline_first_site = sc->out->len;
		st->after_pipe = false;
	}
}

/* The command word names a program that runs some of its arguments as
 * code: from now on, the words of this simple command are watched. */
static void code_command(struct scanner *sc, struct list_state *st, const char *name)
{
	if (in_list(name, shells)) {
		if (st->after_pipe && st->nwords == 0) {
			/* `... | sh`: what the pipeline prints is code */
			for (size_t k = st->pipeline_first_site; k < sc->out->len; k++)
				if (!sc->out->items[k].uncertain)
					sc->out->items[k].uncertain =
					        xasprintf("in a pipeline into '%s'", name);
		}
		if (st->code == CODE_NONE) {
			st->code = CODE_AFTER_OPT;
			st->code_opts = "c";
			snprintf(st->code_reason, sizeof(st->code_reason),
			         "in the code that '%.32s -c' runs", name);
		}
	} else if (in_list(name, c_runners)) {
		if (st->code == CODE_NONE) {
			st->code = CODE_AFTER_OPT;
			st->code_opts = "c";
			snprintf(st->code_reason, sizeof(st->code_reason),
			         "in the command that '%.32s -c' runs", name);
		}
	} else if (in_list(name, interpreters) || is_python(name)) {
		if (st->code == CODE_NONE) {
			st->code = CODE_AFTER_OPT;
			st->code_opts = "ceE";
			snprintf(st->code_reason, sizeof(st->code_reason),
			         "in the code that '%.32s -c/-e' runs", name);
		}
	} else if (in_list(name, programs)) {
		if (st->code == CODE_NONE) {
			st->code = CODE_PROGRAM;
			st->code_opts = strstr(name, "sed") ? "e" : "";
			st->next_is_code = true;
			snprintf(st->code_reason, sizeof(st->code_reason),
			         "in the program text of '%.32s'", name);
		}
	} else if (in_list(name, code_commands)) {
		st->code = CODE_ALWAYS;
		snprintf(st->code_reason, sizeof(st->code_reason), "in the arguments of '%.32s'",
		         name);
	}
}

/* An option word of a watched command: which of the next words are code,
 * and which are an option's argument (awk -v/-F/-f, sed -f). */
static void code_option(struct list_state *st, const char *w)
{
	size_t len = strlen(w);

	if (len < 2 || w[1] == '-')
		return;
	for (size_t k = 1; k < len; k++) {
		char c = w[k];

		if (st->code_opts && c != '\0' && strchr(st->code_opts, c)) {
			st->next_is_code = true;
			if (st->code == CODE_PROGRAM) /* sed -e SCRIPT: no program operand */
				st->code = CODE_AFTER_OPT;
			return;
		}
		if (st->code == CODE_PROGRAM && c == 'f') { /* the program is a file */
			st->code = CODE_NONE;
			st->next_is_code = false;
			st->skip_next = k + 1 == len;
			return;
		}
		if (st->code == CODE_PROGRAM && (c == 'v' || c == 'F')) {
			st->skip_next = k + 1 == len;
			return;
		}
	}
}

/* A word begins with character c: is it code? */
static void begin_word(struct list_state *st, char c)
{
	if (st->code == CODE_ALWAYS)
		st->word_is_code = true;
	else
		st->word_is_code = st->next_is_code && !st->skip_next && c != '-';
}

/* A whole word has been read; lit is its text when it is plain. */
static void on_word(struct scanner *sc, struct list_state *st, const char *lit)
{
	static const char *const reserved[] = {"if", "then", "else",  "elif",  "fi",
	                                       "do", "done", "while", "until", "{",
	                                       "}",  "!",    "time",  NULL};

	if (st->redir_target) {
		st->redir_target = false;
		return;
	}
	if (st->case_state == 1) {
		st->case_state = 2;
		return;
	}
	if (st->case_state == 2) {
		st->case_state = 0;
		if (lit && strcmp(lit, "in") == 0) {
			st->case_depth++;
			st->in_pattern = true;
			st->nwords = 0;
		}
		return;
	}
	if (st->in_pattern) {
		if (lit && strcmp(lit, "esac") == 0 && st->case_depth > 0) {
			st->case_depth--;
			st->in_pattern = false;
		}
		return;
	}
	if (st->nwords == 0 && lit) {
		if (strcmp(lit, "case") == 0) {
			st->case_state = 1;
			return;
		}
		if (strcmp(lit, "esac") == 0 && st->case_depth > 0) {
			st->case_depth--;
			return;
		}
		if (in_list(lit, reserved) || is_assignment(lit))
			return;
	}
	if (st->word_is_code) {
		if (st->code != CODE_ALWAYS) {
			/* the code operand is read: what follows is data */
			st->code = CODE_NONE;
			st->next_is_code = false;
		}
	} else if (st->skip_next) {
		st->skip_next = false;
	} else if (lit && lit[0] == '-' && st->code != CODE_NONE) {
		code_option(st, lit);
	} else if (lit) {
		code_command(sc, st, basename_of(lit));
	}
	st->nwords++;
	st->after_pipe = false;
}

static void word_char(struct list_state *st, char c)
{
	if (!st->word) {
		st->word = true;
		st->word_literal = true;
		st->litlen = 0;
		begin_word(st, c);
	}
	if (st->word_literal) {
		if (st->litlen + 1 < sizeof(st->lit))
			st->lit[st->litlen++] = c;
		else
			st->word_literal = false;
	}
}

/* A word goes on (or begins) with a quote, '$', '`' or a backslash. */
static void word_complex(struct list_state *st, char c)
{
	if (!st->word)
		begin_word(st, c);
	st->word = true;
	st->word_literal = false;
}

static void finish_word(struct scanner *sc, struct list_state *st)
{
	if (!st->word)
		return;
	st->lit[st->litlen] = '\0';
	on_word(sc, st, st->word_literal ? st->lit : NULL);
	st->word = false;
	st->word_is_code = false;
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
			finish_word(sc, &st); /* "esac)" ends the case first */
		if (c == term && !(c == ')' && st.in_pattern)) {
			sc->i++;
			sc->uncertain = saved;
			return 0;
		}
		/* A word that is code makes whatever is nested in it code too:
		 * eval "$(echo ${{ x }})".  (A word's start decides.) */
		if (!st.word && !strchr(" \t\n;&|()<>#", c))
			begin_word(&st, c);
		if (st.word_is_code && !sc->uncertain && !strchr(" \t\n;&|()<>", c))
			sc->uncertain = st.code_reason;
		switch (c) {
		case ' ':
		case '\t':
			finish_word(sc, &st);
			sc->i++;
			break;
		case '\n':
			finish_word(sc, &st);
			end_simple_command(sc, &st, true);
			sc->i++;
			if (sc->npending)
				read_heredocs(sc);
			break;
		case ';':
			finish_word(sc, &st);
			if (at(sc, sc->i, ";;") || at(sc, sc->i, ";&")) {
				sc->i += 2;
				if (st.case_depth > 0)
					st.in_pattern = true;
			} else {
				sc->i++;
			}
			end_simple_command(sc, &st, true);
			break;
		case '&':
			finish_word(sc, &st);
			sc->i += at(sc, sc->i, "&&") ? 2 : 1;
			end_simple_command(sc, &st, true);
			break;
		case '|':
			finish_word(sc, &st);
			if (at(sc, sc->i, "||")) {
				sc->i += 2;
				end_simple_command(sc, &st, true);
			} else {
				sc->i++;
				end_simple_command(sc, &st, false);
				st.after_pipe = true;
			}
			break;
		case '(':
			finish_word(sc, &st);
			sc->i++;
			if (st.in_pattern)
				break; /* the optional '(' before a case pattern */
			{
				size_t open = sc->i - 1;

				if (scan_list(sc, ')') != 0 && !sc->failed)
					unterminated(sc, open, "(");
			}
			break;
		case ')':
			finish_word(sc, &st);
			sc->i++;
			if (st.in_pattern) {
				st.in_pattern = false;
				st.nwords = 0;
			} else {
				end_simple_command(sc, &st, true);
			}
			break;
		case '<':
		case '>':
			finish_word(sc, &st);
			if (at(sc, sc->i, "<<<")) {
				sc->i += 3;
			} else if (at(sc, sc->i, "<<")) {
				heredoc_operator(sc);
				break;
			} else {
				sc->i++;
				if (sc->i < sc->n && strchr("<>&|", sc->s[sc->i]))
					sc->i++;
			}
			st.redir_target = true;
			break;
		case '\\':
			word_complex(&st, c);
			backslash(sc, MLP_SH_UNQUOTED);
			break;
		case '\'':
			word_complex(&st, c);
			sc->i++;
			scan_squote(sc);
			break;
		case '"':
			word_complex(&st, c);
			sc->i++;
			scan_dquote(sc);
			break;
		case '`':
			word_complex(&st, c);
			scan_backquote(sc, false);
			break;
		case '$':
			word_complex(&st, c);
			scan_dollar(sc, MLP_SH_UNQUOTED);
			break;
		case '#':
			if (!st.word) {
				const char *nl = memchr(sc->s + sc->i, '\n', sc->n - sc->i);
				size_t eol = nl ? (size_t)(nl - sc->s) : sc->n;

				expressions_in(sc, sc->i, eol, MLP_SH_COMMENT, NULL, NULL);
				sc->i = eol;
				break;
			}
			word_char(&st, c);
			sc->i++;
			break;
		default:
			word_char(&st, c);
			sc->i++;
			break;
		}
		if (st.word_is_code)
			for (size_t k = before; k < sc->out->len; k++)
				if (!sc->out->items[k].uncertain)
					sc->out->items[k].uncertain = xstrdup(st.code_reason);
		sc->uncertain = saved;
	}
	finish_word(sc, &st);
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
	size_t dlen = strlen(site->delimiter);

	mlp_buf_puts(&all, last_nl ? last_nl + 1 : prefix);
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
			if (k > 0 && k < l && (unsigned char)line[k] >= 0x80)
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
