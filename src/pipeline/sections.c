/*
 * sections.c - the top level of a pipeline file, and the sections that
 * are not stages: name, workdir, env, defaults (and retry blocks), and
 * on: with its push and schedule triggers.
 *
 * mlp_pl_parse_top() is the walk of step 3 (see pipeline.c): every
 * top-level key, then stages: last, since they inherit from defaults:
 * wherever it is written, then the checks that need every stage (graph.c,
 * kind-gate.c, checks.c).  env and retry are read here for stages too.
 */
#include "config.h"

#include <ctype.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pipeline/cron.h"
#include "base/error.h"
#include "pipeline/pipeline-int.h"
#include "base/util.h"

static bool env_name_valid(const char *s)
{
	if (!isalpha((unsigned char)*s) && *s != '_')
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '_')
			return false;
	return true;
}

/* env: NAME: value (a scalar; numbers and booleans as written, null as ""). */
void mlp_pl_parse_env(struct mlp_kvlist *out, struct ctx *c, const struct node *v, size_t stage)
{
	if (!mlp_pl_want_map(c, "env", v, "a mapping of NAME: value", true) || mlp_pl_is_null(v))
		return;
	for (size_t i = 0; i < v->npairs; i++) {
		const struct pair *pr = &v->pairs[i];

		if (!mlp_pl_pair_usable(pr))
			continue;
		if (!env_name_valid(pr->key->value)) {
			mlp_pl_report(c, pr->key->pos,
			              "'%s' is not a valid environment variable name "
			              "(letters, digits and '_', not starting with a digit)",
			              pr->key->value);
			continue;
		}
		if (pr->value->type != NODE_SCALAR) {
			char *d = mlp_pl_describe(pr->value);

			mlp_pl_report(c, pr->value->pos,
			              "env '%s' must be a string, number or boolean, "
			              "not %s",
			              pr->key->value, d);
			free(d);
			continue;
		}
		mlp_kvlist_add(out, pr->key->value,
		               mlp_pl_is_null(pr->value) ? "" : pr->value->value, pr->value->pos);
		mlp_pl_note_expr(c, stage, pr->value);
	}
}

static const struct {
	const char *name;
	int number;
} signal_names[] = {
        {"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"ILL", SIGILL},
        {"ABRT", SIGABRT}, {"BUS", SIGBUS},   {"FPE", SIGFPE},   {"KILL", SIGKILL},
        {"SEGV", SIGSEGV}, {"PIPE", SIGPIPE}, {"ALRM", SIGALRM}, {"TERM", SIGTERM},
        {"USR1", SIGUSR1}, {"USR2", SIGUSR2},
};

static bool parse_retry_rule(const char *s, struct mlp_retry_rule *r)
{
	long long n;

	r->value = -1;
	if (strcmp(s, "any") == 0) {
		r->match = MLP_RETRY_ANY;
		return true;
	}
	if (strcmp(s, "timeout") == 0) {
		r->match = MLP_RETRY_TIMEOUT;
		return true;
	}
	if (strcmp(s, "exit") == 0) {
		r->match = MLP_RETRY_EXIT;
		return true;
	}
	if (strncmp(s, "exit:", 5) == 0) {
		r->match = MLP_RETRY_EXIT;
		if (mlp_parse_int(&n, s + 5, 0, 255) != 0 || !isdigit((unsigned char)s[5]))
			return false;
		r->value = (int)n;
		return true;
	}
	if (strcmp(s, "signal") == 0) {
		r->match = MLP_RETRY_SIGNAL;
		return true;
	}
	if (strncmp(s, "signal:", 7) == 0) {
		const char *name = s + 7;

		r->match = MLP_RETRY_SIGNAL;
		if (isdigit((unsigned char)*name)) {
			if (mlp_parse_int(&n, name, 1, 64) != 0)
				return false;
			r->value = (int)n;
			return true;
		}
		if (strncasecmp(name, "SIG", 3) == 0)
			name += 3;
		for (size_t i = 0; i < MLP_ARRAY_SIZE(signal_names); i++) {
			if (strcasecmp(name, signal_names[i].name) == 0) {
				r->value = signal_names[i].number;
				return true;
			}
		}
	}
	return false;
}

void mlp_pl_retry_defaults(struct mlp_retry *r, int max)
{
	free(r->on);
	memset(r, 0, sizeof(*r));
	r->max = max;
	r->backoff_ms = 1000;
	r->backoff_factor = 2;
	r->backoff_max_ms = 5 * 60 * 1000;
}

void mlp_pl_retry_copy(struct mlp_retry *dst, const struct mlp_retry *src)
{
	free(dst->on);
	*dst = *src;
	dst->on = NULL;
	if (src->non > 0) {
		dst->on = xmalloc(src->non * sizeof(*dst->on));
		memcpy(dst->on, src->on, src->non * sizeof(*dst->on));
	}
}

void mlp_pl_parse_retry(struct mlp_retry *out, struct ctx *c, const struct node *v)
{
	static const char *const keys[] = {
	        "max", "backoff", "backoff_factor", "backoff_max", "on",
	};
	long long n;

	if (v->type == NODE_SCALAR && v->plain && mlp_pl_int_syntax(v->value)) {
		mlp_pl_retry_defaults(out, 0);
		if (mlp_pl_get_int(&n, c, "retry", v, 0, 100))
			out->max = (int)n;
		return;
	}
	if (v->type != NODE_MAP) {
		mlp_pl_wrong_type(c, "retry", v,
		                  "a number of retries or a mapping (max, backoff, "
		                  "backoff_factor, backoff_max, on)");
		return;
	}
	/* A retry block means "retry": once, unless max says otherwise. */
	mlp_pl_retry_defaults(out, 1);
	for (size_t i = 0; i < v->npairs; i++) {
		const struct pair *pr = &v->pairs[i];
		const char *k = pr->key->value;
		const struct node *val = pr->value;

		if (!mlp_pl_pair_usable(pr))
			continue;
		if (strcmp(k, "max") == 0) {
			if (mlp_pl_get_int(&n, c, k, val, 0, 100))
				out->max = (int)n;
		} else if (strcmp(k, "backoff") == 0) {
			mlp_pl_get_duration(&out->backoff_ms, c, k, val, false);
		} else if (strcmp(k, "backoff_max") == 0) {
			mlp_pl_get_duration(&out->backoff_max_ms, c, k, val, false);
		} else if (strcmp(k, "backoff_factor") == 0) {
			double f;

			if (mlp_pl_get_number(&f, c, k, val)) {
				if (f < 1)
					mlp_pl_report(c, val->pos,
					              "'backoff_factor' must be at least 1, not %s",
					              val->value);
				else
					out->backoff_factor = f;
			}
		} else if (strcmp(k, "on") == 0) {
			char **rules = NULL;
			struct mlp_pos *pos = NULL;
			size_t nrules = 0;

			mlp_pl_get_string_list(&rules, &pos, &nrules, c, "on", val);
			for (size_t j = 0; j < nrules; j++) {
				struct mlp_retry_rule rule;

				if (parse_retry_rule(rules[j], &rule)) {
					out->on = xrealloc(out->on,
					                   (out->non + 1) * sizeof(*out->on));
					out->on[out->non++] = rule;
				} else {
					mlp_pl_report(
					        c, pos[j],
					        "unknown retry rule '%s' (the rules are any, "
					        "exit, exit:N with N 0-255, signal, signal:NAME "
					        "such as "
					        "signal:KILL, signal:N with N 1-64, and timeout)",
					        rules[j]);
				}
				free(rules[j]);
			}
			free(rules);
			free(pos);
		} else {
			mlp_pl_unknown_key(c, pr->key, keys, MLP_ARRAY_SIZE(keys), " in retry");
		}
	}
}

static void parse_defaults(struct ctx *c, const struct node *v)
{
	static const char *const keys[] = {"timeout", "kill_grace", "retry"};
	struct mlp_pipeline *p = c->p;

	if (!mlp_pl_want_map(c, "defaults", v, "a mapping (timeout, kill_grace, retry)", true) ||
	    mlp_pl_is_null(v))
		return;
	for (size_t i = 0; i < v->npairs; i++) {
		const struct pair *pr = &v->pairs[i];
		const char *k = pr->key->value;

		if (!mlp_pl_pair_usable(pr))
			continue;
		if (strcmp(k, "timeout") == 0)
			mlp_pl_get_duration(&p->default_timeout_ms, c, k, pr->value, true);
		else if (strcmp(k, "kill_grace") == 0)
			mlp_pl_get_duration(&p->default_kill_grace_ms, c, k, pr->value, false);
		else if (strcmp(k, "retry") == 0)
			mlp_pl_parse_retry(&p->default_retry, c, pr->value);
		else
			mlp_pl_unknown_key(c, pr->key, keys, MLP_ARRAY_SIZE(keys), " in defaults");
	}
}

static const char *const trigger_names[] = {"push", "schedule"};

static void unknown_trigger(struct ctx *c, const struct node *n)
{
	const char *near = mlp_suggest(n->value, trigger_names, MLP_ARRAY_SIZE(trigger_names));

	if (near)
		mlp_pl_report(c, n->pos, "unknown trigger '%s' (did you mean '%s'?)", n->value,
		              near);
	else
		mlp_pl_report(c, n->pos, "unknown trigger '%s' (known: push, schedule)", n->value);
}

/* "on: push" and "on: [push]": a trigger named without settings. */
static void trigger_word(struct ctx *c, const struct node *n)
{
	if (n->type != NODE_SCALAR || mlp_pl_is_null(n)) {
		mlp_pl_wrong_type(c, "on", n, "a trigger name (push) or a mapping of triggers");
		return;
	}
	if (strcmp(n->value, "push") == 0)
		c->p->on_push = true;
	else if (strcmp(n->value, "schedule") == 0)
		mlp_pl_report(c, n->pos,
		              "'schedule' needs a list of times, as in "
		              "'schedule: [{ cron: \"0 2 * * *\" }]'");
	else
		unknown_trigger(c, n);
}

static void parse_push(struct ctx *c, const struct node *v)
{
	static const char *const keys[] = {"branches", "tags"};
	struct mlp_pipeline *p = c->p;

	p->on_push = true;
	if (!mlp_pl_want_map(c, "push", v,
	                     "empty (every branch) or a mapping with branches and tags", true) ||
	    mlp_pl_is_null(v))
		return;
	for (size_t i = 0; i < v->npairs; i++) {
		const struct pair *pr = &v->pairs[i];
		const char *k = pr->key->value;

		if (!mlp_pl_pair_usable(pr))
			continue;
		if (strcmp(k, "branches") == 0)
			mlp_pl_get_string_list(&p->push_branches, NULL, &p->npush_branches, c, k,
			                       pr->value);
		else if (strcmp(k, "tags") == 0)
			mlp_pl_get_string_list(&p->push_tags, NULL, &p->npush_tags, c, k,
			                       pr->value);
		else
			mlp_pl_unknown_key(c, pr->key, keys, MLP_ARRAY_SIZE(keys), " in push");
	}
}

static void parse_schedule_entry(struct ctx *c, const struct node *v)
{
	static const char *const keys[] = {"cron", "timezone", "concurrency", "starting_deadline"};
	static const char *const concurrency[] = {"forbid", "allow", "replace"};
	struct mlp_pipeline *p = c->p;
	struct mlp_schedule *s;
	bool has_cron = false;
	int which;

	if (v->type != NODE_MAP) {
		char *d = mlp_pl_describe(v);

		mlp_pl_report(c, v->pos,
		              "schedule entries must be mappings such as "
		              "{ cron: \"0 2 * * *\" }, not %s",
		              d);
		free(d);
		return;
	}
	p->schedules = xrealloc(p->schedules, (p->nschedules + 1) * sizeof(*p->schedules));
	s = &p->schedules[p->nschedules++];
	memset(s, 0, sizeof(*s));
	s->timezone = xstrdup("UTC");
	s->concurrency = xstrdup("forbid");
	s->pos = v->pos;
	for (size_t i = 0; i < v->npairs; i++) {
		const struct pair *pr = &v->pairs[i];
		const char *k = pr->key->value;
		const struct node *val = pr->value;

		if (!mlp_pl_pair_usable(pr))
			continue;
		if (strcmp(k, "cron") == 0) {
			struct mlp_cron cron;

			has_cron = true;
			if (mlp_pl_get_name(&s->cron, c, k, val) &&
			    mlp_cron_parse(&cron, s->cron) != 0)
				mlp_pl_report(c, val->pos, "%s", mlp_error_last());
		} else if (strcmp(k, "timezone") == 0) {
			if (mlp_pl_get_name(&s->timezone, c, k, val) &&
			    !mlp_timezone_valid(s->timezone))
				mlp_pl_report(c, val->pos,
				              "unknown time zone '%s' (use a name from the tz "
				              "database such as 'Europe/Berlin', or 'UTC')",
				              s->timezone);
		} else if (strncmp(k, "x-", 2) == 0) {
			/* Extension keys: room for anchors, as in docker compose. */
		} else if (strcmp(k, "concurrency") == 0) {
			if (mlp_pl_get_enum(&which, c, k, val, concurrency,
			                    MLP_ARRAY_SIZE(concurrency))) {
				free(s->concurrency);
				s->concurrency = xstrdup(concurrency[which]);
			}
		} else if (strcmp(k, "starting_deadline") == 0) {
			mlp_pl_get_duration(&s->starting_deadline_ms, c, k, val, true);
		} else {
			mlp_pl_unknown_key(c, pr->key, keys, MLP_ARRAY_SIZE(keys), " in schedule");
		}
	}
	if (!has_cron)
		mlp_pl_report(c, v->pos, "missing 'cron' in schedule (as in cron: \"0 2 * * *\")");
}

static void parse_on(struct ctx *c, const struct node *v)
{
	if (v->type == NODE_SCALAR) {
		trigger_word(c, v);
		return;
	}
	if (v->type == NODE_SEQ) {
		for (size_t i = 0; i < v->nitems; i++)
			trigger_word(c, v->items[i]);
		return;
	}
	for (size_t i = 0; i < v->npairs; i++) {
		const struct pair *pr = &v->pairs[i];
		const char *k = pr->key->value;
		const struct node *val = pr->value;

		if (!mlp_pl_pair_usable(pr))
			continue;
		if (strcmp(k, "push") == 0) {
			parse_push(c, val);
		} else if (strcmp(k, "schedule") == 0) {
			if (val->type != NODE_SEQ) {
				mlp_pl_wrong_type(c, k, val,
				                  "a list of entries such as "
				                  "{ cron: \"0 2 * * *\" }");
				continue;
			}
			for (size_t j = 0; j < val->nitems; j++)
				parse_schedule_entry(c, val->items[j]);
		} else {
			unknown_trigger(c, pr->key);
		}
	}
}

void mlp_pl_parse_top(struct ctx *c, const struct node *root)
{
	static const char *const keys[] = {"name",    "on",     "env",       "defaults",
	                                   "workdir", "stages", "kubernetes"};
	struct mlp_pipeline *p = c->p;
	const struct pair *stages = NULL;

	for (size_t i = 0; i < root->npairs; i++) {
		const struct pair *pr = &root->pairs[i];
		const char *k = pr->key->value;
		const struct node *v = pr->value;

		if (!mlp_pl_pair_usable(pr))
			continue;
		if (strcmp(k, "name") == 0) {
			mlp_pl_get_name(&p->name, c, k, v);
		} else if (strcmp(k, "on") == 0) {
			if (v->type == NODE_MAP || v->type == NODE_SEQ || !mlp_pl_is_null(v))
				parse_on(c, v);
			else
				mlp_pl_wrong_type(c, k, v,
				                  "a trigger (push) or a mapping of triggers");
		} else if (strcmp(k, "env") == 0) {
			mlp_pl_parse_env(&p->env, c, v, SIZE_MAX);
		} else if (strcmp(k, "defaults") == 0) {
			parse_defaults(c, v);
		} else if (strcmp(k, "workdir") == 0) {
			mlp_pl_get_name(&p->workdir, c, k, v);
		} else if (strcmp(k, "stages") == 0) {
			stages = pr;
		} else if (strcmp(k, "kubernetes") == 0) {
			mlp_pl_parse_k8s(&p->k8s, c, pr, SIZE_MAX);
		} else if (strncmp(k, "x-", 2) == 0) {
			/* Extension keys: room for anchors, as in docker compose. */
		} else if (strcmp(k, "concurrency") == 0) {
			mlp_pl_report(c, pr->key->pos,
			              "unknown key 'concurrency' (it belongs in a "
			              "schedule entry: on.schedule[].concurrency)");
		} else {
			mlp_pl_unknown_key(c, pr->key, keys, MLP_ARRAY_SIZE(keys), "");
		}
	}
	/* Stages last: they inherit from defaults wherever those are written. */
	if (stages == NULL) {
		mlp_pl_report(c, root->pos,
		              "missing 'stages' (a mapping of stage names to stages)");
		return;
	}
	mlp_pl_parse_stages(c, stages);
	if (p->nstages == 0)
		return;
	mlp_pl_resolve_defaults(c);
	mlp_pl_check_k8s_stages(c);
	mlp_pl_resolve_needs(c);
	mlp_pl_order_stages(c);
	mlp_pl_check_metrics_from(c);
	mlp_pl_check_expressions(c);
}
