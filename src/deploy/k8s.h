/*
 * k8s.h - a small Kubernetes API client: the only module that includes
 * libcurl.
 *
 * Configuration comes from a kubeconfig (the file given, else each file
 * of $KUBECONFIG, else ~/.kube/config; its current context or a chosen
 * one) or, when there is none, from inside a pod (KUBERNETES_SERVICE_HOST
 * and the service-account files).  Credentials: bearer tokens (inline,
 * tokenFile, service account: re-read every minute and after a 401),
 * client certificates (files or inline data, handed to libcurl as blobs:
 * no key ever touches a temporary file), and exec credential plugins
 * (ExecCredential; the token is cached until its expirationTimestamp).
 * TLS is verified unless the kubeconfig says insecure-skip-tls-verify.
 *
 * Every request has a timeout.  Connection failures, 429 (honouring
 * Retry-After) and 5xx are retried with exponential backoff; other
 * failures carry the API server's own Status message.  Secrets are never
 * put in an error message.
 */
#ifndef MLP_K8S_H
#define MLP_K8S_H

#include <stdbool.h>
#include <stdint.h>

struct mlp_k8s;
struct mlp_json;

struct mlp_k8s_options {
	const char *kubeconfig;     /* NULL: $KUBECONFIG, ~/.kube/config, in-cluster */
	const char *context;        /* NULL: the kubeconfig's current-context */
	int64_t request_timeout_ms; /* per request; 0: 30 s */
};

/*
 * Loads the configuration and prepares a client.  Nothing is sent yet.
 * MLP_ENOTFOUND with a message when there is no configuration at all;
 * MLP_EINVAL with a message naming the file and what is wrong in it.
 */
int mlp_k8s_open(struct mlp_k8s **out, const struct mlp_k8s_options *opt);
/* Accepts NULL. */
void mlp_k8s_close(struct mlp_k8s *k);

/* The context's namespace ("default" when it names none), the API
 * server's URL, and how the client authenticates ("token", "exec
 * plugin", ...).  Owned by the client. */
const char *mlp_k8s_namespace(const struct mlp_k8s *k);
const char *mlp_k8s_server(const struct mlp_k8s *k);
const char *mlp_k8s_auth_kind(const struct mlp_k8s *k);

/*
 * One request: method ("GET", "PATCH" ...), path ("/apis/apps/v1/..."),
 * body with its content type (both may be NULL).  On a 2xx answer returns
 * 0 and *out (may be NULL; the caller frees) is the parsed body.
 * *out_http (may be NULL) is the HTTP status (0 when none came).
 * Errors: MLP_ENOTFOUND (404), MLP_EEXISTS (409 Conflict), MLP_ERROR
 * (other HTTP errors), MLP_EIO (connection, TLS, timeout), each with a
 * message such as 'deployments.apps "x" is forbidden: User "u" cannot
 * patch ... (HTTP 403)'.
 */
int mlp_k8s_request(struct mlp_json **out, long *out_http, struct mlp_k8s *k, const char *method,
                    const char *path, const char *content_type, const char *body);

/* A watch event: type is "ADDED", "MODIFIED", "DELETED" or "BOOKMARK";
 * object is borrowed for the call.  Return 0 to go on, a positive value
 * to stop the watch (mlp_k8s_watch returns it), negative for an error. */
typedef int (*mlp_k8s_event_fn)(const char *type, const struct mlp_json *object, void *payload);

/* mlp_k8s_watch's answer when the server says the resourceVersion is too
 * old (an ERROR event with code 410): list again, then watch again. */
#define MLP_K8S_EXPIRED 1000

/*
 * Streams a watch (path must include ?watch=true...) and calls fn for
 * each event as it arrives.  Returns 0 when the server ended the stream,
 * fn's positive value, MLP_K8S_EXPIRED, MLP_ETIMEOUT (no message) when
 * deadline_ms (monotonic, mlp_mono_ms) passed, or an error as for
 * mlp_k8s_request.
 */
int mlp_k8s_watch(struct mlp_k8s *k, const char *path, int64_t deadline_ms, mlp_k8s_event_fn fn,
                  void *payload);

/* A streamed answer's chunk (raw) or line (without its newline).  Return
 * 0 to go on, a positive value to stop (mlp_k8s_stream returns it). */
typedef int (*mlp_k8s_data_fn)(const char *data, size_t len, void *payload);

struct mlp_k8s_stream {
	int64_t deadline_ms; /* monotonic; the transfer's end at the latest */
	bool lines;          /* call fn per line rather than per chunk */
	mlp_k8s_data_fn fn;
	void *payload;
	const volatile int *cancel; /* nonzero: abort soon (checked ~10 times a second) */
	int64_t idle_timeout_ms;    /* > 0: MLP_EIO when no byte came for that long */
};

/*
 * GETs path and hands the body to opt->fn as it arrives (pod logs with
 * follow=true, files through pods/proxy).  Returns 0 when the server ended
 * the body, fn's positive value, MLP_ECANCELLED (no message) when
 * *opt->cancel became nonzero, MLP_ETIMEOUT (no message) at the deadline,
 * or an error as for mlp_k8s_request (the HTTP error's body is not handed
 * to fn).  Not retried: the caller knows where to resume.
 */
int mlp_k8s_stream(struct mlp_k8s *k, const char *path, const struct mlp_k8s_stream *opt);

#endif
