/*
 * shell-int.h - what the quoting scanner's files share (shell-scan.c reads
 * quotes and lists, shell-words.c follows words and simple commands);
 * private to src/base/shell*.c.
 */
#ifndef MLP_SHELL_INT_H
#define MLP_SHELL_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "base/shell.h"

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

/* shell-scan.c */
struct mlp_sh_site *mlp_sh_add_site(struct scanner *sc, size_t offset, enum mlp_sh_context ctx,
                                    const char *uncertain);

/* shell-words.c: words and simple commands */
void mlp_sh_end_simple_command(struct scanner *sc, struct list_state *st, bool end_pipeline);
void mlp_sh_begin_word(struct list_state *st, char c);
void mlp_sh_word_char(struct list_state *st, char c);
void mlp_sh_word_complex(struct list_state *st, char c);
void mlp_sh_finish_word(struct scanner *sc, struct list_state *st);

#endif
