/*
 * k8s-job.c - one stage attempt as a gang of pods (see k8s-job.h): which
 * Job form the server takes, creating the objects and checking what the
 * server kept, waiting for the whole gang (or Kueue), watching for the
 * first failure, and tearing everything down.
 *
 * The loop lists the gang's pods every POLL_MS: a list is one request,
 * answers every question the loop has (who runs, who failed first and
 * why) and cannot miss an event the way a broken watch can.  Logs and
 * rank 0's results have threads of their own (k8s-job-pods.c).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "base/json.h"
#include "base/util.h"
#include "deploy/k8s-job-int.h"

#define POLL_MS 100
/* How long the pods may take to go once deleted, past their grace. */
#define GONE_SLACK_MS (30 * 1000)

/* metadata.labels[key] / metadata.annotations[key] / metadata.name. */
static const char *meta_get(const struct mlp_json *obj, const char *map, const char *key)
{
	const struct mlp_json *m = mlp_json_get(obj, "metadata");

	return map ? mlp_json_get_string(mlp_json_get(m, map), key) : mlp_json_get_string(m, key);
}

/* mlp_k8s_data_fn: appends to a buffer (at most 4 KiB). */
static int collect_chunk(const char *data, size_t len, void *payload)
{
	struct mlp_buf *b = payload;

	if (b->len < 4096)
		mlp_buf_add(b, data, len < 4096 - b->len ? len : 4096 - b->len);
	return 0;
}

static const char *str_or(const char *s, const char *otherwise)
{
	return s ? s : otherwise;
}

static void nap_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Indexed Jobs (and suspend) are GA from 1.24; "1.27+" counts as 1.27. */
static int job_mode(enum mlp_k8s_job_mode *out, struct mlp_k8s *k, char *version, size_t size)
{
	struct mlp_json *v = NULL;
	long long major = 0, minor = 0;
	const char *smaj, *smin;
	int rc = mlp_k8s_request(&v, NULL, k, "GET", "/version", NULL, NULL);

	if (rc != 0)
		return rc;
	smaj = mlp_json_get_string(v, "major");
	smin = mlp_json_get_string(v, "minor");
	if (smaj)
		major = strtoll(smaj, NULL, 10);
	if (smin)
		minor = strtoll(smin, NULL, 10);
	snprintf(version, size, "%s", str_or(mlp_json_get_string(v, "gitVersion"), "unknown"));
	*out = major > 1 || (major == 1 && minor >= 24) ? MLP_K8S_JOB_INDEXED
	                                                : MLP_K8S_JOB_PER_NODE;
	mlp_json_free(v);
	return 0;
}

/* Where objects of a kind are created in namespace ns. */
static char *kind_path(const char *kind, const char *ns)
{
	if (strcmp(kind, "Secret") == 0)
		return xasprintf("/api/v1/namespaces/%s/secrets", ns);
	if (strcmp(kind, "Service") == 0)
		return xasprintf("/api/v1/namespaces/%s/services", ns);
	return xasprintf("/apis/batch/v1/namespaces/%s/jobs", ns);
}

/* What the server kept of a Job it accepted: 1.20 drops completionMode
 * and suspend without an error, and a plain Job would be a wrong one. */
static int check_kept(const struct mlp_json *sent, const struct mlp_json *got, const char *version)
{
	static const char *const fields[] = {"spec.completionMode", "spec.suspend"};

	for (size_t i = 0; i < MLP_ARRAY_SIZE(fields); i++) {
		const struct mlp_json *want = mlp_json_path(sent, fields[i]);
		const struct mlp_json *have = mlp_json_path(got, fields[i]);
		char *a, *b;
		bool same;

		if (want == NULL)
			continue;
		a = mlp_json_print(want, false);
		b = have ? mlp_json_print(have, false) : xstrdup("(dropped)");
		same = strcmp(a, b) == 0;
		if (!same)
			mlp_error_set(
			        "the API server (%s) did not keep the Job's %s (sent %s, kept "
			        "%s): it does not support it; refusing to run a Job that "
			        "would behave differently",
			        version, fields[i], a, b);
		free(a);
		free(b);
		if (!same)
			return MLP_ERROR;
	}
	return 0;
}

static int create_objects(struct gang *g, enum mlp_k8s_job_mode mode, const char *version)
{
	struct mlp_json **objs = NULL;
	size_t n = 0;
	char *uid = NULL;
	int rc = 0;

	mlp_k8s_job_manifests(&objs, &n, g->spec, mode);
	for (size_t i = 0; i < n && rc == 0; i++) {
		const char *kind = mlp_json_get_string(objs[i], "kind");
		char *path = kind_path(kind, g->ns), *body;
		struct mlp_json *got = NULL;

		if (uid) {
			struct mlp_json *refs = mlp_json_array(), *ref = mlp_json_object();

			mlp_json_add_string(ref, "apiVersion", "v1");
			mlp_json_add_string(ref, "kind", "Secret");
			mlp_json_add_string(ref, "name", g->base);
			mlp_json_add_string(ref, "uid", uid);
			mlp_json_append(refs, ref);
			mlp_json_add(mlp_json_get_mut(objs[i], "metadata"), "ownerReferences",
			             refs);
		}
		body = mlp_json_print(objs[i], false);
		rc = mlp_k8s_request(&got, NULL, g->k, "POST", path, "application/json", body);
		if (rc != 0) {
			/* A copy: mlp_error_set must not read the buffer it writes. */
			char *why = xstrdup(mlp_error_last());

			mlp_error_set(
			        "cannot create the %s %s in namespace %s: %s", kind,
			        mlp_json_get_string(mlp_json_get(objs[i], "metadata"), "name"),
			        g->ns, why);
			free(why);
		} else if (i == 0)
			uid = xstrdup(str_or(meta_get(got, NULL, "uid"), ""));
		else if (strcmp(kind, "Job") == 0)
			rc = check_kept(objs[i], got, version);
		mlp_json_free(got);
		free(body);
		free(path);
	}
	for (size_t i = 0; i < n; i++)
		mlp_json_free(objs[i]);
	free(objs);
	free(uid);
	return rc;
}

/* ---- the pods ------------------------------------------------------------ */

static struct pod *pod_named(struct gang *g, const char *name)
{
	for (size_t i = 0; i < g->npods; i++)
		if (strcmp(g->pods[i]->name, name) == 0)
			return g->pods[i];
	/* Each pod is allocated once: its follower thread holds a pointer. */
	xgrow((void **)&g->pods, &g->cpods, g->npods + 1, sizeof(*g->pods));
	g->pods[g->npods] = xcalloc(1, sizeof(**g->pods));
	g->pods[g->npods]->name = xstrdup(name);
	g->pods[g->npods]->node = -1;
	return g->pods[g->npods++];
}

static int64_t stamp_s(const char *s)
{
	struct tm tm = {0};

	if (s == NULL || strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) == NULL)
		return 0;
	return (int64_t)timegm(&tm);
}

static void set_str(char **dst, char *value)
{
	free(*dst);
	*dst = value;
}

/* A terminated container in words: its termination message (mlpipe-pod
 * writes the root cause there), else its reason and exit code. */
static char *terminated_words(const struct mlp_json *t, const char *container)
{
	const char *msg = mlp_json_get_string(t, "message");
	const char *reason = mlp_json_get_string(t, "reason");
	int64_t code = mlp_json_int(mlp_json_get(t, "exitCode"), -1);
	struct mlp_buf b = {0};

	if (msg && *msg) {
		size_t len = strlen(msg);

		while (len && (msg[len - 1] == '\n' || msg[len - 1] == ' '))
			len--;
		mlp_buf_printf(&b, "%.*s", (int)len, msg);
		if (reason && strcmp(reason, "Error") != 0 && strcmp(reason, "Completed") != 0)
			mlp_buf_printf(&b, " (%s)", reason);
	} else {
		mlp_buf_printf(&b, "container %s ended: %s, exit code %lld", container,
		               reason ? reason : "terminated", (long long)code);
	}
	return mlp_buf_detach(&b);
}

/* Reads one listed pod into p. */
static void read_pod(struct pod *p, const struct mlp_json *obj)
{
	const struct mlp_json *st = mlp_json_get(obj, "status");
	const struct mlp_json *inits = mlp_json_get(st, "initContainerStatuses");
	const struct mlp_json *cs = mlp_json_get(st, "containerStatuses");
	const char *phase = mlp_json_get_string(st, "phase");
	const char *node = meta_get(obj, "labels", "mlpipe.dev/node-rank");
	const char *index =
	        meta_get(obj, "annotations", "batch.kubernetes.io/job-completion-index");

	if (node || index) {
		long long n;

		/* Labels we set; anything else leaves the node unknown (-1). */
		if (mlp_parse_int(&n, node ? node : index, 0, 100000) == 0)
			p->node = (int)n;
	}
	set_str(&p->waiting, NULL);
	for (size_t i = 0; i < mlp_json_count(inits); i++) {
		const struct mlp_json *c = mlp_json_at(inits, i);
		const struct mlp_json *t = mlp_json_path(c, "state.terminated");
		const struct mlp_json *w = mlp_json_path(c, "state.waiting");
		const char *name = str_or(mlp_json_get_string(c, "name"), "init");

		/* An init container that cannot start (its image will not pull):
		 * the pod waits on it, and a start timeout should say so. */
		if (w && mlp_json_get_string(w, "message"))
			set_str(&p->waiting,
			        xasprintf("init container %s: %s: %s", name,
			                  str_or(mlp_json_get_string(w, "reason"), "waiting"),
			                  mlp_json_get_string(w, "message")));
		if (t && mlp_json_int(mlp_json_get(t, "exitCode"), 0) != 0 && !p->failed) {
			p->failed = p->terminated = true;
			p->exit_code = (int)mlp_json_int(mlp_json_get(t, "exitCode"), 1);
			p->finished_s = stamp_s(mlp_json_get_string(t, "finishedAt"));
			set_str(&p->why, terminated_words(t, name));
			set_str(&p->failed_init, xstrdup(name));
		}
	}
	for (size_t i = 0; i < mlp_json_count(cs); i++) {
		const struct mlp_json *c = mlp_json_at(cs, i);
		const struct mlp_json *t = mlp_json_path(c, "state.terminated");
		const struct mlp_json *w = mlp_json_path(c, "state.waiting");

		if (mlp_json_path(c, "state.running"))
			p->started = true;
		if (w && mlp_json_get_string(w, "message"))
			set_str(&p->waiting,
			        xasprintf("%s: %s", str_or(mlp_json_get_string(w, "reason"), ""),
			                  mlp_json_get_string(w, "message")));
		if (t && !p->terminated) {
			p->started = p->terminated = true;
			p->exit_code = (int)mlp_json_int(mlp_json_get(t, "exitCode"), 1);
			p->finished_s = stamp_s(mlp_json_get_string(t, "finishedAt"));
			p->failed = p->exit_code != 0;
			if (p->failed)
				set_str(&p->why, terminated_words(t, "train"));
		}
	}
	if (phase && strcmp(phase, "Failed") == 0 &&
	    (!p->failed || mlp_json_get_string(st, "reason"))) {
		/* The pod's own reason (Evicted, DeadlineExceeded ...) is the
		 * cause; its container's SIGTERM is only the consequence. */
		const char *reason = mlp_json_get_string(st, "reason");
		const char *msg = mlp_json_get_string(st, "message");

		p->failed = p->terminated = true;
		p->exit_code = p->exit_code ? p->exit_code : 1;
		if (p->finished_s == 0)
			p->finished_s = (int64_t)time(NULL);
		set_str(&p->why, xasprintf("%s%s%s", reason ? reason : "failed", msg ? ": " : "",
		                           msg ? msg : ""));
	}
	if (!p->started && p->waiting == NULL) {
		const struct mlp_json *conds = mlp_json_get(st, "conditions");

		for (size_t i = 0; i < mlp_json_count(conds); i++) {
			const struct mlp_json *c = mlp_json_at(conds, i);
			const char *type = mlp_json_get_string(c, "type");
			const char *status = mlp_json_get_string(c, "status");

			if (type && strcmp(type, "PodScheduled") == 0 && status &&
			    strcmp(status, "False") == 0 && mlp_json_get_string(c, "message"))
				set_str(&p->waiting, xstrdup(mlp_json_get_string(c, "message")));
		}
	}
}

/* Lists the gang's pods into g->pods.  *out_gone: no pod is left. */
static int list_pods(struct gang *g, bool *out_gone)
{
	char *path = xasprintf("/api/v1/namespaces/%s/pods?labelSelector=mlpipe.dev%%2Fgang%%3D%s",
	                       g->ns, g->base);
	struct mlp_json *list = NULL;
	const struct mlp_json *items;
	int rc = mlp_k8s_request(&list, NULL, g->k, "GET", path, NULL, NULL);

	free(path);
	if (rc != 0)
		return rc;
	items = mlp_json_get(list, "items");
	if (out_gone)
		*out_gone = mlp_json_count(items) == 0;
	for (size_t i = 0; i < mlp_json_count(items); i++) {
		const struct mlp_json *obj = mlp_json_at(items, i);
		const char *name = meta_get(obj, NULL, "name");

		if (name)
			read_pod(pod_named(g, name), obj);
	}
	mlp_json_free(list);
	return 0;
}

/* Of two pods that ended in the same second, the likelier root cause: a
 * rank that exited by itself rather than one stopped by a signal, then
 * the lower node. */
static bool earlier(const struct pod *a, const struct pod *b)
{
	bool a_sig = a->exit_code >= 128, b_sig = b->exit_code >= 128;

	if (a_sig != b_sig)
		return !a_sig;
	return a->node < b->node;
}

/* The pod that failed first (earliest end, see earlier()), or NULL. */
static struct pod *first_failure(struct gang *g)
{
	struct pod *first = NULL;

	for (size_t i = 0; i < g->npods; i++) {
		struct pod *p = g->pods[i];

		if (p->failed && (first == NULL || p->finished_s < first->finished_s ||
		                  (p->finished_s == first->finished_s && earlier(p, first))))
			first = p;
	}
	return first;
}

/* The last lines of a failed init container (git's own error, say):
 * nobody follows its log, and the pod is about to be deleted. */
static char *init_log_tail(struct gang *g, const struct pod *p)
{
	char *path = xasprintf("/api/v1/namespaces/%s/pods/%s/log?container=%s&tailLines=3", g->ns,
	                       p->name, p->failed_init);
	struct mlp_k8s_stream opt = {.deadline_ms = mlp_mono_ms() + 5000};
	struct mlp_buf b = {0};
	char *text = NULL;

	opt.fn = collect_chunk;
	opt.payload = &b;
	if (mlp_k8s_stream(g->k, path, &opt) == 0 && b.len) {
		while (b.len && (b.data[b.len - 1] == '\n' || b.data[b.len - 1] == ' '))
			b.len--;
		for (size_t i = 0; i < b.len; i++)
			if (b.data[i] == '\n')
				b.data[i] = ' ';
		mlp_buf_add(&b, "", 0);
		b.data[b.len] = '\0';
		text = xasprintf("%s", b.data);
	}
	mlp_buf_free(&b);
	free(path);
	return text;
}

/* ---- the loop ------------------------------------------------------------ */

static int64_t start_timeout(const struct gang *g)
{
	return g->spec->k8s->start_timeout_ms > 0 ? g->spec->k8s->start_timeout_ms
	                                          : MLP_K8S_DEFAULT_START_TIMEOUT_MS;
}

enum outcome { RUNNING, SUCCEEDED, FAILED, CANCELLED };

struct loop {
	struct gang *g;
	struct mlp_k8s_job_result *out;
	int64_t created_ms;
	int64_t start_deadline_ms; /* 0 while Kueue has not admitted the Job */
	int64_t all_running_ms;
	int64_t next_job_check_ms;
	char last_note[512];
	char suspended_uid[64]; /* a Job Kueue holds */
	int list_failures;      /* in a row */
};

/* The Job's own verdicts: DeadlineExceeded, and whether Kueue let it go. */
static int check_jobs(struct loop *l, bool *out_suspended)
{
	struct gang *g = l->g;
	char *path = xasprintf("/apis/batch/v1/namespaces/%s/jobs?labelSelector=mlpipe.dev%%2Fgang"
	                       "%%3D%s",
	                       g->ns, g->base);
	struct mlp_json *list = NULL;
	const struct mlp_json *items;
	int rc = mlp_k8s_request(&list, NULL, g->k, "GET", path, NULL, NULL);

	free(path);
	*out_suspended = false;
	if (rc != 0)
		return rc;
	items = mlp_json_get(list, "items");
	for (size_t i = 0; i < mlp_json_count(items); i++) {
		const struct mlp_json *job = mlp_json_at(items, i);
		const struct mlp_json *conds = mlp_json_path(job, "status.conditions");

		if (mlp_json_is_true(mlp_json_path(job, "spec.suspend"))) {
			*out_suspended = true;
			snprintf(l->suspended_uid, sizeof(l->suspended_uid), "%s",
			         str_or(meta_get(job, NULL, "uid"), ""));
		}
		for (size_t j = 0; j < mlp_json_count(conds); j++) {
			const struct mlp_json *c = mlp_json_at(conds, j);
			const char *type = mlp_json_get_string(c, "type");
			const char *reason = mlp_json_get_string(c, "reason");

			if (type && strcmp(type, "Failed") == 0 && reason &&
			    strcmp(reason, "DeadlineExceeded") == 0 && !l->out->reason[0]) {
				snprintf(l->out->reason, sizeof(l->out->reason),
				         "the Job ran past its activeDeadlineSeconds (%llds): %s",
				         (long long)mlp_json_int(
				                 mlp_json_path(job, "spec.activeDeadlineSeconds"),
				                 0),
				         str_or(mlp_json_get_string(c, "message"),
				                "deadline exceeded"));
			}
		}
	}
	mlp_json_free(list);
	return 0;
}

/* The newest condition message of the Workloads a selector finds. */
static const char *workload_message(struct mlp_json **list, struct gang *g, const char *selector)
{
	char *path =
	        xasprintf("/apis/kueue.x-k8s.io/v1beta1/namespaces/%s/workloads?labelSelector=%s",
	                  g->ns, selector);
	const char *msg = NULL;

	*list = NULL;
	if (mlp_k8s_request(list, NULL, g->k, "GET", path, NULL, NULL) == 0) {
		const struct mlp_json *items = mlp_json_get(*list, "items");

		for (size_t i = 0; i < mlp_json_count(items); i++) {
			const struct mlp_json *conds =
			        mlp_json_path(mlp_json_at(items, i), "status.conditions");

			for (size_t j = 0; j < mlp_json_count(conds); j++)
				msg = str_or(mlp_json_get_string(mlp_json_at(conds, j), "message"),
				             msg);
		}
	}
	free(path);
	return msg;
}

/* Kueue's word on a suspended Job: its Workload's newest condition (the
 * Workload carries the Job's uid as a label). */
static void kueue_note(struct loop *l)
{
	struct gang *g = l->g;
	char *by_uid = xasprintf("kueue.x-k8s.io%%2Fjob-uid%%3D%s", l->suspended_uid);
	char *by_gang = xasprintf("mlpipe.dev%%2Fgang%%3D%s", g->base);
	struct mlp_json *a = NULL, *b = NULL;
	const char *msg = workload_message(&a, g, by_uid);

	if (msg == NULL)
		msg = workload_message(&b, g, by_gang);
	if (msg == NULL)
		msg = "the Job is suspended until Kueue admits it";
	if (strcmp(msg, l->last_note) != 0) {
		snprintf(l->last_note, sizeof(l->last_note), "%s", msg);
		gang_print(g, "[mlpipe] waiting for Kueue (queue %s): %s", g->spec->k8s->queue,
		           msg);
	}
	mlp_json_free(a);
	mlp_json_free(b);
	free(by_uid);
	free(by_gang);
}

/* Not every pod runs in time: name the pods that wait and why. */
static void unschedulable(struct loop *l)
{
	struct gang *g = l->g;
	struct mlp_buf b = {0};
	char took[32];
	int running = 0;

	mlp_format_duration(took, sizeof(took),
	                    mlp_mono_ms() - l->start_deadline_ms + start_timeout(g));
	for (size_t i = 0; i < g->npods; i++) {
		const struct pod *p = g->pods[i];

		if (p->started) {
			running++;
			continue;
		}
		if (b.len < 700)
			mlp_buf_printf(&b, "; pod %s: %s", p->name,
			               p->waiting ? p->waiting : "not started");
	}
	snprintf(l->out->reason, sizeof(l->out->reason),
	         "only %d of %d pods were running after %s, so the gang was stopped rather "
	         "than left half-started%s",
	         running, g->spec->nodes, took, b.len ? mlp_buf_str(&b) : "; no pod was created");
	mlp_buf_free(&b);
}

/* One turn of the loop; returns what became of the attempt so far. */
static enum outcome turn(struct loop *l)
{
	struct gang *g = l->g;
	int64_t now = mlp_mono_ms();
	struct pod *failed;
	int started = 0;
	size_t ended = 0;

	if (g->io->stop && *g->io->stop)
		return CANCELLED;
	/* Once a second, also while Kueue holds the Job (which may take hours). */
	if (now >= l->next_job_check_ms) {
		bool suspended = false;

		l->next_job_check_ms = now + 1000;
		if (check_jobs(l, &suspended) != 0)
			gang_print(g, "[mlpipe] cannot read the Job (will try again): %s",
			           mlp_error_last());
		else if (l->out->reason[0])
			return FAILED;
		else if (suspended) {
			kueue_note(l);
			return RUNNING;
		}
		if (l->start_deadline_ms == 0)
			l->start_deadline_ms = now + start_timeout(g);
	}
	if (l->start_deadline_ms == 0)
		return RUNNING;
	if (list_pods(g, NULL) != 0) {
		/* A blip is retried; 50 failures in a row (5 s), or a 403,
		 * is not going to get better. */
		if (++l->list_failures >= 50 || strstr(mlp_error_last(), "(HTTP 403)")) {
			snprintf(l->out->reason, sizeof(l->out->reason), "cannot list the pods: %s",
			         mlp_error_last());
			return FAILED;
		}
		if (l->list_failures == 1)
			gang_print(g, "[mlpipe] cannot list the pods (will try again): %s",
			           mlp_error_last());
		return RUNNING;
	}
	l->list_failures = 0;
	for (size_t i = 0; i < g->npods; i++) {
		struct pod *p = g->pods[i];

		if (p->started) {
			started++;
			gang_follow(g, p);
		}
		if (p->terminated) {
			p->log.terminated = 1;
			ended++;
		}
		if (p->node == 0 && p->started && !p->terminated && !g->results.started)
			gang_results_start(g, p->name);
	}
	if ((failed = first_failure(g)) != NULL) {
		char *tail = failed->failed_init ? init_log_tail(g, failed) : NULL;

		snprintf(l->out->reason, sizeof(l->out->reason),
		         "pod %s (node %d) failed first: %s%s%s", failed->name, failed->node,
		         failed->why ? failed->why : "failed", tail ? ": " : "", tail ? tail : "");
		free(tail);
		l->out->exit_code = failed->exit_code ? failed->exit_code : 1;
		return FAILED;
	}
	if (l->all_running_ms == 0 && started >= g->spec->nodes) {
		char took[32];

		l->all_running_ms = now;
		mlp_format_duration(took, sizeof(took), now - l->created_ms);
		gang_print(g, "[mlpipe] all %d pods are running, %s after the Job was created",
		           g->spec->nodes, took);
	}
	if (l->all_running_ms == 0 && now >= l->start_deadline_ms) {
		unschedulable(l);
		return FAILED;
	}
	if (g->results.done && g->results.status) {
		const struct mlp_json *st = g->results.status;
		int64_t code = mlp_json_int(mlp_json_get(st, "exit_code"), 0);

		if (code == 0)
			return SUCCEEDED;
		snprintf(l->out->reason, sizeof(l->out->reason), "node 0 failed: %s",
		         str_or(mlp_json_get_string(st, "reason"), "no reason given"));
		l->out->exit_code = (int)code;
		return FAILED;
	}
	if (g->results.done && g->results.status == NULL) {
		/* The results thread gave up (pods/proxy forbidden): waiting for
		 * rank 0's serve timeout would not change the answer. */
		snprintf(l->out->reason, sizeof(l->out->reason), "cannot read rank 0's results: %s",
		         g->results.error);
		return FAILED;
	}
	if (ended == g->npods && ended >= (size_t)g->spec->nodes) {
		/* The results thread writes its error before it says done. */
		const char *err = g->results.done ? g->results.error : "";

		snprintf(l->out->reason, sizeof(l->out->reason),
		         "every pod ended, but rank 0's results could not be read%s%s",
		         err[0] ? ": " : "", err);
		return FAILED;
	}
	return RUNNING;
}

/* Deletes what the attempt made: the Jobs (their pods go with them) and
 * the Secret (the Service goes with it, through ownerReferences). */
static void delete_all(struct gang *g)
{
	char *body = xasprintf("{\"kind\":\"DeleteOptions\",\"apiVersion\":\"v1\","
	                       "\"propagationPolicy\":\"Background\"}");
	char *jobs = xasprintf("/apis/batch/v1/namespaces/%s/jobs?labelSelector=mlpipe.dev%%2Fgang"
	                       "%%3D%s",
	                       g->ns, g->base);
	char *secret = xasprintf("/api/v1/namespaces/%s/secrets/%s", g->ns, g->base);
	struct mlp_json *list = NULL;

	if (mlp_k8s_request(&list, NULL, g->k, "GET", jobs, NULL, NULL) == 0) {
		const struct mlp_json *items = mlp_json_get(list, "items");

		for (size_t i = 0; i < mlp_json_count(items); i++) {
			const char *name = meta_get(mlp_json_at(items, i), NULL, "name");
			char *path = xasprintf("/apis/batch/v1/namespaces/%s/jobs/%s", g->ns, name);

			if (mlp_k8s_request(NULL, NULL, g->k, "DELETE", path, "application/json",
			                    body) != 0 &&
			    mlp_k8s_request(NULL, NULL, g->k, "GET", path, NULL, NULL) !=
			            MLP_ENOTFOUND)
				gang_print(g, "[mlpipe] cannot delete Job %s: %s", name,
				           mlp_error_last());
			free(path);
		}
	}
	if (mlp_k8s_request(NULL, NULL, g->k, "DELETE", secret, "application/json", body) != 0 &&
	    mlp_k8s_request(NULL, NULL, g->k, "GET", secret, NULL, NULL) != MLP_ENOTFOUND)
		gang_print(g, "[mlpipe] cannot delete Secret %s: %s", g->base, mlp_error_last());
	mlp_json_free(list);
	free(secret);
	free(jobs);
	free(body);
}

/* Deletes the gang and waits until no pod of it is left; logs stream on
 * meanwhile and are drained last. */
static void tear_down(struct gang *g, bool drain_first)
{
	int64_t gone_by = mlp_mono_ms() + g->spec->grace_ms + GONE_SLACK_MS;
	bool gone = false;

	if (drain_first) {
		/* The failed pods' logs end by themselves: let them. */
		int64_t until = mlp_mono_ms() + 2000;

		for (bool waiting = true; waiting && mlp_mono_ms() < until;) {
			waiting = false;
			for (size_t i = 0; i < g->npods; i++)
				if (g->pods[i]->terminated && g->pods[i]->log.started &&
				    !g->pods[i]->log.done)
					waiting = true;
			if (waiting)
				nap_ms(50);
		}
	}
	delete_all(g);
	while (mlp_mono_ms() < gone_by) {
		if (list_pods(g, &gone) == 0 && gone)
			break;
		for (size_t i = 0; i < g->npods; i++)
			if (g->pods[i]->terminated)
				g->pods[i]->log.terminated = 1;
		nap_ms(POLL_MS);
	}
	gang_join_followers(g, mlp_mono_ms() + 2000);
	if (!gone)
		gang_print(g, "[mlpipe] pods of %s were still there %llds after deletion", g->base,
		           (long long)((g->spec->grace_ms + GONE_SLACK_MS) / 1000));
}

/* Waits (bounded) for every pod to end after rank 0 was released. */
static void wait_all_ended(struct gang *g)
{
	int64_t until = mlp_mono_ms() + g->spec->grace_ms + GONE_SLACK_MS;

	while (mlp_mono_ms() < until) {
		bool all = true;

		if (list_pods(g, NULL) == 0) {
			for (size_t i = 0; i < g->npods; i++) {
				if (g->pods[i]->terminated)
					g->pods[i]->log.terminated = 1;
				else
					all = false;
			}
			if (all)
				return;
		}
		nap_ms(POLL_MS);
	}
}

static void gang_free(struct gang *g)
{
	for (size_t i = 0; i < g->npods; i++) {
		free(g->pods[i]->name);
		free(g->pods[i]->why);
		free(g->pods[i]->waiting);
		free(g->pods[i]->failed_init);
		free(g->pods[i]);
	}
	free(g->pods);
	free(g->results.pod);
	mlp_json_free(g->results.status);
	free(g->base);
	pthread_mutex_destroy(&g->out_lock);
}

int mlp_k8s_job_run(struct mlp_k8s_job_result *out, struct mlp_k8s *k,
                    const struct mlp_k8s_options *kopt, const struct mlp_k8s_job_spec *spec,
                    const struct mlp_k8s_job_io *io)
{
	struct gang g = {.k = k, .kopt = kopt, .spec = spec, .io = io, .ns = spec->namespace_};
	struct loop l = {.g = &g, .out = out};
	enum mlp_k8s_job_mode mode;
	enum outcome end;
	char version[64];
	int rc;

	memset(out, 0, sizeof(*out));
	out->exit_code = 1;
	pthread_mutex_init(&g.out_lock, NULL);
	g.base = mlp_k8s_job_base_name(spec->run_id, spec->stage, spec->attempt);
	if ((rc = job_mode(&mode, k, version, sizeof(version))) != 0)
		goto done;
	l.created_ms = mlp_mono_ms();
	if ((rc = create_objects(&g, mode, version)) != 0) {
		char *why = xstrdup(mlp_error_last());

		tear_down(&g, false);
		mlp_error_set("%s", why);
		free(why);
		goto done;
	}
	gang_print(&g, "[mlpipe] %s: %d pod%s x %d rank%s in namespace %s on %s (%s, %s)", g.base,
	           spec->nodes, spec->nodes == 1 ? "" : "s", spec->ranks,
	           spec->ranks == 1 ? "" : "s", g.ns, mlp_k8s_server(k), version,
	           mode == MLP_K8S_JOB_INDEXED ? "one Indexed Job" : "one Job per node");
	while ((end = turn(&l)) == RUNNING)
		nap_ms(POLL_MS);
	if (end == SUCCEEDED) {
		gang_results_join(&g);
		if ((rc = gang_fetch_results(&g)) != 0) {
			snprintf(out->reason, sizeof(out->reason), "%s", mlp_error_last());
			rc = 0;
		} else {
			out->ok = true;
			out->exit_code = 0;
		}
		wait_all_ended(&g);
		tear_down(&g, true);
	} else {
		if (end == CANCELLED) {
			snprintf(out->reason, sizeof(out->reason),
			         "cancelled: the Job was deleted");
			out->exit_code = 143;
		}
		gang_print(&g, "[mlpipe] %s; stopping the other pods", out->reason);
		/* The results thread may be in a 20 s long-poll of a pod that
		 * runs on: it is joined (below) once the pods are deleted. */
		tear_down(&g, end == FAILED);
	}
done:
	gang_results_join(&g);
	gang_join_followers(&g, mlp_mono_ms());
	gang_free(&g);
	return rc;
}

/* ---- sweeping what dead attempts left ----------------------------------- */

int mlp_k8s_job_sweep(struct mlp_k8s *k, const char *ns, const char *store_id,
                      bool (*is_over)(int64_t run_id, void *payload), void *payload, FILE *log)
{
	char *path = xasprintf("/api/v1/namespaces/%s/secrets?labelSelector=app.kubernetes.io%%2F"
	                       "managed-by%%3Dmlpipe%%2Cmlpipe.dev%%2Fstore%%3D%s",
	                       ns, store_id);
	struct mlp_json *list = NULL;
	const struct mlp_json *items;
	int rc = mlp_k8s_request(&list, NULL, k, "GET", path, NULL, NULL), swept = 0;

	free(path);
	if (rc != 0)
		return rc;
	items = mlp_json_get(list, "items");
	for (size_t i = 0; i < mlp_json_count(items); i++) {
		const struct mlp_json *obj = mlp_json_at(items, i);
		const char *name = meta_get(obj, NULL, "name");
		const char *run = meta_get(obj, "labels", "mlpipe.dev/run");
		struct mlp_k8s_job_io io = {.log = log};
		struct gang g = {.k = k, .ns = ns, .io = &io};
		struct mlp_k8s_job_spec none = {0};

		if (name == NULL || run == NULL || !is_over(strtoll(run, NULL, 10), payload))
			continue;
		g.base = xstrdup(name);
		g.spec = &none;
		pthread_mutex_init(&g.out_lock, NULL);
		fprintf(log, "[mlpipe] sweeping %s: run %s is over but its objects were left\n",
		        name, run);
		fflush(log);
		delete_all(&g);
		gang_free(&g);
		swept++;
	}
	mlp_json_free(list);
	return swept;
}
