/*
 * pipeline.c - reading and validating pipeline files (see pipeline.h):
 * the entry points, and freeing what they return.
 *
 * src/pipeline/ is the only module that includes libyaml.  Loading
 * happens in three steps:
 *
 *  1. The bytes are checked before libyaml sees them (size here, binary
 *     data and UTF-8 in yamltree.c), so that those problems get a plain
 *     message and a position.
 *  2. libyaml's event parser builds a small tree of our own nodes
 *     (yamltree.c).  The tree resolves aliases and merge keys, records
 *     duplicate keys, and stops at the limits that protect us from
 *     hostile input.  A YAML error here is the only problem reported: the
 *     tree is unusable after it.
 *  3. The tree is walked key by key into struct mlp_pipeline (sections.c,
 *     stages.c and a kind-*.c file per stage kind, reading values through
 *     scalars.c).  Every problem is reported (diag.c) and the walk goes
 *     on, so one run of `mlpipe validate` shows every mistake.  Checks
 *     that need the whole file (needs and cycles in graph.c, metrics_from
 *     in kind-gate.c, expressions and duplicate keys in checks.c) run
 *     after all stages are read.
 *
 * The tree only lives during loading; nothing outside src/pipeline/ sees
 * it (pipeline-int.h).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "pipeline/pipeline-int.h"
#include "pipeline/pipeline.h"
#include "base/util.h"

static char *default_name(const char *path)
{
	const char *base = strrchr(path, '/');
	size_t len;

	base = base ? base + 1 : path;
	len = strlen(base);
	if (len > 5 && strcmp(base + len - 5, ".yaml") == 0)
		len -= 5;
	else if (len > 4 && strcmp(base + len - 4, ".yml") == 0)
		len -= 4;
	return xstrndup(base, len);
}

static char *absolute_dir(const char *path)
{
	char *dir = mlp_dirname(path);
	char *abs = NULL;
	char *cwd;

	if (mlp_realpath(&abs, dir) == 0) {
		free(dir);
		return abs;
	}
	mlp_error_clear();
	if (dir[0] == '/')
		return dir;
	cwd = getcwd(NULL, 0);
	abs = xasprintf("%s/%s", cwd ? cwd : ".", dir);
	free(cwd);
	free(dir);
	return abs;
}

int mlp_pipeline_parse(struct mlp_pipeline **out, struct mlp_diags *diags, const char *path,
                       const char *text, size_t len)
{
	struct mlp_pipeline *p = xcalloc(1, sizeof(*p));
	struct ctx c = {0};
	struct node *root = NULL;
	size_t before = diags->len;

	*out = NULL;
	p->path = xstrdup(path);
	p->dir = absolute_dir(path);
	p->text = xstrndup(text, len);
	p->text_len = len;
	p->name = NULL;
	p->default_kill_grace_ms = 10 * 1000;
	mlp_pl_retry_defaults(&p->default_retry, 0);

	c.path = path;
	c.text = p->text;
	c.len = len;
	c.diags = diags;
	c.p = p;
	mlp_pl_index_lines(&c);

	if (len > MLP_PIPELINE_MAX_BYTES) {
		mlp_pl_report(&c, mlp_pl_pos(1, 1),
		              "file is too large (%zu bytes; the limit is %d)", len,
		              MLP_PIPELINE_MAX_BYTES);
		goto done;
	}
	if (mlp_pl_tree_read(&c, &root) != 0)
		goto done;
	if (mlp_pl_is_null(root)) {
		mlp_pl_report(&c, mlp_pl_pos(1, 1), "empty pipeline file");
		goto done;
	}
	if (root->type != NODE_MAP) {
		mlp_pl_report(&c, root->pos,
		              "a pipeline file must be a mapping of keys (name, on, env, "
		              "stages ...)");
		goto done;
	}
	mlp_pl_parse_top(&c, root);
	mlp_pl_check_duplicates(&c);
	if (p->name == NULL)
		p->name = default_name(path);
done:
	mlp_pl_tree_free(&c);
	mlp_pl_strtab_free(&c.stage_index);
	free(c.lines);
	free(c.extra);
	free(c.exprs);
	if (diags->len > before) {
		/* Only ours: the caller may collect the problems of several files. */
		mlp_pl_diags_sort_from(diags, before);
		mlp_pl_diags_dedup_from(diags, before);
		mlp_pipeline_free(p);
		return MLP_EINVAL;
	}
	*out = p;
	return 0;
}

int mlp_pipeline_load(struct mlp_pipeline **out, struct mlp_diags *diags, const char *path)
{
	struct stat st;
	char *text = NULL;
	size_t len = 0;
	int rc;

	*out = NULL;
	if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > MLP_PIPELINE_MAX_BYTES) {
		mlp_diags_add(diags, path, mlp_pl_pos(1, 1),
		              "file is too large (%lld bytes; the "
		              "limit is %d)",
		              (long long)st.st_size, MLP_PIPELINE_MAX_BYTES);
		return MLP_EINVAL;
	}
	rc = mlp_read_file(&text, &len, path, MLP_PIPELINE_MAX_BYTES);
	if (rc == MLP_EINVAL && stat(path, &st) == 0 && !S_ISDIR(st.st_mode)) {
		/* It grew, or it is a pipe: too large all the same. */
		mlp_diags_add(diags, path, mlp_pl_pos(1, 1),
		              "file is too large (more than %d "
		              "bytes; the limit is %d)",
		              MLP_PIPELINE_MAX_BYTES, MLP_PIPELINE_MAX_BYTES);
		return MLP_EINVAL;
	}
	if (rc != 0)
		return rc == MLP_ENOTFOUND ? MLP_ENOTFOUND : MLP_EIO;
	rc = mlp_pipeline_parse(out, diags, path, text, len);
	free(text);
	return rc;
}

static void retry_free(struct mlp_retry *r)
{
	free(r->on);
	r->on = NULL;
	r->non = 0;
}

static void stage_free(struct mlp_stage *st)
{
	free(st->name);
	free(st->description);
	for (size_t i = 0; i < st->nneeds; i++)
		free(st->needs[i]);
	free(st->needs);
	free(st->needs_pos);
	free(st->need_index);
	retry_free(&st->retry);
	mlp_kvlist_free(&st->env);
	free(st->workdir);
	free(st->run);
	free(st->train.builtin.layers);
	free(st->train.builtin.data);
	free(st->train.builtin.test_data);
	free(st->train.builtin.device);
	free(st->train.command);
	free(st->model.name);
	free(st->model.path);
	free(st->gate.name);
	free(st->gate.model);
	free(st->gate.metrics_from);
	for (size_t i = 0; i < st->gate.nrequire; i++)
		free(st->gate.require[i].metric);
	free(st->gate.require);
	mlp_kvlist_free(&st->gate.directions);
	free(st->rollout.deployment);
	free(st->rollout.namespace_);
	free(st->rollout.container);
	free(st->rollout.image);
	mlp_kvlist_free(&st->rollout.env);
	free(st->rollout.context);
	free(st->rollout.model);
	free(st->rollout.model_base_url);
	mlp_k8s_settings_free(&st->k8s);
}

void mlp_pipeline_free(struct mlp_pipeline *p)
{
	if (p == NULL)
		return;
	free(p->path);
	free(p->dir);
	free(p->text);
	free(p->name);
	mlp_kvlist_free(&p->env);
	free(p->workdir);
	for (size_t i = 0; i < p->npush_branches; i++)
		free(p->push_branches[i]);
	free(p->push_branches);
	for (size_t i = 0; i < p->npush_tags; i++)
		free(p->push_tags[i]);
	free(p->push_tags);
	for (size_t i = 0; i < p->nschedules; i++) {
		free(p->schedules[i].cron);
		free(p->schedules[i].timezone);
		free(p->schedules[i].concurrency);
	}
	free(p->schedules);
	retry_free(&p->default_retry);
	mlp_k8s_settings_free(&p->k8s);
	for (size_t i = 0; i < p->nstages; i++)
		stage_free(&p->stages[i]);
	free(p->stages);
	free(p->order);
	free(p);
}
