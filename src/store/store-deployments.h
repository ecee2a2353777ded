/*
 * store-deployments.h - rollouts and rollbacks of Deployments (store-deployments.c).
 * Part of the store's API (store.h has opening, transactions and the
 * schema); include the domain headers a file uses.
 */
#ifndef MLP_STORE_DEPLOYMENTS_H
#define MLP_STORE_DEPLOYMENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

/* ---- deployments (store-deployments.c) ---------------------------------
 *
 * Every Kubernetes rollout and rollback mlpipe makes is a row: what it
 * changed (deployment, container, from and to image, the env it set), the
 * state it found before (the container's env and the pod template's
 * annotations, as JSON, so that a rollback can patch them back), the model
 * version and run it deployed, and how it ended.  A row is written
 * 'pending' BEFORE the PATCH is sent, so a crash never leaves a change
 * nobody can undo.  Credentials are never stored here.
 */

enum mlp_deploy_result {
	MLP_DEPLOY_PENDING,
	MLP_DEPLOY_COMPLETE,
	MLP_DEPLOY_FAILED,
	MLP_DEPLOY_ROLLED_BACK,
	MLP_DEPLOY_DRY_RUN,
};

const char *mlp_deploy_result_name(enum mlp_deploy_result r);

struct mlp_deployment {
	int64_t id;
	bool rollback; /* kind 'rollback' (else 'rollout') */
	char *namespace_;
	char *deployment;
	char *container;
	char *from_image;
	char *to_image;
	char *env;                  /* JSON object: what was set; may be NULL */
	char *previous_env;         /* JSON array or null */
	char *previous_annotations; /* JSON object or null */
	char *model;                /* NULL: no model */
	int model_version;          /* 0: none */
	int64_t model_version_id;   /* 0: none */
	int64_t run_id;             /* 0: none */
	char *stage;
	int64_t rollback_of; /* 0: none */
	enum mlp_deploy_result result;
	char *reason;
	char *revision; /* deployment.kubernetes.io/revision */
	char *user;
	int64_t started_at; /* wall-clock ms */
	int64_t ended_at;   /* 0: not ended */
};

/* Records a new row from d (id, ended_at, reason and revision ignored;
 * result is pending or dry_run); *out_id receives its id. */
int mlp_store_deployment_start(int64_t *out_id, struct mlp_store *s,
                               const struct mlp_deployment *d);
/* Sets a row's result, reason (may be NULL) and revision (may be NULL)
 * and its end time. */
int mlp_store_deployment_finish(struct mlp_store *s, int64_t id, enum mlp_deploy_result result,
                                const char *reason, const char *revision);
/* Replaces the previous state a pending row recorded (after a 409 the
 * Deployment is read again and the patch built on that read). */
int mlp_store_deployment_set_previous(struct mlp_store *s, int64_t id, const char *from_image,
                                      const char *previous_env, const char *previous_annotations);
/* One row; MLP_ENOTFOUND with a message when there is none. */
int mlp_store_deployment_get(struct mlp_deployment *out, struct mlp_store *s, int64_t id);
/* Rows for namespace/deployment (either NULL: any), newest first, at most
 * limit (0: all).  Free with mlp_deployment_free_all. */
int mlp_store_deployments_list(struct mlp_deployment **out, size_t *n, struct mlp_store *s,
                               const char *namespace_, const char *deployment, int limit);
/* The newest rollout of namespace/deployment that is still in effect
 * (complete or failed and kept: not rolled back, not a dry run);
 * MLP_ENOTFOUND with a message when there is none. */
int mlp_store_deployment_last_rollout(struct mlp_deployment *out, struct mlp_store *s,
                                      const char *namespace_, const char *deployment);
void mlp_deployment_clear(struct mlp_deployment *d);
void mlp_deployment_free_all(struct mlp_deployment *d, size_t n);

#endif
