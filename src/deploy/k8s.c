/*
 * k8s.c - the Kubernetes API client (see k8s.h).  The only module that
 * includes libcurl.
 *
 * One easy handle per client, reused for every call so that the TLS
 * connection to the API server is kept alive between the GET, the PATCH
 * and the watch.  Credentials are kept in memory only: certificate, key
 * and CA go to libcurl as blobs, tokens as an Authorization header that
 * is never logged.
 */
#include "config.h"

#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "base/exec.h"
#include "base/json.h"
#include "deploy/k8s.h"
#include "base/util.h"
#include "pipeline/yamltree.h"

extern char **environ;

#define KUBECONFIG_MAX (4 << 20)
#define SA_DIR_DEFAULT "/var/run/secrets/kubernetes.io/serviceaccount"
/* Tokens read from a file are re-read this often (they rotate). */
#define TOKEN_FILE_TTL_MS (60 * 1000)
#define EXEC_TIMEOUT_MS (60 * 1000)
#define RETRIES 5
/* The longest wait a Retry-After gets (a longer one is cut to this). */
#define RETRY_AFTER_MAX_MS (10 * 1000)

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

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

static int base64_value(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-')
		return 62;
	if (c == '/' || c == '_')
		return 63;
	return -1;
}

/* Decodes standard base64 (whitespace ignored) into b; 0 or MLP_EINVAL
 * (no message). */
static int base64_decode(struct mlp_buf *b, const char *s)
{
	unsigned int acc = 0;
	int bits = 0;

	for (; *s; s++) {
		int v;

		if (*s == '=' || *s == ' ' || *s == '\n' || *s == '\r' || *s == '\t')
			continue;
		if ((v = base64_value((unsigned char)*s)) < 0)
			return MLP_EINVAL;
		acc = (acc << 6) | (unsigned int)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			mlp_buf_putc(b, (char)((acc >> bits) & 0xff));
		}
	}
	return 0;
}

/* A path from a kubeconfig: relative ones are relative to its directory. */
static char *config_path(const char *dir, const char *path)
{
	if (path[0] == '/' || dir == NULL)
		return xstrdup(path);
	return xasprintf("%s/%s", dir, path);
}

/* Reads a file named by a kubeconfig into b; MLP_EIO with a message. */
static int read_into(struct mlp_buf *b, const char *path, const char *what)
{
	char *data = NULL;
	size_t len = 0;

	if (mlp_read_file(&data, &len, path, KUBECONFIG_MAX) != 0) {
		mlp_error_set("cannot read the %s %s", what, path);
		return MLP_EIO;
	}
	mlp_buf_clear(b);
	mlp_buf_add(b, data, len);
	free(data);
	return 0;
}

/* Either FIELD-data (base64) or FIELD (a file) of a kubeconfig entry. */
static int load_pem(struct mlp_buf *b, const struct mlp_json *entry, const char *field,
                    const char *dir, const char *where)
{
	char key[64];
	const char *data, *file;

	snprintf(key, sizeof(key), "%s-data", field);
	data = mlp_json_get_string(entry, key);
	file = mlp_json_get_string(entry, field);
	if (data && *data) {
		mlp_buf_clear(b);
		if (base64_decode(b, data) != 0) {
			mlp_error_set("%s: %s is not valid base64", where, key);
			return MLP_EINVAL;
		}
		return 0;
	}
	if (file && *file) {
		char *path = config_path(dir, file);
		int rc = read_into(b, path, field);

		free(path);
		return rc;
	}
	return 0;
}

/* Parses RFC 3339 ("2026-01-02T03:04:05Z", fractions and offsets
 * allowed) into wall-clock ms; 0 when it cannot. */
static int64_t parse_rfc3339(const char *s)
{
	struct tm tm = {0};
	const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	time_t t;
	long off = 0;

	if (p == NULL)
		return 0;
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++)
			;
	if (*p == '+' || *p == '-') {
		int h = 0, m = 0;

		if (sscanf(p + 1, "%2d:%2d", &h, &m) != 2)
			return 0;
		off = (h * 60L + m) * 60L * (*p == '-' ? -1 : 1);
	}
	t = timegm(&tm);
	return ((int64_t)t - off) * 1000;
}

/* ------------------------------------------------------------------ */
/* Credentials                                                         */
/* ------------------------------------------------------------------ */

static int read_token_file(struct mlp_k8s *k)
{
	char *data = NULL;
	size_t len = 0;

	if (mlp_read_file(&data, &len, k->token_file, 1 << 20) != 0) {
		mlp_error_set("cannot read the token file %s", k->token_file);
		return MLP_EIO;
	}
	while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r' || data[len - 1] == ' '))
		data[--len] = '\0';
	free(k->token);
	k->token = data;
	k->token_read_at = mlp_mono_ms();
	return 0;
}

/*
 * Runs the exec plugin and takes the token (or client certificate) from
 * the ExecCredential it prints.  The plugin's stdout and stderr arrive
 * together (the process layer merges them), so the credential is the JSON
 * object from the first '{' on; a plugin's chatter before it is skipped.
 */
static int run_exec(struct mlp_k8s *k)
{
	struct mlp_spawn spec = {
	        .argv = k->exec_argv.v,
	        .envp = k->exec_env.v,
	        .capture = true,
	};
	struct mlp_proc p;
	struct mlp_exit ex;
	struct mlp_buf out = {0};
	struct mlp_json *cred = NULL;
	const struct mlp_json *status;
	const char *text, *brace, *tok, *exp;
	int64_t deadline = mlp_mono_ms() + EXEC_TIMEOUT_MS;
	bool open_out = true;
	int rc;

	if ((rc = mlp_proc_spawn(&p, &spec)) != 0)
		return rc;
	while (open_out) {
		struct pollfd pfd = {p.out_fd, POLLIN, 0};
		int64_t left = deadline - mlp_mono_ms();
		char chunk[4096];
		ssize_t n;

		if (left <= 0) {
			mlp_proc_kill_group(&p, SIGKILL);
			mlp_proc_reap(&p, &ex, true);
			mlp_proc_close(&p);
			mlp_buf_free(&out);
			mlp_error_set("the exec credential plugin %s did not finish within %ds",
			              k->exec_argv.v[0], EXEC_TIMEOUT_MS / 1000);
			return MLP_ETIMEOUT;
		}
		if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR)
			break;
		n = read(p.out_fd, chunk, sizeof(chunk));
		if (n > 0 && out.len < (1 << 20))
			mlp_buf_add(&out, chunk, (size_t)n);
		else if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			open_out = false;
	}
	mlp_proc_reap(&p, &ex, true);
	mlp_proc_close(&p);
	text = mlp_buf_str(&out);
	if (ex.code != 0) {
		char how[64];

		mlp_exit_describe(how, sizeof(how), &ex);
		/* Its first line only: the output may hold a credential. */
		mlp_error_set("the exec credential plugin %s failed (%s): %.*s", k->exec_argv.v[0],
		              how, (int)strcspn(text, "\n{"), text);
		mlp_buf_free(&out);
		return MLP_ERROR;
	}
	brace = strchr(text, '{');
	if (brace == NULL || mlp_json_parse(&cred, brace, strlen(brace)) != 0) {
		mlp_error_set("the exec credential plugin %s printed no ExecCredential JSON",
		              k->exec_argv.v[0]);
		mlp_buf_free(&out);
		return MLP_EINVAL;
	}
	mlp_buf_free(&out);
	status = mlp_json_get(cred, "status");
	tok = mlp_json_get_string(status, "token");
	if (tok == NULL && mlp_json_get_string(status, "clientCertificateData") == NULL) {
		mlp_error_set("the exec credential plugin %s gave neither status.token nor "
		              "status.clientCertificateData",
		              k->exec_argv.v[0]);
		mlp_json_free(cred);
		return MLP_EINVAL;
	}
	free(k->token);
	k->token = tok ? xstrdup(tok) : NULL;
	if (mlp_json_get_string(status, "clientCertificateData")) {
		mlp_buf_clear(&k->cert);
		mlp_buf_puts(&k->cert, mlp_json_get_string(status, "clientCertificateData"));
		mlp_buf_clear(&k->key);
		mlp_buf_puts(&k->key, mlp_json_get_string(status, "clientKeyData")
		                              ? mlp_json_get_string(status, "clientKeyData")
		                              : "");
	}
	exp = mlp_json_get_string(status, "expirationTimestamp");
	k->token_expires_wall_ms = exp ? parse_rfc3339(exp) : 0;
	mlp_json_free(cred);
	return 0;
}

/* Makes the credential current: re-reads token files that are a minute
 * old and re-runs an exec plugin whose token expired (or when forced,
 * after a 401).  *out_changed says whether anything could be refreshed. */
static int refresh_credentials(struct mlp_k8s *k, bool force, bool *out_changed)
{
	if (out_changed)
		*out_changed = false;
	if (k->token_file &&
	    (force || k->token == NULL || mlp_mono_ms() - k->token_read_at >= TOKEN_FILE_TTL_MS)) {
		if (out_changed)
			*out_changed = true;
		return read_token_file(k);
	}
	if (k->has_exec && (force || (k->token == NULL && k->cert.len == 0) ||
	                    (k->token_expires_wall_ms != 0 &&
	                     mlp_wall_ms() + 10000 >= k->token_expires_wall_ms))) {
		if (out_changed)
			*out_changed = true;
		return run_exec(k);
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Configuration                                                       */
/* ------------------------------------------------------------------ */

struct kubeconfig {
	struct mlp_json **docs;
	char **dirs;
	char **paths;
	size_t n;
};

static void kubeconfig_free(struct kubeconfig *kc)
{
	for (size_t i = 0; i < kc->n; i++) {
		mlp_json_free(kc->docs[i]);
		free(kc->dirs[i]);
		free(kc->paths[i]);
	}
	free(kc->docs);
	free(kc->dirs);
	free(kc->paths);
}

static int kubeconfig_add(struct kubeconfig *kc, const char *path)
{
	struct mlp_json *doc = NULL;
	char *text = NULL, *abs = NULL;
	size_t len = 0;
	int rc;

	if (mlp_read_file(&text, &len, path, KUBECONFIG_MAX) != 0) {
		mlp_error_set("cannot read the kubeconfig %s", path);
		return MLP_EIO;
	}
	rc = mlp_yaml_to_json(&doc, path, text, len);
	free(text);
	if (rc != 0)
		return rc;
	if (!mlp_json_is_object(doc) && !mlp_json_is_null(doc)) {
		mlp_json_free(doc);
		mlp_error_set("%s: a kubeconfig is a mapping (apiVersion, clusters, contexts, "
		              "users ...)",
		              path);
		return MLP_EINVAL;
	}
	kc->docs = xrealloc(kc->docs, (kc->n + 1) * sizeof(*kc->docs));
	kc->dirs = xrealloc(kc->dirs, (kc->n + 1) * sizeof(*kc->dirs));
	kc->paths = xrealloc(kc->paths, (kc->n + 1) * sizeof(*kc->paths));
	kc->docs[kc->n] = doc;
	kc->dirs[kc->n] = mlp_realpath(&abs, path) == 0 ? mlp_dirname(abs) : mlp_dirname(path);
	kc->paths[kc->n] = xstrdup(path);
	kc->n++;
	free(abs);
	return 0;
}

/* The named entry of a list (clusters, contexts, users) across the files,
 * the first file to have it winning, as kubectl merges; its inner object
 * (key inner) and the directory of its file. */
static const struct mlp_json *kubeconfig_find(const struct kubeconfig *kc, const char *list,
                                              const char *inner, const char *name,
                                              const char **out_dir)
{
	for (size_t f = 0; f < kc->n; f++) {
		const struct mlp_json *arr = mlp_json_get(kc->docs[f], list);

		for (size_t i = 0; i < mlp_json_count(arr); i++) {
			const struct mlp_json *e = mlp_json_at(arr, i);
			const char *n = mlp_json_get_string(e, "name");

			if (n && strcmp(n, name) == 0) {
				*out_dir = kc->dirs[f];
				return mlp_json_get(e, inner);
			}
		}
	}
	return NULL;
}

/* The exec plugin's command line and environment. */
static int setup_exec(struct mlp_k8s *k, const struct mlp_json *ex, const char *dir,
                      const char *user)
{
	const char *cmd = mlp_json_get_string(ex, "command");
	const char *api = mlp_json_get_string(ex, "apiVersion");
	const struct mlp_json *args = mlp_json_get(ex, "args"), *env = mlp_json_get(ex, "env");
	char *path = NULL, *info;

	if (cmd == NULL || *cmd == '\0') {
		mlp_error_set("user '%s': exec has no command", user);
		return MLP_EINVAL;
	}
	/* As kubectl: a command with a '/' is relative to the kubeconfig. */
	if (strchr(cmd, '/'))
		path = config_path(dir, cmd);
	else if (mlp_exec_find(&path, cmd) != 0)
		return MLP_ENOTFOUND;
	k->has_exec = true;
	mlp_strv_push_owned(&k->exec_argv, path);
	for (size_t i = 0; i < mlp_json_count(args); i++) {
		const char *a = mlp_json_string(mlp_json_at(args, i));

		if (a == NULL) {
			mlp_error_set("user '%s': exec args must be strings", user);
			return MLP_EINVAL;
		}
		mlp_strv_push(&k->exec_argv, a);
	}
	for (char **e = environ; *e; e++)
		mlp_strv_push(&k->exec_env, *e);
	for (size_t i = 0; i < mlp_json_count(env); i++) {
		const struct mlp_json *e = mlp_json_at(env, i);
		const char *n = mlp_json_get_string(e, "name"),
		           *v = mlp_json_get_string(e, "value");

		if (n && v)
			mlp_strv_setenv(&k->exec_env, n, v);
	}
	if (api == NULL)
		api = "client.authentication.k8s.io/v1beta1";
	info = xasprintf("{\"apiVersion\":\"%s\",\"kind\":\"ExecCredential\","
	                 "\"spec\":{\"interactive\":false}}",
	                 api);
	mlp_strv_setenv(&k->exec_env, "KUBERNETES_EXEC_INFO", info);
	free(info);
	return 0;
}

static int load_kubeconfig(struct mlp_k8s *k, struct kubeconfig *kc, const char *want_ctx)
{
	const char *ctx_name = want_ctx, *dir = NULL, *cdir = NULL, *udir = NULL;
	const struct mlp_json *ctx, *cluster, *user;
	const char *cluster_name, *user_name, *ns, *server, *where;
	int rc;

	for (size_t f = 0; f < kc->n && ctx_name == NULL; f++) {
		const char *cur = mlp_json_get_string(kc->docs[f], "current-context");

		if (cur && *cur)
			ctx_name = cur;
	}
	if (ctx_name == NULL) {
		mlp_error_set("%s names no current-context (choose one with --context)",
		              kc->paths[0]);
		return MLP_EINVAL;
	}
	ctx = kubeconfig_find(kc, "contexts", "context", ctx_name, &dir);
	if (ctx == NULL) {
		mlp_error_set("no context '%s' in %s", ctx_name, kc->paths[0]);
		return MLP_ENOTFOUND;
	}
	cluster_name = mlp_json_get_string(ctx, "cluster");
	user_name = mlp_json_get_string(ctx, "user");
	ns = mlp_json_get_string(ctx, "namespace");
	k->namespace_ = xstrdup(ns && *ns ? ns : "default");
	cluster = cluster_name ? kubeconfig_find(kc, "clusters", "cluster", cluster_name, &cdir)
	                       : NULL;
	if (cluster == NULL) {
		mlp_error_set("context '%s' names cluster '%s', which is not in the kubeconfig",
		              ctx_name, cluster_name ? cluster_name : "");
		return MLP_EINVAL;
	}
	server = mlp_json_get_string(cluster, "server");
	if (server == NULL || strncmp(server, "http", 4) != 0) {
		mlp_error_set("cluster '%s' has no server URL", cluster_name);
		return MLP_EINVAL;
	}
	k->server = xstrndup(server, strlen(server) - (server[strlen(server) - 1] == '/'));
	k->insecure = mlp_json_is_true(mlp_json_get(cluster, "insecure-skip-tls-verify"));
	where = cluster_name;
	if ((rc = load_pem(&k->ca, cluster, "certificate-authority", cdir, where)) != 0)
		return rc;

	k->auth_kind = "none";
	user = user_name ? kubeconfig_find(kc, "users", "user", user_name, &udir) : NULL;
	if (user_name && user == NULL) {
		mlp_error_set("context '%s' names user '%s', which is not in the kubeconfig",
		              ctx_name, user_name);
		return MLP_EINVAL;
	}
	if (user == NULL)
		return 0;
	if (mlp_json_get(user, "auth-provider")) {
		mlp_error_set("user '%s' uses an auth-provider, which mlpipe does not support "
		              "(use an exec plugin)",
		              user_name);
		return MLP_EINVAL;
	}
	if ((rc = load_pem(&k->cert, user, "client-certificate", udir, user_name)) != 0 ||
	    (rc = load_pem(&k->key, user, "client-key", udir, user_name)) != 0)
		return rc;
	if (k->cert.len)
		k->auth_kind = "client certificate";
	if ((k->cert.len == 0) != (k->key.len == 0)) {
		mlp_error_set("user '%s' has a client certificate without a key, or a key "
		              "without a certificate",
		              user_name);
		return MLP_EINVAL;
	}
	if (mlp_json_get_string(user, "token") && *mlp_json_get_string(user, "token")) {
		k->token = xstrdup(mlp_json_get_string(user, "token"));
		k->auth_kind = "token";
	} else if (mlp_json_get_string(user, "tokenFile")) {
		k->token_file = config_path(udir, mlp_json_get_string(user, "tokenFile"));
		k->auth_kind = "token file";
	} else if (mlp_json_get(user, "exec")) {
		if ((rc = setup_exec(k, mlp_json_get(user, "exec"), udir, user_name)) != 0)
			return rc;
		k->auth_kind = "exec plugin";
	} else if (mlp_json_get_string(user, "username")) {
		mlp_error_set("user '%s' uses basic auth (username/password), which Kubernetes "
		              "removed in 1.19",
		              user_name);
		return MLP_EINVAL;
	}
	return 0;
}

/* Inside a pod: the service's address and the service account's files. */
static int load_in_cluster(struct mlp_k8s *k)
{
	const char *host = getenv("KUBERNETES_SERVICE_HOST");
	const char *port = getenv("KUBERNETES_SERVICE_PORT");
	const char *dir = getenv("MLPIPE_K8S_SA_DIR");
	char *path, *ns = NULL;
	size_t len = 0;
	int rc;

	if (dir == NULL || *dir == '\0')
		dir = SA_DIR_DEFAULT;
	if (port == NULL || *port == '\0')
		port = "443";
	k->server = strchr(host, ':') ? xasprintf("https://[%s]:%s", host, port)
	                              : xasprintf("https://%s:%s", host, port);
	k->token_file = xasprintf("%s/token", dir);
	k->auth_kind = "service account";
	path = xasprintf("%s/ca.crt", dir);
	rc = read_into(&k->ca, path, "service-account CA");
	free(path);
	if (rc != 0)
		return rc;
	path = xasprintf("%s/namespace", dir);
	if (mlp_read_file(&ns, &len, path, 4096) == 0) {
		while (len > 0 && (ns[len - 1] == '\n' || ns[len - 1] == ' '))
			ns[--len] = '\0';
	}
	free(path);
	k->namespace_ = ns && *ns ? ns : xstrdup("default");
	if (ns && !*ns)
		free(ns);
	return read_token_file(k);
}

int mlp_k8s_open(struct mlp_k8s **out, const struct mlp_k8s_options *opt)
{
	struct mlp_k8s *k = xcalloc(1, sizeof(*k));
	struct kubeconfig kc = {0};
	const char *env = getenv("KUBECONFIG"), *home = getenv("HOME");
	int rc = 0;

	*out = NULL;
	k->timeout_ms = opt && opt->request_timeout_ms > 0 ? opt->request_timeout_ms : 30000;
	if (opt && opt->kubeconfig) {
		rc = kubeconfig_add(&kc, opt->kubeconfig);
	} else if (env && *env) {
		char *list = xstrdup(env), *save = NULL;

		for (char *p = strtok_r(list, ":", &save); p && rc == 0;
		     p = strtok_r(NULL, ":", &save))
			if (access(p, F_OK) == 0)
				rc = kubeconfig_add(&kc, p);
		free(list);
	} else if (home && *home) {
		char *p = xasprintf("%s/.kube/config", home);

		if (access(p, F_OK) == 0)
			rc = kubeconfig_add(&kc, p);
		free(p);
	}
	if (rc != 0)
		goto fail;
	if (kc.n > 0) {
		rc = load_kubeconfig(k, &kc, opt ? opt->context : NULL);
	} else if (getenv("KUBERNETES_SERVICE_HOST") && *getenv("KUBERNETES_SERVICE_HOST")) {
		rc = load_in_cluster(k);
	} else {
		mlp_error_set("no Kubernetes configuration: give --kubeconfig, set KUBECONFIG, "
		              "create ~/.kube/config, or run inside a pod");
		rc = MLP_ENOTFOUND;
	}
	if (rc != 0)
		goto fail;
	k->curl = curl_easy_init();
	if (k->curl == NULL) {
		mlp_error_set("cannot start libcurl");
		rc = MLP_ERROR;
		goto fail;
	}
	kubeconfig_free(&kc);
	*out = k;
	return 0;
fail:
	kubeconfig_free(&kc);
	mlp_k8s_close(k);
	return rc;
}

void mlp_k8s_close(struct mlp_k8s *k)
{
	if (k == NULL)
		return;
	if (k->curl)
		curl_easy_cleanup(k->curl);
	free(k->server);
	free(k->namespace_);
	mlp_buf_free(&k->ca);
	/* Wipe what authenticates us before handing the memory back. */
	if (k->key.data)
		memset(k->key.data, 0, k->key.len);
	mlp_buf_free(&k->key);
	mlp_buf_free(&k->cert);
	if (k->token)
		memset(k->token, 0, strlen(k->token));
	free(k->token);
	free(k->token_file);
	mlp_strv_free(&k->exec_argv);
	mlp_strv_free(&k->exec_env);
	free(k);
}

const char *mlp_k8s_namespace(const struct mlp_k8s *k)
{
	return k->namespace_;
}

const char *mlp_k8s_server(const struct mlp_k8s *k)
{
	return k->server;
}

const char *mlp_k8s_auth_kind(const struct mlp_k8s *k)
{
	return k->auth_kind;
}

/* ------------------------------------------------------------------ */
/* Requests                                                            */
/* ------------------------------------------------------------------ */

/* What one transfer collects. */
struct transfer {
	struct mlp_buf body;
	long retry_after_s; /* -1: none */
	/* Watches: */
	bool watch;
	struct mlp_buf line;
	mlp_k8s_event_fn fn;
	void *payload;
	int stop; /* nonzero: the value mlp_k8s_watch returns */
	CURL *curl;
};

static size_t on_header(char *data, size_t size, size_t n, void *userdata)
{
	struct transfer *t = userdata;
	size_t len = size * n;

	if (len > 12 && strncasecmp(data, "Retry-After:", 12) == 0) {
		char buf[32];
		size_t vlen = len - 12 < sizeof(buf) - 1 ? len - 12 : sizeof(buf) - 1;
		long long v;
		char *s = buf, *e;

		memcpy(buf, data + 12, vlen);
		buf[vlen] = '\0';
		while (*s == ' ')
			s++;
		e = s + strcspn(s, "\r\n ");
		*e = '\0';
		/* Delta-seconds only; an HTTP-date falls back to the backoff.  A
		 * huge value is still honoured (up to the cap), not ignored. */
		if (mlp_parse_int(&v, s, 0, LLONG_MAX) == 0)
			t->retry_after_s = v > 3600 ? 3600 : (long)v;
	}
	return len;
}

/* One line of a watch stream: {"type": ..., "object": {...}}. */
static int watch_line(struct transfer *t, const char *line, size_t len)
{
	struct mlp_json *ev = NULL;
	const char *type;
	const struct mlp_json *obj;
	int rc;

	if (len == 0)
		return 0;
	if (mlp_json_parse(&ev, line, len) != 0)
		return MLP_EINVAL;
	type = mlp_json_get_string(ev, "type");
	obj = mlp_json_get(ev, "object");
	if (type && strcmp(type, "ERROR") == 0) {
		int64_t code = mlp_json_int(mlp_json_get(obj, "code"), 0);

		if (code == 410) {
			rc = MLP_K8S_EXPIRED;
		} else {
			const char *msg = mlp_json_get_string(obj, "message");

			mlp_error_set("the watch failed: %s (code %lld)", msg ? msg : "no message",
			              (long long)code);
			rc = MLP_ERROR;
		}
	} else {
		rc = t->fn(type ? type : "", obj, t->payload);
	}
	mlp_json_free(ev);
	return rc;
}

static size_t on_body(char *data, size_t size, size_t n, void *userdata)
{
	struct transfer *t = userdata;
	size_t len = size * n;
	long http = 0;

	if (!t->watch) {
		if (t->body.len + len > (64u << 20))
			return 0;
		mlp_buf_add(&t->body, data, len);
		return len;
	}
	curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &http);
	if (http != 200) {
		if (t->body.len < (1 << 20))
			mlp_buf_add(&t->body, data, len);
		return len;
	}
	mlp_buf_add(&t->line, data, len);
	for (;;) {
		char *nl = memchr(t->line.data, '\n', t->line.len);
		size_t used;
		int rc;

		if (nl == NULL)
			break;
		used = (size_t)(nl - t->line.data) + 1;
		*nl = '\0';
		rc = watch_line(t, t->line.data, used - 1);
		memmove(t->line.data, t->line.data + used, t->line.len - used);
		t->line.len -= used;
		t->line.data[t->line.len] = '\0';
		if (rc != 0) {
			t->stop = rc;
			return 0; /* aborts the transfer */
		}
	}
	return len;
}

/* Sets up the handle for one transfer (TLS, credentials, timeouts). */
static struct curl_slist *setup(struct mlp_k8s *k, struct transfer *t, const char *method,
                                const char *url, const char *content_type, const char *body,
                                int64_t timeout_ms, char *errbuf)
{
	struct curl_slist *h = NULL;
	CURL *c = k->curl;

	curl_easy_reset(c);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https,http");
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
	                 (long)(timeout_ms < 10000 ? timeout_ms : 10000));
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, t);
	curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "mlpipe/" PACKAGE_VERSION);
	if (strcmp(method, "GET") != 0)
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (body) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	}
	if (k->insecure) {
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
	} else if (k->ca.len) {
		struct curl_blob ca = {k->ca.data, k->ca.len, CURL_BLOB_COPY};

		curl_easy_setopt(c, CURLOPT_CAINFO_BLOB, &ca);
	}
	if (k->cert.len && k->key.len) {
		struct curl_blob cert = {k->cert.data, k->cert.len, CURL_BLOB_COPY};
		struct curl_blob key = {k->key.data, k->key.len, CURL_BLOB_COPY};

		curl_easy_setopt(c, CURLOPT_SSLCERT_BLOB, &cert);
		curl_easy_setopt(c, CURLOPT_SSLCERTTYPE, "PEM");
		curl_easy_setopt(c, CURLOPT_SSLKEY_BLOB, &key);
		curl_easy_setopt(c, CURLOPT_SSLKEYTYPE, "PEM");
	}
	h = curl_slist_append(h, "Accept: application/json");
	if (content_type) {
		char *ct = xasprintf("Content-Type: %s", content_type);

		h = curl_slist_append(h, ct);
		free(ct);
	}
	if (k->token) {
		char *auth = xasprintf("Authorization: Bearer %s", k->token);

		h = curl_slist_append(h, auth);
		memset(auth, 0, strlen(auth));
		free(auth);
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	return h;
}

/* The API's own words for a failed call: a Status object's message. */
static void http_error(const char *method, const char *path, long http, const char *body)
{
	struct mlp_json *st = NULL;
	const char *msg = NULL;

	if (body && *body && mlp_json_parse(&st, body, strlen(body)) == 0)
		msg = mlp_json_get_string(st, "message");
	if (msg && *msg)
		mlp_error_set("%s (HTTP %ld)", msg, http);
	else
		mlp_error_set("%s %s: HTTP %ld%s%.200s", method, path, http,
		              body && *body ? ": " : "", body ? body : "");
	mlp_json_free(st);
}

static int http_code(long http)
{
	if (http == 404)
		return MLP_ENOTFOUND;
	if (http == 409)
		return MLP_EEXISTS;
	return MLP_ERROR;
}

static bool retryable_curl(CURLcode cc, bool idempotent)
{
	switch (cc) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
		return true;
	case CURLE_RECV_ERROR:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_PARTIAL_FILE:
		return idempotent;
	default:
		return false;
	}
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

int mlp_k8s_request(struct mlp_k8s *k, struct mlp_json **out, long *out_http, const char *method,
                    const char *path, const char *content_type, const char *body)
{
	char *url = xasprintf("%s%s", k->server, path);
	bool idempotent = strcmp(method, "GET") == 0, refreshed = false;
	int64_t backoff = 200;
	int rc = MLP_ERROR;

	if (out)
		*out = NULL;
	if (out_http)
		*out_http = 0;
	for (int attempt = 1;; attempt++) {
		struct transfer t = {.retry_after_s = -1, .curl = k->curl};
		char errbuf[CURL_ERROR_SIZE] = "";
		struct curl_slist *h;
		CURLcode cc;
		long http = 0;
		int64_t wait = 0;

		if ((rc = refresh_credentials(k, false, NULL)) != 0)
			break;
		h = setup(k, &t, method, url, content_type, body, k->timeout_ms, errbuf);
		cc = curl_easy_perform(k->curl);
		curl_slist_free_all(h);
		curl_easy_getinfo(k->curl, CURLINFO_RESPONSE_CODE, &http);
		if (out_http)
			*out_http = http;
		if (cc != CURLE_OK) {
			mlp_error_set("%s: %s", k->server,
			              errbuf[0] ? errbuf : curl_easy_strerror(cc));
			rc = MLP_EIO;
			if (attempt < RETRIES && retryable_curl(cc, idempotent))
				wait = backoff;
		} else if (http >= 200 && http < 300) {
			rc = 0;
			if (out && t.body.len &&
			    mlp_json_parse(out, t.body.data, t.body.len) != 0) {
				mlp_error_set("%s %s: the API server's answer is not JSON", method,
				              path);
				rc = MLP_EINVAL;
			}
		} else {
			http_error(method, path, http, mlp_buf_str(&t.body));
			rc = http_code(http);
			if (http == 401 && !refreshed) {
				bool changed = false;

				refreshed = true;
				if (refresh_credentials(k, true, &changed) == 0 && changed)
					wait = 1; /* at once, with the new credential */
			} else if (attempt < RETRIES && (http == 429 || http >= 500)) {
				wait = t.retry_after_s >= 0 ? t.retry_after_s * 1000 : backoff;
				if (wait > RETRY_AFTER_MAX_MS)
					wait = RETRY_AFTER_MAX_MS;
				if (wait < 1)
					wait = 1; /* "Retry-After: 0": again at once; 0 ends the loop */
			}
		}
		mlp_buf_free(&t.body);
		if (rc == 0 || wait == 0)
			break;
		sleep_ms(wait);
		backoff = backoff * 2 > 3200 ? 3200 : backoff * 2;
	}
	free(url);
	return rc;
}

int mlp_k8s_watch(struct mlp_k8s *k, const char *path, int64_t deadline_ms, mlp_k8s_event_fn fn,
                  void *payload)
{
	char *url = xasprintf("%s%s", k->server, path);
	bool refreshed = false;
	int rc;

	for (;;) {
		struct transfer t = {.retry_after_s = -1,
		                     .watch = true,
		                     .fn = fn,
		                     .payload = payload,
		                     .curl = k->curl};
		char errbuf[CURL_ERROR_SIZE] = "";
		struct curl_slist *h;
		int64_t left = deadline_ms - mlp_mono_ms();
		CURLcode cc;
		long http = 0;

		if (left <= 0) {
			rc = MLP_ETIMEOUT;
			break;
		}
		if ((rc = refresh_credentials(k, false, NULL)) != 0)
			break;
		h = setup(k, &t, "GET", url, NULL, NULL, left, errbuf);
		cc = curl_easy_perform(k->curl);
		curl_slist_free_all(h);
		curl_easy_getinfo(k->curl, CURLINFO_RESPONSE_CODE, &http);
		if (t.stop != 0) {
			rc = t.stop;
		} else if (cc == CURLE_OPERATION_TIMEDOUT && mlp_mono_ms() >= deadline_ms) {
			rc = MLP_ETIMEOUT;
		} else if (cc != CURLE_OK) {
			mlp_error_set("%s: watch: %s", k->server,
			              errbuf[0] ? errbuf : curl_easy_strerror(cc));
			rc = MLP_EIO;
		} else if (http != 200) {
			http_error("GET", path, http, mlp_buf_str(&t.body));
			rc = http_code(http);
		} else {
			rc = 0; /* the server ended the stream */
		}
		mlp_buf_free(&t.body);
		mlp_buf_free(&t.line);
		if (http == 401 && !refreshed) {
			bool changed = false;

			refreshed = true;
			if (refresh_credentials(k, true, &changed) == 0 && changed)
				continue;
		}
		break;
	}
	free(url);
	return rc;
}
