/*
 * k8s-int.h - what the Kubernetes client's files share (k8s-config.c
 * loads the configuration and keeps the credential current, k8s.c sends
 * requests and watches); never included outside src/deploy/k8s*.c.
 */
#ifndef MLP_K8S_INT_H
#define MLP_K8S_INT_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/util.h"
#include "deploy/k8s.h"

struct mlp_k8s {
	char *server;
	char *namespace_;
	const char *auth_kind;
	int64_t timeout_ms;
	CURL *curl;

	struct mlp_buf ca; /* PEM; empty: the system's store */
	bool insecure;
	struct mlp_buf cert; /* PEM client certificate and key; empty: none */
	struct mlp_buf key;

	char *token;      /* the current bearer token, or NULL */
	char *token_file; /* re-read every minute and after a 401 */
	int64_t token_read_at;

	bool has_exec; /* an exec credential plugin */
	struct mlp_strv exec_argv;
	struct mlp_strv exec_env;
	int64_t token_expires_wall_ms; /* 0: never (exec tokens) */
};

/* Makes the credential current: re-reads token files that are a minute
 * old and re-runs an exec plugin whose token expired (or when forced,
 * after a 401).  *out_changed (may be NULL) says whether anything could
 * be refreshed.  0 or an error with a message. */
int k8s_refresh_credentials(struct mlp_k8s *k, bool force, bool *out_changed);

#endif
