/*
 * k8s-config.c - where the Kubernetes client's configuration and
 * credentials come from (see k8s.h): kubeconfig files merged as kubectl
 * does, in-cluster service accounts, token files and exec credential
 * plugins; mlp_k8s_open() and mlp_k8s_close().  Sending requests is
 * k8s.c's; this file hands it a configured client and keeps the
 * credential current (k8s_refresh_credentials).
 *
 * Credentials are kept in memory only: certificate, key and CA go to
 * libcurl as blobs, tokens as an Authorization header that is never
 * logged.
 */
#include "config.h"

#include <curl/curl.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "base/exec.h"
#include "base/json.h"
#include "deploy/k8s-int.h"
#include "base/util.h"
#include "pipeline/yamltree.h"

extern char **environ;

#define KUBECONFIG_MAX (4 << 20)
#define SA_DIR_DEFAULT "/var/run/secrets/kubernetes.io/serviceaccount"
/* Tokens read from a file are re-read this often (they rotate). */
#define TOKEN_FILE_TTL_MS (60 * 1000)
#define EXEC_TIMEOUT_MS (60 * 1000)

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
			mlp_proc_reap(&ex, &p, true);
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
	mlp_proc_reap(&ex, &p, true);
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
int k8s_refresh_credentials(struct mlp_k8s *k, bool force, bool *out_changed)
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
