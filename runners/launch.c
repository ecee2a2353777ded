/*
 * launch.c - the data-parallel launcher (see launch.h).
 *
 * One attempt of the group ("a round"): pick a port, start every rank,
 * then poll() their pidfds, their output pipes and a signalfd.  The round
 * ends when every rank has exited.  The first rank to exit non-zero (or by
 * a signal, or the stall watchdog) is recorded as the root cause and the
 * others are stopped: SIGTERM to each rank's process group, SIGKILL after
 * the grace period.  Then either another round or the verdict.
 */
#include "config.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "base/exec.h"
#include "launch.h"
#include "base/util.h"

struct rank {
	struct mlp_proc proc;
	bool running;
	struct mlp_exit exit;
	struct mlp_buf line;
};

struct round {
	const struct mlp_launch_spec *spec;
	struct rank *ranks;
	int running;
	int failed_rank;     /* root cause, -1 none */
	bool failed_by_exit; /* the root cause is failed_rank's own exit */
	struct mlp_exit failed_exit;
	char reason[512];
	int64_t stop_at_ms; /* SIGKILL time once stopping; 0 not stopping */
	int64_t last_progress_ms;
	struct timespec progress_mtime;
	int signal; /* received by the launcher */
};

static int free_port(const char *addr)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port;

	if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
		mlp_error_set_errno(errno, "cannot find a free port on %s", addr);
		if (fd >= 0)
			close(fd);
		return MLP_EIO;
	}
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

/* Splits a CUDA_VISIBLE_DEVICES value into ids (at most max); returns the
 * count. */
static int split_devices(char ids[][32], int max, const char *value)
{
	int n = 0;
	const char *p = value;

	while (*p && n < max) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);

		if (len > 0 && len < 32) {
			memcpy(ids[n], p, len);
			ids[n][len] = '\0';
			n++;
		}
		if (comma == NULL)
			break;
		p = comma + 1;
	}
	return n;
}

int mlp_launch_node_gpus(char ids[][32], int max, const char **source)
{
	const char *visible = getenv("CUDA_VISIBLE_DEVICES");
	DIR *d;
	int n = 0;

	if (visible) {
		*source = "CUDA_VISIBLE_DEVICES";
		return split_devices(ids, max, visible);
	}
	/* The driver lists one directory per GPU here; no CUDA needed. */
	*source = "/proc/driver/nvidia/gpus";
	d = opendir("/proc/driver/nvidia/gpus");
	if (d == NULL) {
		*source = "/dev/nvidia*";
		d = opendir("/dev");
		if (d == NULL)
			return 0;
		for (struct dirent *e; (e = readdir(d)) != NULL;) {
			const char *digits = e->d_name + 6;

			if (strncmp(e->d_name, "nvidia", 6) == 0 && *digits &&
			    strspn(digits, "0123456789") == strlen(digits))
				n++;
		}
	} else {
		for (struct dirent *e; (e = readdir(d)) != NULL;)
			if (e->d_name[0] != '.')
				n++;
	}
	closedir(d);
	/* Without CUDA_VISIBLE_DEVICES, CUDA numbers the GPUs 0..n-1. */
	for (int i = 0; i < n && i < max; i++)
		snprintf(ids[i], 32, "%d", i);
	return n < max ? n : max;
}

static void rank_env(struct mlp_strv *env, const struct mlp_launch_spec *s, int local_rank,
                     int port, int restart)
{
	int world = s->nproc * s->nnodes, rank = s->node_rank * s->nproc + local_rank;
	char num[32];

	for (char *const *v = s->envp; *v; v++)
		mlp_strv_push(env, *v);
#define SETI(name, value)                                  \
	do {                                               \
		snprintf(num, sizeof(num), "%d", (value)); \
		mlp_strv_setenv(env, name, num);           \
	} while (0)
	SETI("RANK", rank);
	SETI("LOCAL_RANK", local_rank);
	SETI("WORLD_SIZE", world);
	SETI("LOCAL_WORLD_SIZE", s->nproc);
	SETI("GROUP_RANK", s->node_rank);
	SETI("GROUP_WORLD_SIZE", s->nnodes);
	SETI("ROLE_RANK", rank);
	SETI("ROLE_WORLD_SIZE", world);
	mlp_strv_setenv(env, "ROLE_NAME", "default");
	mlp_strv_setenv(env, "MASTER_ADDR", s->master_addr ? s->master_addr : "127.0.0.1");
	SETI("MASTER_PORT", port);
	SETI("TORCHELASTIC_RESTART_COUNT", restart);
	SETI("TORCHELASTIC_MAX_RESTARTS", s->max_restarts);
	mlp_strv_setenv(env, "TORCHELASTIC_RUN_ID", s->run_id ? s->run_id : "none");
	if (mlp_strv_getenv(env, "OMP_NUM_THREADS") == NULL)
		mlp_strv_setenv(env, "OMP_NUM_THREADS", "1");
	if (s->gpus_per_node > 0)
		mlp_strv_setenv(env, "CUDA_VISIBLE_DEVICES", s->gpu_ids[local_rank]);
#undef SETI
}

static void emit(struct round *r, int i, bool flush)
{
	struct rank *k = &r->ranks[i];
	int rank = r->spec->node_rank * r->spec->nproc + i;
	const char *label = r->spec->label ? r->spec->label : "rank";
	size_t start = 0;

	for (size_t j = 0; j < k->line.len; j++) {
		if (k->line.data[j] != '\n')
			continue;
		fprintf(r->spec->out, "[%s%d] %.*s\n", label, rank, (int)(j - start),
		        k->line.data + start);
		start = j + 1;
	}
	if (flush && start < k->line.len) {
		fprintf(r->spec->out, "[%s%d] %.*s\n", label, rank, (int)(k->line.len - start),
		        k->line.data + start);
		start = k->line.len;
	}
	if (start) {
		memmove(k->line.data, k->line.data + start, k->line.len - start);
		k->line.len -= start;
	}
	fflush(r->spec->out);
}

static void drain(struct round *r, int i)
{
	struct rank *k = &r->ranks[i];
	char buf[16384];

	while (k->proc.out_fd >= 0) {
		ssize_t n = read(k->proc.out_fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
				close(k->proc.out_fd);
				k->proc.out_fd = -1;
			}
			break;
		}
		r->last_progress_ms = mlp_mono_ms();
		mlp_buf_add(&k->line, buf, (size_t)n);
		emit(r, i, false);
	}
}

/* Starts stopping every rank still running (once). */
static void stop_all(struct round *r, int sig)
{
	for (int i = 0; i < r->spec->nproc; i++)
		if (r->ranks[i].running)
			mlp_proc_kill_group(&r->ranks[i].proc, sig);
	if (sig == SIGTERM && r->stop_at_ms == 0)
		r->stop_at_ms = mlp_mono_ms() + r->spec->kill_grace_ms;
}

static bool fail_round(struct round *r, int i, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* Records the root cause and stops the others; false when there already
 * was one (the first failure is the root cause). */
static bool fail_round(struct round *r, int i, const char *fmt, ...)
{
	va_list ap;

	if (r->failed_rank >= 0 || r->signal)
		return false;
	r->failed_rank = i;
	va_start(ap, fmt);
	vsnprintf(r->reason, sizeof(r->reason), fmt, ap);
	va_end(ap);
	stop_all(r, SIGTERM);
	return true;
}

static void handle_exit(struct round *r, int i)
{
	struct rank *k = &r->ranks[i];
	int rank = r->spec->node_rank * r->spec->nproc + i;
	pid_t pid = k->proc.pid;

	/* Whatever the rank left running in its group goes with it. */
	mlp_proc_kill_group(&k->proc, SIGKILL);
	if (mlp_proc_reap(&k->exit, &k->proc, true) != 0)
		k->exit = (struct mlp_exit){-1, 0};
	drain(r, i);
	emit(r, i, true);
	mlp_proc_close(&k->proc);
	k->running = false;
	r->running--;
	if (k->exit.code != 0 && r->stop_at_ms == 0) {
		char what[64];

		mlp_exit_describe(what, sizeof(what), &k->exit);
		if (fail_round(r, i, "rank %d (pid %d) failed: %s", rank, (int)pid, what)) {
			r->failed_by_exit = true;
			r->failed_exit = k->exit;
		}
	}
}

static bool progressed(struct round *r)
{
	struct stat st;

	if (r->spec->progress_file == NULL || stat(r->spec->progress_file, &st) != 0)
		return false;
	if (st.st_mtim.tv_sec == r->progress_mtime.tv_sec &&
	    st.st_mtim.tv_nsec == r->progress_mtime.tv_nsec)
		return false;
	r->progress_mtime = st.st_mtim;
	return true;
}

/* A round starts with no verdict and the watchdog's clock at now. */
static void round_reset(struct round *r)
{
	r->failed_rank = -1;
	r->failed_by_exit = false;
	r->reason[0] = '\0';
	r->stop_at_ms = 0;
	r->last_progress_ms = mlp_mono_ms();
	progressed(r);
}

/* One round; returns 0 (verdict in r) or a negative code. */
static int run_round(struct round *r, int sigfd, int restart)
{
	const struct mlp_launch_spec *s = r->spec;
	struct pollfd *pfd = xcalloc((size_t)(1 + 2 * s->nproc), sizeof(*pfd));
	int *who = xcalloc((size_t)(1 + 2 * s->nproc), sizeof(*who));
	int port = s->master_port, rc = 0;

	if (port == 0 && (port = free_port(s->master_addr ? s->master_addr : "127.0.0.1")) < 0) {
		rc = port;
		goto done;
	}
	round_reset(r);
	for (int i = 0; i < s->nproc; i++) {
		struct mlp_strv env = {0};
		struct mlp_spawn spec = {.argv = s->argv, .cwd = s->cwd, .capture = true};

		rank_env(&env, s, i, port, restart);
		spec.envp = env.v;
		rc = mlp_proc_spawn(&r->ranks[i].proc, &spec);
		mlp_strv_free(&env);
		if (rc != 0) {
			/* A rank that cannot start fails the round like a crash. */
			fail_round(r, i, "rank %d could not start: %s", s->node_rank * s->nproc + i,
			           mlp_error_last());
			rc = 0;
			break;
		}
		r->ranks[i].running = true;
		r->running++;
	}
	while (r->running > 0) {
		nfds_t n = 0;
		int64_t now = mlp_mono_ms(), next = -1;
		int timeout;

		if (r->stop_at_ms && now >= r->stop_at_ms) {
			stop_all(r, SIGKILL);
			r->stop_at_ms = -1;
		}
		if (s->stall_timeout_ms > 0 && r->stop_at_ms == 0) {
			if (progressed(r))
				r->last_progress_ms = now;
			if (now - r->last_progress_ms >= s->stall_timeout_ms) {
				char d[32];

				mlp_format_duration(d, sizeof(d), s->stall_timeout_ms);
				fail_round(r, 0,
				           "no output and no metric from any rank for %s "
				           "(stall_timeout): the group looks hung",
				           d);
			} else {
				next = r->last_progress_ms + s->stall_timeout_ms;
			}
		}
		if (r->stop_at_ms > 0 && (next < 0 || r->stop_at_ms < next))
			next = r->stop_at_ms;
		/* The watchdog also looks at the metrics file: at most 1 s late. */
		if (s->stall_timeout_ms > 0 && s->progress_file && (next < 0 || now + 1000 < next))
			next = now + 1000;
		pfd[n] = (struct pollfd){.fd = sigfd, .events = POLLIN};
		who[n++] = -1;
		for (int i = 0; i < s->nproc; i++) {
			if (!r->ranks[i].running)
				continue;
			pfd[n] = (struct pollfd){.fd = r->ranks[i].proc.pidfd, .events = POLLIN};
			who[n++] = i;
			if (r->ranks[i].proc.out_fd >= 0) {
				pfd[n] = (struct pollfd){.fd = r->ranks[i].proc.out_fd,
				                         .events = POLLIN};
				who[n++] = i;
			}
		}
		timeout = next < 0 ? -1 : next <= now ? 0 : (int)(next - now);
		if (poll(pfd, n, timeout) < 0) {
			if (errno == EINTR)
				continue;
			mlp_error_set_errno(errno, "poll");
			rc = MLP_EIO;
			break;
		}
		for (nfds_t k = 1; k < n; k++)
			if (pfd[k].revents && pfd[k].fd == r->ranks[who[k]].proc.out_fd)
				drain(r, who[k]);
		for (nfds_t k = 1; k < n; k++)
			if (pfd[k].revents && r->ranks[who[k]].running &&
			    pfd[k].fd == r->ranks[who[k]].proc.pidfd)
				handle_exit(r, who[k]);
		if (pfd[0].revents & POLLIN) {
			struct signalfd_siginfo si;

			while (read(sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
				bool again = r->signal != 0;

				r->signal = (int)si.ssi_signo;
				snprintf(r->reason, sizeof(r->reason), "the launcher got SIG%s",
				         sigabbrev_np(r->signal));
				stop_all(r, again ? SIGKILL : SIGTERM);
			}
		}
	}
	if (rc != 0) {
		for (int i = 0; i < s->nproc; i++) {
			if (r->ranks[i].running) {
				struct mlp_exit ex;

				mlp_proc_kill_group(&r->ranks[i].proc, SIGKILL);
				mlp_proc_reap(&ex, &r->ranks[i].proc, true);
				mlp_proc_close(&r->ranks[i].proc);
				r->ranks[i].running = false;
			}
		}
	}
done:
	free(pfd);
	free(who);
	return rc;
}

int mlp_launch_run(struct mlp_launch_result *out, const struct mlp_launch_spec *spec)
{
	struct round r = {.spec = spec};
	sigset_t mask, old;
	int sigfd, rc = 0;

	memset(out, 0, sizeof(*out));
	out->failed_rank = -1;
	if (spec->nproc < 1 || spec->nnodes < 1 || spec->node_rank < 0 ||
	    spec->node_rank >= spec->nnodes) {
		mlp_error_set("bad launch: %d ranks per node, node %d of %d", spec->nproc,
		              spec->node_rank, spec->nnodes);
		return MLP_EINVAL;
	}
	if (spec->gpus_per_node > 0) {
		if (spec->nproc > spec->gpus_per_node) {
			mlp_error_set(
			        "%d ranks per node but gpus_per_node is %d: each rank needs a "
			        "GPU of its own (NCCL refuses two ranks on one GPU)",
			        spec->nproc, spec->gpus_per_node);
			return MLP_EINVAL;
		}
		if (spec->ngpu_ids < spec->gpus_per_node) {
			mlp_error_set("%d GPU%s per node asked for, but this node has %d (%s)",
			              spec->gpus_per_node, spec->gpus_per_node == 1 ? "" : "s",
			              spec->ngpu_ids,
			              spec->gpu_source ? spec->gpu_source : "none found");
			return MLP_EINVAL;
		}
	}
	if (spec->nnodes > 1 && spec->master_port == 0) {
		mlp_error_set("several nodes need an agreed --master-addr and --master-port");
		return MLP_EINVAL;
	}
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, &old);
	sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sigfd < 0) {
		mlp_error_set_errno(errno, "signalfd");
		sigprocmask(SIG_SETMASK, &old, NULL);
		return MLP_EIO;
	}
	r.ranks = xcalloc((size_t)spec->nproc, sizeof(*r.ranks));
	for (int restart = 0;; restart++) {
		if (restart > 0)
			fprintf(spec->out, "mlpipe launch: restarting the group (%d of %d): %s\n",
			        restart, spec->max_restarts, out->reason);
		fflush(spec->out);
		if ((rc = run_round(&r, sigfd, restart)) != 0)
			break;
		out->restarts = restart;
		snprintf(out->reason, sizeof(out->reason), "%s", r.reason);
		out->failed_rank = r.failed_by_exit && !r.signal
		                           ? spec->node_rank * spec->nproc + r.failed_rank
		                           : -1;
		out->failed_exit = r.failed_exit;
		if (r.signal) {
			out->signal = r.signal;
			break;
		}
		if (r.failed_rank < 0) {
			out->ok = true;
			break;
		}
		if (restart >= spec->max_restarts)
			break;
	}
	for (int i = 0; i < spec->nproc; i++)
		mlp_buf_free(&r.ranks[i].line);
	free(r.ranks);
	close(sigfd);
	sigprocmask(SIG_SETMASK, &old, NULL);
	return rc;
}

/* The engine reads $MLPIPE_REASON as the stage's reason (docs/running.md). */
static void write_reason(const char *text)
{
	const char *reason_file = getenv("MLPIPE_REASON");

	if (reason_file && *reason_file)
		mlp_write_file_atomic(reason_file, text, strlen(text), 0644);
}

int mlp_launch_command(struct mlp_launch_result *out, struct mlp_launch_spec *spec,
                       char *const *command)
{
	char *program = NULL, *run_id = NULL, **rank_argv = NULL;
	size_t n = 0;
	int rc;

	if ((rc = mlp_exec_find(&program, command[0])) != 0)
		return MLP_ENOTFOUND;
	while (command[n])
		n++;
	rank_argv = xcalloc(n + 1, sizeof(*rank_argv));
	rank_argv[0] = program;
	for (size_t i = 1; i < n; i++)
		rank_argv[i] = command[i];
	if (spec->run_id == NULL)
		spec->run_id = run_id = xasprintf("launch-%ld", (long)getpid());
	spec->argv = rank_argv;
	if (spec->gpus_per_node > 0) {
		spec->gpu_ids = xcalloc(MLP_LAUNCH_MAX_GPUS, sizeof(*spec->gpu_ids));
		spec->ngpu_ids =
		        mlp_launch_node_gpus(spec->gpu_ids, MLP_LAUNCH_MAX_GPUS, &spec->gpu_source);
	}
	rc = mlp_launch_run(out, spec);
	if (rc == MLP_EINVAL) {
		write_reason(mlp_error_last()); /* refused before anything started */
	} else if (rc == 0 && !out->ok && !out->signal) {
		char *text = xasprintf("%s (%d of %d restarts used)\n", out->reason, out->restarts,
		                       spec->max_restarts);

		write_reason(text);
		free(text);
	}
	free(spec->gpu_ids);
	spec->gpu_ids = NULL;
	spec->argv = NULL;
	if (run_id)
		spec->run_id = NULL;
	free(run_id);
	free(program);
	free(rank_argv);
	return rc;
}
