/*
 * k8s-job-manifest.c - the objects of one stage attempt on Kubernetes
 * (see k8s-job.h): a Secret that owns the rest, a headless Service and
 * the pods' Job(s).  Pure: JSON in memory, nothing sent; the golden tests
 * (tests/test-k8s-job.c) compare these with tests/k8s/golden/.
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/crypto.h"
#include "base/json.h"
#include "deploy/k8s-job.h"

#define HELPER_DIR "/mlpipe"
#define SCRIPT_DIR "/mlpipe-stage"
#define GIT_CREDENTIALS_DIR "/mlpipe-git"
#define DEFAULT_CHECKOUT "/workspace"
#define INDEX_ANNOTATION "batch.kubernetes.io/job-completion-index"

char *mlp_k8s_job_base_name(int64_t run_id, const char *stage, int attempt)
{
	struct mlp_buf b = {0};
	char hex[MLP_SHA256_HEX_LEN + 1];
	bool exact = true;
	char *name;

	/* The stage's own hash when its name had to change (train_A and
	 * train-a are different stages and must not share objects). */
	mlp_sha256_hex(hex, stage, strlen(stage));
	mlp_buf_printf(&b, "mlp-%lld-", (long long)run_id);
	for (const char *p = stage; *p; p++) {
		char ch = (char)tolower((unsigned char)*p);

		exact = exact && ch == *p && (isalnum((unsigned char)ch) || ch == '-');
		mlp_buf_putc(&b, isalnum((unsigned char)ch) ? ch : '-');
	}
	if (!exact)
		mlp_buf_printf(&b, "-%.6s", hex);
	mlp_buf_printf(&b, "-%d", attempt);
	name = mlp_buf_detach(&b);
	/* Pods are BASE-N (N < 1000) and must fit a 63-character label. */
	if (strlen(name) > 52) {
		char *tail = strrchr(name, '-');
		char *shorter = xasprintf("%.38s-%.6s%s", name, hex, tail);

		free(name);
		name = shorter;
	}
	return name;
}

/* The stage's name as a label value: at most 63 characters, alphanumeric
 * at both ends ("_prep" and long names are valid stage names; the pods'
 * MLPIPE_STAGE keeps the name whole). */
static void stage_label(char out[64], const char *stage)
{
	size_t len;

	while (*stage && !isalnum((unsigned char)*stage))
		stage++;
	snprintf(out, 64, "%s", stage);
	len = strlen(out);
	while (len > 0 && !isalnum((unsigned char)out[len - 1]))
		out[--len] = '\0';
}

static struct mlp_json *labels(const struct mlp_k8s_job_spec *s, const char *base, int node)
{
	struct mlp_json *l = mlp_json_object();
	char num[32], stage[64];

	for (size_t i = 0; i < s->k8s->labels.len; i++)
		mlp_json_add_string(l, s->k8s->labels.items[i].key, s->k8s->labels.items[i].value);
	mlp_json_add_string(l, "app.kubernetes.io/managed-by", "mlpipe");
	mlp_json_add_string(l, "mlpipe.dev/store", s->store_id);
	snprintf(num, sizeof(num), "%lld", (long long)s->run_id);
	mlp_json_add_string(l, "mlpipe.dev/run", num);
	stage_label(stage, s->stage);
	mlp_json_add_string(l, "mlpipe.dev/stage", stage);
	snprintf(num, sizeof(num), "%d", s->attempt);
	mlp_json_add_string(l, "mlpipe.dev/attempt", num);
	mlp_json_add_string(l, "mlpipe.dev/gang", base);
	if (node >= 0) {
		snprintf(num, sizeof(num), "%d", node);
		mlp_json_add_string(l, "mlpipe.dev/node-rank", num);
	}
	return l;
}

static struct mlp_json *metadata(const struct mlp_k8s_job_spec *s, const char *name,
                                 const char *base, int node)
{
	struct mlp_json *m = mlp_json_object();

	mlp_json_add_string(m, "name", name);
	mlp_json_add_string(m, "namespace", s->namespace_);
	mlp_json_add(m, "labels", labels(s, base, node));
	return m;
}

static struct mlp_json *secret(const struct mlp_k8s_job_spec *s, const char *base)
{
	struct mlp_json *o = mlp_json_object(), *data = mlp_json_object();

	mlp_json_add_string(o, "apiVersion", "v1");
	mlp_json_add_string(o, "kind", "Secret");
	mlp_json_add(o, "metadata", metadata(s, base, base, -1));
	mlp_json_add_string(o, "type", "Opaque");
	for (size_t i = 0; s->env && i < s->env->len; i++) {
		char *key = xasprintf("env.%s", s->env->items[i].key);

		mlp_json_add_string(data, key, s->env->items[i].value);
		free(key);
	}
	if (s->script)
		mlp_json_add_string(data, "script", s->script);
	mlp_json_add(o, "stringData", data);
	return o;
}

static struct mlp_json *service(const struct mlp_k8s_job_spec *s, const char *base)
{
	struct mlp_json *o = mlp_json_object(), *spec = mlp_json_object();
	struct mlp_json *sel = mlp_json_object(), *ports = mlp_json_array();
	struct mlp_json *port = mlp_json_object();

	mlp_json_add_string(o, "apiVersion", "v1");
	mlp_json_add_string(o, "kind", "Service");
	mlp_json_add(o, "metadata", metadata(s, base, base, -1));
	mlp_json_add_string(spec, "clusterIP", "None");
	mlp_json_add_bool(spec, "publishNotReadyAddresses", true);
	mlp_json_add_string(sel, "mlpipe.dev/gang", base);
	mlp_json_add(spec, "selector", sel);
	mlp_json_add_string(port, "name", "master");
	mlp_json_add_int(port, "port", MLP_K8S_MASTER_PORT);
	mlp_json_add_int(port, "targetPort", MLP_K8S_MASTER_PORT);
	mlp_json_append(ports, port);
	mlp_json_add(spec, "ports", ports);
	mlp_json_add(o, "spec", spec);
	return o;
}

static void env_value(struct mlp_json *env, const char *name, const char *value)
{
	struct mlp_json *e = mlp_json_object();

	mlp_json_add_string(e, "name", name);
	mlp_json_add_string(e, "value", value);
	mlp_json_append(env, e);
}

static void env_int(struct mlp_json *env, const char *name, long long value)
{
	char num[32];

	snprintf(num, sizeof(num), "%lld", value);
	env_value(env, name, num);
}

static void env_ref(struct mlp_json *env, const char *name, const char *ref_kind,
                    struct mlp_json *ref)
{
	struct mlp_json *e = mlp_json_object(), *from = mlp_json_object();

	mlp_json_add_string(e, "name", name);
	mlp_json_add(from, ref_kind, ref);
	mlp_json_add(e, "valueFrom", from);
	mlp_json_append(env, e);
}

/* torchrun's contract for the whole world, as Kubeflow's PET_ variables
 * (mlpipe-pod sets RANK, LOCAL_RANK ... per process from these). */
static struct mlp_json *pod_env(const struct mlp_k8s_job_spec *s, const char *base, int node)
{
	struct mlp_json *env = mlp_json_array();
	char *master = xasprintf("%s-0.%s", base, base);

	env_int(env, "PET_NNODES", s->nodes);
	env_int(env, "PET_NPROC_PER_NODE", s->ranks);
	if (node >= 0) {
		env_int(env, "PET_NODE_RANK", node);
	} else {
		struct mlp_json *ref = mlp_json_object();

		mlp_json_add_string(ref, "fieldPath",
		                    "metadata.annotations['" INDEX_ANNOTATION "']");
		env_ref(env, "PET_NODE_RANK", "fieldRef", ref);
	}
	env_value(env, "PET_MASTER_ADDR", master);
	env_int(env, "PET_MASTER_PORT", MLP_K8S_MASTER_PORT);
	env_value(env, "MASTER_ADDR", master);
	env_int(env, "MASTER_PORT", MLP_K8S_MASTER_PORT);
	env_value(env, "TORCHELASTIC_RUN_ID", base);
	env_int(env, "MLPIPE_RUN_ID", s->run_id);
	env_value(env, "MLPIPE_STAGE", s->stage);
	env_int(env, "MLPIPE_ATTEMPT", s->attempt);
	env_value(env, "MLPIPE_OUTPUT", HELPER_DIR "/output");
	env_value(env, "MLPIPE_METRICS", HELPER_DIR "/metrics");
	for (size_t i = 0; s->env && i < s->env->len; i++) {
		struct mlp_json *ref = mlp_json_object();
		char *key = xasprintf("env.%s", s->env->items[i].key);

		mlp_json_add_string(ref, "name", base);
		mlp_json_add_string(ref, "key", key);
		env_ref(env, s->env->items[i].key, "secretKeyRef", ref);
		free(key);
	}
	free(master);
	return env;
}

static void push_str(struct mlp_json *a, const char *s)
{
	mlp_json_append(a, mlp_json_new_string(s));
}

static void push_int(struct mlp_json *a, long long v)
{
	char num[32];

	snprintf(num, sizeof(num), "%lld", v);
	push_str(a, num);
}

static void push_ms(struct mlp_json *a, long long ms)
{
	char num[40];

	snprintf(num, sizeof(num), "%lldms", ms);
	push_str(a, num);
}

static struct mlp_json *command(const struct mlp_k8s_job_spec *s)
{
	struct mlp_json *c = mlp_json_array();
	int64_t rdzv = s->k8s->start_timeout_ms ? s->k8s->start_timeout_ms
	                                        : MLP_K8S_DEFAULT_START_TIMEOUT_MS;

	push_str(c, HELPER_DIR "/mlpipe-pod");
	push_str(c, "run");
	push_str(c, "--nproc-per-node");
	push_int(c, s->ranks);
	if (s->gpus_per_node > 0) {
		push_str(c, "--gpus-per-node");
		push_int(c, s->gpus_per_node);
	}
	if (s->stall_timeout_ms > 0) {
		push_str(c, "--stall-timeout");
		push_ms(c, (long long)s->stall_timeout_ms);
	}
	/* Half the pod's grace: the ranks are SIGKILLed by mlpipe-pod, which
	 * then reports, before the kubelet SIGKILLs mlpipe-pod itself. */
	push_str(c, "--kill-grace");
	push_ms(c, (long long)(s->grace_ms > 1000 ? s->grace_ms / 2 : 500));
	/* As long as mlpipe waits for one file: a large model on a slow link. */
	push_str(c, "--serve-timeout");
	push_str(c, "1h");
	push_str(c, "--rdzv-timeout");
	push_ms(c, (long long)rdzv);
	if (s->once)
		push_str(c, "--once");
	push_str(c, "--results-port");
	push_int(c, MLP_K8S_RESULTS_PORT);
	push_str(c, "--result");
	push_str(c, "output=" HELPER_DIR "/output");
	push_str(c, "--result");
	push_str(c, "metrics=" HELPER_DIR "/metrics");
	if (s->model_path) {
		char *r = xasprintf("model=%s", s->model_path);

		push_str(c, "--result");
		push_str(c, r);
		free(r);
	}
	push_str(c, "--termination-log");
	push_str(c, HELPER_DIR "/termination-log");
	push_str(c, "--");
	if (s->script) {
		push_str(c, "/bin/sh");
		push_str(c, SCRIPT_DIR "/script");
	} else {
		for (char *const *a = s->argv; a && *a; a++)
			push_str(c, *a);
	}
	return c;
}

static struct mlp_json *mount(const char *name, const char *path, bool read_only)
{
	struct mlp_json *m = mlp_json_object();

	mlp_json_add_string(m, "name", name);
	mlp_json_add_string(m, "mountPath", path);
	if (read_only)
		mlp_json_add_bool(m, "readOnly", true);
	return m;
}

static struct mlp_json *resources(const struct mlp_k8s_job_spec *s)
{
	struct mlp_json *r = mlp_json_object(), *req = mlp_json_object(), *lim = mlp_json_object();
	const struct mlp_kvlist *res = &s->k8s->resources;
	bool gpu_given = false;

	for (size_t i = 0; i < res->len; i++) {
		const char *k = res->items[i].key, *v = res->items[i].value;

		mlp_json_add_string(req, k, v);
		/* No CPU limit: a throttled rank slows the whole gang. */
		if (strcmp(k, "cpu") != 0)
			mlp_json_add_string(lim, k, v);
		gpu_given = gpu_given || strcmp(k, "nvidia.com/gpu") == 0;
	}
	if (!gpu_given && s->gpus_per_node > 0) {
		char num[16];

		snprintf(num, sizeof(num), "%d", s->gpus_per_node);
		mlp_json_add_string(req, "nvidia.com/gpu", num);
		mlp_json_add_string(lim, "nvidia.com/gpu", num);
	}
	mlp_json_add(r, "requests", req);
	mlp_json_add(r, "limits", lim);
	return r;
}

static const char *helper_image(const struct mlp_k8s_job_spec *s)
{
	return s->helper_image ? s->helper_image : "mlpipe/mlpipe:" PACKAGE_VERSION;
}

static const char *checkout_path(const struct mlp_k8s_job_spec *s)
{
	return s->k8s->checkout_path ? s->k8s->checkout_path : DEFAULT_CHECKOUT;
}

/* Clones the run's commit into the workspace volume.  The values reach
 * the fixed script as env, never as shell text. */
static struct mlp_json *checkout_container(const struct mlp_k8s_job_spec *s)
{
	static const char script[] =
	        "set -eu\n"
	        "if [ -r " GIT_CREDENTIALS_DIR "/ssh-privatekey ]; then\n"
	        "  export GIT_SSH_COMMAND=\"ssh -i " GIT_CREDENTIALS_DIR "/ssh-privatekey"
	        " -o UserKnownHostsFile=" GIT_CREDENTIALS_DIR "/known_hosts"
	        " -o StrictHostKeyChecking=yes\"\n"
	        "fi\n"
	        "if [ -r " GIT_CREDENTIALS_DIR "/password ]; then\n"
	        "  git config --global credential.helper "
	        "'!f() { echo username=$(cat " GIT_CREDENTIALS_DIR "/username);"
	        " echo password=$(cat " GIT_CREDENTIALS_DIR "/password); }; f'\n"
	        "fi\n"
	        "git clone --no-checkout -- \"$MLPIPE_REPO\" \"$MLPIPE_CHECKOUT\"\n"
	        "git -C \"$MLPIPE_CHECKOUT\" checkout --detach \"$MLPIPE_COMMIT\"\n";
	struct mlp_json *c = mlp_json_object(), *cmd = mlp_json_array(), *env = mlp_json_array();
	struct mlp_json *mounts = mlp_json_array();

	mlp_json_add_string(c, "name", "checkout");
	mlp_json_add_string(c, "image", helper_image(s));
	if (s->k8s->pull_policy)
		mlp_json_add_string(c, "imagePullPolicy", s->k8s->pull_policy);
	push_str(cmd, "/bin/sh");
	push_str(cmd, "-c");
	push_str(cmd, script);
	mlp_json_add(c, "command", cmd);
	env_value(env, "MLPIPE_REPO", s->k8s->checkout_repo);
	env_value(env, "MLPIPE_COMMIT", s->commit ? s->commit : "HEAD");
	env_value(env, "MLPIPE_CHECKOUT", checkout_path(s));
	env_value(env, "HOME", "/tmp");
	mlp_json_add(c, "env", env);
	mlp_json_append(mounts, mount("workspace", checkout_path(s), false));
	if (s->k8s->checkout_secret)
		mlp_json_append(mounts, mount("git-credentials", GIT_CREDENTIALS_DIR, true));
	mlp_json_add(c, "volumeMounts", mounts);
	return c;
}

static struct mlp_json *init_containers(const struct mlp_k8s_job_spec *s)
{
	struct mlp_json *list = mlp_json_array(), *c = mlp_json_object();
	struct mlp_json *cmd = mlp_json_array(), *mounts = mlp_json_array();

	mlp_json_add_string(c, "name", "mlpipe-tools");
	mlp_json_add_string(c, "image", helper_image(s));
	if (s->k8s->pull_policy)
		mlp_json_add_string(c, "imagePullPolicy", s->k8s->pull_policy);
	push_str(cmd, "mlpipe-pod");
	push_str(cmd, "install");
	push_str(cmd, HELPER_DIR);
	mlp_json_add(c, "command", cmd);
	mlp_json_append(mounts, mount("mlpipe", HELPER_DIR, false));
	mlp_json_add(c, "volumeMounts", mounts);
	mlp_json_append(list, c);
	if (s->k8s->checkout_repo)
		mlp_json_append(list, checkout_container(s));
	return list;
}

static struct mlp_json *main_container(const struct mlp_k8s_job_spec *s, const char *base, int node)
{
	struct mlp_json *c = mlp_json_object(), *ports = mlp_json_array();
	struct mlp_json *mounts = mlp_json_array(), *p;
	const char *workdir = s->k8s->workdir;

	mlp_json_add_string(c, "name", "train");
	mlp_json_add_string(c, "image", s->image);
	if (s->k8s->pull_policy)
		mlp_json_add_string(c, "imagePullPolicy", s->k8s->pull_policy);
	mlp_json_add(c, "command", command(s));
	if (workdir == NULL && s->k8s->checkout_repo)
		workdir = checkout_path(s);
	if (workdir)
		mlp_json_add_string(c, "workingDir", workdir);
	mlp_json_add(c, "env", pod_env(s, base, node));
	p = mlp_json_object();
	mlp_json_add_string(p, "name", "master");
	mlp_json_add_int(p, "containerPort", MLP_K8S_MASTER_PORT);
	mlp_json_append(ports, p);
	p = mlp_json_object();
	mlp_json_add_string(p, "name", "results");
	mlp_json_add_int(p, "containerPort", MLP_K8S_RESULTS_PORT);
	mlp_json_append(ports, p);
	mlp_json_add(c, "ports", ports);
	mlp_json_add(c, "resources", resources(s));
	mlp_json_append(mounts, mount("mlpipe", HELPER_DIR, false));
	if (s->script)
		mlp_json_append(mounts, mount("mlpipe-stage", SCRIPT_DIR, true));
	if (s->k8s->checkout_repo)
		mlp_json_append(mounts, mount("workspace", checkout_path(s), false));
	mlp_json_add(c, "volumeMounts", mounts);
	mlp_json_add_string(c, "terminationMessagePath", HELPER_DIR "/termination-log");
	mlp_json_add_string(c, "terminationMessagePolicy", "FallbackToLogsOnError");
	return c;
}

static struct mlp_json *volumes(const struct mlp_k8s_job_spec *s, const char *base)
{
	struct mlp_json *v = mlp_json_array(), *vol, *src;

	vol = mlp_json_object();
	mlp_json_add_string(vol, "name", "mlpipe");
	mlp_json_add(vol, "emptyDir", mlp_json_object());
	mlp_json_append(v, vol);
	if (s->script) {
		struct mlp_json *items = mlp_json_array(), *item = mlp_json_object();

		vol = mlp_json_object();
		src = mlp_json_object();
		mlp_json_add_string(vol, "name", "mlpipe-stage");
		mlp_json_add_string(src, "secretName", base);
		mlp_json_add_string(item, "key", "script");
		mlp_json_add_string(item, "path", "script");
		mlp_json_append(items, item);
		mlp_json_add(src, "items", items);
		mlp_json_add(vol, "secret", src);
		mlp_json_append(v, vol);
	}
	if (s->k8s->checkout_repo) {
		vol = mlp_json_object();
		mlp_json_add_string(vol, "name", "workspace");
		mlp_json_add(vol, "emptyDir", mlp_json_object());
		mlp_json_append(v, vol);
		if (s->k8s->checkout_secret) {
			vol = mlp_json_object();
			src = mlp_json_object();
			mlp_json_add_string(vol, "name", "git-credentials");
			mlp_json_add_string(src, "secretName", s->k8s->checkout_secret);
			mlp_json_add_int(src, "defaultMode", 0400);
			mlp_json_add(vol, "secret", src);
			mlp_json_append(v, vol);
		}
	}
	return v;
}

static struct mlp_json *tolerations(const struct mlp_k8s_settings *k)
{
	struct mlp_json *list = mlp_json_array();

	for (size_t i = 0; i < k->ntolerations; i++) {
		const struct mlp_k8s_toleration *t = &k->tolerations[i];
		struct mlp_json *o = mlp_json_object();

		if (t->key)
			mlp_json_add_string(o, "key", t->key);
		mlp_json_add_string(o, "operator", t->operator_ ? t->operator_ : "Equal");
		if (t->value)
			mlp_json_add_string(o, "value", t->value);
		if (t->effect)
			mlp_json_add_string(o, "effect", t->effect);
		if (t->seconds >= 0)
			mlp_json_add_int(o, "tolerationSeconds", t->seconds);
		mlp_json_append(list, o);
	}
	return list;
}

static struct mlp_json *string_map(const struct mlp_kvlist *l)
{
	struct mlp_json *o = mlp_json_object();

	for (size_t i = 0; i < l->len; i++)
		mlp_json_add_string(o, l->items[i].key, l->items[i].value);
	return o;
}

static struct mlp_json *pod_template(const struct mlp_k8s_job_spec *s, const char *base, int node)
{
	struct mlp_json *t = mlp_json_object(), *meta = mlp_json_object();
	struct mlp_json *spec = mlp_json_object(), *containers = mlp_json_array();

	mlp_json_add(meta, "labels", labels(s, base, node));
	if (s->k8s->annotations.len)
		mlp_json_add(meta, "annotations", string_map(&s->k8s->annotations));
	mlp_json_add(t, "metadata", meta);
	mlp_json_add_string(spec, "restartPolicy", "Never");
	if (node >= 0) {
		char *host = xasprintf("%s-%d", base, node);

		mlp_json_add_string(spec, "hostname", host);
		free(host);
	}
	mlp_json_add_string(spec, "subdomain", base);
	mlp_json_add_bool(spec, "enableServiceLinks", false);
	mlp_json_add_int(spec, "terminationGracePeriodSeconds",
	                 s->grace_ms > 0 ? (s->grace_ms + 999) / 1000 : 1);
	if (s->k8s->service_account)
		mlp_json_add_string(spec, "serviceAccountName", s->k8s->service_account);
	if (s->k8s->node_selector.len)
		mlp_json_add(spec, "nodeSelector", string_map(&s->k8s->node_selector));
	if (s->k8s->ntolerations)
		mlp_json_add(spec, "tolerations", tolerations(s->k8s));
	mlp_json_add(spec, "initContainers", init_containers(s));
	mlp_json_append(containers, main_container(s, base, node));
	mlp_json_add(spec, "containers", containers);
	mlp_json_add(spec, "volumes", volumes(s, base));
	mlp_json_add(t, "spec", spec);
	return t;
}

/* node >= 0: node's own single-pod Job; -1: the Indexed Job of all. */
static struct mlp_json *job(const struct mlp_k8s_job_spec *s, const char *base, int node)
{
	struct mlp_json *o = mlp_json_object(), *spec = mlp_json_object();
	char *name = node >= 0 ? xasprintf("%s-%d", base, node) : xstrdup(base);
	int count = node >= 0 ? 1 : s->nodes;
	int64_t deadline =
	        s->deadline_ms > 0 ? (s->deadline_ms + 999) / 1000 : MLP_K8S_DEFAULT_DEADLINE_S;
	struct mlp_json *meta = metadata(s, name, base, node);

	mlp_json_add_string(o, "apiVersion", "batch/v1");
	mlp_json_add_string(o, "kind", "Job");
	if (s->k8s->queue) {
		struct mlp_json *l = mlp_json_get_mut(meta, "labels");

		mlp_json_add_string(l, "kueue.x-k8s.io/queue-name", s->k8s->queue);
	}
	mlp_json_add(o, "metadata", meta);
	mlp_json_add_int(spec, "backoffLimit", 0);
	mlp_json_add_int(spec, "completions", count);
	mlp_json_add_int(spec, "parallelism", count);
	if (node < 0)
		mlp_json_add_string(spec, "completionMode", "Indexed");
	if (s->k8s->queue)
		mlp_json_add_bool(spec, "suspend", true);
	mlp_json_add_int(spec, "activeDeadlineSeconds", deadline);
	mlp_json_add(spec, "template", pod_template(s, base, node));
	mlp_json_add(o, "spec", spec);
	free(name);
	return o;
}

void mlp_k8s_job_manifests(struct mlp_json ***out, size_t *n, const struct mlp_k8s_job_spec *s,
                           enum mlp_k8s_job_mode mode)
{
	char *base = mlp_k8s_job_base_name(s->run_id, s->stage, s->attempt);
	size_t count = 2 + (mode == MLP_K8S_JOB_INDEXED ? 1 : (size_t)s->nodes);
	struct mlp_json **objs = xcalloc(count, sizeof(*objs));

	objs[0] = secret(s, base);
	objs[1] = service(s, base);
	if (mode == MLP_K8S_JOB_INDEXED)
		objs[2] = job(s, base, -1);
	else
		for (int i = 0; i < s->nodes; i++)
			objs[2 + i] = job(s, base, i);
	free(base);
	*out = objs;
	*n = count;
}
