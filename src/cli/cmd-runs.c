/*
 * cmd-runs.c - `mlpipe runs` (history) and `mlpipe runs show ID`.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cmd.h"
#include "base/error.h"
#include "base/json.h"
#include "store/store.h"
#include "store/store-runs.h"
#include "base/util.h"

static void fmt_span(char *buf, size_t size, int64_t start, int64_t end)
{
	if (start <= 0)
		snprintf(buf, size, "-");
	else if (end <= 0)
		snprintf(buf, size, "running");
	else
		mlp_format_duration(buf, size, end - start);
}

static struct mlp_json *run_json(const struct mlp_run_info *r)
{
	struct mlp_json *o = mlp_json_object();
	char t[32];

	mlp_json_add_int(o, "id", r->id);
	mlp_json_add_string(o, "pipeline", r->pipeline);
	mlp_json_add_string(o, "status", mlp_status_name(r->status));
	mlp_json_add_string(o, "trigger", r->trigger);
	mlp_json_add_string(o, "user", r->user);
	mlp_json_add_string(o, "git_commit", r->git_commit);
	mlp_json_add_string(o, "pipeline_path", r->pipeline_path);
	mlp_json_add_string(o, "pipeline_sha256", r->pipeline_sha256);
	mlp_json_add_string(o, "workspace", r->workspace);
	mlp_format_time(t, sizeof(t), r->created_at);
	mlp_json_add_string(o, "created_at", t);
	if (r->ended_at > 0) {
		mlp_format_time(t, sizeof(t), r->ended_at);
		mlp_json_add_string(o, "ended_at", t);
		mlp_json_add_number(o, "duration_seconds",
		                    (double)(r->ended_at - r->started_at) / 1000.0);
	} else {
		mlp_json_add_null(o, "ended_at");
		mlp_json_add_null(o, "duration_seconds");
	}
	if (r->exit_code >= 0)
		mlp_json_add_int(o, "exit_code", r->exit_code);
	else
		mlp_json_add_null(o, "exit_code");
	mlp_json_add_string(o, "message", r->message);
	return o;
}

/* One run with its attempts, outputs and metrics, as `runs show` reads it. */
struct run_record {
	struct mlp_run_info r;
	struct mlp_attempt_info *a;
	struct mlp_stage_value *outs, *mets;
	size_t na, no, nm;
};

static struct mlp_json *attempt_json(const struct mlp_attempt_info *a)
{
	struct mlp_json *x = mlp_json_object();
	char t[32];

	mlp_json_add_string(x, "stage", a->stage);
	mlp_json_add_int(x, "attempt", a->attempt);
	mlp_json_add_string(x, "kind", a->kind);
	mlp_json_add_string(x, "status", mlp_status_name(a->status));
	if (a->exit_code >= 0)
		mlp_json_add_int(x, "exit_code", a->exit_code);
	else
		mlp_json_add_null(x, "exit_code");
	if (a->signal > 0)
		mlp_json_add_int(x, "signal", a->signal);
	else
		mlp_json_add_null(x, "signal");
	mlp_json_add_bool(x, "timed_out", a->timed_out);
	if (a->started_at > 0) {
		mlp_format_time(t, sizeof(t), a->started_at);
		mlp_json_add_string(x, "started_at", t);
	} else {
		mlp_json_add_null(x, "started_at");
	}
	if (a->ended_at > 0 && a->started_at > 0)
		mlp_json_add_number(x, "duration_seconds",
		                    (double)(a->ended_at - a->started_at) / 1000.0);
	else
		mlp_json_add_null(x, "duration_seconds");
	mlp_json_add_string(x, "log", a->log_path);
	mlp_json_add_string(x, "message", a->message);
	return x;
}

static int print_run_json(const struct run_record *rec)
{
	struct mlp_json *o = run_json(&rec->r), *arr = mlp_json_array();
	struct mlp_json *oo = mlp_json_object(), *mo = mlp_json_object();

	for (size_t i = 0; i < rec->na; i++)
		mlp_json_append(arr, attempt_json(&rec->a[i]));
	mlp_json_add(o, "stages", arr);
	for (size_t i = 0; i < rec->no; i++) {
		char *k = xasprintf("%s.%s", rec->outs[i].stage, rec->outs[i].name);

		mlp_json_add_string(oo, k, rec->outs[i].text);
		free(k);
	}
	for (size_t i = 0; i < rec->nm; i++) {
		char *k = xasprintf("%s.%s", rec->mets[i].stage, rec->mets[i].name);

		mlp_json_add_number(mo, k, rec->mets[i].number);
		free(k);
	}
	mlp_json_add(o, "outputs", oo);
	mlp_json_add(o, "metrics", mo);
	return mlp_cmd_print_json(o);
}

static void print_run_text(const struct run_record *rec)
{
	const struct mlp_run_info *r = &rec->r;
	char t[32], d[32];

	printf("run %lld  %s  %s\n", (long long)r->id, r->pipeline, mlp_status_name(r->status));
	mlp_cmd_format_time(t, sizeof(t), r->started_at);
	fmt_span(d, sizeof(d), r->started_at, r->ended_at);
	printf("  started   %s (%s)\n", t, d);
	printf("  trigger   %s by %s\n", r->trigger ? r->trigger : "-", r->user ? r->user : "-");
	printf("  file      %s (sha256 %.12s)\n", r->pipeline_path ? r->pipeline_path : "-",
	       r->pipeline_sha256);
	if (r->git_commit)
		printf("  commit    %s\n", r->git_commit);
	printf("  workspace %s\n", r->workspace ? r->workspace : "-");
	if (r->message)
		printf("  result    %s\n", r->message);
	printf("\n  %-20s %-7s %-12s %9s  %s\n", "STAGE", "ATTEMPT", "STATUS", "DURATION",
	       "DETAIL");
	for (size_t i = 0; i < rec->na; i++) {
		const struct mlp_attempt_info *a = &rec->a[i];
		char att[16];

		fmt_span(d, sizeof(d), a->started_at, a->ended_at);
		if (a->attempt > 0)
			snprintf(att, sizeof(att), "%d", a->attempt);
		else
			snprintf(att, sizeof(att), "-");
		printf("  %-20s %-7s %-12s %9s  %s\n", a->stage, att, mlp_status_name(a->status), d,
		       a->message ? a->message : "");
	}
	if (rec->nm) {
		printf("\n  metrics\n");
		for (size_t i = 0; i < rec->nm; i++)
			printf("    %s.%s = %.6g\n", rec->mets[i].stage, rec->mets[i].name,
			       rec->mets[i].number);
	}
	if (rec->no) {
		printf("\n  outputs\n");
		for (size_t i = 0; i < rec->no; i++)
			printf("    %s.%s = %s\n", rec->outs[i].stage, rec->outs[i].name,
			       rec->outs[i].text);
	}
}

static int show_run(struct mlp_store *s, int64_t id, bool json)
{
	struct run_record rec = {0};
	int status = MLP_EXIT_USAGE;

	if (mlp_store_run_get(&rec.r, s, id) != 0) {
		mlp_cmd_error("%s", mlp_error_last());
		return MLP_EXIT_USAGE;
	}
	if (mlp_store_attempts_list(&rec.a, &rec.na, s, id) != 0 ||
	    mlp_store_outputs_list(&rec.outs, &rec.no, s, id) != 0 ||
	    mlp_store_metrics_list(&rec.mets, &rec.nm, s, id) != 0) {
		mlp_cmd_error("%s", mlp_error_last());
	} else if (json) {
		status = print_run_json(&rec);
	} else {
		print_run_text(&rec);
		status = MLP_EXIT_OK;
	}
	mlp_run_info_clear(&rec.r);
	mlp_attempt_info_free_all(rec.a, rec.na);
	mlp_stage_value_free_all(rec.outs, rec.no);
	mlp_stage_value_free_all(rec.mets, rec.nm);
	return status;
}

static int runs_exec(int argc, char **argv)
{
	static const struct option opts[] = {
	        {"pipeline", required_argument, NULL, 'p'},
	        {"status", required_argument, NULL, 's'},
	        {"limit", required_argument, NULL, 'n'},
	        {"json", no_argument, NULL, 'J'},
	        {"db", required_argument, NULL, 'd'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	struct mlp_run_filter f = {.limit = 50};
	struct mlp_store *s = NULL;
	struct mlp_run_info *runs = NULL;
	size_t n = 0;
	const char *db = NULL;
	bool json = false;
	long long v;
	int c, status = MLP_EXIT_USAGE;

	while ((c = getopt_long(argc, argv, "p:s:n:h", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			f.pipeline = optarg;
			break;
		case 's':
			if (mlp_status_parse(&f.status, optarg) != 0)
				return mlp_cmd_usage_error(
				        &mlp_cmd_runs,
				        "unknown status '%s' (queued, running, succeeded, failed, "
				        "cancelled, interrupted)",
				        optarg);
			f.has_status = true;
			break;
		case 'n':
			if (mlp_parse_int(&v, optarg, 0, 1000000) != 0)
				return mlp_cmd_usage_error(
				        &mlp_cmd_runs, "--limit wants a number, not '%s'", optarg);
			f.limit = (int)v;
			break;
		case 'J':
			json = true;
			break;
		case 'd':
			db = optarg;
			break;
		case 'h':
			mlp_cmd_print_help(&mlp_cmd_runs, stdout);
			return MLP_EXIT_OK;
		default:
			return mlp_cmd_usage_error(&mlp_cmd_runs, "unknown option");
		}
	}
	if (optind < argc && strcmp(argv[optind], "show") != 0)
		return mlp_cmd_usage_error(&mlp_cmd_runs, "unknown argument '%s'", argv[optind]);
	if (optind < argc && optind + 2 != argc)
		return mlp_cmd_usage_error(&mlp_cmd_runs, "usage: mlpipe runs show ID");
	if (mlp_store_open(&s, db, MLP_STORE_READONLY) != 0) {
		mlp_cmd_error("%s", mlp_error_last());
		return MLP_EXIT_USAGE;
	}
	if (optind < argc) {
		if (mlp_parse_int(&v, argv[optind + 1], 1, INT64_MAX) != 0) {
			status = mlp_cmd_usage_error(&mlp_cmd_runs, "'%s' is not a run id",
			                             argv[optind + 1]);
			goto done;
		}
		status = show_run(s, v, json);
		goto done;
	}
	if (mlp_store_runs_list(&runs, &n, s, &f) != 0) {
		mlp_cmd_error("%s", mlp_error_last());
		goto done;
	}
	if (json) {
		struct mlp_json *arr = mlp_json_array();

		for (size_t i = 0; i < n; i++)
			mlp_json_append(arr, run_json(&runs[i]));
		status = mlp_cmd_print_json(arr);
		goto done;
	}
	if (n == 0) {
		printf("no runs yet\n");
		status = MLP_EXIT_OK;
		goto done;
	}
	printf("%-6s %-20s %-12s %-8s %-20s %9s  %s\n", "ID", "PIPELINE", "STATUS", "TRIGGER",
	       "STARTED", "DURATION", "COMMIT");
	for (size_t i = 0; i < n; i++) {
		char t[32], d[32];

		mlp_cmd_format_time(t, sizeof(t), runs[i].started_at);
		fmt_span(d, sizeof(d), runs[i].started_at, runs[i].ended_at);
		printf("%-6lld %-20s %-12s %-8s %-20s %9s  %.10s\n", (long long)runs[i].id,
		       runs[i].pipeline, mlp_status_name(runs[i].status),
		       runs[i].trigger ? runs[i].trigger : "-", t, d,
		       runs[i].git_commit ? runs[i].git_commit : "-");
	}
	status = MLP_EXIT_OK;
done:
	mlp_run_info_free_all(runs, n);
	mlp_store_close(s);
	return status;
}

const struct mlp_cmd mlp_cmd_runs = {
        .name = "runs",
        .args = "[--pipeline NAME] [--status STATUS] [--limit N] [--json] | show ID [--json]",
        .summary = "List runs, newest first, or show one run's stages and metrics.",
        .help = "Options:\n"
                "  -p, --pipeline NAME   only runs of this pipeline\n"
                "  -s, --status STATUS   queued, running, succeeded, failed, cancelled\n"
                "                        or interrupted\n"
                "  -n, --limit N         at most N runs (default 50; 0: all)\n"
                "  --json                machine-readable output\n"
                "  --db PATH             the database\n\n"
                "A run whose mlpipe process died (kill -9, a crash, a reboot) shows as\n"
                "interrupted, never as running forever.\n",
        .exec = runs_exec,
};
