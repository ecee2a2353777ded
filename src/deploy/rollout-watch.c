/*
 * rollout-watch.c - a Deployment's rollout status, decided as `kubectl
 * rollout status` does, and the wait for it (see rollout.h).  Patching
 * and rolling back are rollout.c's; this file only reads.
 *
 * Waiting: one GET for the current object and its resourceVersion, then
 * a watch on that one Deployment from that resourceVersion.  Every event
 * is decided at once (no polling delay); an in-stream 410 (the version
 * is too old) lists again and watches again; a stream the server closed
 * is re-opened from the last version seen.  Only when a watch cannot be
 * opened at all (RBAC without watch, a proxy that breaks streams) does it
 * fall back to a GET every second.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "base/json.h"
#include "deploy/k8s.h"
#include "deploy/rollout-int.h"
#include "base/util.h"

#define ANN_REVISION "deployment.kubernetes.io/revision"
#define POLL_MS 1000

/* ------------------------------------------------------------------ */
/* The status decision                                                 */
/* ------------------------------------------------------------------ */

void mlp_rollout_status_of(struct mlp_rollout_status *out, const struct mlp_json *d)
{
	const struct mlp_json *status = mlp_json_get(d, "status");
	const struct mlp_json *conds = mlp_json_get(status, "conditions");
	const char *name = mlp_json_get_string(mlp_json_get(d, "metadata"), "name");

	memset(out, 0, sizeof(*out));
	if (name == NULL)
		name = "";
	out->generation = mlp_json_int(mlp_json_path(d, "metadata.generation"), 0);
	out->observed_generation = mlp_json_int(mlp_json_get(status, "observedGeneration"), 0);
	out->replicas = mlp_json_int(mlp_json_path(d, "spec.replicas"), 1);
	out->updated = mlp_json_int(mlp_json_get(status, "updatedReplicas"), 0);
	out->current = mlp_json_int(mlp_json_get(status, "replicas"), 0);
	out->available = mlp_json_int(mlp_json_get(status, "availableReplicas"), 0);

	/* 1. The controller has not seen the new spec: the counters are the
	 * old ReplicaSet's and may well look complete. */
	if (out->generation > out->observed_generation) {
		out->phase = MLP_ROLLOUT_WAITING;
		snprintf(out->message, sizeof(out->message),
		         "Waiting for deployment spec update to be observed...");
		return;
	}
	/* 2. The deadline, only now that the condition is about this spec. */
	for (size_t i = 0; i < mlp_json_count(conds); i++) {
		const struct mlp_json *c = mlp_json_at(conds, i);
		const char *type = mlp_json_get_string(c, "type");
		const char *reason = mlp_json_get_string(c, "reason");

		if (type && strcmp(type, "Progressing") == 0 && reason &&
		    strcmp(reason, "ProgressDeadlineExceeded") == 0) {
			out->phase = MLP_ROLLOUT_FAILED;
			snprintf(out->message, sizeof(out->message),
			         "deployment \"%s\" exceeded its progress deadline", name);
			return;
		}
	}
	/* 3. The counts, in kubectl's order. */
	out->phase = MLP_ROLLOUT_PROGRESSING;
	if (out->updated < out->replicas) {
		snprintf(out->message, sizeof(out->message),
		         "Waiting for deployment \"%s\" rollout to finish: %lld out of %lld new "
		         "replicas have been updated...",
		         name, (long long)out->updated, (long long)out->replicas);
		return;
	}
	if (out->current > out->updated) {
		snprintf(out->message, sizeof(out->message),
		         "Waiting for deployment \"%s\" rollout to finish: %lld old replicas are "
		         "pending termination...",
		         name, (long long)(out->current - out->updated));
		return;
	}
	if (out->available < out->updated) {
		snprintf(out->message, sizeof(out->message),
		         "Waiting for deployment \"%s\" rollout to finish: %lld of %lld updated "
		         "replicas are available...",
		         name, (long long)out->available, (long long)out->updated);
		return;
	}
	/* 4. */
	out->phase = MLP_ROLLOUT_COMPLETE;
	snprintf(out->message, sizeof(out->message), "deployment \"%s\" successfully rolled out",
	         name);
}

void mlp_rollout_progress_text(char *buf, size_t size, const struct mlp_rollout_status *st)
{
	if (st->phase == MLP_ROLLOUT_WAITING) {
		snprintf(buf, size, "waiting for the controller (generation %lld, observed %lld)",
		         (long long)st->generation, (long long)st->observed_generation);
		return;
	}
	if (st->current > st->updated)
		snprintf(buf, size, "%lld/%lld updated, %lld available, %lld old",
		         (long long)st->updated, (long long)st->replicas, (long long)st->available,
		         (long long)(st->current - st->updated));
	else
		snprintf(buf, size, "%lld/%lld updated, %lld available", (long long)st->updated,
		         (long long)st->replicas, (long long)st->available);
}

/* ------------------------------------------------------------------ */
/* Waiting                                                             */
/* ------------------------------------------------------------------ */

bool rollout_waiter_see(struct waiter *w, const struct mlp_json *d)
{
	const char *rv = mlp_json_string(mlp_json_path(d, "metadata.resourceVersion"));
	const char *rev =
	        mlp_json_get_string(mlp_json_path(d, "metadata.annotations"), ANN_REVISION);
	char text[sizeof(w->last)];

	if (rv)
		snprintf(w->rv, sizeof(w->rv), "%s", rv);
	if (rev) {
		free(w->revision);
		w->revision = xstrdup(rev);
	}
	mlp_rollout_status_of(&w->st, d);
	mlp_rollout_progress_text(text, sizeof(text), &w->st);
	if (strcmp(text, w->last) != 0 && w->st.phase != MLP_ROLLOUT_COMPLETE &&
	    w->st.phase != MLP_ROLLOUT_FAILED) {
		rollout_progress_line(w->progress, w->ns, w->name, "%s", text);
		snprintf(w->last, sizeof(w->last), "%s", text);
	}
	return w->st.phase == MLP_ROLLOUT_COMPLETE || w->st.phase == MLP_ROLLOUT_FAILED;
}

static int on_event(const char *type, const struct mlp_json *object, void *payload)
{
	struct waiter *w = payload;

	if (strcmp(type, "DELETED") == 0) {
		w->deleted = true;
		return 1;
	}
	if (strcmp(type, "BOOKMARK") == 0) {
		const char *rv = mlp_json_string(mlp_json_path(object, "metadata.resourceVersion"));

		if (rv)
			snprintf(w->rv, sizeof(w->rv), "%s", rv);
		return 0;
	}
	return rollout_waiter_see(w, object) ? 1 : 0;
}

/*
 * The pause before a watch is opened again after it broke.  A sleep, not
 * a timer: the rollout's process has one thing to do, watch this
 * Deployment until its deadline, and rollout_wait() bounds the pause by
 * that deadline.
 */
static void sleep_ms(int64_t ms)
{
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

/*
 * Waits until the Deployment's rollout is complete or failed, or until
 * deadline (monotonic ms).  0 with w->st decided; MLP_ETIMEOUT (no
 * message) at the deadline; another error with a message.
 */
int rollout_wait(struct mlp_k8s *k, struct waiter *w, int64_t deadline)
{
	char *path = rollout_deployment_path(w->ns, w->name);
	bool relist = true, polling = false;
	int rc = 0;

	while (mlp_mono_ms() < deadline) {
		if (relist || polling) {
			struct mlp_json *d = NULL;

			if ((rc = mlp_k8s_request(&d, NULL, k, "GET", path, NULL, NULL)) != 0)
				break;
			if (rollout_waiter_see(w, d)) {
				mlp_json_free(d);
				rc = 0;
				break;
			}
			mlp_json_free(d);
			relist = false;
		}
		if (polling) {
			int64_t left = deadline - mlp_mono_ms();

			sleep_ms(left < POLL_MS ? (left > 0 ? left : 0) : POLL_MS);
			continue;
		}
		{
			int64_t left_s = (deadline - mlp_mono_ms()) / 1000 + 1;
			char *wpath =
			        xasprintf("/apis/apps/v1/namespaces/%s/deployments?watch=true"
			                  "&fieldSelector=metadata.name%%3D%s&resourceVersion=%s"
			                  "&allowWatchBookmarks=true&timeoutSeconds=%lld",
			                  w->ns, w->name, w->rv, (long long)left_s);

			rc = mlp_k8s_watch(k, wpath, deadline, on_event, w);
			free(wpath);
		}
		if (rc == 1) {
			rc = 0;
			if (w->deleted) {
				mlp_error_set("deployment %s/%s was deleted while rolling out",
				              w->ns, w->name);
				rc = MLP_ENOTFOUND;
			}
			break;
		}
		if (rc == MLP_K8S_EXPIRED) {
			relist = true;
		} else if (rc == MLP_ETIMEOUT) {
			break;
		} else if (rc < 0) {
			rollout_progress_line(w->progress, w->ns, w->name,
			                      "watch failed (%s); polling", mlp_error_last());
			polling = true;
		}
		/* rc == 0: the server closed the stream; watch again from w->rv. */
	}
	if (rc == 0 && w->st.phase != MLP_ROLLOUT_COMPLETE && w->st.phase != MLP_ROLLOUT_FAILED)
		rc = MLP_ETIMEOUT;
	free(path);
	return rc;
}
