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
#include <stdint.h>
#include <sys/types.h>

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

/* A position in the file: 1-based line and column (in characters). */
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

/* True, with *val, when key is in t. */
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

/* scalars.c: values as what their keys want */

/* Null: no node, or a plain empty value, ~, null, Null or NULL. */
bool mlp_pl_is_null(const struct node *n);
/* true/True/TRUE and false/False/FALSE. */
bool mlp_pl_bool_word(bool *out, const char *s);
/* Digits with an optional sign. */
bool mlp_pl_int_syntax(const char *s);
/* An integer or decimal number, with an optional exponent. */
bool mlp_pl_number_syntax(const char *s);
/* How a value is named in messages: "a list", "'two'", "the string \"5\"";
 * the caller frees it. */
char *mlp_pl_describe(const struct node *n);
/* Reports "'KEY' must be WHAT, not DESCRIPTION" at the value. */
void mlp_pl_wrong_type(struct ctx *c, const char *key, const struct node *v, const char *what);

/*
 * The getters: each reads v, the value of key, into *out and returns true,
 * or reports why it cannot and returns false.  Strings replace *out
 * (freeing it first).
 */
bool mlp_pl_get_string(char **out, struct ctx *c, const char *key, const struct node *v);
/* A string where ${{ }} expressions are not expanded (and are reported). */
bool mlp_pl_get_name(char **out, struct ctx *c, const char *key, const struct node *v);
bool mlp_pl_get_int(long long *out, struct ctx *c, const char *key, const struct node *v,
                    long long min, long long max);
bool mlp_pl_get_int32(int *out, struct ctx *c, const char *key, const struct node *v, int min);
bool mlp_pl_get_number(double *out, struct ctx *c, const char *key, const struct node *v);
bool mlp_pl_get_bool(bool *out, struct ctx *c, const char *key, const struct node *v);
/* A duration such as "30m"; with positive, 0 is refused. */
bool mlp_pl_get_duration(int64_t *out, struct ctx *c, const char *key, const struct node *v,
                         bool positive);
/* One of n words; *out is its index in options. */
bool mlp_pl_get_enum(int *out, struct ctx *c, const char *key, const struct node *v,
                     const char *const *options, size_t n);
/* A string or a list of strings, appended to (*out, *out_pos, *n); out_pos
 * may be NULL.  False when some entry was not a string (the others are
 * appended all the same). */
bool mlp_pl_get_string_list(char ***out, struct mlp_pos **out_pos, size_t *n, struct ctx *c,
                            const char *key, const struct node *v);

/* Pairs the walkers look at: not duplicates, with a string key. */
bool mlp_pl_pair_usable(const struct pair *pr);
/* Reports an unknown key, suggesting the nearest of known; where is
 * appended to the message (" in retry", or ""). */
void mlp_pl_unknown_key(struct ctx *c, const struct node *key, const char *const *known, size_t n,
                        const char *where);
/* True when v is a mapping (or null, with null_ok); otherwise reports
 * "'KEY' must be WHAT". */
bool mlp_pl_want_map(struct ctx *c, const char *key, const struct node *v, const char *what,
                     bool null_ok);
/* Notes a scalar that holds ${{ }} for the checks once every stage is
 * known; stage is an index in c->p->stages or SIZE_MAX for the
 * pipeline's env. */
void mlp_pl_note_expr(struct ctx *c, size_t stage, const struct node *v);
/* The same for a value that runs as a /bin/sh command (run,
 * train.command): its quoting contexts are checked too. */
void mlp_pl_note_shell_expr(struct ctx *c, size_t stage, const struct node *v);

/* sections.c: the top level and what stages share */

/* Walks the root mapping into c->p, then checks what needs every stage. */
void mlp_pl_parse_top(struct ctx *c, const struct node *root);

/* env: NAME: value into *out; stage as for mlp_pl_note_expr(). */
void mlp_pl_parse_env(struct mlp_kvlist *out, struct ctx *c, const struct node *v, size_t stage);
/* Resets *r (freeing its rules) to max retries on any failure, after a 1s
 * backoff that doubles up to 5m. */
void mlp_pl_retry_defaults(struct mlp_retry *r, int max);
/* Replaces *dst by a copy of *src. */
void mlp_pl_retry_copy(struct mlp_retry *dst, const struct mlp_retry *src);
/* retry: a number of retries, or a mapping (max, backoff, on ...). */
void mlp_pl_parse_retry(struct mlp_retry *out, struct ctx *c, const struct node *v);

/* stages.c: stages and their common keys */

/* Reads the stages: mapping (kp): every name first, then each stage. */
void mlp_pl_parse_stages(struct ctx *c, const struct pair *kp);
/* Gives each stage the timeout, kill_grace and retry of defaults: where it
 * has none of its own. */
void mlp_pl_resolve_defaults(struct ctx *c);

/*
 * The stage kinds (kind-*.c): each reads the value of a stage's kind key
 * (kp, as in "train: {...}") into c->p->stages[si].
 */
void mlp_pl_parse_train(struct ctx *c, size_t si, const struct pair *kp);
void mlp_pl_parse_gate(struct ctx *c, size_t si, const struct pair *kp);
/* Once needs are resolved: each gate's metrics_from (given, or the one
 * stage it needs) must be a stage it depends on. */
void mlp_pl_check_metrics_from(struct ctx *c);
void mlp_pl_parse_rollout(struct ctx *c, size_t si, const struct pair *kp);
/* Kubernetes names: an RFC 1123 label (max 63), or with dots a subdomain. */
bool mlp_pl_k8s_name_valid(const char *s, bool dots, size_t max);
/* Reads a Kubernetes name into *out (replacing it), reporting a bad one;
 * a value with ${{ }} is not checked. */
void mlp_pl_get_k8s_name(struct ctx *c, const char *key, const struct node *v, bool dots,
                         char **out);

/* kubernetes.c: runs-on: kubernetes and the kubernetes: blocks */

/* Reads a kubernetes: block (the pipeline's, or stage si's; SIZE_MAX for
 * the pipeline) into *out. */
void mlp_pl_parse_k8s(struct mlp_k8s_settings *out, struct ctx *c, const struct pair *kp,
                      size_t si);
/* runs-on: local | kubernetes. */
void mlp_pl_parse_runs_on(struct ctx *c, size_t si, const struct pair *kp);
/* Once every stage is read: merges the pipeline's kubernetes: defaults
 * into each stage that runs on Kubernetes and checks what such a stage
 * can be. */
void mlp_pl_check_k8s_stages(struct ctx *c);

/* graph.c: needs, order, cycles */

/* The index of the named stage, or -1 (constant time). */
ssize_t mlp_pl_find_stage(const struct ctx *c, const char *name);
/* The stage names, NULL-terminated, for mlp_suggest(); free the array
 * (not the names). */
const char **mlp_pl_stage_names(const struct mlp_pipeline *p);
/* Resolves every stage's needs to need_index (SIZE_MAX where a need is
 * unknown, the stage itself or a repeat, each reported). */
void mlp_pl_resolve_needs(struct ctx *c);
/* Sets p->order to a topological order (ties in file order), or leaves it
 * NULL and reports each dependency cycle. */
void mlp_pl_order_stages(struct ctx *c);

/* checks.c: checks across the file */

/* Scans every noted expression: syntax, stage references, shell quoting. */
void mlp_pl_check_expressions(struct ctx *c);
/* Reports non-string keys and duplicate keys, once per mapping. */
void mlp_pl_check_duplicates(struct ctx *c);

#endif
