/*
 * store-models.c - artifacts and the model registry: versions, their
 * metrics and statuses (store.h).  Gate thresholds and gate decisions are
 * store-gates.c's.
 *
 * Artifacts: a file is copied into artifacts/tmp/ beside the data, hashed
 * (the copy, so the name is the digest of exactly the stored bytes),
 * fsynced, and renamed to artifacts/sha256/ab/cdef...; only then is a row
 * written.  Copying first keeps the write lock free while a model of
 * gigabytes is copied, and a crash between the two leaves at worst a file
 * nobody refers to, never a row whose file is missing.
 *
 * Writes that must be atomic (a registration, a status change) use a
 * SAVEPOINT: alone they are their own transaction, inside a caller's (the
 * engine's per-turn transaction, the gate's decision) they nest in it.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/crypto.h"
#include "base/error.h"
#include "base/json.h"
#include "store/store-int.h"
#include "store/store-models.h"
#include "base/util.h"

/* ---- statuses ----------------------------------------------------------- */

static const char *const model_status_names[] = {
        [MLP_MODEL_CANDIDATE] = "candidate", [MLP_MODEL_APPROVED] = "approved",
        [MLP_MODEL_REJECTED] = "rejected",   [MLP_MODEL_DEPLOYED] = "deployed",
        [MLP_MODEL_RETIRED] = "retired",
};

const char *mlp_model_status_name(enum mlp_model_status s)
{
	return (size_t)s < MLP_ARRAY_SIZE(model_status_names) ? model_status_names[s] : "unknown";
}

int mlp_model_status_parse(enum mlp_model_status *out, const char *name)
{
	for (size_t i = 0; i < MLP_ARRAY_SIZE(model_status_names); i++) {
		if (strcmp(model_status_names[i], name) == 0) {
			*out = (enum mlp_model_status)i;
			return 0;
		}
	}
	return MLP_EINVAL;
}

/* ---- artifacts ---------------------------------------------------------- */

/* Copies src into a new temporary file in dir; *out_tmp is its path. */
static int copy_to_temp(char **out_tmp, int64_t *out_size, const char *src, const char *dir)
{
	char *tmp = xasprintf("%s/put-XXXXXX", dir);
	char buf[1 << 16];
	int in = -1, out = -1, rc = MLP_EIO;
	int64_t size = 0;

	*out_tmp = NULL;
	in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0) {
		mlp_error_set_errno(errno, "cannot read %s", src);
		goto done;
	}
	out = mkostemp(tmp, O_CLOEXEC);
	if (out < 0) {
		mlp_error_set_errno(errno, "cannot create a file in %s", dir);
		goto done;
	}
	for (;;) {
		ssize_t n = read(in, buf, sizeof(buf));
		const char *p = buf;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			mlp_error_set_errno(errno, "cannot read %s", src);
			goto done;
		}
		if (n == 0)
			break;
		size += n;
		while (n > 0) {
			ssize_t w = write(out, p, (size_t)n);

			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				mlp_error_set_errno(errno, "cannot write %s", tmp);
				goto done;
			}
			p += w;
			n -= w;
		}
	}
	/* Content-addressed files never change: read-only for everyone. */
	if (fchmod(out, 0444) != 0 || fsync(out) != 0) {
		mlp_error_set_errno(errno, "cannot write %s", tmp);
		goto done;
	}
	if (close(out) != 0) {
		out = -1;
		mlp_error_set_errno(errno, "cannot write %s", tmp);
		goto done;
	}
	out = -1;
	*out_tmp = tmp;
	*out_size = size;
	tmp = NULL;
	rc = 0;
done:
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	if (tmp) {
		unlink(tmp);
		free(tmp);
	}
	return rc;
}

static void fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

int mlp_store_artifact_put(char out_sha256[65], char **out_path, struct mlp_store *s,
                           const char *src)
{
	char *tmpdir = xasprintf("%s/artifacts/tmp", s->data_dir);
	char *tmp = NULL, *rel = NULL, *dest = NULL, *destdir = NULL;
	char hex[MLP_SHA256_HEX_LEN + 1];
	int64_t size = 0;
	sqlite3_stmt *st;
	int rc;

	if (out_path)
		*out_path = NULL;
	if ((rc = mlp_mkdirs(tmpdir, 0755)) != 0)
		goto done;
	if ((rc = copy_to_temp(&tmp, &size, src, tmpdir)) != 0)
		goto done;
	if ((rc = mlp_sha256_file_hex(hex, tmp)) != 0)
		goto done;
	rel = xasprintf("artifacts/sha256/%.2s/%s", hex, hex + 2);
	dest = xasprintf("%s/%s", s->data_dir, rel);
	destdir = mlp_dirname(dest);
	if ((rc = mlp_mkdirs(destdir, 0755)) != 0)
		goto done;
	if (access(dest, F_OK) == 0) {
		/* Stored already: identical content is kept once. */
		unlink(tmp);
	} else if (rename(tmp, dest) != 0) {
		mlp_error_set_errno(errno, "cannot store %s as %s", src, dest);
		rc = MLP_EIO;
		goto done;
	} else {
		fsync_dir(destdir);
	}
	free(tmp);
	tmp = NULL;

	st = store_prepare(s, "INSERT OR IGNORE INTO artifacts (sha256, path, size, created_at)"
	                      " VALUES (?, ?, ?, ?)");
	if (st == NULL) {
		rc = MLP_EDB;
		goto done;
	}
	store_bind_text(st, 1, hex);
	store_bind_text(st, 2, rel);
	sqlite3_bind_int64(st, 3, size);
	sqlite3_bind_int64(st, 4, mlp_wall_ms());
	if ((rc = store_exec_stmt(s, st, "recording an artifact")) != 0)
		goto done;
	memcpy(out_sha256, hex, sizeof(hex));
	if (out_path) {
		*out_path = dest;
		dest = NULL;
	}
done:
	if (tmp) {
		unlink(tmp);
		free(tmp);
	}
	free(tmpdir);
	free(rel);
	free(dest);
	free(destdir);
	return rc;
}

/* ---- model versions ----------------------------------------------------- */

static int insert_event(struct mlp_store *s, int64_t version_id, const char *old_status,
                        const char *new_status, const char *user, const char *reason)
{
	sqlite3_stmt *st = store_prepare(
	        s, "INSERT INTO model_version_events (version_id, old_status, new_status, user, at,"
	           " reason) VALUES (?, ?, ?, ?, ?, ?)");

	if (st == NULL)
		return MLP_EDB;
	sqlite3_bind_int64(st, 1, version_id);
	store_bind_text(st, 2, old_status);
	store_bind_text(st, 3, new_status);
	store_bind_text(st, 4, user);
	sqlite3_bind_int64(st, 5, mlp_wall_ms());
	store_bind_text(st, 6, reason);
	return store_exec_stmt(s, st, "recording a model status change");
}

int mlp_store_model_metrics_put(struct mlp_store *s, int64_t version_id, const char *stage,
                                const struct mlp_metric *metrics, size_t n)
{
	sqlite3_stmt *st;
	int rc = 0;

	if (n == 0)
		return 0;
	st = store_prepare(s, "INSERT OR REPLACE INTO model_metrics (version_id, name, value,"
	                      " stage) VALUES (?, ?, ?, ?)");
	if (st == NULL)
		return MLP_EDB;
	for (size_t i = 0; i < n && rc == 0; i++) {
		sqlite3_reset(st);
		sqlite3_bind_int64(st, 1, version_id);
		store_bind_text(st, 2, metrics[i].name);
		sqlite3_bind_double(st, 3, metrics[i].value);
		store_bind_text(st, 4, stage);
		if (sqlite3_step(st) != SQLITE_DONE)
			rc = store_fail(s, "recording a model metric");
	}
	sqlite3_finalize(st);
	return rc;
}

int mlp_store_model_register(int64_t *out_id, int *out_version, struct mlp_store *s,
                             const struct mlp_model_version_new *v)
{
	sqlite3_stmt *st;
	int64_t now = mlp_wall_ms(), id;
	int version, rc;
	char *why;

	if ((rc = store_savepoint(s, "registering a model version")) != 0)
		return rc;
	/* A write first: the savepoint takes the write lock before it reads. */
	st = store_prepare(s, "INSERT OR IGNORE INTO models (name, created_at) VALUES (?, ?)");
	if (st == NULL) {
		rc = MLP_EDB;
		goto fail;
	}
	store_bind_text(st, 1, v->model);
	sqlite3_bind_int64(st, 2, now);
	if ((rc = store_exec_stmt(s, st, "registering a model")) != 0)
		goto fail;

	st = store_prepare(s, "SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions"
	                      " WHERE model = ?");
	if (st == NULL) {
		rc = MLP_EDB;
		goto fail;
	}
	store_bind_text(st, 1, v->model);
	if (sqlite3_step(st) != SQLITE_ROW) {
		rc = store_fail(s, "numbering a model version");
		sqlite3_finalize(st);
		goto fail;
	}
	version = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);

	st = store_prepare(
	        s, "INSERT INTO model_versions (model, version, sha256, run_id, stage, git_commit,"
	           " status, created_at)"
	           " VALUES (?1, ?2, ?3, ?4, ?5,"
	           " COALESCE(?6, (SELECT git_commit FROM runs WHERE id = ?4)), 'candidate', ?7)");
	if (st == NULL) {
		rc = MLP_EDB;
		goto fail;
	}
	store_bind_text(st, 1, v->model);
	sqlite3_bind_int(st, 2, version);
	store_bind_text(st, 3, v->sha256);
	store_bind_id(st, 4, v->run_id);
	store_bind_text(st, 5, v->stage);
	store_bind_text(st, 6, v->git_commit);
	sqlite3_bind_int64(st, 7, now);
	if ((rc = store_exec_stmt(s, st, "registering a model version")) != 0)
		goto fail;
	id = sqlite3_last_insert_rowid(s->db);
	if ((rc = mlp_store_model_metrics_put(s, id, v->stage, v->metrics, v->nmetrics)) != 0)
		goto fail;
	if (v->run_id > 0)
		why = xasprintf("registered by run %lld, stage '%s'", (long long)v->run_id,
		                v->stage ? v->stage : "?");
	else
		why = xstrdup("registered");
	rc = insert_event(s, id, NULL, "candidate", NULL, why);
	free(why);
	if (rc != 0)
		goto fail;
	if ((rc = store_release(s, "registering a model version")) != 0)
		return rc;
	if (out_id)
		*out_id = id;
	if (out_version)
		*out_version = version;
	return 0;
fail:
	store_rollback_to(s);
	return rc;
}

#define VERSION_COLUMNS                                                               \
	"v.id, v.model, v.version, v.sha256, a.path, a.size, v.run_id, v.stage,"      \
	" v.git_commit, v.status, v.status_reason, v.status_by, v.status_changed_at," \
	" v.created_at FROM model_versions v JOIN artifacts a ON a.sha256 = v.sha256"

static void read_version(struct mlp_store *s, struct mlp_model_version *v, sqlite3_stmt *st)
{
	char *status = store_column_text(st, 9);
	char *rel = store_column_text(st, 4);

	memset(v, 0, sizeof(*v));
	v->id = sqlite3_column_int64(st, 0);
	v->model = store_column_text(st, 1);
	v->version = sqlite3_column_int(st, 2);
	v->sha256 = store_column_text(st, 3);
	if (rel)
		v->artifact_path =
		        rel[0] == '/' ? xstrdup(rel) : xasprintf("%s/%s", s->data_dir, rel);
	free(rel);
	v->size = sqlite3_column_int64(st, 5);
	v->run_id = sqlite3_column_int64(st, 6);
	v->stage = store_column_text(st, 7);
	v->git_commit = store_column_text(st, 8);
	if (status == NULL || mlp_model_status_parse(&v->status, status) != 0)
		v->status = MLP_MODEL_CANDIDATE;
	free(status);
	v->status_reason = store_column_text(st, 10);
	v->status_by = store_column_text(st, 11);
	v->status_changed_at = sqlite3_column_int64(st, 12);
	v->created_at = sqlite3_column_int64(st, 13);
}

static int load_metrics(struct mlp_store *s, struct mlp_model_version *v)
{
	sqlite3_stmt *st = store_prepare(s, "SELECT name, value FROM model_metrics"
	                                    " WHERE version_id = ? ORDER BY name");
	size_t cap = 0;
	int rc;

	if (st == NULL)
		return MLP_EDB;
	sqlite3_bind_int64(st, 1, v->id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		xgrow((void **)&v->metrics, &cap, v->nmetrics + 1, sizeof(*v->metrics));
		v->metrics[v->nmetrics].name = store_column_text(st, 0);
		v->metrics[v->nmetrics].value = sqlite3_column_double(st, 1);
		v->nmetrics++;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return store_fail(s, "reading model metrics");
	return 0;
}

/* Runs a query for at most one version (with its metrics).  MLP_ENOTFOUND
 * without a message when there is none. */
static int get_one(struct mlp_store *s, struct mlp_model_version *out, sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);

	memset(out, 0, sizeof(*out));
	if (rc == SQLITE_DONE) {
		sqlite3_finalize(st);
		return MLP_ENOTFOUND;
	}
	if (rc != SQLITE_ROW) {
		rc = store_fail(s, "reading a model version");
		sqlite3_finalize(st);
		return rc;
	}
	read_version(s, out, st);
	sqlite3_finalize(st);
	if ((rc = load_metrics(s, out)) != 0)
		mlp_model_version_clear(out);
	return rc;
}

static int model_exists(struct mlp_store *s, bool *out, const char *model)
{
	sqlite3_stmt *st = store_prepare(s, "SELECT 1 FROM models WHERE name = ?");
	int rc;

	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, model);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return store_fail(s, "reading a model");
	*out = rc == SQLITE_ROW;
	return 0;
}

int mlp_store_model_version_get(struct mlp_model_version *out, struct mlp_store *s,
                                const char *model, int version)
{
	sqlite3_stmt *st = store_prepare(s, "SELECT " VERSION_COLUMNS
	                                    " WHERE v.model = ?1 AND (?2 = 0 OR v.version = ?2)"
	                                    " ORDER BY v.version DESC LIMIT 1");
	bool exists = false;
	int rc;

	memset(out, 0, sizeof(*out));
	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, model);
	sqlite3_bind_int(st, 2, version);
	rc = get_one(s, out, st);
	if (rc != MLP_ENOTFOUND)
		return rc;
	if ((rc = model_exists(s, &exists, model)) != 0)
		return rc;
	if (!exists)
		mlp_error_set("no model '%s'", model);
	else if (version == 0)
		mlp_error_set("model '%s' has no versions", model);
	else
		mlp_error_set("model '%s' has no version %d", model, version);
	return MLP_ENOTFOUND;
}

int mlp_store_model_version_of_run(struct mlp_model_version *out, struct mlp_store *s,
                                   const char *model, int64_t run_id)
{
	sqlite3_stmt *st =
	        store_prepare(s, "SELECT " VERSION_COLUMNS " WHERE v.model = ? AND v.run_id = ?"
	                         " ORDER BY v.version DESC LIMIT 1");

	memset(out, 0, sizeof(*out));
	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, model);
	sqlite3_bind_int64(st, 2, run_id);
	return get_one(s, out, st);
}

int mlp_store_model_version_with_status(struct mlp_model_version *out, struct mlp_store *s,
                                        const char *model, enum mlp_model_status status,
                                        int64_t exclude)
{
	sqlite3_stmt *st = store_prepare(s, "SELECT " VERSION_COLUMNS
	                                    " WHERE v.model = ? AND v.status = ? AND v.id != ?"
	                                    " ORDER BY v.version DESC LIMIT 1");

	memset(out, 0, sizeof(*out));
	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, model);
	store_bind_text(st, 2, mlp_model_status_name(status));
	sqlite3_bind_int64(st, 3, exclude);
	return get_one(s, out, st);
}

int mlp_store_model_versions_list(struct mlp_model_version **out, size_t *n, struct mlp_store *s,
                                  const char *model)
{
	sqlite3_stmt *st = store_prepare(s, "SELECT " VERSION_COLUMNS
	                                    " WHERE v.model = ? ORDER BY v.version DESC");
	struct mlp_model_version *v = NULL;
	size_t len = 0, cap = 0;
	int rc;

	*out = NULL;
	*n = 0;
	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, model);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		xgrow((void **)&v, &cap, len + 1, sizeof(*v));
		read_version(s, &v[len++], st);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		rc = store_fail(s, "listing model versions");
		goto fail;
	}
	for (size_t i = 0; i < len; i++)
		if ((rc = load_metrics(s, &v[i])) != 0)
			goto fail;
	*out = v;
	*n = len;
	return 0;
fail:
	mlp_model_version_free_all(v, len);
	return rc;
}

void mlp_model_version_clear(struct mlp_model_version *v)
{
	free(v->model);
	free(v->sha256);
	free(v->artifact_path);
	free(v->stage);
	free(v->git_commit);
	free(v->status_reason);
	free(v->status_by);
	mlp_metrics_free(v->metrics, v->nmetrics);
	memset(v, 0, sizeof(*v));
}

void mlp_model_version_free_all(struct mlp_model_version *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		mlp_model_version_clear(&v[i]);
	free(v);
}

static bool transition_allowed(enum mlp_model_status from, enum mlp_model_status to)
{
	if (from == to)
		return true;
	switch (to) {
	case MLP_MODEL_APPROVED:
		return from == MLP_MODEL_CANDIDATE || from == MLP_MODEL_REJECTED;
	case MLP_MODEL_REJECTED:
		return from == MLP_MODEL_CANDIDATE || from == MLP_MODEL_APPROVED;
	case MLP_MODEL_DEPLOYED:
		/* Retired -> deployed: a rollback to an earlier version. */
		return from == MLP_MODEL_APPROVED || from == MLP_MODEL_RETIRED;
	case MLP_MODEL_RETIRED:
		return from == MLP_MODEL_DEPLOYED;
	case MLP_MODEL_CANDIDATE:
		return false;
	}
	return false;
}

int mlp_store_model_set_status(struct mlp_store *s, int64_t version_id,
                               enum mlp_model_status status, const char *user, const char *reason)
{
	sqlite3_stmt *st;
	enum mlp_model_status old;
	char *model = NULL, *old_name = NULL;
	int version, rc;

	if ((rc = store_savepoint(s, "changing a model's status")) != 0)
		return rc;
	st = store_prepare(s, "SELECT model, version, status FROM model_versions WHERE id = ?");
	if (st == NULL) {
		rc = MLP_EDB;
		goto fail;
	}
	sqlite3_bind_int64(st, 1, version_id);
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		if (rc == SQLITE_DONE) {
			mlp_error_set("no model version with id %lld", (long long)version_id);
			rc = MLP_ENOTFOUND;
		} else {
			rc = store_fail(s, "reading a model version");
		}
		sqlite3_finalize(st);
		goto fail;
	}
	model = store_column_text(st, 0);
	version = sqlite3_column_int(st, 1);
	old_name = store_column_text(st, 2);
	sqlite3_finalize(st);
	if (old_name == NULL || mlp_model_status_parse(&old, old_name) != 0)
		old = MLP_MODEL_CANDIDATE;
	if (!transition_allowed(old, status)) {
		mlp_error_set("model '%s' version %d is %s: it cannot become %s", model, version,
		              mlp_model_status_name(old), mlp_model_status_name(status));
		rc = MLP_EINVAL;
		goto fail;
	}
	st = store_prepare(s, "UPDATE model_versions SET status = ?, status_reason = ?,"
	                      " status_by = ?, status_changed_at = ? WHERE id = ?");
	if (st == NULL) {
		rc = MLP_EDB;
		goto fail;
	}
	store_bind_text(st, 1, mlp_model_status_name(status));
	store_bind_text(st, 2, reason);
	store_bind_text(st, 3, user);
	sqlite3_bind_int64(st, 4, mlp_wall_ms());
	sqlite3_bind_int64(st, 5, version_id);
	if ((rc = store_exec_stmt(s, st, "changing a model's status")) != 0)
		goto fail;
	if ((rc = insert_event(s, version_id, old_name, mlp_model_status_name(status), user,
	                       reason)) != 0)
		goto fail;
	rc = store_release(s, "changing a model's status");
	free(model);
	free(old_name);
	return rc;
fail:
	store_rollback_to(s);
	free(model);
	free(old_name);
	return rc;
}

int mlp_store_models_list(struct mlp_model_info **out, size_t *n, struct mlp_store *s)
{
	sqlite3_stmt *st = store_prepare(
	        s, "SELECT m.name, m.created_at,"
	           " (SELECT COUNT(*) FROM model_versions v WHERE v.model = m.name),"
	           " (SELECT MAX(version) FROM model_versions v WHERE v.model = m.name),"
	           " (SELECT status FROM model_versions v WHERE v.model = m.name"
	           "   ORDER BY version DESC LIMIT 1),"
	           " (SELECT created_at FROM model_versions v WHERE v.model = m.name"
	           "   ORDER BY version DESC LIMIT 1),"
	           " (SELECT MAX(version) FROM model_versions v WHERE v.model = m.name"
	           "   AND v.status = 'approved'),"
	           " (SELECT MAX(version) FROM model_versions v WHERE v.model = m.name"
	           "   AND v.status = 'deployed')"
	           " FROM models m ORDER BY m.name");
	struct mlp_model_info *m = NULL;
	size_t len = 0, cap = 0;
	int rc;

	*out = NULL;
	*n = 0;
	if (st == NULL)
		return MLP_EDB;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct mlp_model_info *x;
		char *status;

		xgrow((void **)&m, &cap, len + 1, sizeof(*m));
		x = &m[len++];
		memset(x, 0, sizeof(*x));
		x->name = store_column_text(st, 0);
		x->created_at = sqlite3_column_int64(st, 1);
		x->versions = sqlite3_column_int(st, 2);
		x->latest = sqlite3_column_int(st, 3);
		status = store_column_text(st, 4);
		if (status == NULL || mlp_model_status_parse(&x->latest_status, status) != 0)
			x->latest_status = MLP_MODEL_CANDIDATE;
		free(status);
		x->latest_created_at = sqlite3_column_int64(st, 5);
		x->approved = sqlite3_column_int(st, 6);
		x->deployed = sqlite3_column_int(st, 7);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		mlp_model_info_free_all(m, len);
		return store_fail(s, "listing models");
	}
	*out = m;
	*n = len;
	return 0;
}

void mlp_model_info_free_all(struct mlp_model_info *m, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(m[i].name);
	free(m);
}
