/*
 * cmd-rollout.c - `mlpipe rollout` and `mlpipe rollback`: the rollout
 * stage's work from the command line.
 *
 *   mlpipe rollout NAMESPACE/DEPLOYMENT --image IMAGE [--env K=V]...
 *   mlpipe rollout NAMESPACE/DEPLOYMENT --model NAME[:VERSION] [--model-base-url URL]
 *   mlpipe rollback NAMESPACE/DEPLOYMENT
 *
 * Both record what they change in the deployments table (mlpipe
 * deployments) before changing it; rollback patches back what the newest
 * rollout still in effect changed.  The work is in rollout.c.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cmd.h"
#include "base/error.h"
#include "deploy/k8s.h"
#include "pipeline/pipeline.h"
#include "deploy/rollout.h"
#include "engine/stagekind.h"
#include "store/store.h"
#include "store/store-models.h"
#include "base/util.h"

/* NAMESPACE/NAME or NAME (the context's namespace). */
static int split_target(char **ns, char **name, const char *arg)
{
	const char *slash = strchr(arg, '/');

	*ns = NULL;
	*name = NULL;
	if (slash == NULL) {
		*name = xstrdup(arg);
	} else {
		*ns = xstrndup(arg, (size_t)(slash - arg));
		*name = xstrdup(slash + 1);
	}
	if (**name == '\0' || strchr(*name, '/') || (*ns && **ns == '\0')) {
		free(*ns);
		free(*name);
		return MLP_EINVAL;
	}
	return 0;
}

/* NAME[:VERSION] of a registered model: its version row. */
static int find_model(struct mlp_store *s, struct mlp_model_version *out, const char *spec)
{
	const char *colon = strrchr(spec, ':');
	char *name = colon ? xstrndup(spec, (size_t)(colon - spec)) : xstrdup(spec);
	long long v = 0;
	int rc;

	if (colon && mlp_parse_int(&v, colon + 1, 1, 1000000000) != 0) {
		mlp_error_set("'%s' is not MODEL[:VERSION]", spec);
		free(name);
		return MLP_EINVAL;
	}
	rc = mlp_store_model_version_get(out, s, name, (int)v);
	free(name);
	return rc;
}

enum {
	OPT_KUBECONFIG = 256,
	OPT_CONTEXT,
	OPT_DB,
	OPT_TIMEOUT,
	OPT_ON_FAILURE,
	OPT_DRY_RUN,
	OPT_MODEL,
	OPT_MODEL_BASE_URL
};

/* What `mlpipe rollout`'s options say. */
struct rollout_args {
	struct mlp_rollout_request req;
	struct mlp_k8s_options ko;
	struct mlp_kvlist env;
	const char *db, *model, *model_base_url;
};

/* Reads the options into a; returns -1 with *status set to leave with
 * (help printed, or a usage error). */
static int parse_rollout_options(struct rollout_args *a, int argc, char **argv, int *status)
{
	static const struct option opts[] = {
	        {"image", required_argument, NULL, 'i'},
	        {"env", required_argument, NULL, 'e'},
	        {"container", required_argument, NULL, 'c'},
	        {"kubeconfig", required_argument, NULL, OPT_KUBECONFIG},
	        {"context", required_argument, NULL, OPT_CONTEXT},
	        {"db", required_argument, NULL, OPT_DB},
	        {"timeout", required_argument, NULL, OPT_TIMEOUT},
	        {"on-failure", required_argument, NULL, OPT_ON_FAILURE},
	        {"dry-run", no_argument, NULL, OPT_DRY_RUN},
	        {"model", required_argument, NULL, OPT_MODEL},
	        {"model-base-url", required_argument, NULL, OPT_MODEL_BASE_URL},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	const struct mlp_cmd *self = &mlp_cmd_rollout;
	int c;

	while ((c = getopt_long(argc, argv, "i:e:c:h", opts, NULL)) != -1) {
		switch (c) {
		case 'i':
			a->req.image = optarg;
			break;
		case 'e': {
			const char *eq = strchr(optarg, '=');
			char *key;

			if (eq == NULL || eq == optarg) {
				*status = mlp_cmd_usage_error(
				        self, "--env takes NAME=VALUE, not '%s'", optarg);
				return -1;
			}
			key = xstrndup(optarg, (size_t)(eq - optarg));
			mlp_kvlist_set(&a->env, key, eq + 1);
			free(key);
			break;
		}
		case 'c':
			a->req.container = optarg;
			break;
		case OPT_KUBECONFIG:
			a->ko.kubeconfig = optarg;
			break;
		case OPT_CONTEXT:
			a->ko.context = optarg;
			break;
		case OPT_DB:
			a->db = optarg;
			break;
		case OPT_TIMEOUT:
			if (mlp_parse_duration(&a->req.timeout_ms, optarg) != 0 ||
			    a->req.timeout_ms <= 0) {
				*status = mlp_cmd_usage_error(self, "--timeout: %s",
				                              mlp_error_last());
				return -1;
			}
			break;
		case OPT_ON_FAILURE:
			if (strcmp(optarg, "rollback") == 0) {
				a->req.on_failure = MLP_ON_FAILURE_ROLLBACK;
			} else if (strcmp(optarg, "keep") == 0) {
				a->req.on_failure = MLP_ON_FAILURE_KEEP;
			} else {
				*status = mlp_cmd_usage_error(self,
				                              "--on-failure is rollback or keep");
				return -1;
			}
			break;
		case OPT_DRY_RUN:
			a->req.dry_run = true;
			break;
		case OPT_MODEL:
			a->model = optarg;
			break;
		case OPT_MODEL_BASE_URL:
			if (strncmp(optarg, "http://", 7) != 0 &&
			    strncmp(optarg, "https://", 8) != 0) {
				*status = mlp_cmd_usage_error(
				        self, "--model-base-url is an http:// or https:// address");
				return -1;
			}
			a->model_base_url = optarg;
			break;
		case 'h':
			mlp_cmd_print_help(self, stdout);
			*status = MLP_EXIT_OK;
			return -1;
		default:
			*status = mlp_cmd_usage_error(self, "unknown option");
			return -1;
		}
	}
	if (optind + 1 != argc) {
		*status = mlp_cmd_usage_error(self, "give one NAMESPACE/DEPLOYMENT");
		return -1;
	}
	if (a->model_base_url && a->model == NULL) {
		*status = mlp_cmd_usage_error(self, "--model-base-url needs --model");
		return -1;
	}
	return 0;
}

static int rollout_exec(int argc, char **argv)
{
	const struct mlp_cmd *self = &mlp_cmd_rollout;
	struct rollout_args a = {.req = {.progress = stdout}};
	struct mlp_rollout_outcome out = {0};
	struct mlp_model_version mv = {0};
	struct mlp_k8s *k = NULL;
	struct mlp_store *s = NULL;
	char *ns = NULL, *name = NULL, *user = NULL;
	int rc, status = MLP_EXIT_USAGE;

	if (parse_rollout_options(&a, argc, argv, &status) != 0)
		goto done;
	if (split_target(&ns, &name, argv[optind]) != 0) {
		status =
		        mlp_cmd_usage_error(self, "'%s' is not NAMESPACE/DEPLOYMENT", argv[optind]);
		goto done;
	}
	if (a.req.image == NULL && a.env.len == 0 && a.model == NULL) {
		mlp_cmd_usage_error(self, "nothing to roll out: give --image, --env or --model");
		goto done;
	}
	if (mlp_store_open(&s, a.db, 0) != 0 || mlp_k8s_open(&k, &a.ko) != 0) {
		mlp_cmd_error("%s", mlp_error_last());
		goto done;
	}
	if (a.model) {
		if (find_model(s, &mv, a.model) != 0) {
			mlp_cmd_error("%s", mlp_error_last());
			goto done;
		}
		a.req.model = mv.model;
		a.req.model_version = mv.version;
		a.req.model_version_id = mv.id;
		a.req.model_sha256 = mv.sha256;
		mlp_rollout_model_env(&a.env, mv.model, mv.version, mv.sha256, mv.artifact_path,
		                      a.model_base_url);
	}
	user = mlp_cmd_current_user();
	a.req.namespace_ = ns;
	a.req.deployment = name;
	a.req.env = &a.env;
	a.req.user = user;
	rc = mlp_rollout_run(&out, k, s, &a.req);
	if (rc == 0) {
		status = MLP_EXIT_OK;
	} else {
		mlp_cmd_error("%s", mlp_error_last());
		status = rc == MLP_ERROR && out.reason ? MLP_EXIT_FAILED : MLP_EXIT_USAGE;
	}
done:
	mlp_rollout_outcome_clear(&out);
	mlp_model_version_clear(&mv);
	mlp_kvlist_free(&a.env);
	mlp_k8s_close(k);
	mlp_store_close(s);
	free(ns);
	free(name);
	free(user);
	return status;
}

static int rollback_exec(int argc, char **argv)
{
	static const struct option opts[] = {
	        {"kubeconfig", required_argument, NULL, OPT_KUBECONFIG},
	        {"context", required_argument, NULL, OPT_CONTEXT},
	        {"db", required_argument, NULL, OPT_DB},
	        {"timeout", required_argument, NULL, OPT_TIMEOUT},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	const struct mlp_cmd *self = &mlp_cmd_rollback;
	struct mlp_k8s_options ko = {0};
	struct mlp_rollout_outcome out = {0};
	struct mlp_k8s *k = NULL;
	struct mlp_store *s = NULL;
	const char *db = NULL;
	char *ns = NULL, *name = NULL, *user = NULL;
	int64_t timeout = 0;
	int c, rc, status = MLP_EXIT_USAGE;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_KUBECONFIG:
			ko.kubeconfig = optarg;
			break;
		case OPT_CONTEXT:
			ko.context = optarg;
			break;
		case OPT_DB:
			db = optarg;
			break;
		case OPT_TIMEOUT:
			if (mlp_parse_duration(&timeout, optarg) != 0 || timeout <= 0)
				return mlp_cmd_usage_error(self, "--timeout: %s", mlp_error_last());
			break;
		case 'h':
			mlp_cmd_print_help(self, stdout);
			return MLP_EXIT_OK;
		default:
			return mlp_cmd_usage_error(self, "unknown option");
		}
	}
	if (optind + 1 != argc)
		return mlp_cmd_usage_error(self, "give one NAMESPACE/DEPLOYMENT");
	if (split_target(&ns, &name, argv[optind]) != 0)
		return mlp_cmd_usage_error(self, "'%s' is not NAMESPACE/DEPLOYMENT", argv[optind]);
	if (mlp_store_open(&s, db, 0) != 0 || mlp_k8s_open(&k, &ko) != 0) {
		mlp_cmd_error("%s", mlp_error_last());
		goto done;
	}
	user = mlp_cmd_current_user();
	rc = mlp_rollout_undo(&out, k, s, ns, name, timeout, user, stdout);
	if (rc == 0) {
		status = MLP_EXIT_OK;
	} else {
		mlp_cmd_error("%s", mlp_error_last());
		status = rc == MLP_ERROR && out.reason ? MLP_EXIT_FAILED : MLP_EXIT_USAGE;
	}
done:
	mlp_rollout_outcome_clear(&out);
	mlp_k8s_close(k);
	mlp_store_close(s);
	free(ns);
	free(name);
	free(user);
	return status;
}

#define K8S_OPTIONS_HELP                                                                   \
	"  --kubeconfig PATH     the kubeconfig (default: $KUBECONFIG, ~/.kube/config,\n"  \
	"                        else the pod's service account)\n"                        \
	"  --context NAME        a context of the kubeconfig (default: current-context)\n" \
	"  --db PATH             the database (the deployments table)\n"

const struct mlp_cmd mlp_cmd_rollout = {
        .name = "rollout",
        .args = "[NAMESPACE/]DEPLOYMENT [--image IMAGE] [--env NAME=VALUE]... [--model "
                "NAME[:VER]] [options]",
        .summary = "Roll a new image or model out to a Kubernetes Deployment; roll back on "
                   "failure.",
        .help = "Reads the Deployment, records the container's image and env and the pod\n"
                "template's annotations (mlpipe deployments), patches it (a strategic\n"
                "merge patch, conditional on its resourceVersion, retried on a conflict),\n"
                "then watches it and decides as `kubectl rollout status` does.  If it\n"
                "fails (ProgressDeadlineExceeded) or does not complete in --timeout, the\n"
                "recorded values are patched back and that rollout is waited for too.\n"
                "See docs/rollout.md.\n\n"
                "Options:\n"
                "  -i, --image IMAGE     the container's new image\n"
                "  -e, --env NAME=VALUE  set an environment variable (repeatable)\n"
                "  -c, --container NAME  the container (default: the only one)\n"
                "  --model NAME[:VER]    the registered model version this deploys (default\n"
                "                        version: the latest): sets MODEL_URI, MODEL_SHA256,\n"
                "                        MODEL_NAME and MODEL_VERSION for mlpipe-model-server,\n"
                "                        annotates the pods, marks the version deployed\n"
                "  --model-base-url URL  mlpipe serve's address: MODEL_URI is its artifact\n"
                "                        URL (default: file:// of the artifact on this host)\n"
                "  --timeout DURATION    mlpipe's own deadline (default 10m)\n"
                "  --on-failure rollback|keep  (default rollback)\n"
                "  --dry-run             validate on the server (?dryRun=All); change "
                "nothing\n" K8S_OPTIONS_HELP "\n"
                "Exit code: 0 the rollout completed, 1 it failed (rolled back unless\n"
                "--on-failure keep), 2 it could not be tried (bad usage, no such\n"
                "Deployment or container, forbidden, unreachable).\n",
        .exec = rollout_exec,
};

const struct mlp_cmd mlp_cmd_rollback = {
        .name = "rollback",
        .args = "[NAMESPACE/]DEPLOYMENT [options]",
        .summary = "Undo the newest rollout of a Deployment that mlpipe recorded.",
        .help = "Patches back the image, env and annotations that the newest rollout still\n"
                "in effect changed (as recorded in mlpipe deployments), and waits for that\n"
                "rollout.  The undone rollout is marked rolled_back, so running rollback\n"
                "again goes one rollout further back.  Unlike `kubectl rollout undo`, it\n"
                "restores what mlpipe changed, not a whole older pod template.\n\n"
                "Options:\n"
                "  --timeout DURATION    how long to wait for it (default 10m)\n" K8S_OPTIONS_HELP
                "\n"
                "Exit code: 0 rolled back, 1 the rollback did not complete, 2 it could not\n"
                "be tried (nothing recorded to undo, forbidden, unreachable).\n",
        .exec = rollback_exec,
};
