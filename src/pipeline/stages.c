/*
 * stages.c - stages: the stages: mapping, the keys stages share, and the
 * run kind.
 *
 * A stage's keys are read in two passes: first its kind (exactly one of
 * run, train, gate and rollout), since what else it may say depends on
 * it, then the rest: needs, if, env, timeout, kill_grace, retry,
 * continue_on_error, workdir, description and model.  A run stage's
 * kind value is its shell command and is read here; the other kinds have
 * a file each (kind-*.c).  What a stage leaves out comes from defaults:
 * once the whole file is read (mlp_pl_resolve_defaults()).
 */
#include "config.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/pipeline-int.h"
#include "base/util.h"

const char *mlp_stage_kind_name(enum mlp_stage_kind kind)
{
	switch (kind) {
	case MLP_STAGE_RUN:
		return "run";
	case MLP_STAGE_TRAIN:
		return "train";
	case MLP_STAGE_GATE:
		return "gate";
	case MLP_STAGE_ROLLOUT:
		return "rollout";
	}
	return "unknown";
}

bool mlp_pipeline_stage_name_valid(const char *s)
{
	if (!isalpha((unsigned char)*s) && *s != '_')
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-')
			return false;
	return true;
}

static void parse_model(struct ctx *c, size_t si, const struct pair *kp)
{
	static const char *const keys[] = {"name", "path"};
	struct mlp_model_ref *m = &c->p->stages[si].model;
	const struct node *v = kp->value;

	if (!mlp_pl_want_map(c, "model", v, "a mapping with name and path", false))
		return;
	m->set = true;
	m->pos = kp->key->pos;
	for (size_t i = 0; i < v->npairs; i++) {
		const struct pair *pr = &v->pairs[i];
		const char *k = pr->key->value;

		if (!mlp_pl_pair_usable(pr))
			continue;
		if (strcmp(k, "name") == 0) {
			mlp_pl_get_name(&m->name, c, k, pr->value);
		} else if (strcmp(k, "path") == 0) {
			if (mlp_pl_get_string(&m->path, c, k, pr->value))
				mlp_pl_note_expr(c, si, pr->value);
		} else {
			mlp_pl_unknown_key(c, pr->key, keys, MLP_ARRAY_SIZE(keys), " in model");
		}
	}
	if (m->name == NULL)
		mlp_pl_report(c, kp->key->pos, "missing 'name' in model");
	if (m->path == NULL)
		mlp_pl_report(c, kp->key->pos,
		              "missing 'path' in model (the file the stage writes)");
}

static const char *const kind_keys[] = {"run", "train", "gate", "rollout"};

static int kind_of_key(const char *k)
{
	for (size_t i = 0; i < MLP_ARRAY_SIZE(kind_keys); i++)
		if (strcmp(k, kind_keys[i]) == 0)
			return (int)i;
	return -1;
}

static void parse_if(struct ctx *c, struct mlp_stage *st, const struct node *v)
{
	static const char *const conds[] = {"success()", "failure()", "always()"};
	const char *s, *e;

	if (v->type == NODE_SCALAR && !mlp_pl_is_null(v)) {
		s = v->value;
		e = s + v->len;
		if (strncmp(s, "${{", 3) == 0 && e - s >= 5 && strcmp(e - 2, "}}") == 0) {
			s += 3;
			e -= 2;
		}
		while (s < e && *s == ' ')
			s++;
		while (e > s && e[-1] == ' ')
			e--;
		for (size_t i = 0; i < MLP_ARRAY_SIZE(conds); i++) {
			if ((size_t)(e - s) == strlen(conds[i]) &&
			    memcmp(s, conds[i], (size_t)(e - s)) == 0) {
				st->cond = (enum mlp_stage_if)i;
				return;
			}
		}
	}
	mlp_pl_wrong_type(c, "if", v, "success(), failure() or always()");
}

/* Finds stage si's one kind key in its mapping v; NULL (reported) when it
 * has none.  A second kind is reported and ignored. */
static const struct pair *stage_kind(struct ctx *c, size_t si, const struct node *v)
{
	struct mlp_stage *st = &c->p->stages[si];
	const struct pair *kind_pair = NULL;

	for (size_t i = 0; i < v->npairs; i++) {
		const struct pair *pr = &v->pairs[i];
		int kind;

		if (!mlp_pl_pair_usable(pr) || (kind = kind_of_key(pr->key->value)) < 0)
			continue;
		if (kind_pair != NULL) {
			mlp_pl_report(c, pr->key->pos,
			              "stage '%s' has two kinds ('%s' and '%s'): give "
			              "it only one",
			              st->name, kind_pair->key->value, pr->key->value);
			continue;
		}
		kind_pair = pr;
		st->kind = (enum mlp_stage_kind)kind;
		st->kind_pos = pr->key->pos;
		c->extra[si].has_kind = true;
	}
	if (kind_pair == NULL)
		mlp_pl_report(c, st->pos,
		              "stage '%s' has no kind: give it one of run, train, gate, "
		              "rollout",
		              st->name);
	return kind_pair;
}

/* The kind key's value: a run stage's command, or what kind-*.c reads. */
static void parse_kind(struct ctx *c, size_t si, const struct pair *pr)
{
	struct mlp_stage *st = &c->p->stages[si];
	const struct node *val = pr->value;

	switch (st->kind) {
	case MLP_STAGE_RUN:
		if (mlp_pl_get_string(&st->run, c, pr->key->value, val)) {
			st->run_pos = val->pos;
			mlp_pl_note_shell_expr(c, si, val);
		}
		break;
	case MLP_STAGE_TRAIN:
		mlp_pl_parse_train(c, si, pr);
		break;
	case MLP_STAGE_GATE:
		mlp_pl_parse_gate(c, si, pr);
		break;
	case MLP_STAGE_ROLLOUT:
		mlp_pl_parse_rollout(c, si, pr);
		break;
	}
}

static void parse_stage(struct ctx *c, size_t si)
{
	static const char *const keys[] = {
	        "description",       "needs",      "if",  "env",   "timeout", "kill_grace", "retry",
	        "continue_on_error", "workdir",    "run", "train", "gate",    "rollout",    "model",
	        "runs-on",           "kubernetes",
	};
	struct mlp_stage *st = &c->p->stages[si];
	struct stage_extra *x = &c->extra[si];
	const struct node *v = x->body;
	const struct pair *kind_pair = NULL;
	char *where;

	if (mlp_pl_is_null(v)) {
		mlp_pl_report(c, st->pos,
		              "stage '%s' has no kind: give it one of run, train, gate, "
		              "rollout",
		              st->name);
		return;
	}
	if (v->type != NODE_MAP) {
		char *d = mlp_pl_describe(v);

		mlp_pl_report(c, v->pos, "stage '%s' must be a mapping (run, needs ...), not %s",
		              st->name, d);
		free(d);
		return;
	}
	/* The kind first: what else is allowed depends on it. */
	kind_pair = stage_kind(c, si, v);
	where = xasprintf(" in stage '%s'", st->name);
	for (size_t i = 0; i < v->npairs; i++) {
		const struct pair *pr = &v->pairs[i];
		const char *k = pr->key->value;
		const struct node *val = pr->value;

		if (!mlp_pl_pair_usable(pr))
			continue;
		if (kind_of_key(k) >= 0) {
			if (pr == kind_pair)
				parse_kind(c, si, pr);
		} else if (strcmp(k, "description") == 0) {
			mlp_pl_get_string(&st->description, c, k, val);
		} else if (strcmp(k, "needs") == 0) {
			mlp_pl_get_string_list(&st->needs, &st->needs_pos, &st->nneeds, c, k, val);
		} else if (strcmp(k, "if") == 0) {
			parse_if(c, st, val);
		} else if (strcmp(k, "env") == 0) {
			mlp_pl_parse_env(&st->env, c, val, si);
		} else if (strcmp(k, "timeout") == 0) {
			x->has_timeout = mlp_pl_get_duration(&st->timeout_ms, c, k, val, true);
		} else if (strcmp(k, "kill_grace") == 0) {
			x->has_kill_grace =
			        mlp_pl_get_duration(&st->kill_grace_ms, c, k, val, false);
		} else if (strcmp(k, "retry") == 0) {
			x->has_retry = true;
			mlp_pl_parse_retry(&st->retry, c, val);
		} else if (strcmp(k, "continue_on_error") == 0) {
			mlp_pl_get_bool(&st->continue_on_error, c, k, val);
		} else if (strcmp(k, "workdir") == 0) {
			mlp_pl_get_name(&st->workdir, c, k, val);
		} else if (strcmp(k, "runs-on") == 0) {
			mlp_pl_parse_runs_on(c, si, pr);
		} else if (strcmp(k, "kubernetes") == 0) {
			mlp_pl_parse_k8s(&st->k8s, c, pr, si);
		} else if (strcmp(k, "model") == 0) {
			if (x->has_kind && st->kind != MLP_STAGE_RUN && st->kind != MLP_STAGE_TRAIN)
				mlp_pl_report(c, pr->key->pos,
				              "'model' belongs on run and train stages, and "
				              "'%s' is a %s stage",
				              st->name, mlp_stage_kind_name(st->kind));
			else
				parse_model(c, si, pr);
		} else {
			mlp_pl_unknown_key(c, pr->key, keys, MLP_ARRAY_SIZE(keys), where);
		}
	}
	free(where);
}

void mlp_pl_parse_stages(struct ctx *c, const struct pair *kp)
{
	struct mlp_pipeline *p = c->p;
	const struct node *v = kp->value;
	size_t n = 0;

	c->stages_map = v;
	if (!mlp_pl_want_map(c, "stages", v, "a mapping of stage names to stages", true))
		return;
	for (size_t i = 0; i < v->npairs; i++)
		if (mlp_pl_pair_usable(&v->pairs[i]))
			n++;
	if (n == 0) {
		mlp_pl_report(c, kp->key->pos,
		              "'stages' is empty: a pipeline needs at least one stage");
		return;
	}
	p->stages = xcalloc(n, sizeof(*p->stages));
	c->extra = xcalloc(n, sizeof(*c->extra));
	for (size_t i = 0; i < v->npairs; i++) {
		const struct pair *pr = &v->pairs[i];
		struct mlp_stage *st;

		if (!mlp_pl_pair_usable(pr))
			continue;
		st = &p->stages[p->nstages];
		c->extra[p->nstages].body = pr->value;
		p->nstages++;
		st->name = xstrdup(pr->key->value);
		mlp_pl_strtab_put(&c->stage_index, st->name, p->nstages - 1);
		st->pos = pr->key->pos;
		st->kind_pos = pr->key->pos;
		st->cond = MLP_IF_SUCCESS;
		mlp_pl_retry_defaults(&st->retry, 0);
		if (!mlp_pipeline_stage_name_valid(st->name))
			mlp_pl_report(c, st->pos,
			              "stage name '%s' is not valid (use letters, digits, '_' "
			              "and '-', starting with a letter or '_')",
			              st->name);
	}
	for (size_t i = 0; i < p->nstages; i++)
		parse_stage(c, i);
}

void mlp_pl_resolve_defaults(struct ctx *c)
{
	struct mlp_pipeline *p = c->p;

	for (size_t i = 0; i < p->nstages; i++) {
		struct mlp_stage *st = &p->stages[i];

		if (!c->extra[i].has_timeout)
			st->timeout_ms = p->default_timeout_ms;
		if (!c->extra[i].has_kill_grace)
			st->kill_grace_ms = p->default_kill_grace_ms;
		if (!c->extra[i].has_retry)
			mlp_pl_retry_copy(&st->retry, &p->default_retry);
	}
}
