/*
 * cmd-stage-k8s.c - `mlpipe stage-k8s`: the process of a run or train
 * stage with runs-on: kubernetes.
 *
 * Internal: the engine starts it (stage-k8s.c, mlp_stage_k8s_prepare).
 * SIGTERM and SIGINT (cancel, timeout) make it delete the gang and wait
 * for the pods to go; so does the death of the mlpipe that started it
 * (PR_SET_PDEATHSIG), so that `kill -9` of mlpipe does not leave a gang
 * running.
 */
#include "config.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "base/error.h"
#include "base/util.h"
#include "cli/cmd.h"
#include "engine/stage-k8s.h"

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static void catch_stops(pid_t parent)
{
	struct sigaction sa = {.sa_handler = on_stop};

	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != parent) /* it died before prctl */
		stop_requested = 1;
}

static int stage_k8s_exec(int argc, char **argv)
{
	static const struct option opts[] = {
	        {"db", required_argument, NULL, 'd'},
	        {"run", required_argument, NULL, 'r'},
	        {"stage", required_argument, NULL, 's'},
	        {"attempt", required_argument, NULL, 'a'},
	        {"image", required_argument, NULL, 'i'},
	        {"model-path", required_argument, NULL, 'm'},
	        {"script-file", required_argument, NULL, 'f'},
	        {"pod-env", required_argument, NULL, 'e'},
	        {"once", no_argument, NULL, 'o'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	const struct mlp_cmd *self = &mlp_cmd_stage_k8s;
	struct mlp_stage_k8s_args a = {.once = -1, .stop = &stop_requested};
	struct mlp_strv env = {0};
	long long v;
	int c, status;

	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			a.db = optarg;
			break;
		case 'r':
			if (mlp_parse_int(&v, optarg, 1, INT64_MAX) != 0)
				goto bad;
			a.run_id = v;
			break;
		case 's':
			a.stage = optarg;
			break;
		case 'a':
			if (mlp_parse_int(&v, optarg, 1, 1000000) != 0)
				goto bad;
			a.attempt = (int)v;
			break;
		case 'i':
			a.image = optarg;
			break;
		case 'm':
			a.model_path = optarg;
			break;
		case 'f':
			a.script_file = optarg;
			break;
		case 'e':
			mlp_strv_push(&env, optarg);
			break;
		case 'o':
			a.once = 1;
			break;
		case 'h':
			mlp_strv_free(&env);
			mlp_cmd_print_help(self, stdout);
			return MLP_EXIT_OK;
		default:
			mlp_strv_free(&env);
			return mlp_cmd_usage_error(self, "unknown option");
		}
	}
	if (a.run_id == 0 || a.stage == NULL || a.attempt == 0 || a.image == NULL ||
	    (a.script_file == NULL && optind >= argc)) {
		mlp_strv_free(&env);
		return mlp_cmd_usage_error(self, "--run, --stage, --attempt, --image and a "
		                                 "command (--script-file or -- ARGV) are required");
	}
	a.argv = optind < argc ? argv + optind : NULL;
	a.pod_env = &env;
	catch_stops(getppid());
	status = mlp_stage_k8s_exec(&a);
	mlp_strv_free(&env);
	return status;
bad:
	mlp_strv_free(&env);
	return mlp_cmd_usage_error(self, "'%s' is not a valid number", optarg);
}

const struct mlp_cmd mlp_cmd_stage_k8s = {
        .name = "stage-k8s",
        .args = "--db PATH --run ID --stage NAME --attempt N --image IMAGE [--model-path P]\n"
                "       [--pod-env NAME]... [--once] (--script-file F | -- ARGV...)",
        .internal = true,
        .summary = "The process of a stage with runs-on: kubernetes; `mlpipe run` starts it.",
        .help = "Runs one attempt of a run or train stage as a gang of pods: a Secret, a\n"
                "headless Service and the Job(s); streams the pods' logs, stops the gang\n"
                "at the first failure, fetches rank 0's results, and deletes everything.\n"
                "See docs/kubernetes.md.\n\n"
                "Exit code: 0 the gang succeeded, the failing rank's exit code (or 1)\n"
                "when it failed, 143 when cancelled, 2 when it could not be tried.\n",
        .exec = stage_k8s_exec,
};
