/*
 * cmd-logs.c - `mlpipe logs ID [STAGE] [-f]`: a run's stage logs.
 *
 * With -f it follows the logs while the run is running, waking on inotify
 * events from the run's directory rather than re-reading on a timer; the
 * run's state is re-checked every second so that the command ends when the
 * run does (or when its process dies).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "cli/cmd.h"
#include "base/error.h"
#include "store/store.h"
#include "store/store-runs.h"
#include "base/util.h"

struct followed {
	char *path;
	char *stage;
	int attempt;
	off_t offset;
	bool at_line_start;
};

struct logs_state {
	struct followed *f;
	size_t n, cap;
	bool prefix; /* several stages: prefix lines with the stage name */
	const char *stage;
	int attempt;
};

/* Copies what is new in one log to stdout; returns bytes copied. */
static size_t copy_new(struct logs_state *ls, struct followed *f)
{
	char buf[65536];
	size_t total = 0;
	int fd = open(f->path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return 0;
	if (lseek(fd, f->offset, SEEK_SET) < 0) {
		close(fd);
		return 0;
	}
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		f->offset += n;
		total += (size_t)n;
		if (!ls->prefix) {
			fwrite(buf, 1, (size_t)n, stdout);
			continue;
		}
		for (ssize_t i = 0; i < n; i++) {
			if (f->at_line_start) {
				if (f->attempt > 1)
					printf("%s#%d | ", f->stage, f->attempt);
				else
					printf("%s | ", f->stage);
			}
			putchar(buf[i]);
			f->at_line_start = buf[i] == '\n';
		}
	}
	close(fd);
	fflush(stdout);
	return total;
}

/* Adds the attempts not yet followed; returns how many match at all. */
static size_t refresh(struct logs_state *ls, struct mlp_store *s, int64_t id)
{
	struct mlp_attempt_info *a = NULL;
	size_t na = 0, matched = 0;

	if (mlp_store_attempts_list(&a, &na, s, id) != 0)
		return 0;
	for (size_t i = 0; i < na; i++) {
		bool known = false;

		if (a[i].log_path == NULL || a[i].attempt == 0)
			continue;
		if (ls->stage && strcmp(ls->stage, a[i].stage) != 0)
			continue;
		if (ls->attempt > 0 && a[i].attempt != ls->attempt)
			continue;
		matched++;
		for (size_t k = 0; k < ls->n; k++)
			known = known || strcmp(ls->f[k].path, a[i].log_path) == 0;
		if (known)
			continue;
		xgrow((void **)&ls->f, &ls->cap, ls->n + 1, sizeof(*ls->f));
		ls->f[ls->n] = (struct followed){
		        .path = xstrdup(a[i].log_path),
		        .stage = xstrdup(a[i].stage),
		        .attempt = a[i].attempt,
		        .at_line_start = true,
		};
		ls->n++;
	}
	mlp_attempt_info_free_all(a, na);
	return matched;
}

static bool run_running(struct mlp_store *s, int64_t id)
{
	struct mlp_run_info r;
	bool running;

	mlp_store_recover(NULL, s);
	if (mlp_store_run_get(&r, s, id) != 0)
		return false;
	running = r.status == MLP_STATUS_RUNNING || r.status == MLP_STATUS_QUEUED;
	mlp_run_info_clear(&r);
	return running;
}

static int logs_exec(int argc, char **argv)
{
	static const struct option opts[] = {
	        {"follow", no_argument, NULL, 'f'},
	        {"attempt", required_argument, NULL, 'a'},
	        {"db", required_argument, NULL, 'd'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	struct logs_state ls = {0};
	struct mlp_store *s = NULL;
	struct mlp_run_info r = {0};
	const char *db = NULL;
	bool follow = false;
	long long id, v;
	int c, status = MLP_EXIT_USAGE, ino = -1;

	while ((c = getopt_long(argc, argv, "fa:h", opts, NULL)) != -1) {
		switch (c) {
		case 'f':
			follow = true;
			break;
		case 'a':
			if (mlp_parse_int(&v, optarg, 1, 1000000) != 0)
				return mlp_cmd_usage_error(&mlp_cmd_logs,
				                           "--attempt wants a number, not '%s'",
				                           optarg);
			ls.attempt = (int)v;
			break;
		case 'd':
			db = optarg;
			break;
		case 'h':
			mlp_cmd_print_help(&mlp_cmd_logs, stdout);
			return MLP_EXIT_OK;
		default:
			return mlp_cmd_usage_error(&mlp_cmd_logs, "unknown option");
		}
	}
	if (optind >= argc || argc - optind > 2)
		return mlp_cmd_usage_error(&mlp_cmd_logs, "usage: mlpipe logs ID [STAGE] [-f]");
	if (mlp_parse_int(&id, argv[optind], 1, INT64_MAX) != 0)
		return mlp_cmd_usage_error(&mlp_cmd_logs, "'%s' is not a run id", argv[optind]);
	ls.stage = optind + 1 < argc ? argv[optind + 1] : NULL;
	ls.prefix = ls.stage == NULL;
	if (mlp_store_open(&s, db, MLP_STORE_READONLY) != 0 || mlp_store_run_get(&r, s, id) != 0) {
		mlp_cmd_error("%s", mlp_error_last());
		goto done;
	}
	if (follow) {
		char *dir = xasprintf("%s/runs/%lld", mlp_store_data_dir(s), id);

		ino = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
		mlp_mkdirs(dir, 0755);
		if (ino >= 0)
			inotify_add_watch(ino, dir, IN_MODIFY | IN_CREATE | IN_CLOSE_WRITE);
		free(dir);
	}
	for (;;) {
		size_t matched = refresh(&ls, s, id);
		bool running;

		for (size_t k = 0; k < ls.n; k++)
			copy_new(&ls, &ls.f[k]);
		running = follow && run_running(s, id);
		if (!running) {
			/* One last pass: lines written just before the end. */
			refresh(&ls, s, id);
			for (size_t k = 0; k < ls.n; k++)
				copy_new(&ls, &ls.f[k]);
			if (matched == 0 && ls.n == 0 && ls.stage) {
				mlp_cmd_error("run %lld has no stage '%s' that started", id,
				              ls.stage);
				goto done;
			}
			break;
		}
		{
			struct pollfd pfd = {.fd = ino, .events = POLLIN};
			char ev[4096];

			if (poll(&pfd, 1, 1000) > 0)
				while (read(ino, ev, sizeof(ev)) > 0)
					;
		}
	}
	status = MLP_EXIT_OK;
done:
	if (ino >= 0)
		close(ino);
	for (size_t k = 0; k < ls.n; k++) {
		free(ls.f[k].path);
		free(ls.f[k].stage);
	}
	free(ls.f);
	mlp_run_info_clear(&r);
	mlp_store_close(s);
	return status;
}

const struct mlp_cmd mlp_cmd_logs = {
        .name = "logs",
        .args = "ID [STAGE] [-f] [--attempt N] [--db PATH]",
        .summary = "Print a run's logs: every stage's, or one stage's.",
        .help = "Without STAGE every attempt's log is printed in the order they started,\n"
                "each line prefixed with its stage (and attempt, from the second on).\n\n"
                "Options:\n"
                "  -f, --follow     keep printing while the run is running\n"
                "  --attempt N      only attempt N\n"
                "  --db PATH        the database\n",
        .exec = logs_exec,
};
