/*
 * checks.c - checks that need the whole file: ${{ }} expressions and
 * duplicate keys.
 *
 * Values that hold expressions are noted while stages are read
 * (mlp_pl_note_expr()); once every stage is known each one is scanned
 * (expr.h): a stage's outputs or metrics may be used only by stages that
 * need it, and in a shell command an expression must sit where its
 * quoting is known.  A problem points at its column inside the value
 * wherever the file shows the value as it reads.  Duplicate keys, recorded
 * by the tree, are reported here once per mapping.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "pipeline/expr.h"
#include "pipeline/pipeline-int.h"
#include "base/util.h"

/* value_pos() for a literal block scalar (`run: |`): its value's line k
 * is the file's line k after the indicator, less the block's indentation. */
static struct mlp_pos literal_value_pos(const struct ctx *c, const struct node *n, size_t offset)
{
	size_t line = n->sline + 1, start = 0, vspaces = 0, fspaces = 0, off, len;

	for (size_t k = 0; k < offset && k < n->len; k++) {
		if (n->value[k] == '\n') {
			line++;
			start = k + 1;
		}
	}
	if (line >= c->nlines)
		return n->pos;
	while (start + vspaces < n->len && n->value[start + vspaces] == ' ')
		vspaces++;
	off = c->lines[line];
	while (off + fspaces < c->len && c->text[off + fspaces] == ' ')
		fspaces++;
	len = offset - start;
	if (fspaces < vspaces || off + fspaces - vspaces + len > c->len ||
	    memcmp(c->text + off + fspaces - vspaces, n->value + start, len) != 0)
		return n->pos;
	return mlp_pl_pos((int)line + 1, (int)(fspaces - vspaces) + 1 +
	                                         (int)mlp_pl_utf8_chars(n->value + start, len));
}

/* Where in the file the byte at offset lies within a scalar's value: the
 * exact column when the value is written on one line as it reads,
 * otherwise the start of the value. */
static struct mlp_pos value_pos(const struct ctx *c, const struct node *n, size_t offset)
{
	size_t quote, b, e;

	if (n->style == YAML_LITERAL_SCALAR_STYLE)
		return literal_value_pos(c, n, offset);
	if (n->sline != n->eline)
		return n->pos;
	if (n->style == YAML_PLAIN_SCALAR_STYLE)
		quote = 0;
	else if (n->style == YAML_SINGLE_QUOTED_SCALAR_STYLE ||
	         n->style == YAML_DOUBLE_QUOTED_SCALAR_STYLE)
		quote = 1;
	else
		return n->pos;
	b = mlp_pl_offset_of_mark(c, n->sline, n->scol);
	e = mlp_pl_offset_of_mark(c, n->eline, n->ecol);
	if (e < b + 2 * quote || e - b - 2 * quote != n->len ||
	    memcmp(c->text + b + quote, n->value, n->len) != 0)
		return n->pos;
	return mlp_pl_pos(n->pos.line,
	                  n->pos.col + (int)quote + (int)mlp_pl_utf8_chars(n->value, offset));
}

struct expr_check {
	struct ctx *c;
	size_t stage;
	const struct node *node;
};

static int check_ref(const struct mlp_expr_ref *ref, void *payload)
{
	struct expr_check *ec = payload;
	struct ctx *c = ec->c;
	const struct mlp_pipeline *p = c->p;
	struct mlp_pos pos = value_pos(c, ec->node, ref->offset);
	const char *what = ref->kind == MLP_EXPR_OUTPUT ? "outputs" : "metrics";
	ssize_t k;

	if (ref->kind != MLP_EXPR_OUTPUT && ref->kind != MLP_EXPR_METRIC)
		return 0;
	if (ec->stage == SIZE_MAX) {
		mlp_pl_report(c, pos,
		              "the pipeline's env may use only env, run.id and run.commit in "
		              "expressions "
		              "(stage %s exist only within stages)",
		              what);
		return 0;
	}
	k = mlp_pl_find_stage(c, ref->stage);
	if (k < 0) {
		const char **names = mlp_pl_stage_names(p);
		const char *near = mlp_suggest(ref->stage, names, p->nstages);

		if (near)
			mlp_pl_report(c, pos,
			              "unknown stage '%s' in expression (did you mean '%s'?)",
			              ref->stage, near);
		else
			mlp_pl_report(c, pos, "unknown stage '%s' in expression", ref->stage);
		free(names);
	} else if ((size_t)k == ec->stage) {
		mlp_pl_report(c, pos, "stage '%s' uses its own %s (they exist only after it ends)",
		              ref->stage, what);
	} else if (!mlp_pipeline_depends_on(p, ec->stage, (size_t)k)) {
		mlp_pl_report(c, pos,
		              "stage '%s' uses %s of '%s' but does not need it (add it to "
		              "needs)",
		              p->stages[ec->stage].name, what, ref->stage);
	}
	return 0;
}

static void report_shell(size_t offset, const char *message, void *payload)
{
	struct expr_check *ec = payload;

	mlp_pl_report(ec->c, value_pos(ec->c, ec->node, offset), "%s", message);
}

void mlp_pl_check_expressions(struct ctx *c)
{
	for (size_t i = 0; i < c->nexprs; i++) {
		struct expr_check ec = {c, c->exprs[i].stage, c->exprs[i].node};
		size_t err_offset = 0;

		if (mlp_expr_scan(ec.node->value, &err_offset, check_ref, &ec) != 0)
			mlp_pl_report(c, value_pos(c, ec.node, err_offset), "%s", mlp_error_last());
		else if (c->exprs[i].shell)
			mlp_expr_check_shell(ec.node->value, report_shell, &ec);
	}
}

/* Duplicate keys, once per mapping in the file (a mapping shared through an
 * alias is still one mapping). */
void mlp_pl_check_duplicates(struct ctx *c)
{
	for (const struct node *n = c->nodes; n != NULL; n = n->next) {
		if (n->type != NODE_MAP)
			continue;
		for (size_t i = 0; i < n->npairs; i++) {
			const struct pair *pr = &n->pairs[i];

			if (pr->merged)
				continue;
			if (pr->key->type != NODE_SCALAR) {
				char *d = mlp_pl_describe(pr->key);

				mlp_pl_report(c, pr->key->pos, "keys must be strings, not %s", d);
				free(d);
			} else if (pr->dup_of != NULL) {
				mlp_pl_report(c, pr->key->pos,
				              "duplicate %s '%s' (first defined at %d:%d)",
				              n == c->stages_map ? "stage" : "key", pr->key->value,
				              pr->dup_of->pos.line, pr->dup_of->pos.col);
			}
		}
	}
}
