/*
 * cmd-schedules.c - `mlpipe schedules [FILE...] [--count N] [--from TIME]`:
 * the next fire times of each schedule of pipeline files, in UTC and in
 * the schedule's own zone, as `mlpipe serve` computes them (cron.h).
 * Without a file, the schedules of the server's projects: each project's
 * pipeline file at the head of its default branch in its mirror, which is
 * what the server fires (read only: nothing is fetched).
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cmd.h"
#include "pipeline/cron.h"
#include "base/error.h"
#include "base/git.h"
#include "pipeline/pipeline.h"
#include "store/store.h"
#include "store/store-queue.h"
#include "base/util.h"

static void format_local(char *buf, size_t size, int64_t t, int offset)
{
	char utc[40];
	int64_t local_ms = (t + offset) * 1000;
	int a = offset < 0 ? -offset : offset;

	mlp_format_time(utc, sizeof(utc), local_ms);
	/* "2026-03-29T03:00:00Z" -> "2026-03-29 03:00 +02:00" */
	snprintf(buf, size, "%.10s %.5s %c%02d:%02d", utc, utc + 11, offset < 0 ? '-' : '+',
	         a / 3600, a / 60 % 60);
}

/* Prints one schedule and its next count fire times after `after`. */
static int list_schedule(const char *label, const struct mlp_schedule *s, long long count,
                         int64_t after)
{
	const char *zone = s->timezone ? s->timezone : "UTC";
	struct mlp_cron cron;
	struct mlp_tz *tz = NULL;
	int64_t t = after;

	printf("%s: \"%s\" %s (concurrency %s)\n", label, s->cron, zone,
	       s->concurrency ? s->concurrency : "forbid");
	if (mlp_cron_parse(&cron, s->cron) != 0 || mlp_tz_open(&tz, zone) != 0) {
		mlp_cmd_error("%s", mlp_error_last());
		return MLP_EXIT_FAILED;
	}
	for (long long k = 0; k < count; k++) {
		char utc[40], local[48];

		if (mlp_cron_next(&t, &cron, tz, t) != 0) {
			printf("  %s\n", mlp_error_last());
			break;
		}
		mlp_format_time(utc, sizeof(utc), t * 1000);
		format_local(local, sizeof(local), t, mlp_tz_offset(tz, t));
		printf("  %s  %s\n", utc, local);
	}
	mlp_tz_free(tz);
	return MLP_EXIT_OK;
}

/* The schedules of every project, from the pipeline file at the head of
 * its default branch in its mirror (as the server reads them). */
static int list_projects(const char *db, long long count, int64_t after)
{
	struct mlp_store *store = NULL;
	struct mlp_project *ps = NULL;
	size_t n = 0;
	int status = MLP_EXIT_OK;

	if (mlp_store_open(&store, db, MLP_STORE_READONLY) != 0 ||
	    mlp_store_projects_list(&ps, &n, store) != 0) {
		mlp_cmd_error("%s", mlp_error_last());
		mlp_store_close(store);
		return MLP_EXIT_FAILED;
	}
	if (n == 0)
		printf("no projects (mlpipe project add)\n");
	for (size_t i = 0; i < n; i++) {
		char buf[256], *mirror = mlp_project_mirror(store, ps[i].name), *ref;
		const char *branch = mlp_project_default_branch(&ps[i], buf, sizeof(buf));
		char *commit = NULL, *text = NULL, *label;
		struct mlp_pipeline *p = NULL;
		struct mlp_diags diags = {0};
		size_t len;

		ref = xasprintf("refs/heads/%s", branch);
		if (access(mirror, F_OK) != 0) {
			printf("%s: no mirror yet (the server fetches %s when it starts)\n",
			       ps[i].name, ps[i].remote);
		} else if (mlp_git_resolve(&commit, mirror, ref) != 0 ||
		           mlp_git_read_file(&text, &len, mirror, commit, ps[i].pipeline_path,
		                             MLP_PIPELINE_MAX_BYTES) != 0) {
			printf("%s: %s\n", ps[i].name, mlp_error_last());
		} else if (mlp_pipeline_parse(&p, &diags, ps[i].pipeline_path, text, len) != 0) {
			printf("%s: %s at %.12s is invalid\n", ps[i].name, ps[i].pipeline_path,
			       commit);
			mlp_diags_print(&diags, stderr);
			status = MLP_EXIT_FAILED;
		} else {
			printf("%s: %s at %s %.12s\n", ps[i].name, ps[i].pipeline_path, branch,
			       commit);
			if (p->nschedules == 0)
				printf("%s: no schedules\n", ps[i].name);
			label = xasprintf("%s #", ps[i].name);
			for (size_t k = 0; k < p->nschedules; k++) {
				char *l = xasprintf("%s%zu", label, k + 1);

				if (list_schedule(l, &p->schedules[k], count, after) != 0)
					status = MLP_EXIT_FAILED;
				free(l);
			}
			free(label);
		}
		mlp_pipeline_free(p);
		mlp_diags_free(&diags);
		free(text);
		free(commit);
		free(ref);
		free(mirror);
	}
	mlp_project_free_all(ps, n);
	mlp_store_close(store);
	return status;
}

/* --from: "2026-03-29T00:30:00Z" or "2026-03-29T00:30Z" (UTC). */
static int parse_from(int64_t *out, const char *v)
{
	struct tm tm = {0};
	int used = 0;
	bool full, short_form = false;

	full = sscanf(v, "%4d-%2d-%2dT%2d:%2d:%2dZ%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
	              &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &used) == 6 &&
	       used > 0 && v[used] == '\0';
	if (!full) {
		tm.tm_sec = 0;
		used = 0;
		short_form = sscanf(v, "%4d-%2d-%2dT%2d:%2dZ%n", &tm.tm_year, &tm.tm_mon,
		                    &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &used) == 5 &&
		             used > 0 && v[used] == '\0';
	}
	if ((!full && !short_form) || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 ||
	    tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 59)
		return MLP_EINVAL;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	*out = (int64_t)timegm(&tm);
	return 0;
}

static int schedules_exec(int argc, char **argv)
{
	static const struct option opts[] = {
	        {"count", required_argument, NULL, 'n'},
	        {"from", required_argument, NULL, 'F'},
	        {"db", required_argument, NULL, 'd'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	long long count = 3;
	int64_t after = mlp_wall_ms() / 1000;
	const char *db = NULL;
	int c, status = MLP_EXIT_OK;

	while ((c = getopt_long(argc, argv, "n:h", opts, NULL)) != -1) {
		if (c == 'n' && mlp_parse_int(&count, optarg, 1, 1000) == 0)
			continue;
		if (c == 'F') {
			if (parse_from(&after, optarg) != 0)
				return mlp_cmd_usage_error(&mlp_cmd_schedules,
				                           "--from wants a UTC time such as "
				                           "2026-03-29T00:30:00Z, not '%s'",
				                           optarg);
			continue;
		}
		if (c == 'd') {
			db = optarg;
			continue;
		}
		if (c == 'h') {
			mlp_cmd_print_help(&mlp_cmd_schedules, stdout);
			return MLP_EXIT_OK;
		}
		return mlp_cmd_usage_error(&mlp_cmd_schedules, "bad option");
	}
	if (optind >= argc)
		return list_projects(db, count, after);
	for (int f = optind; f < argc; f++) {
		struct mlp_pipeline *p = NULL;
		struct mlp_diags diags = {0};

		if (mlp_pipeline_load(&p, &diags, argv[f]) != 0) {
			if (diags.len)
				mlp_diags_print(&diags, stderr);
			else
				mlp_cmd_error("%s", mlp_error_last());
			mlp_diags_free(&diags);
			status = MLP_EXIT_USAGE;
			continue;
		}
		if (p->nschedules == 0)
			printf("%s: no schedules\n", p->name);
		for (size_t i = 0; i < p->nschedules; i++)
			if (list_schedule(p->name, &p->schedules[i], count, after) != 0)
				status = MLP_EXIT_FAILED;
		mlp_pipeline_free(p);
		mlp_diags_free(&diags);
	}
	return status;
}

const struct mlp_cmd mlp_cmd_schedules = {
        .name = "schedules",
        .args = "[FILE...] [-n COUNT] [--from TIME] [--db PATH]",
        .summary = "List the next fire times of a pipeline's (or the server's) schedules.",
        .help = "Times are shown in UTC and in the schedule's time zone, with daylight\n"
                "saving changes handled as `mlpipe serve` handles them (docs/serve.md).\n"
                "Without FILE: the schedules of every project of `mlpipe serve`, read\n"
                "from the pipeline file at the head of the project's default branch in\n"
                "its mirror (--db or MLPIPE_DB names the database).\n\n"
                "  -n, --count N   fire times per schedule (default 3)\n"
                "  --from TIME     list the fire times after TIME (UTC, such as\n"
                "                  2026-03-29T00:30:00Z) instead of now\n",
        .exec = schedules_exec,
};
