/*
 * cmd-deployments.c - `mlpipe deployments`: the history of rollouts and
 * rollbacks (the deployments table), newest first.
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
#include "store/store-deployments.h"
#include "base/util.h"

static void add_opt_int(struct mlp_json *o, const char *key, int64_t v)
{
	if (v > 0)
		mlp_json_add_int(o, key, v);
	else
		mlp_json_add_null(o, key);
}

static struct mlp_json *row_json(const struct mlp_deployment *d)
{
	struct mlp_json *o = mlp_json_object();

	mlp_json_add_int(o, "id", d->id);
	mlp_json_add_string(o, "kind", d->rollback ? "rollback" : "rollout");
	mlp_json_add_string(o, "namespace", d->namespace_);
	mlp_json_add_string(o, "deployment", d->deployment);
	mlp_json_add_string(o, "container", d->container);
	mlp_json_add_string(o, "from", d->from_image);
	mlp_json_add_string(o, "to", d->to_image);
	if (d->env)
		mlp_json_add_raw(o, "env", d->env);
	else
		mlp_json_add_null(o, "env");
	mlp_json_add_string(o, "model", d->model);
	add_opt_int(o, "model_version", d->model_version);
	add_opt_int(o, "run", d->run_id);
	mlp_json_add_string(o, "stage", d->stage);
	add_opt_int(o, "rollback_of", d->rollback_of);
	mlp_json_add_string(o, "result", mlp_deploy_result_name(d->result));
	mlp_json_add_string(o, "reason", d->reason);
	mlp_json_add_string(o, "revision", d->revision);
	mlp_json_add_string(o, "user", d->user);
	mlp_cmd_json_time(o, "started_at", d->started_at);
	mlp_cmd_json_time(o, "ended_at", d->ended_at);
	return o;
}

static int deployments_exec(int argc, char **argv)
{
	static const struct option opts[] = {
	        {"json", no_argument, NULL, 'j'},
	        {"db", required_argument, NULL, 'd'},
	        {"limit", required_argument, NULL, 'n'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	const struct mlp_cmd *self = &mlp_cmd_deployments;
	struct mlp_deployment *d = NULL;
	struct mlp_store *s = NULL;
	const char *db = NULL;
	char *ns = NULL, *name = NULL;
	bool json = false;
	long long limit = 50;
	size_t n = 0;
	int c, status = MLP_EXIT_USAGE;

	while ((c = getopt_long(argc, argv, "n:h", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			json = true;
			break;
		case 'd':
			db = optarg;
			break;
		case 'n':
			if (mlp_parse_int(&limit, optarg, 0, 1000000) != 0)
				return mlp_cmd_usage_error(self, "--limit takes a number, not '%s'",
				                           optarg);
			break;
		case 'h':
			mlp_cmd_print_help(self, stdout);
			return MLP_EXIT_OK;
		default:
			return mlp_cmd_usage_error(self, "unknown option");
		}
	}
	if (optind + 1 < argc)
		return mlp_cmd_usage_error(self, "unexpected argument '%s'", argv[optind + 1]);
	if (optind < argc) {
		const char *arg = argv[optind], *slash = strchr(arg, '/');

		if (slash) {
			ns = xstrndup(arg, (size_t)(slash - arg));
			name = xstrdup(slash + 1);
		} else {
			name = xstrdup(arg);
		}
	}
	if (mlp_store_open(&s, db, MLP_STORE_READONLY) != 0 ||
	    mlp_store_deployments_list(&d, &n, s, ns, name, (int)limit) != 0) {
		mlp_cmd_error("%s", mlp_error_last());
		goto done;
	}
	if (json) {
		struct mlp_json *arr = mlp_json_array();

		for (size_t i = 0; i < n; i++)
			mlp_json_append(arr, row_json(&d[i]));
		status = mlp_cmd_print_json(arr);
		goto done;
	}
	if (n == 0) {
		printf("no deployments recorded\n");
	} else {
		printf("%-5s %-8s %-28s %-11s %-12s %-20s %s\n", "ID", "KIND", "DEPLOYMENT",
		       "RESULT", "MODEL", "STARTED", "IMAGE");
	}
	for (size_t i = 0; i < n; i++) {
		char target[160], model[64], t[40];

		snprintf(target, sizeof(target), "%s/%s", d[i].namespace_, d[i].deployment);
		if (d[i].model && d[i].model_version)
			snprintf(model, sizeof(model), "%s:%d", d[i].model, d[i].model_version);
		else
			snprintf(model, sizeof(model), "-");
		mlp_cmd_format_time(t, sizeof(t), d[i].started_at);
		printf("%-5lld %-8s %-28s %-11s %-12s %-20s %s -> %s\n", (long long)d[i].id,
		       d[i].rollback ? "rollback" : "rollout", target,
		       mlp_deploy_result_name(d[i].result), model, t,
		       d[i].from_image ? d[i].from_image : "?",
		       d[i].to_image ? d[i].to_image : "?");
		if (d[i].reason)
			printf("      %s\n", d[i].reason);
	}
	status = MLP_EXIT_OK;
done:
	mlp_deployment_free_all(d, n);
	mlp_store_close(s);
	free(ns);
	free(name);
	return status;
}

const struct mlp_cmd mlp_cmd_deployments = {
        .name = "deployments",
        .args = "[[NAMESPACE/]DEPLOYMENT] [--json] [--limit N] [--db PATH]",
        .summary = "The history of rollouts and rollbacks, newest first.",
        .help = "Every rollout and rollback mlpipe makes (the rollout: stage, mlpipe\n"
                "rollout, mlpipe rollback) is recorded before the patch is sent: the\n"
                "Deployment and container, the image it replaced and the one it set, the\n"
                "model version and run, the result (pending, complete, failed,\n"
                "rolled_back, dry_run) and why.\n\n"
                "Options:\n"
                "  --json                machine-readable output\n"
                "  -n, --limit N         at most N rows (default 50; 0: all)\n"
                "  --db PATH             the database\n\n"
                "Exit code: 0, or 2 when the database cannot be read.\n",
        .exec = deployments_exec,
};
