/*
 * rollout.h - rolling a new image (and env) out to a Kubernetes
 * Deployment, waiting for it as `kubectl rollout status` does, and
 * rolling back by ourselves.
 *
 * The pure parts (the status decision over a Deployment object, the
 * strategic merge patches) are separate functions so they can be tested
 * on recorded objects.  mlp_rollout_run() and mlp_rollout_undo() drive a
 * real API server through k8s.h and record every change in the
 * deployments table (store.h) before it is made.
 */
#ifndef MLP_ROLLOUT_H
#define MLP_ROLLOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "pipeline/pipeline.h"

struct mlp_json;
struct mlp_k8s;
struct mlp_store;

/* ---- the status decision ------------------------------------------------ */

enum mlp_rollout_phase {
	MLP_ROLLOUT_WAITING, /* the controller has not observed the spec yet */
	MLP_ROLLOUT_PROGRESSING,
	MLP_ROLLOUT_COMPLETE,
	MLP_ROLLOUT_FAILED, /* ProgressDeadlineExceeded */
};

struct mlp_rollout_status {
	enum mlp_rollout_phase phase;
	int64_t generation, observed_generation;
	int64_t replicas;  /* spec.replicas (1 when absent) */
	int64_t updated;   /* status.updatedReplicas */
	int64_t current;   /* status.replicas (old and new) */
	int64_t available; /* status.availableReplicas */
	char message[512]; /* kubectl's own words */
};

/*
 * Decides a Deployment's rollout exactly as `kubectl rollout status`
 * (1.20, rollout_status.go) does: generation first (a spec the controller
 * has not seen yet is waiting, whatever the old counters say), then a
 * Progressing condition with reason ProgressDeadlineExceeded (failed),
 * then the replica counts (updated < spec, old replicas still there,
 * available < updated: progressing), else complete.
 */
void mlp_rollout_status_of(struct mlp_rollout_status *out, const struct mlp_json *deployment);

/* "2/3 updated, 1 available" (plus ", 1 old" while old pods remain). */
void mlp_rollout_progress_text(char *buf, size_t size, const struct mlp_rollout_status *st);

/* ---- patches ------------------------------------------------------------ */

/*
 * The container named name in the Deployment's pod template (NULL: the
 * only one).  MLP_ENOTFOUND with a message naming the containers it has,
 * or MLP_EINVAL when name is NULL and there are several.
 */
int mlp_rollout_container(const struct mlp_json **out, const struct mlp_json *deployment,
                          const char *name);

/*
 * A strategic merge patch (application/strategic-merge-patch+json) for
 * the pod template: container's image (NULL: unchanged), env entries
 * (an array of EnvVar objects merged by name, NULL: none), annotations
 * (an object; a null value removes the key; NULL: none), and
 * metadata.resourceVersion when rv is not NULL, which makes the patch
 * conditional (a stale one gets 409).  The caller frees the text.
 */
char *mlp_rollout_patch_json(const char *container, const char *image, const struct mlp_json *env,
                             const struct mlp_json *annotations, const char *rv);

/*
 * EnvVar entries setting each name=value of set, given the container's
 * current env (an array or NULL): an entry that had valueFrom gets
 * "valueFrom": null, or the merged entry would carry both.
 */
struct mlp_json *mlp_rollout_env_set(const struct mlp_json *current, const struct mlp_kvlist *set);

/*
 * EnvVar entries restoring, for each name in keys (an object whose member
 * names are the variables a rollout set), its entry in previous, or
 * deleting it ("$patch": "delete") when previous did not have it.
 */
struct mlp_json *mlp_rollout_env_restore(const struct mlp_json *current,
                                         const struct mlp_json *previous,
                                         const struct mlp_json *keys);

/* The annotations mlpipe sets (mlpipe.io/model, -version, -sha256, run)
 * as they were in previous (an object or NULL): absent ones become null
 * (removed). */
struct mlp_json *mlp_rollout_annotations_restore(const struct mlp_json *previous);

/*
 * Sets the model-as-configuration variables in env (docs/model-server.md):
 * MODEL_NAME, MODEL_VERSION, MODEL_SHA256 and MODEL_URI, which is
 * BASE/api/v1/models/NAME/versions/V/artifact when base_url (mlpipe
 * serve's address) is not NULL, else file://ARTIFACT_PATH.
 */
void mlp_rollout_model_env(struct mlp_kvlist *env, const char *model, int version,
                           const char *sha256, const char *artifact_path, const char *base_url);

/* ---- rolling out -------------------------------------------------------- */

struct mlp_rollout_request {
	const char *namespace_; /* NULL: the kubeconfig context's */
	const char *deployment;
	const char *container;        /* NULL: the only container */
	const char *image;            /* NULL: unchanged */
	const struct mlp_kvlist *env; /* may be NULL */
	int64_t timeout_ms;           /* mlpipe's own deadline; 0: 10 minutes */
	enum mlp_on_failure on_failure;
	bool dry_run; /* ?dryRun=All: validated, nothing saved */
	/* The model version being deployed (model NULL: none). */
	const char *model;
	int model_version;
	int64_t model_version_id;
	const char *model_sha256;
	int64_t run_id; /* 0: not from a run */
	const char *stage;
	const char *user;
	FILE *progress; /* progress lines; NULL: none */
};

struct mlp_rollout_outcome {
	int64_t deployment_id; /* the row in the deployments table */
	char *namespace_;
	char *previous_image;
	char *image;
	char *revision; /* deployment.kubernetes.io/revision, or NULL */
	bool rolled_back;
	char *reason; /* why it failed, or NULL */
};

void mlp_rollout_outcome_clear(struct mlp_rollout_outcome *o);

/*
 * GETs the Deployment, refuses a container it does not have, records the
 * previous image, env and annotations (store), PATCHes (conditional on
 * resourceVersion; re-read and retried on 409), then watches until the
 * rollout is complete, failed, or the timeout passed.  On failure with
 * on_failure rollback it patches the recorded values back and waits for
 * that too.  On completion the model version becomes deployed (and the
 * model's previously deployed version retired).
 *
 * Returns 0 when complete (or validated, for a dry run); MLP_ERROR with
 * the reason as message (and in out->reason) when the rollout failed;
 * another negative code when it could not be tried (not found, 403, no
 * such container, a connection failure).
 */
int mlp_rollout_run(struct mlp_rollout_outcome *out, struct mlp_k8s *k, struct mlp_store *s,
                    const struct mlp_rollout_request *req);

/*
 * Patches back what the newest rollout of namespace/deployment still in
 * effect changed (mlp_store_deployment_last_rollout), waits for that
 * rollout, and records it (kind rollback); the rolled-back row becomes
 * rolled_back and its model version, if deployed, retired.  Returns 0 or
 * a negative code with a message.
 */
int mlp_rollout_undo(struct mlp_rollout_outcome *out, struct mlp_k8s *k, struct mlp_store *s,
                     const char *namespace_, const char *deployment, int64_t timeout_ms,
                     const char *user, FILE *progress);

#endif
