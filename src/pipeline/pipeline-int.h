/*
 * pipeline-int.h - what the pipeline reader's own files share; never
 * included outside src/pipeline/.  This is where libyaml types may appear.
 *
 * Loading a pipeline file (pipeline.c) runs through a struct ctx: the
 * text and its line index, the YAML tree built from it (yamltree.c), the
 * pipeline being filled in, and what the checks after the walk need.  A
 * problem is reported once, where it is found, with mlp_pl_report().
 */
#ifndef MLP_PIPELINE_INT_H
#define MLP_PIPELINE_INT_H

#include <stdbool.h>
#include <stddef.h>

#include <yaml.h>

#include "pipeline/pipeline.h"

/* A string -> index hash table (anchors, keys of one mapping, stages). */
struct strtab {
	const char **keys; /* borrowed */
	size_t *vals;
	size_t cap; /* a power of two, or 0 */
	size_t len;
};

/* The YAML tree: lives only while a file is loaded. */
enum node_type { NODE_SCALAR, NODE_SEQ, NODE_MAP };

struct node;

struct pair {
	struct node *key;
	struct node *value;
	const struct node *dup_of; /* the first key of that name, for duplicates */
	bool merged;               /* came from a "<<" merge */
};

struct node {
	enum node_type type;
	struct mlp_pos pos; /* 1-based start */
	size_t sline, scol; /* libyaml's 0-based start mark */
	size_t eline, ecol; /* and end mark */
	/* Scalars: */
	char *value;
	size_t len;
	yaml_scalar_style_t style;
	bool plain; /* resolved as YAML 1.2 core: null, bool, number */
	/* Sequences: */
	struct node **items;
	size_t nitems, citems;
	/* Mappings: */
	struct pair *pairs;
	size_t npairs, cpairs;

	char *anchor;      /* registered when the node is complete */
	size_t size;       /* nodes in the subtree, aliases expanded */
	struct node *next; /* every node, for freeing */
};

/* Per stage, what the checks after reading all stages need. */
struct stage_extra {
	const struct node *body;
	const struct node *metrics_from; /* the value, when given */
	const struct node *gate_key;
	bool gate_ok; /* gate: was a mapping */
	bool has_timeout;
	bool has_kill_grace;
	bool has_retry;
	bool has_kind;
};

/* A value that may hold expressions, checked when all stages are known. */
struct pending_expr {
	size_t stage; /* SIZE_MAX: the pipeline's env */
	const struct node *node;
	bool shell; /* a /bin/sh command: its quoting contexts are checked too */
};

/* One load: every array here is owned by it and freed when loading ends. */
struct ctx {
	const char *path;
	const char *text;
	size_t len;
	struct mlp_diags *diags;

	size_t *lines; /* byte offset where each line starts */
	size_t nlines, clines;

	struct node *nodes;
	struct strtab anchor_index;
	struct node **anchors;
	size_t nanchors, canchors;
	size_t expansions;

	struct mlp_pipeline *p;
	struct strtab stage_index; /* name -> index in p->stages */
	const struct node *stages_map;
	struct stage_extra *extra;
	struct pending_expr *exprs;
	size_t nexprs, cexprs;
};

static inline struct mlp_pos mlp_pl_pos(int line, int col)
{
	struct mlp_pos pos = {line, col};

	return pos;
}

/* diag.c: problems and positions */

/* Adds "message" at pos in the file being loaded to c->diags. */
void mlp_pl_report(struct ctx *c, struct mlp_pos pos, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
/* Sorts d->items[from ...] by position, keeping the order of equal ones. */
void mlp_pl_diags_sort_from(struct mlp_diags *d, size_t from);
/* Drops repeats (same position and message) from d->items[from ...], sorted. */
void mlp_pl_diags_dedup_from(struct mlp_diags *d, size_t from);
/* Bytes of the UTF-8 sequence that starts with byte b (1 for stray bytes). */
size_t mlp_pl_utf8_width(unsigned char b);
/* Characters (not bytes) in s[0, n). */
size_t mlp_pl_utf8_chars(const char *s, size_t n);
/* Fills c->lines from c->text. */
void mlp_pl_index_lines(struct ctx *c);
/* The 1-based position of a byte offset in c->text. */
struct mlp_pos mlp_pl_pos_of_offset(const struct ctx *c, size_t offset);
/* The byte offset of one of libyaml's 0-based (line, column) marks. */
size_t mlp_pl_offset_of_mark(const struct ctx *c, size_t line, size_t col);

/* yamltree.c: the YAML tree */

bool mlp_pl_strtab_get(const struct strtab *t, const char *key, size_t *val);
/* Adds or replaces key (borrowed: it must outlive the table). */
void mlp_pl_strtab_put(struct strtab *t, const char *key, size_t val);
void mlp_pl_strtab_free(struct strtab *t);
/*
 * Checks c->text's bytes, then parses it into a tree (c->lines must be
 * indexed).  Returns 0 with *root (NULL for a stream with no document), or
 * -1 after reporting the one problem that stopped it.
 */
int mlp_pl_tree_read(struct ctx *c, struct node **root);
/* Frees every node of c's tree and its anchors. */
void mlp_pl_tree_free(struct ctx *c);

/* Scalars: YAML 1.2 core schema */

/* Null: no node, or a plain empty value, ~, null, Null or NULL. */
bool mlp_pl_is_null(const struct node *n);
/* true/True/TRUE and false/False/FALSE. */
bool mlp_pl_bool_word(const char *s, bool *out);
/* An integer or decimal number, with an optional exponent. */
bool mlp_pl_number_syntax(const char *s);

#endif
