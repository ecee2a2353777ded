/*
 * pod.c - one node of a training Job, inside its pod (see pod.h).
 *
 * In order: block the signals the kubelet sends (before anything else:
 * as a container's PID 1 this process would otherwise never see SIGTERM,
 * the kernel drops signals PID 1 has no handler for, but queues blocked
 * ones), start the results server on node 0 when asked, wait until
 * MASTER_ADDR resolves (pod DNS records lag), run the node's ranks with
 * the launcher, then report: the termination message and exit code on a
 * failure, or, on node 0 with a results server, serve until POST /done or
 * the serve timeout.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "base/exec.h"
#include "base/util.h"
#include "launch.h"
#include "pod.h"
#include "rdzv.h"
#include "results.h"

#define TERMINATION_LOG_MAX 4096

extern char **environ;

void pod_report(const char *termination_log, const char *text)
{
	size_t len = strlen(text);

	fprintf(stderr, "mlpipe-pod: %s\n", text);
	if (termination_log == NULL || *termination_log == '\0')
		return;
	if (len > TERMINATION_LOG_MAX) {
		/* Kubernetes keeps 4096 bytes: cut there, not inside a character. */
		len = TERMINATION_LOG_MAX;
		while (len > 0 && ((unsigned char)text[len] & 0xC0) == 0x80)
			len--;
	}
	/* In place, not through a rename: the kubelet bind-mounts a file of
	 * its own at terminationMessagePath, and a mount point cannot be
	 * replaced (EBUSY).  The kubelet reads it only after we have exited. */
	int fd = open(termination_log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	bool ok = fd >= 0;

	for (size_t off = 0; ok && off < len;) {
		ssize_t n = write(fd, text + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		ok = n > 0;
		off += ok ? (size_t)n : 0;
	}
	if (fd >= 0 && close(fd) != 0)
		ok = false;
	if (!ok)
		fprintf(stderr, "mlpipe-pod: warning: cannot write the termination log %s: %s\n",
		        termination_log, strerror(errno));
}

/* What a run has to carry to its end. */
struct node {
	const struct pod_opts *o;
	int sigfd;
	struct pod_results *results;
};

/* Ends the run with a failure: the message (prefixed "node N: ") in the
 * termination log and on stderr, the verdict for the results server. */
static int fail(struct node *n, int code, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static int fail(struct node *n, int code, const char *fmt, ...)
{
	struct mlp_buf msg = {0};
	va_list ap;
	char *body;

	va_start(ap, fmt);
	body = xvasprintf(fmt, ap);
	va_end(ap);
	mlp_buf_printf(&msg, "node %d: %s", n->o->node_rank, body);
	pod_report(n->o->termination_log, mlp_buf_str(&msg));
	if (n->results)
		pod_results_finish(n->results, code, mlp_buf_str(&msg));
	free(body);
	mlp_buf_free(&msg);
	return code;
}

static int signalled(struct node *n, int sig)
{
	return fail(n, 128 + sig, "stopped by SIG%s", sigabbrev_np(sig));
}

/* A signal already queued (read from the signalfd), or 0. */
static int pending_signal(struct node *n)
{
	struct signalfd_siginfo si;

	if (read(n->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
		return (int)si.ssi_signo;
	return 0;
}

/* Waits until MASTER_ADDR resolves; 0, or the exit status to leave with. */
static int wait_for_master(struct node *n)
{
	const struct pod_opts *o = n->o;
	struct in_addr addr;
	int64_t t0 = mlp_mono_ms();
	char took[32];
	int rc, sig;

	if (rdzv_resolve(&addr, o->master_addr) == 0)
		return 0;
	printf("[mlpipe-pod] waiting for MASTER_ADDR %s to resolve\n", o->master_addr);
	fflush(stdout);
	rc = rdzv_resolve_wait(&addr, o->master_addr, t0 + o->rdzv_timeout_ms, o->rdzv_timeout_ms,
	                       n->sigfd);
	if (rc == MLP_ECANCELLED && (sig = pending_signal(n)) != 0)
		return signalled(n, sig);
	if (rc != 0) {
		char d[32];

		mlp_format_duration(d, sizeof(d), o->rdzv_timeout_ms);
		return fail(n, POD_EXIT_FAILED, "MASTER_ADDR '%s' did not resolve within %s",
		            o->master_addr, d);
	}
	mlp_format_duration(took, sizeof(took), mlp_mono_ms() - t0);
	printf("[mlpipe-pod] %s resolved after %s\n", o->master_addr, took);
	fflush(stdout);
	return 0;
}

/* The exit code a failed rank's end stands for. */
static int exit_code_of(const struct mlp_exit *e)
{
	if (e->signal > 0)
		return 128 + e->signal;
	return e->code > 0 ? e->code : POD_EXIT_FAILED;
}

/* Runs the ranks; 0 when they all succeeded, else the exit status (the
 * failure reported). */
static int run_ranks(struct node *n, char *program)
{
	const struct pod_opts *o = n->o;
	struct mlp_launch_spec spec = {
	        .nproc = o->once ? 1 : o->nproc,
	        .nnodes = o->nnodes,
	        .node_rank = o->node_rank,
	        .master_addr = o->master_addr,
	        .master_port = o->master_port,
	        .max_restarts = 0, /* restarts are the executor's: new attempts */
	        .stall_timeout_ms = o->stall_timeout_ms,
	        .kill_grace_ms = o->kill_grace_ms,
	        .run_id = o->run_id ? o->run_id : "none",
	        .envp = environ,
	        .out = stdout,
	        .label = o->once ? "node" : "rank",
	};
	struct mlp_launch_result res;
	char(*gpu_ids)[32] = NULL;
	char **argv;
	size_t argc = 0;
	int rc;

	while (o->command[argc])
		argc++;
	argv = xcalloc(argc + 1, sizeof(*argv));
	argv[0] = program;
	for (size_t i = 1; i < argc; i++)
		argv[i] = o->command[i];
	spec.argv = argv;
	if (o->gpus_per_node > 0) {
		gpu_ids = xcalloc(MLP_LAUNCH_MAX_GPUS, sizeof(*gpu_ids));
		spec.ngpu_ids =
		        mlp_launch_node_gpus(gpu_ids, MLP_LAUNCH_MAX_GPUS, &spec.gpu_source);
		spec.gpu_ids = gpu_ids;
		/* torchrun places its own ranks: --once only checks the count. */
		spec.gpus_per_node = o->once ? 0 : o->gpus_per_node;
		if (o->once && spec.ngpu_ids < o->gpus_per_node) {
			rc = fail(n, POD_EXIT_USAGE,
			          "%d GPUs per node asked for, but this node has %d (%s)",
			          o->gpus_per_node, spec.ngpu_ids, spec.gpu_source);
			goto done;
		}
	}
	rc = mlp_launch_run(&res, &spec);
	if (rc != 0) {
		rc = fail(n, rc == MLP_EINVAL ? POD_EXIT_USAGE : POD_EXIT_FAILED, "%s",
		          mlp_error_last());
	} else if (res.ok) {
		rc = 0;
	} else if (res.signal) {
		rc = signalled(n, res.signal);
	} else if (res.failed_rank >= 0 && o->once) {
		char what[64];
		const char *base = strrchr(o->command[0], '/');

		/* One process per pod: "rank N" would be torchrun's business. */
		mlp_exit_describe(what, sizeof(what), &res.failed_exit);
		rc = fail(n, exit_code_of(&res.failed_exit), "%s failed: %s",
		          base ? base + 1 : o->command[0], what);
	} else if (res.failed_rank >= 0) {
		rc = fail(n, exit_code_of(&res.failed_exit), "%s", res.reason);
	} else {
		rc = fail(n, POD_EXIT_FAILED, "%s", res.reason);
	}
done:
	free(gpu_ids);
	free(argv);
	return rc;
}

/* Node 0 after a success: serve until POST /done, the serve timeout or a
 * signal. */
static void serve_results(struct node *n)
{
	int64_t until = mlp_mono_ms() + n->o->serve_timeout_ms;
	char d[32];

	mlp_format_duration(d, sizeof(d), n->o->serve_timeout_ms);
	printf("[mlpipe-pod] serving the results on port %d until POST /done (at most %s)\n",
	       n->o->results_port, d);
	fflush(stdout);
	for (;;) {
		struct pollfd p[2] = {{.fd = n->sigfd, .events = POLLIN},
		                      {.fd = pod_results_done_fd(n->results), .events = POLLIN}};
		int64_t left = until - mlp_mono_ms();
		int ready;

		if (left <= 0) {
			printf("[mlpipe-pod] no POST /done within the serve timeout: exiting\n");
			return;
		}
		ready = poll(p, 2, left > INT_MAX ? INT_MAX : (int)left);
		if (ready < 0 && errno != EINTR)
			return;
		if (ready > 0 && (p[0].revents & POLLIN) && pending_signal(n))
			return; /* the training's verdict stands: nothing to add */
		if (ready > 0 && (p[1].revents & POLLIN))
			return;
	}
}

int pod_run(const struct pod_opts *o)
{
	struct node n = {.o = o, .sigfd = -1};
	char *program = NULL;
	sigset_t mask;
	int rc;

	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN); /* the spawner gives the ranks the default back */
	n.sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (n.sigfd < 0)
		return fail(&n, POD_EXIT_FAILED, "signalfd: %s", strerror(errno));
	if (o->node_rank == 0 && o->results_port > 0 &&
	    pod_results_open(&n.results, o->results_port, o->results, o->nresults) != 0) {
		rc = fail(&n, POD_EXIT_FAILED, "%s", mlp_error_last());
		goto done;
	}
	if (mlp_exec_find(&program, o->command[0]) != 0) {
		rc = fail(&n, POD_EXIT_USAGE, "%s", mlp_error_last());
		goto done;
	}
	if ((rc = wait_for_master(&n)) != 0 || (rc = run_ranks(&n, program)) != 0)
		goto done;
	if (n.results) {
		pod_results_finish(n.results, 0, "");
		serve_results(&n);
	}
done:
	pod_results_close(n.results);
	free(program);
	if (n.sigfd >= 0)
		close(n.sigfd);
	fflush(stdout);
	return rc;
}

int pod_install(const char *dir)
{
	char *dest = xasprintf("%s/mlpipe-pod", dir);
	char *tmp = xasprintf("%s/.mlpipe-pod.tmp.%ld", dir, (long)getpid());
	int in = open("/proc/self/exe", O_RDONLY | O_CLOEXEC), out = -1, rc = POD_EXIT_FAILED;
	char buf[1 << 16];

	if (in < 0) {
		fprintf(stderr, "mlpipe-pod: cannot read /proc/self/exe: %s\n", strerror(errno));
		goto done;
	}
	out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
	if (out < 0) {
		fprintf(stderr, "mlpipe-pod: cannot create %s: %s\n", tmp, strerror(errno));
		goto done;
	}
	for (;;) {
		ssize_t got = read(in, buf, sizeof(buf)), put = 0;

		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			fprintf(stderr, "mlpipe-pod: reading /proc/self/exe: %s\n",
			        strerror(errno));
			goto done;
		}
		if (got == 0)
			break;
		while (put < got) {
			ssize_t w = write(out, buf + put, (size_t)(got - put));

			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				fprintf(stderr, "mlpipe-pod: writing %s: %s\n", tmp,
				        strerror(errno));
				goto done;
			}
			put += w;
		}
	}
	/* The mode again: a umask may have taken bits off at open(). */
	if (fchmod(out, 0755) != 0 || fsync(out) != 0) {
		fprintf(stderr, "mlpipe-pod: writing %s: %s\n", tmp, strerror(errno));
		goto done;
	}
	rc = close(out);
	out = -1;
	if (rc != 0) {
		rc = POD_EXIT_FAILED;
		fprintf(stderr, "mlpipe-pod: writing %s: %s\n", tmp, strerror(errno));
		goto done;
	}
	rc = POD_EXIT_FAILED;
	if (rename(tmp, dest) != 0) {
		fprintf(stderr, "mlpipe-pod: cannot rename %s to %s: %s\n", tmp, dest,
		        strerror(errno));
		goto done;
	}
	rc = POD_EXIT_OK;
done:
	if (out >= 0)
		close(out);
	if (rc != POD_EXIT_OK)
		unlink(tmp);
	if (in >= 0)
		close(in);
	free(dest);
	free(tmp);
	return rc;
}
