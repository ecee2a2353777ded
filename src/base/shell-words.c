/*
 * shell-words.c - words and simple commands for the quoting scanner: which
 * word is a command, and whether a later word is code that a program runs
 * (eval's arguments, sh -c's operand, awk's program ...), so that the
 * scanner marks expressions there as uncertain (shell.h).  Private to
 * src/base/shell*.c (shell-int.h).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/shell-int.h"
#include "base/util.h"

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

void mlp_sh_end_simple_command(struct scanner *sc, struct list_state *st, bool end_pipeline)
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
void mlp_sh_begin_word(struct list_state *st, char c)
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

void mlp_sh_word_char(struct list_state *st, char c)
{
	if (!st->word) {
		st->word = true;
		st->word_literal = true;
		st->litlen = 0;
		mlp_sh_begin_word(st, c);
	}
	if (st->word_literal) {
		if (st->litlen + 1 < sizeof(st->lit))
			st->lit[st->litlen++] = c;
		else
			st->word_literal = false;
	}
}

/* A word goes on (or begins) with a quote, '$', '`' or a backslash. */
void mlp_sh_word_complex(struct list_state *st, char c)
{
	if (!st->word)
		mlp_sh_begin_word(st, c);
	st->word = true;
	st->word_literal = false;
}

void mlp_sh_finish_word(struct scanner *sc, struct list_state *st)
{
	if (!st->word)
		return;
	st->lit[st->litlen] = '\0';
	on_word(sc, st, st->word_literal ? st->lit : NULL);
	st->word = false;
	st->word_is_code = false;
}
