/*
 * rollout.c - patch a Deployment, roll it out, roll back (see rollout.h);
 * what each rollout did is recorded in the store.  Deciding a
 * Deployment's status and waiting for it is rollout-watch.c's.
 */
#include "config.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/json.h"
#include "deploy/k8s.h"
#include "deploy/rollout-int.h"
#include "store/store.h"
#include "store/store-deployments.h"
#include "store/store-models.h"
#include "base/util.h"

#define ANN_MODEL "mlpipe.io/model"
#define ANN_VERSION "mlpipe.io/model-version"
#define ANN_SHA256 "mlpipe.io/model-sha256"
#define ANN_RUN "mlpipe.io/run"
#define CONFLICT_RETRIES 5

static const char *const mlpipe_annotations[] = {ANN_MODEL, ANN_VERSION, ANN_SHA256, ANN_RUN};

/* ------------------------------------------------------------------ */
/* Patches                                                             */
/* ------------------------------------------------------------------ */

int mlp_rollout_container(const struct mlp_json **out, const struct mlp_json *d, const char *name)
{
	const struct mlp_json *cs = mlp_json_path(d, "spec.template.spec.containers");
	const char *dname = mlp_json_path(d, "metadata.name")
	                            ? mlp_json_string(mlp_json_path(d, "metadata.name"))
	                            : NULL;
	size_t n = mlp_json_count(cs);
	struct mlp_buf names = {0};

	*out = NULL;
	if (name == NULL && n == 1) {
		*out = mlp_json_at(cs, 0);
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		const char *cn = mlp_json_get_string(mlp_json_at(cs, i), "name");

		if (name && cn && strcmp(cn, name) == 0) {
			*out = mlp_json_at(cs, i);
			mlp_buf_free(&names);
			return 0;
		}
		mlp_buf_printf(&names, "%s'%s'", i ? ", " : "", cn ? cn : "?");
	}
	if (name == NULL) {
		mlp_error_set("deployment %s has %zu containers (%s): say which one",
		              dname ? dname : "", n, mlp_buf_str(&names));
		mlp_buf_free(&names);
		return MLP_EINVAL;
	}
	mlp_error_set("deployment %s has no container '%s' (it has %s)", dname ? dname : "", name,
	              n ? mlp_buf_str(&names) : "none");
	mlp_buf_free(&names);
	return MLP_ENOTFOUND;
}

char *mlp_rollout_patch_json(const char *container, const char *image, const struct mlp_json *env,
                             const struct mlp_json *annotations, const char *rv)
{
	struct mlp_json *root = mlp_json_object(), *spec = mlp_json_object();
	struct mlp_json *tmpl = mlp_json_object(), *pspec = mlp_json_object();
	struct mlp_json *cs = mlp_json_array(), *c = mlp_json_object();
	char *text;

	if (rv) {
		struct mlp_json *meta = mlp_json_object();

		mlp_json_add_string(meta, "resourceVersion", rv);
		mlp_json_add(root, "metadata", meta);
	}
	if (annotations && mlp_json_count(annotations)) {
		struct mlp_json *meta = mlp_json_object();

		mlp_json_add(meta, "annotations", mlp_json_dup(annotations));
		mlp_json_add(tmpl, "metadata", meta);
	}
	/* Containers merge by name: only this one changes, sidecars stay. */
	mlp_json_add_string(c, "name", container);
	if (image)
		mlp_json_add_string(c, "image", image);
	if (env && mlp_json_count(env))
		mlp_json_add(c, "env", mlp_json_dup(env));
	mlp_json_append(cs, c);
	mlp_json_add(pspec, "containers", cs);
	mlp_json_add(tmpl, "spec", pspec);
	mlp_json_add(spec, "template", tmpl);
	mlp_json_add(root, "spec", spec);
	text = mlp_json_print(root, false);
	mlp_json_free(root);
	return text;
}

static const struct mlp_json *env_find(const struct mlp_json *env, const char *name)
{
	for (size_t i = 0; i < mlp_json_count(env); i++) {
		const char *n = mlp_json_get_string(mlp_json_at(env, i), "name");

		if (n && strcmp(n, name) == 0)
			return mlp_json_at(env, i);
	}
	return NULL;
}

struct mlp_json *mlp_rollout_env_set(const struct mlp_json *current, const struct mlp_kvlist *set)
{
	struct mlp_json *arr = mlp_json_array();

	for (size_t i = 0; set && i < set->len; i++) {
		const struct mlp_json *cur = env_find(current, set->items[i].key);
		struct mlp_json *e = mlp_json_object();

		mlp_json_add_string(e, "name", set->items[i].key);
		mlp_json_add_string(e, "value", set->items[i].value);
		if (mlp_json_get(cur, "valueFrom"))
			mlp_json_add_null(e, "valueFrom");
		mlp_json_append(arr, e);
	}
	return arr;
}

struct mlp_json *mlp_rollout_env_restore(const struct mlp_json *current,
                                         const struct mlp_json *previous,
                                         const struct mlp_json *keys)
{
	struct mlp_json *arr = mlp_json_array();

	for (size_t i = 0; i < mlp_json_count(keys); i++) {
		const char *name = mlp_json_key(mlp_json_at(keys, i));
		const struct mlp_json *prev = name ? env_find(previous, name) : NULL;
		const struct mlp_json *cur = name ? env_find(current, name) : NULL;
		struct mlp_json *e;

		if (name == NULL)
			continue;
		if (prev == NULL) {
			e = mlp_json_object();
			mlp_json_add_string(e, "name", name);
			mlp_json_add_string(e, "$patch", "delete");
		} else {
			e = mlp_json_dup(prev);
			/* Merged onto the current entry, which may hold the other
			 * form of value. */
			if (mlp_json_get(cur, "value") && !mlp_json_get(prev, "value"))
				mlp_json_add_null(e, "value");
			if (mlp_json_get(cur, "valueFrom") && !mlp_json_get(prev, "valueFrom"))
				mlp_json_add_null(e, "valueFrom");
		}
		mlp_json_append(arr, e);
	}
	return arr;
}

struct mlp_json *mlp_rollout_annotations_restore(const struct mlp_json *previous)
{
	struct mlp_json *o = mlp_json_object();

	for (size_t i = 0; i < MLP_ARRAY_SIZE(mlpipe_annotations); i++)
		mlp_json_add_string(o, mlpipe_annotations[i],
		                    mlp_json_get_string(previous, mlpipe_annotations[i]));
	return o;
}

/* ------------------------------------------------------------------ */
/* Talking to the API server                                           */
/* ------------------------------------------------------------------ */

void mlp_rollout_outcome_clear(struct mlp_rollout_outcome *o)
{
	free(o->namespace_);
	free(o->previous_image);
	free(o->image);
	free(o->revision);
	free(o->reason);
	memset(o, 0, sizeof(*o));
}

char *rollout_deployment_path(const char *ns, const char *name)
{
	return xasprintf("/apis/apps/v1/namespaces/%s/deployments/%s", ns, name);
}

void rollout_progress_line(FILE *f, const char *ns, const char *name, const char *fmt, ...)
{
	va_list ap;

	if (f == NULL)
		return;
	fprintf(f, "%s/%s: ", ns, name);
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fputc('\n', f);
	fflush(f);
}

/* A patch, re-read and rebuilt on 409 until it applies.  build makes the
 * patch text from the freshly read Deployment. */
typedef int (*build_fn)(char **out, const struct mlp_json *d, void *payload);

static int patch_with_retry(struct mlp_k8s *k, struct mlp_json **io_d, const char *ns,
                            const char *name, bool dry_run, build_fn build, void *payload,
                            FILE *progress)
{
	char *path = rollout_deployment_path(ns, name);
	char *ppath = xasprintf("%s%s", path, dry_run ? "?dryRun=All" : "");
	int rc = MLP_ERROR;

	for (int attempt = 1; attempt <= CONFLICT_RETRIES; attempt++) {
		struct mlp_json *patched = NULL;
		char *body = NULL;

		if ((rc = build(&body, *io_d, payload)) != 0)
			break;
		rc = mlp_k8s_request(&patched, NULL, k, "PATCH", ppath,
		                     "application/strategic-merge-patch+json", body);
		free(body);
		if (rc == 0) {
			mlp_json_free(*io_d);
			*io_d = patched;
			break;
		}
		if (rc != MLP_EEXISTS || attempt == CONFLICT_RETRIES)
			break;
		rollout_progress_line(progress, ns, name,
		                      "changed by someone else meanwhile (409 "
		                      "Conflict): reading it again");
		mlp_json_free(*io_d);
		*io_d = NULL;
		if ((rc = mlp_k8s_request(io_d, NULL, k, "GET", path, NULL, NULL)) != 0)
			break;
	}
	free(ppath);
	free(path);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Rolling out                                                         */
/* ------------------------------------------------------------------ */

struct forward {
	const struct mlp_rollout_request *req;
	const char *container;
	struct mlp_json *annotations;
	/* What it found, from the last read (recorded before patching). */
	char *prev_image;
	struct mlp_json *prev_env;
	struct mlp_json *prev_annotations;
	struct mlp_store *store;
	int64_t row;
};

static void forward_capture(struct forward *f, const struct mlp_json *c, const struct mlp_json *d)
{
	free(f->prev_image);
	mlp_json_free(f->prev_env);
	mlp_json_free(f->prev_annotations);
	f->prev_image =
	        mlp_json_get_string(c, "image") ? xstrdup(mlp_json_get_string(c, "image")) : NULL;
	f->prev_env = mlp_json_dup(mlp_json_get(c, "env"));
	f->prev_annotations = mlp_json_dup(mlp_json_path(d, "spec.template.metadata.annotations"));
}

static int forward_build(char **out, const struct mlp_json *d, void *payload)
{
	struct forward *f = payload;
	const struct mlp_json *c;
	struct mlp_json *env;
	int rc;

	if ((rc = mlp_rollout_container(&c, d, f->container)) != 0)
		return rc;
	forward_capture(f, c, d);
	if (f->store && f->row) {
		char *pe = mlp_json_print(f->prev_env, false);
		char *pa = mlp_json_print(f->prev_annotations, false);

		rc = mlp_store_deployment_set_previous(f->store, f->row, f->prev_image, pe, pa);
		free(pe);
		free(pa);
		if (rc != 0)
			return rc;
	}
	env = mlp_rollout_env_set(mlp_json_get(c, "env"), f->req->env);
	*out = mlp_rollout_patch_json(
	        f->container, f->req->image, env, f->annotations,
	        mlp_json_string(mlp_json_path(d, "metadata.resourceVersion")));
	mlp_json_free(env);
	return 0;
}

static void forward_free(struct forward *f)
{
	mlp_json_free(f->annotations);
	free(f->prev_image);
	mlp_json_free(f->prev_env);
	mlp_json_free(f->prev_annotations);
}

/* What a rollback patches back. */
struct restore {
	const char *container;
	const char *image;
	const struct mlp_json *prev_env;
	const struct mlp_json *keys;
	const struct mlp_json *prev_annotations;
};

static int restore_build(char **out, const struct mlp_json *d, void *payload)
{
	struct restore *r = payload;
	const struct mlp_json *c;
	struct mlp_json *env, *ann;
	int rc;

	if ((rc = mlp_rollout_container(&c, d, r->container)) != 0)
		return rc;
	env = mlp_rollout_env_restore(mlp_json_get(c, "env"), r->prev_env, r->keys);
	ann = mlp_rollout_annotations_restore(r->prev_annotations);
	*out = mlp_rollout_patch_json(
	        r->container, r->image, env, ann,
	        mlp_json_string(mlp_json_path(d, "metadata.resourceVersion")));
	mlp_json_free(env);
	mlp_json_free(ann);
	return 0;
}

static struct mlp_json *env_object(const struct mlp_kvlist *env)
{
	struct mlp_json *o = mlp_json_object();

	for (size_t i = 0; env && i < env->len; i++)
		mlp_json_add_string(o, env->items[i].key, env->items[i].value);
	return o;
}

/* The model's version just deployed becomes deployed; the ones deployed
 * before it retired. */
static int model_deployed(struct mlp_store *s, const struct mlp_rollout_request *req,
                          const char *where)
{
	struct mlp_model_version old;
	char *why;
	int rc;

	if (s == NULL || req->model == NULL || req->model_version_id == 0)
		return 0;
	why = xasprintf("rolled out to %s", where);
	rc = mlp_store_model_set_status(s, req->model_version_id, MLP_MODEL_DEPLOYED, req->user,
	                                why);
	free(why);
	while (rc == 0 &&
	       (rc = mlp_store_model_version_with_status(&old, s, req->model, MLP_MODEL_DEPLOYED,
	                                                 req->model_version_id)) == 0) {
		why = xasprintf("replaced by version %d on %s", req->model_version, where);
		rc = mlp_store_model_set_status(s, old.id, MLP_MODEL_RETIRED, req->user, why);
		free(why);
		mlp_model_version_clear(&old);
	}
	return rc == MLP_ENOTFOUND ? 0 : rc;
}

/* Patches back what a rollout row changed and waits; records a rollback
 * row.  *out_ok says whether that rollout completed. */
static int restore_row(struct mlp_k8s *k, struct mlp_store *s, const struct mlp_deployment *row,
                       int64_t timeout_ms, const char *user, const char *why, FILE *progress,
                       char **out_revision, bool *out_ok)
{
	char *path = rollout_deployment_path(row->namespace_, row->deployment);
	struct mlp_json *d = NULL, *prev_env = NULL, *keys = NULL, *prev_ann = NULL;
	struct restore r = {.container = row->container, .image = row->from_image};
	struct waiter w = {.ns = row->namespace_, .name = row->deployment, .progress = progress};
	struct mlp_deployment rb = {
	        .rollback = true,
	        .namespace_ = row->namespace_,
	        .deployment = row->deployment,
	        .container = row->container,
	        .from_image = row->to_image,
	        .to_image = row->from_image,
	        .model = row->model,
	        .model_version = row->model_version,
	        .model_version_id = row->model_version_id,
	        .run_id = row->run_id,
	        .stage = row->stage,
	        .rollback_of = row->id,
	        .result = MLP_DEPLOY_PENDING,
	        .user = (char *)user,
	};
	int64_t rb_id = 0, t0 = mlp_mono_ms();
	int rc;

	*out_ok = false;
	*out_revision = NULL;
	if (row->previous_env)
		mlp_json_parse(&prev_env, row->previous_env, strlen(row->previous_env));
	if (row->env)
		mlp_json_parse(&keys, row->env, strlen(row->env));
	if (row->previous_annotations)
		mlp_json_parse(&prev_ann, row->previous_annotations,
		               strlen(row->previous_annotations));
	r.prev_env = prev_env;
	r.keys = keys;
	r.prev_annotations = prev_ann;
	rb.env = row->previous_env;
	if ((rc = mlp_store_deployment_start(&rb_id, s, &rb)) != 0)
		goto done;
	rollout_progress_line(progress, row->namespace_, row->deployment, "rolling back to %s (%s)",
	                      row->from_image ? row->from_image : "the previous state", why);
	if ((rc = mlp_k8s_request(&d, NULL, k, "GET", path, NULL, NULL)) != 0 ||
	    (rc = patch_with_retry(k, &d, row->namespace_, row->deployment, false, restore_build,
	                           &r, progress)) != 0) {
		mlp_store_deployment_finish(s, rb_id, MLP_DEPLOY_FAILED, mlp_error_last(), NULL);
		goto done;
	}
	rc = rollout_wait(k, &w, t0 + timeout_ms);
	if (rc == 0 && w.st.phase == MLP_ROLLOUT_COMPLETE) {
		*out_ok = true;
		rollout_progress_line(progress, row->namespace_, row->deployment,
		                      "rollback complete: %s serving again (revision %s)",
		                      row->from_image ? row->from_image : "the previous state",
		                      w.revision ? w.revision : "?");
		rc = mlp_store_deployment_finish(s, rb_id, MLP_DEPLOY_COMPLETE, NULL, w.revision);
		*out_revision = w.revision;
		w.revision = NULL;
	} else {
		char *reason = rc == 0 ? xstrdup(w.st.message)
		               : rc == MLP_ETIMEOUT
		                       ? xstrdup("the rollback did not complete in time")
		                       : xstrdup(mlp_error_last());

		mlp_store_deployment_finish(s, rb_id, MLP_DEPLOY_FAILED, reason, w.revision);
		rollout_progress_line(progress, row->namespace_, row->deployment,
		                      "rollback failed: %s", reason);
		free(reason);
		rc = 0;
	}
done:
	free(w.revision);
	mlp_json_free(d);
	mlp_json_free(prev_env);
	mlp_json_free(keys);
	mlp_json_free(prev_ann);
	free(path);
	return rc;
}

/* Appends s to b percent-encoded but for RFC 3986's unreserved characters. */
static void url_path_segment(struct mlp_buf *b, const char *s)
{
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~')
			mlp_buf_putc(b, (char)ch);
		else
			mlp_buf_printf(b, "%%%02X", ch);
	}
}

void mlp_rollout_model_env(struct mlp_kvlist *env, const char *model, int version,
                           const char *sha256, const char *artifact_path, const char *base_url)
{
	struct mlp_buf uri = {0};
	char vtext[16];

	snprintf(vtext, sizeof(vtext), "%d", version);
	if (base_url) {
		size_t len = strlen(base_url);

		while (len > 0 && base_url[len - 1] == '/')
			len--;
		mlp_buf_add(&uri, base_url, len);
		mlp_buf_puts(&uri, "/api/v1/models/");
		url_path_segment(&uri, model);
		mlp_buf_printf(&uri, "/versions/%d/artifact", version);
	} else {
		mlp_buf_printf(&uri, "file://%s", artifact_path);
	}
	mlp_kvlist_set(env, "MODEL_URI", mlp_buf_str(&uri));
	mlp_kvlist_set(env, "MODEL_SHA256", sha256);
	mlp_kvlist_set(env, "MODEL_NAME", model);
	mlp_kvlist_set(env, "MODEL_VERSION", vtext);
	mlp_buf_free(&uri);
}

/* The annotations a rollout sets: the model version and the run. */
static struct mlp_json *request_annotations(const struct mlp_rollout_request *req)
{
	struct mlp_json *a = mlp_json_object();
	char num[32];

	if (req->model) {
		mlp_json_add_string(a, ANN_MODEL, req->model);
		snprintf(num, sizeof(num), "%d", req->model_version);
		mlp_json_add_string(a, ANN_VERSION, num);
		if (req->model_sha256)
			mlp_json_add_string(a, ANN_SHA256, req->model_sha256);
	}
	if (req->run_id) {
		snprintf(num, sizeof(num), "%lld", (long long)req->run_id);
		mlp_json_add_string(a, ANN_RUN, num);
	}
	return a;
}

/* Records the rollout as started (pending, or a dry run) with what the
 * Deployment had before: f->row is its id.  No store: nothing to do. */
static int record_start(struct mlp_store *s, struct forward *f, const char *ns, const char *image,
                        const struct mlp_json *envj)
{
	const struct mlp_rollout_request *req = f->req;
	struct mlp_deployment row = {0};
	char *env_text, *pe, *pa;
	int rc;

	if (s == NULL)
		return 0;
	env_text = mlp_json_print(envj, false);
	pe = mlp_json_print(f->prev_env, false);
	pa = mlp_json_print(f->prev_annotations, false);
	row.namespace_ = (char *)ns;
	row.deployment = (char *)req->deployment;
	row.container = (char *)f->container;
	row.from_image = f->prev_image;
	row.to_image = (char *)image;
	row.env = env_text;
	row.model = (char *)req->model;
	row.model_version = req->model_version;
	row.model_version_id = req->model_version_id;
	row.run_id = req->run_id;
	row.stage = (char *)req->stage;
	row.user = (char *)req->user;
	row.result = req->dry_run ? MLP_DEPLOY_DRY_RUN : MLP_DEPLOY_PENDING;
	row.previous_env = pe;
	row.previous_annotations = pa;
	rc = mlp_store_deployment_start(&f->row, s, &row);
	free(pe);
	free(pa);
	free(env_text);
	return rc;
}

/* on_failure: rollback after a failed rollout: restores what the row
 * recorded and finishes it rolled back (or failed, when the rollback did
 * not complete); the model version stays approved. */
static int roll_back_failed(struct mlp_k8s *k, struct mlp_store *s,
                            const struct mlp_rollout_request *req, int64_t row_id, int64_t timeout,
                            const char *reason, bool *out_rolled_back)
{
	struct mlp_deployment recorded;
	bool ok = false;
	char *rev = NULL;
	int rc;

	/* The row as recorded: previous values from the read that the
	 * successful patch was built on. */
	rc = mlp_store_deployment_get(&recorded, s, row_id);
	if (rc == 0)
		rc = restore_row(k, s, &recorded, timeout, req->user, reason, req->progress, &rev,
		                 &ok);
	mlp_deployment_clear(&recorded);
	if (rc == 0) {
		char *why = xasprintf("%s; %s", reason,
		                      ok ? "rolled back" : "the rollback did not complete");

		*out_rolled_back = ok;
		rc = mlp_store_deployment_finish(
		        s, row_id, ok ? MLP_DEPLOY_ROLLED_BACK : MLP_DEPLOY_FAILED, why, NULL);
		/* The version stays approved (never served); the event records
		 * why it is not deployed. */
		if (rc == 0 && req->model_version_id)
			rc = mlp_store_model_set_status(s, req->model_version_id,
			                                MLP_MODEL_APPROVED, req->user, why);
		free(why);
	}
	free(rev);
	return rc;
}

int mlp_rollout_run(struct mlp_rollout_outcome *out, struct mlp_k8s *k, struct mlp_store *s,
                    const struct mlp_rollout_request *req)
{
	const char *ns = req->namespace_ ? req->namespace_ : mlp_k8s_namespace(k);
	char *path = rollout_deployment_path(ns, req->deployment);
	struct mlp_json *d = NULL, *envj = env_object(req->env);
	const struct mlp_json *c;
	struct forward f = {.req = req, .store = s};
	struct waiter w = {.ns = ns, .name = req->deployment, .progress = req->progress};
	int64_t timeout = req->timeout_ms > 0 ? req->timeout_ms : 10 * 60 * 1000;
	int64_t t0 = mlp_mono_ms();
	char *reason = NULL;
	int rc;

	memset(out, 0, sizeof(*out));
	out->namespace_ = xstrdup(ns);
	if ((rc = mlp_k8s_request(&d, NULL, k, "GET", path, NULL, NULL)) != 0)
		goto done;
	if ((rc = mlp_rollout_container(&c, d, req->container)) != 0)
		goto done;
	f.container = mlp_json_get_string(c, "name");
	forward_capture(&f, c, d);
	f.container = xstrdup(f.container);
	f.annotations = request_annotations(req);
	out->previous_image = f.prev_image ? xstrdup(f.prev_image) : NULL;
	out->image = xstrdup(req->image ? req->image : (f.prev_image ? f.prev_image : ""));

	if ((rc = record_start(s, &f, ns, out->image, envj)) != 0)
		goto done;
	out->deployment_id = f.row;
	rollout_progress_line(req->progress, ns, req->deployment, "%s%s -> %s (container %s)",
	                      req->dry_run ? "dry run: " : "", f.prev_image ? f.prev_image : "?",
	                      out->image, f.container);
	rc = patch_with_retry(k, &d, ns, req->deployment, req->dry_run, forward_build, &f,
	                      req->progress);
	if (rc != 0) {
		if (s)
			mlp_store_deployment_finish(s, f.row, MLP_DEPLOY_FAILED, mlp_error_last(),
			                            NULL);
		goto done;
	}
	if (req->dry_run) {
		rollout_progress_line(
		        req->progress, ns, req->deployment,
		        "dry run: the API server accepted the patch; nothing was changed");
		if (s)
			rc = mlp_store_deployment_finish(s, f.row, MLP_DEPLOY_DRY_RUN, NULL, NULL);
		goto done;
	}
	free(out->previous_image);
	out->previous_image = f.prev_image ? xstrdup(f.prev_image) : NULL;
	rollout_waiter_see(&w, d);
	rc = rollout_wait(k, &w, t0 + timeout);
	if (rc == 0 && w.st.phase == MLP_ROLLOUT_COMPLETE) {
		char where[300];

		rollout_progress_line(
		        req->progress, ns, req->deployment,
		        "rollout complete: %lld/%lld updated, %lld available (revision %s)",
		        (long long)w.st.updated, (long long)w.st.replicas,
		        (long long)w.st.available, w.revision ? w.revision : "?");
		out->revision = w.revision ? xstrdup(w.revision) : NULL;
		snprintf(where, sizeof(where), "%s/%s", ns, req->deployment);
		if (s && (rc = mlp_store_deployment_finish(s, f.row, MLP_DEPLOY_COMPLETE, NULL,
		                                           w.revision)) == 0)
			rc = model_deployed(s, req, where);
		goto done;
	}
	if (rc != 0 && rc != MLP_ETIMEOUT) {
		/* Not a verdict: the API went away.  Leave the row failed. */
		if (s)
			mlp_store_deployment_finish(s, f.row, MLP_DEPLOY_FAILED, mlp_error_last(),
			                            w.revision);
		goto done;
	}
	{
		char prog[128], tm[32];

		mlp_rollout_progress_text(prog, sizeof(prog), &w.st);
		mlp_format_duration(tm, sizeof(tm), timeout);
		reason =
		        rc == MLP_ETIMEOUT
		                ? xasprintf("the rollout did not complete within %s (%s)", tm, prog)
		                : xasprintf("%s (%s)", w.st.message, prog);
	}
	rollout_progress_line(req->progress, ns, req->deployment, "rollout failed: %s", reason);
	out->reason = xstrdup(reason);
	if (req->on_failure == MLP_ON_FAILURE_ROLLBACK && s)
		rc = roll_back_failed(k, s, req, f.row, timeout, reason, &out->rolled_back);
	else if (s)
		rc = mlp_store_deployment_finish(s, f.row, MLP_DEPLOY_FAILED, reason, w.revision);
	if (rc == 0) {
		mlp_error_set("%s%s", reason, out->rolled_back ? "; rolled back" : "");
		rc = MLP_ERROR;
	}
done:
	free(reason);
	free(w.revision);
	free((char *)f.container);
	forward_free(&f);
	mlp_json_free(envj);
	mlp_json_free(d);
	free(path);
	return rc;
}

/*
 * After an undo the image of the rollout before `undone` serves again: so
 * does its model version, which that rollout had made deployed and the
 * undone one retired.  Without this the registry would name no deployed
 * version, and a `baseline: deployed` gate would judge the next candidate
 * against nothing.
 */
static int redeploy_previous(struct mlp_store *s, const struct mlp_deployment *undone,
                             const char *user)
{
	struct mlp_deployment *rows = NULL;
	size_t n = 0;
	int rc =
	        mlp_store_deployments_list(&rows, &n, s, undone->namespace_, undone->deployment, 0);

	for (size_t i = 0; rc == 0 && i < n; i++) {
		const struct mlp_deployment *d = &rows[i];
		struct mlp_model_version v;

		if (d->id >= undone->id || d->rollback || d->result != MLP_DEPLOY_COMPLETE)
			continue;
		/* The newest complete rollout before it is what served before. */
		if (d->model_version_id == 0 || d->to_image == NULL || undone->from_image == NULL ||
		    strcmp(d->to_image, undone->from_image) != 0)
			break;
		if (mlp_store_model_version_get(&v, s, d->model, d->model_version) == 0) {
			if (v.status == MLP_MODEL_RETIRED) {
				char *why = xasprintf(
				        "serving again after the rollback of deployment %lld",
				        (long long)undone->id);

				rc = mlp_store_model_set_status(s, v.id, MLP_MODEL_DEPLOYED, user,
				                                why);
				free(why);
			}
			mlp_model_version_clear(&v);
		}
		break;
	}
	mlp_deployment_free_all(rows, n);
	return rc;
}

int mlp_rollout_undo(struct mlp_rollout_outcome *out, struct mlp_k8s *k, struct mlp_store *s,
                     const char *namespace_, const char *deployment, int64_t timeout_ms,
                     const char *user, FILE *progress)
{
	const char *ns = namespace_ ? namespace_ : mlp_k8s_namespace(k);
	struct mlp_deployment last;
	bool ok = false;
	char *rev = NULL;
	int rc;

	memset(out, 0, sizeof(*out));
	out->namespace_ = xstrdup(ns);
	if ((rc = mlp_store_deployment_last_rollout(&last, s, ns, deployment)) != 0)
		return rc;
	out->previous_image = last.to_image ? xstrdup(last.to_image) : NULL;
	out->image = last.from_image ? xstrdup(last.from_image) : NULL;
	rc = restore_row(k, s, &last, timeout_ms > 0 ? timeout_ms : 10 * 60 * 1000, user,
	                 "asked for", progress, &rev, &ok);
	if (rc == 0 && ok) {
		char *why = xasprintf("rolled back by %s", user ? user : "someone");

		out->rolled_back = true;
		out->revision = rev;
		rev = NULL;
		rc = mlp_store_deployment_finish(s, last.id, MLP_DEPLOY_ROLLED_BACK, why, NULL);
		if (rc == 0 && last.model_version_id) {
			struct mlp_model_version v;

			if (mlp_store_model_version_get(&v, s, last.model, last.model_version) ==
			    0) {
				if (v.status == MLP_MODEL_DEPLOYED)
					rc = mlp_store_model_set_status(s, v.id, MLP_MODEL_RETIRED,
					                                user, why);
				mlp_model_version_clear(&v);
			}
		}
		if (rc == 0)
			rc = redeploy_previous(s, &last, user);
		free(why);
	} else if (rc == 0) {
		mlp_error_set("the rollback of %s/%s did not complete", ns, deployment);
		out->reason = xstrdup(mlp_error_last());
		rc = MLP_ERROR;
	}
	free(rev);
	mlp_deployment_clear(&last);
	return rc;
}
