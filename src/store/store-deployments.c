/*
 * store-deployments.c - the history of Kubernetes rollouts and rollbacks
 * (store.h, "deployments"; migration 3).
 *
 * A row is written before the change it describes is sent, and finished
 * once the outcome is known; rows are never deleted.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "store/store-int.h"
#include "store/store-deployments.h"
#include "base/util.h"

static const char *const result_names[] = {
        [MLP_DEPLOY_PENDING] = "pending", [MLP_DEPLOY_COMPLETE] = "complete",
        [MLP_DEPLOY_FAILED] = "failed",   [MLP_DEPLOY_ROLLED_BACK] = "rolled_back",
        [MLP_DEPLOY_DRY_RUN] = "dry_run",
};

const char *mlp_deploy_result_name(enum mlp_deploy_result r)
{
	return (size_t)r < MLP_ARRAY_SIZE(result_names) ? result_names[r] : "?";
}

static enum mlp_deploy_result result_parse(const char *s)
{
	for (size_t i = 0; i < MLP_ARRAY_SIZE(result_names); i++)
		if (s && strcmp(s, result_names[i]) == 0)
			return (enum mlp_deploy_result)i;
	return MLP_DEPLOY_FAILED;
}

int mlp_store_deployment_start(int64_t *out_id, struct mlp_store *s, const struct mlp_deployment *d)
{
	sqlite3_stmt *st = store_prepare(
	        s, "INSERT INTO deployments (kind, namespace, deployment, container, from_image,"
	           " to_image, env, previous_env, previous_annotations, model, model_version,"
	           " model_version_id, run_id, stage, rollback_of, result, user, started_at)"
	           " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,"
	           " ?16, ?17, ?18)");
	int rc;

	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, d->rollback ? "rollback" : "rollout");
	store_bind_text(st, 2, d->namespace_);
	store_bind_text(st, 3, d->deployment);
	store_bind_text(st, 4, d->container);
	store_bind_text(st, 5, d->from_image);
	store_bind_text(st, 6, d->to_image);
	store_bind_text(st, 7, d->env);
	store_bind_text(st, 8, d->previous_env);
	store_bind_text(st, 9, d->previous_annotations);
	store_bind_text(st, 10, d->model);
	store_bind_id(st, 11, d->model_version);
	store_bind_id(st, 12, d->model_version_id);
	store_bind_id(st, 13, d->run_id);
	store_bind_text(st, 14, d->stage);
	store_bind_id(st, 15, d->rollback_of);
	store_bind_text(st, 16, mlp_deploy_result_name(d->result));
	store_bind_text(st, 17, d->user);
	sqlite3_bind_int64(st, 18, d->started_at ? d->started_at : mlp_wall_ms());
	if ((rc = store_exec_stmt(s, st, "recording a deployment")) != 0)
		return rc;
	if (out_id)
		*out_id = sqlite3_last_insert_rowid(s->db);
	return 0;
}

int mlp_store_deployment_finish(struct mlp_store *s, int64_t id, enum mlp_deploy_result result,
                                const char *reason, const char *revision)
{
	sqlite3_stmt *st =
	        store_prepare(s, "UPDATE deployments SET result = ?2, reason = ?3,"
	                         " revision = coalesce(?4, revision), ended_at = ?5 WHERE id = ?1");

	if (st == NULL)
		return MLP_EDB;
	sqlite3_bind_int64(st, 1, id);
	store_bind_text(st, 2, mlp_deploy_result_name(result));
	store_bind_text(st, 3, reason);
	store_bind_text(st, 4, revision);
	sqlite3_bind_int64(st, 5, mlp_wall_ms());
	return store_exec_stmt(s, st, "recording the end of a deployment");
}

#define COLUMNS                                                                        \
	"id, kind, namespace, deployment, container, from_image, to_image, env,"       \
	" previous_env, previous_annotations, model, model_version, model_version_id," \
	" run_id, stage, rollback_of, result, reason, revision, user, started_at, ended_at"

static void row_read(struct mlp_deployment *x, sqlite3_stmt *st)
{
	char *kind = store_column_text(st, 1), *result = store_column_text(st, 16);

	x->id = sqlite3_column_int64(st, 0);
	x->rollback = kind && strcmp(kind, "rollback") == 0;
	x->namespace_ = store_column_text(st, 2);
	x->deployment = store_column_text(st, 3);
	x->container = store_column_text(st, 4);
	x->from_image = store_column_text(st, 5);
	x->to_image = store_column_text(st, 6);
	x->env = store_column_text(st, 7);
	x->previous_env = store_column_text(st, 8);
	x->previous_annotations = store_column_text(st, 9);
	x->model = store_column_text(st, 10);
	x->model_version = sqlite3_column_int(st, 11);
	x->model_version_id = sqlite3_column_int64(st, 12);
	x->run_id = sqlite3_column_int64(st, 13);
	x->stage = store_column_text(st, 14);
	x->rollback_of = sqlite3_column_int64(st, 15);
	x->result = result_parse(result);
	x->reason = store_column_text(st, 17);
	x->revision = store_column_text(st, 18);
	x->user = store_column_text(st, 19);
	x->started_at = sqlite3_column_int64(st, 20);
	x->ended_at = sqlite3_column_int64(st, 21);
	free(kind);
	free(result);
}

int mlp_store_deployments_list(struct mlp_deployment **out, size_t *n, struct mlp_store *s,
                               const char *namespace_, const char *deployment, int limit)
{
	sqlite3_stmt *st = store_prepare(
	        s, "SELECT " COLUMNS " FROM deployments"
	           " WHERE (?1 IS NULL OR namespace = ?1) AND (?2 IS NULL OR deployment = ?2)"
	           " ORDER BY id DESC LIMIT ?3");
	struct mlp_deployment *d = NULL;
	size_t len = 0, cap = 0;
	int rc;

	*out = NULL;
	*n = 0;
	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, namespace_);
	store_bind_text(st, 2, deployment);
	sqlite3_bind_int(st, 3, limit > 0 ? limit : -1);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		xgrow((void **)&d, &cap, len + 1, sizeof(*d));
		memset(&d[len], 0, sizeof(*d));
		row_read(&d[len++], st);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		mlp_deployment_free_all(d, len);
		return store_fail(s, "listing deployments");
	}
	*out = d;
	*n = len;
	return 0;
}

int mlp_store_deployment_last_rollout(struct mlp_deployment *out, struct mlp_store *s,
                                      const char *namespace_, const char *deployment)
{
	sqlite3_stmt *st =
	        store_prepare(s, "SELECT " COLUMNS " FROM deployments"
	                         " WHERE namespace = ?1 AND deployment = ?2 AND kind = 'rollout'"
	                         " AND result IN ('complete', 'failed') ORDER BY id DESC LIMIT 1");
	int rc;

	memset(out, 0, sizeof(*out));
	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, namespace_);
	store_bind_text(st, 2, deployment);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		row_read(out, st);
	sqlite3_finalize(st);
	if (rc == SQLITE_ROW)
		return 0;
	if (rc != SQLITE_DONE)
		return store_fail(s, "reading the last rollout");
	mlp_error_set("no rollout of %s/%s in effect to roll back (see mlpipe deployments)",
	              namespace_, deployment);
	return MLP_ENOTFOUND;
}

void mlp_deployment_clear(struct mlp_deployment *d)
{
	if (d == NULL)
		return;
	free(d->namespace_);
	free(d->deployment);
	free(d->container);
	free(d->from_image);
	free(d->to_image);
	free(d->env);
	free(d->previous_env);
	free(d->previous_annotations);
	free(d->model);
	free(d->stage);
	free(d->reason);
	free(d->revision);
	free(d->user);
	memset(d, 0, sizeof(*d));
}

void mlp_deployment_free_all(struct mlp_deployment *d, size_t n)
{
	for (size_t i = 0; i < n; i++)
		mlp_deployment_clear(&d[i]);
	free(d);
}

int mlp_store_deployment_set_previous(struct mlp_store *s, int64_t id, const char *from_image,
                                      const char *previous_env, const char *previous_annotations)
{
	sqlite3_stmt *st =
	        store_prepare(s, "UPDATE deployments SET from_image = ?2, previous_env = ?3,"
	                         " previous_annotations = ?4 WHERE id = ?1");

	if (st == NULL)
		return MLP_EDB;
	sqlite3_bind_int64(st, 1, id);
	store_bind_text(st, 2, from_image);
	store_bind_text(st, 3, previous_env);
	store_bind_text(st, 4, previous_annotations);
	return store_exec_stmt(s, st, "recording a deployment's previous state");
}

int mlp_store_deployment_get(struct mlp_deployment *out, struct mlp_store *s, int64_t id)
{
	sqlite3_stmt *st = store_prepare(s, "SELECT " COLUMNS " FROM deployments WHERE id = ?1");
	int rc;

	memset(out, 0, sizeof(*out));
	if (st == NULL)
		return MLP_EDB;
	sqlite3_bind_int64(st, 1, id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		row_read(out, st);
	sqlite3_finalize(st);
	if (rc == SQLITE_ROW)
		return 0;
	if (rc != SQLITE_DONE)
		return store_fail(s, "reading a deployment");
	mlp_error_set("no deployment %lld", (long long)id);
	return MLP_ENOTFOUND;
}
