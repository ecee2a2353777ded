/*
 * cmd-models.c - `mlpipe models`: the model registry.
 *
 *   mlpipe models [--json]                         every model
 *   mlpipe models show NAME[:VERSION] [--json]     one version (default latest)
 *   mlpipe models approve NAME:VERSION --reason T  an operator's decision
 *   mlpipe models reject NAME:VERSION --reason T
 *
 * Versions are registered by stages with `model:` and judged by gates;
 * approve and reject are how a person overrides or anticipates a gate, so
 * they always say who and why.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cmd.h"
#include "base/error.h"
#include "deploy/gate.h"
#include "base/json.h"
#include "store/store.h"
#include "store/store-models.h"
#include "base/util.h"

static void fmt_version(char *buf, size_t size, int version)
{
	if (version > 0)
		snprintf(buf, size, "v%d", version);
	else
		snprintf(buf, size, "-");
}

static void add_id(struct mlp_json *o, const char *key, int64_t id)
{
	if (id > 0)
		mlp_json_add_int(o, key, id);
	else
		mlp_json_add_null(o, key);
}

/*
 * Splits NAME[:VERSION].  *out_version is 0 when no version is given; a
 * version that is not a positive number is a usage error.
 */
static int parse_ref(char **out_name, int *out_version, const char *ref, bool need_version)
{
	const char *colon = strrchr(ref, ':');
	long long v;

	*out_name = NULL;
	*out_version = 0;
	if (colon == NULL) {
		if (need_version || ref[0] == '\0')
			return mlp_cmd_usage_error(&mlp_cmd_models, "'%s' is not NAME:VERSION",
			                           ref);
		*out_name = xstrdup(ref);
		return 0;
	}
	if (colon == ref || mlp_parse_int(&v, colon + 1, 1, 1000000000) != 0)
		return mlp_cmd_usage_error(&mlp_cmd_models,
		                           "'%s' is not NAME%s (VERSION is a "
		                           "number from 1)",
		                           ref, need_version ? ":VERSION" : "[:VERSION]");
	*out_name = xstrndup(ref, (size_t)(colon - ref));
	*out_version = (int)v;
	return 0;
}

static int list_models(struct mlp_store *s, bool json)
{
	struct mlp_model_info *m = NULL;
	size_t n = 0;

	if (mlp_store_models_list(&m, &n, s) != 0) {
		mlp_cmd_error("%s", mlp_error_last());
		return MLP_EXIT_USAGE;
	}
	if (json) {
		struct mlp_json *arr = mlp_json_array();

		for (size_t i = 0; i < n; i++) {
			struct mlp_json *o = mlp_json_object();

			mlp_json_add_string(o, "name", m[i].name);
			mlp_json_add_int(o, "versions", m[i].versions);
			mlp_json_add_int(o, "latest", m[i].latest);
			mlp_json_add_string(o, "latest_status",
			                    mlp_model_status_name(m[i].latest_status));
			mlp_cmd_json_time(o, "latest_created_at", m[i].latest_created_at);
			add_id(o, "approved", m[i].approved);
			add_id(o, "deployed", m[i].deployed);
			mlp_cmd_json_time(o, "created_at", m[i].created_at);
			mlp_json_append(arr, o);
		}
		mlp_model_info_free_all(m, n);
		return mlp_cmd_print_json(arr);
	}
	if (n == 0) {
		printf("no models yet (a stage with `model: {name, path}` registers one)\n");
	} else {
		printf("%-20s %8s %7s %-10s %8s %8s  %s\n", "MODEL", "VERSIONS", "LATEST", "STATUS",
		       "APPROVED", "DEPLOYED", "REGISTERED");
		for (size_t i = 0; i < n; i++) {
			char t[32], a[16], d[16];

			mlp_cmd_format_time(t, sizeof(t), m[i].latest_created_at);
			fmt_version(a, sizeof(a), m[i].approved);
			fmt_version(d, sizeof(d), m[i].deployed);
			printf("%-20s %8d %7d %-10s %8s %8s  %s\n", m[i].name, m[i].versions,
			       m[i].latest, mlp_model_status_name(m[i].latest_status), a, d, t);
		}
	}
	mlp_model_info_free_all(m, n);
	return MLP_EXIT_OK;
}

static struct mlp_json *version_json(const struct mlp_model_version *v)
{
	struct mlp_json *o = mlp_json_object(), *m = mlp_json_object();

	mlp_json_add_string(o, "model", v->model);
	mlp_json_add_int(o, "version", v->version);
	mlp_json_add_string(o, "status", mlp_model_status_name(v->status));
	mlp_json_add_string(o, "status_reason", v->status_reason);
	mlp_json_add_string(o, "status_by", v->status_by);
	mlp_cmd_json_time(o, "status_changed_at", v->status_changed_at);
	mlp_json_add_string(o, "sha256", v->sha256);
	mlp_json_add_string(o, "artifact", v->artifact_path);
	mlp_json_add_int(o, "size", v->size);
	add_id(o, "run_id", v->run_id);
	mlp_json_add_string(o, "stage", v->stage);
	mlp_json_add_string(o, "git_commit", v->git_commit);
	mlp_cmd_json_time(o, "created_at", v->created_at);
	for (size_t i = 0; i < v->nmetrics; i++)
		mlp_json_add_number(m, v->metrics[i].name, v->metrics[i].value);
	mlp_json_add(o, "metrics", m);
	return o;
}

static int show_version(struct mlp_store *s, const char *ref, bool json)
{
	struct mlp_model_version v = {0}, *all = NULL;
	struct mlp_gate_decision *d = NULL;
	size_t nd = 0, nall = 0;
	char *name = NULL;
	int version, status;

	if ((status = parse_ref(&name, &version, ref, false)) != 0)
		return status;
	status = MLP_EXIT_USAGE;
	if (mlp_store_model_version_get(&v, s, name, version) != 0 ||
	    mlp_store_gate_decisions_list(&d, &nd, s, NULL, v.id, 20) != 0 ||
	    (version == 0 && mlp_store_model_versions_list(&all, &nall, s, name) != 0)) {
		mlp_cmd_error("%s", mlp_error_last());
		goto done;
	}
	if (json) {
		struct mlp_json *o = version_json(&v), *arr = mlp_json_array();

		for (size_t i = 0; i < nd; i++) {
			struct mlp_json *x = mlp_json_object();

			mlp_json_add_int(x, "id", d[i].id);
			mlp_json_add_string(x, "gate", d[i].gate);
			mlp_json_add_bool(x, "passed", d[i].passed);
			add_id(x, "run_id", d[i].run_id);
			mlp_json_add_string(x, "stage", d[i].stage);
			mlp_json_add_string(x, "reason", d[i].reason);
			mlp_cmd_json_time(x, "decided_at", d[i].decided_at);
			mlp_json_add_raw(x, "detail", d[i].detail);
			mlp_json_append(arr, x);
		}
		mlp_json_add(o, "gate_decisions", arr);
		status = mlp_cmd_print_json(o);
		goto done;
	}
	{
		char t[32], num[32];

		printf("model %s version %d  %s\n", v.model, v.version,
		       mlp_model_status_name(v.status));
		if (v.status_changed_at > 0) {
			mlp_cmd_format_time(t, sizeof(t), v.status_changed_at);
			printf("  status    %s by %s at %s: %s\n", mlp_model_status_name(v.status),
			       v.status_by ? v.status_by : "-", t,
			       v.status_reason ? v.status_reason : "-");
		}
		mlp_cmd_format_time(t, sizeof(t), v.created_at);
		printf("  created   %s\n", t);
		if (v.run_id > 0)
			printf("  made by   run %lld, stage '%s'\n", (long long)v.run_id,
			       v.stage ? v.stage : "-");
		if (v.git_commit)
			printf("  commit    %s\n", v.git_commit);
		printf("  sha256    %s\n", v.sha256);
		printf("  artifact  %s (%lld bytes)\n", v.artifact_path ? v.artifact_path : "-",
		       (long long)v.size);
		if (v.nmetrics) {
			printf("\n  metrics\n");
			for (size_t i = 0; i < v.nmetrics; i++) {
				mlp_gate_format_number(num, sizeof(num), v.metrics[i].value);
				printf("    %s = %s\n", v.metrics[i].name, num);
			}
		}
		if (nd) {
			printf("\n  gate decisions\n");
			for (size_t i = 0; i < nd; i++) {
				mlp_cmd_format_time(t, sizeof(t), d[i].decided_at);
				printf("    %s  gate '%s'  %s  run %lld%s%s\n", t, d[i].gate,
				       d[i].passed ? "pass" : "FAIL", (long long)d[i].run_id,
				       d[i].reason ? ": " : "", d[i].reason ? d[i].reason : "");
			}
		}
		if (nall > 1) {
			printf("\n  versions\n");
			for (size_t i = 0; i < nall; i++) {
				mlp_cmd_format_time(t, sizeof(t), all[i].created_at);
				printf("    v%-5d %-10s %s  %.12s\n", all[i].version,
				       mlp_model_status_name(all[i].status), t, all[i].sha256);
			}
		}
	}
	status = MLP_EXIT_OK;
done:
	free(name);
	mlp_model_version_clear(&v);
	mlp_model_version_free_all(all, nall);
	mlp_gate_decision_free_all(d, nd);
	return status;
}

static int set_status(struct mlp_store *s, const char *ref, enum mlp_model_status to,
                      const char *reason)
{
	struct mlp_model_version v = {0};
	char *name = NULL, *user = NULL;
	int version, status;

	if ((status = parse_ref(&name, &version, ref, true)) != 0)
		return status;
	status = MLP_EXIT_USAGE;
	user = mlp_cmd_current_user();
	if (mlp_store_model_version_get(&v, s, name, version) != 0 ||
	    mlp_store_model_set_status(s, v.id, to, user, reason) != 0) {
		mlp_cmd_error("%s", mlp_error_last());
		goto done;
	}
	printf("model %s version %d: %s -> %s (by %s: %s)\n", v.model, v.version,
	       mlp_model_status_name(v.status), mlp_model_status_name(to), user, reason);
	status = MLP_EXIT_OK;
done:
	free(name);
	free(user);
	mlp_model_version_clear(&v);
	return status;
}

static int models_exec(int argc, char **argv)
{
	static const struct option opts[] = {
	        {"json", no_argument, NULL, 'J'},
	        {"reason", required_argument, NULL, 'm'},
	        {"db", required_argument, NULL, 'd'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	struct mlp_store *s = NULL;
	const char *db = NULL, *reason = NULL, *sub = NULL;
	bool json = false, writes;
	int c, status, nargs;

	while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
		switch (c) {
		case 'J':
			json = true;
			break;
		case 'm':
			reason = optarg;
			break;
		case 'd':
			db = optarg;
			break;
		case 'h':
			mlp_cmd_print_help(&mlp_cmd_models, stdout);
			return MLP_EXIT_OK;
		default:
			return mlp_cmd_usage_error(&mlp_cmd_models, "unknown option");
		}
	}
	nargs = argc - optind;
	if (nargs > 0)
		sub = argv[optind];
	if (sub == NULL || strcmp(sub, "list") == 0) {
		if (nargs > 1)
			return mlp_cmd_usage_error(&mlp_cmd_models, "unexpected argument '%s'",
			                           argv[optind + 1]);
	} else if (strcmp(sub, "show") == 0 || strcmp(sub, "approve") == 0 ||
	           strcmp(sub, "reject") == 0) {
		if (nargs != 2)
			return mlp_cmd_usage_error(
			        &mlp_cmd_models, "usage: mlpipe models %s %s", sub,
			        strcmp(sub, "show") == 0 ? "NAME[:VERSION]"
			                                 : "NAME:VERSION --reason TEXT");
	} else {
		return mlp_cmd_usage_error(&mlp_cmd_models,
		                           "unknown subcommand '%s' (list, show, "
		                           "approve, reject)",
		                           sub);
	}
	writes = sub && (strcmp(sub, "approve") == 0 || strcmp(sub, "reject") == 0);
	if (writes && (reason == NULL || reason[0] == '\0'))
		return mlp_cmd_usage_error(&mlp_cmd_models,
		                           "%s needs --reason TEXT (it is "
		                           "recorded with your name)",
		                           sub);
	if (!writes && reason)
		return mlp_cmd_usage_error(&mlp_cmd_models, "--reason is for approve and reject");
	if (mlp_store_open(&s, db, writes ? 0 : MLP_STORE_READONLY) != 0) {
		mlp_cmd_error("%s", mlp_error_last());
		return MLP_EXIT_USAGE;
	}
	if (sub == NULL || strcmp(sub, "list") == 0)
		status = list_models(s, json);
	else if (strcmp(sub, "show") == 0)
		status = show_version(s, argv[optind + 1], json);
	else
		status = set_status(s, argv[optind + 1],
		                    strcmp(sub, "approve") == 0 ? MLP_MODEL_APPROVED
		                                                : MLP_MODEL_REJECTED,
		                    reason);
	mlp_store_close(s);
	return status;
}

const struct mlp_cmd mlp_cmd_models = {
        .name = "models",
        .args = "[--json] | show NAME[:VERSION] [--json] | approve|reject NAME:VERSION "
                "--reason TEXT",
        .summary = "List registered models, show a version, approve or reject one.",
        .help = "A stage with `model: {name, path}` registers a new version of the model\n"
                "each time it succeeds: the file (kept once per content under the data\n"
                "directory), its sha256, the run and stage, the git commit and the\n"
                "stage's metrics.  A version starts as a candidate; a gate approves or\n"
                "rejects it, and so can you:\n\n"
                "  mlpipe models                          every model, its latest version\n"
                "  mlpipe models show fashion             the latest version of fashion\n"
                "  mlpipe models show fashion:3           version 3, with its gate decisions\n"
                "  mlpipe models approve fashion:3 --reason \"checked by hand\"\n"
                "  mlpipe models reject fashion:3 --reason \"bias on class 4\"\n\n"
                "Statuses: candidate -> approved | rejected -> deployed -> retired.\n"
                "A rejected version can be approved and an approved one rejected; a\n"
                "deployed or retired version cannot be approved or rejected.\n\n"
                "Options:\n"
                "  --json                machine-readable output (list and show)\n"
                "  -m, --reason TEXT     why (required for approve and reject)\n"
                "  --db PATH             the database\n\n"
                "Exit code: 0 done, 2 bad usage, no such model or version, or a status\n"
                "change that is not allowed.\n",
        .exec = models_exec,
};
