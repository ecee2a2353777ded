/*
 * rollout-int.h - what the rollout's files share (rollout.c patches and
 * rolls back, rollout-watch.c decides a Deployment's status and waits for
 * it); never included outside src/deploy/rollout*.c.
 */
#ifndef MLP_ROLLOUT_INT_H
#define MLP_ROLLOUT_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "deploy/k8s.h"
#include "deploy/rollout.h"

/* What a wait is watching and what it saw last. */
struct waiter {
	const char *ns, *name;
	FILE *progress;
	char last[600];
	char rv[64];
	struct mlp_rollout_status st;
	char *revision;
	bool deleted;
};

/* The API path of a Deployment; the caller frees it. */
char *rollout_deployment_path(const char *ns, const char *name);

/* "NS/NAME: " and the formatted text on a line of f, flushed; nothing
 * when f is NULL. */
void rollout_progress_line(FILE *f, const char *ns, const char *name, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

/* Takes in a read of the Deployment: its resourceVersion, revision and
 * status (a progress line when that changed and is not final).  True
 * when the rollout is complete or failed. */
bool rollout_waiter_see(struct waiter *w, const struct mlp_json *d);

/*
 * Waits until the Deployment's rollout is complete or failed, or until
 * deadline (monotonic ms).  0 with w->st decided; MLP_ETIMEOUT (no
 * message) at the deadline; another error with a message.
 */
int rollout_wait(struct mlp_k8s *k, struct waiter *w, int64_t deadline);

#endif
