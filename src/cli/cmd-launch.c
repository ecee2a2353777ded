/*
 * cmd-launch.c - `mlpipe launch`: run a command once per rank with
 * torchrun's environment, supervise the ranks, restart the group.
 *
 * `train:` stages run through this command; it is also usable by hand,
 * like torchrun, including on several nodes (--nnodes, --node-rank and an
 * agreed --master-addr/--master-port on each).
 */
#include "config.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cmd.h"
#include "base/error.h"
#include "base/exec.h"
#include "launch.h"
#include "base/util.h"

extern char **environ;

static int parse_count(int *out, const char *opt, const char *v, int min, int max)
{
	long long n;

	if (mlp_parse_int(&n, v, min, max) != 0)
		return mlp_cmd_usage_error(&mlp_cmd_launch,
		                           "%s wants a number from %d to %d, not '%s'", opt, min,
		                           max, v);
	*out = (int)n;
	return 0;
}

/* Reads the options into spec; returns 0, or the exit status to leave
 * with (help printed, or a usage error). */
static int parse_options(struct mlp_launch_spec *spec, int argc, char **argv, int *status)
{
	enum {
		O_NNODES = 256,
		O_NODE_RANK,
		O_ADDR,
		O_PORT,
		O_RESTARTS,
		O_STALL,
		O_GRACE,
		O_GPUS,
		O_RUN_ID,
		O_PROGRESS
	};
	static const struct option opts[] = {
	        {"nproc-per-node", required_argument, NULL, 'n'},
	        {"nproc_per_node", required_argument, NULL, 'n'},
	        {"nnodes", required_argument, NULL, O_NNODES},
	        {"node-rank", required_argument, NULL, O_NODE_RANK},
	        {"node_rank", required_argument, NULL, O_NODE_RANK},
	        {"master-addr", required_argument, NULL, O_ADDR},
	        {"master_addr", required_argument, NULL, O_ADDR},
	        {"master-port", required_argument, NULL, O_PORT},
	        {"master_port", required_argument, NULL, O_PORT},
	        {"max-restarts", required_argument, NULL, O_RESTARTS},
	        {"max_restarts", required_argument, NULL, O_RESTARTS},
	        {"stall-timeout", required_argument, NULL, O_STALL},
	        {"kill-grace", required_argument, NULL, O_GRACE},
	        {"gpus-per-node", required_argument, NULL, O_GPUS},
	        {"run-id", required_argument, NULL, O_RUN_ID},
	        {"rdzv-id", required_argument, NULL, O_RUN_ID},
	        {"progress-file", required_argument, NULL, O_PROGRESS},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	int c;
	int64_t ms;

	*status = MLP_EXIT_USAGE;
	while ((c = getopt_long(argc, argv, "+n:h", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			if (parse_count(&spec->nproc, "--nproc-per-node", optarg, 1, 1024) != 0)
				return -1;
			break;
		case O_NNODES:
			if (parse_count(&spec->nnodes, "--nnodes", optarg, 1, 1024) != 0)
				return -1;
			break;
		case O_NODE_RANK:
			if (parse_count(&spec->node_rank, "--node-rank", optarg, 0, 1023) != 0)
				return -1;
			break;
		case O_ADDR:
			spec->master_addr = optarg;
			break;
		case O_PORT:
			if (parse_count(&spec->master_port, "--master-port", optarg, 1, 65535) != 0)
				return -1;
			break;
		case O_RESTARTS:
			if (parse_count(&spec->max_restarts, "--max-restarts", optarg, 0, 1000) !=
			    0)
				return -1;
			break;
		case O_STALL:
		case O_GRACE:
			if (mlp_parse_duration(&ms, optarg) != 0) {
				mlp_cmd_usage_error(&mlp_cmd_launch, "%s", mlp_error_last());
				return -1;
			}
			if (c == O_STALL)
				spec->stall_timeout_ms = ms;
			else
				spec->kill_grace_ms = ms;
			break;
		case O_GPUS:
			if (parse_count(&spec->gpus_per_node, "--gpus-per-node", optarg, 0, 1024) !=
			    0)
				return -1;
			break;
		case O_RUN_ID:
			spec->run_id = optarg;
			break;
		case O_PROGRESS:
			spec->progress_file = optarg;
			break;
		case 'h':
			mlp_cmd_print_help(&mlp_cmd_launch, stdout);
			*status = MLP_EXIT_OK;
			return -1;
		default:
			mlp_cmd_usage_error(&mlp_cmd_launch, "unknown option");
			return -1;
		}
	}
	if (optind >= argc) {
		mlp_cmd_usage_error(&mlp_cmd_launch, "no command given (mlpipe launch [OPTIONS] -- "
		                                     "COMMAND [ARGS...])");
		return -1;
	}
	if (spec->node_rank >= spec->nnodes) {
		mlp_cmd_usage_error(&mlp_cmd_launch, "--node-rank %d is not below --nnodes %d",
		                    spec->node_rank, spec->nnodes);
		return -1;
	}
	if (spec->nnodes > 1 && (spec->master_addr == NULL || spec->master_port == 0)) {
		mlp_cmd_usage_error(&mlp_cmd_launch, "several nodes need --master-addr and "
		                                     "--master-port, the same on every node");
		return -1;
	}
	return 0;
}

static int launch_exec(int argc, char **argv)
{
	struct mlp_launch_spec spec = {
	        .nproc = 1,
	        .nnodes = 1,
	        .kill_grace_ms = 10000,
	        .envp = environ,
	        .out = stdout,
	};
	struct mlp_launch_result res;
	int rc, status;

	if (parse_options(&spec, argc, argv, &status) != 0)
		return status;
	rc = mlp_launch_command(&res, &spec, argv + optind);
	if (rc == MLP_ENOTFOUND || rc == MLP_EINVAL) {
		mlp_cmd_error("%s", mlp_error_last()); /* nothing started */
		return MLP_EXIT_USAGE;
	}
	if (rc != 0) {
		mlp_cmd_error("%s", mlp_error_last());
		return MLP_EXIT_FAILED;
	}
	if (res.ok)
		return MLP_EXIT_OK;
	if (res.signal) {
		fprintf(stderr, "mlpipe launch: stopped by SIG%s\n", sigabbrev_np(res.signal));
		return 128 + res.signal;
	}
	fprintf(stderr, "mlpipe launch: %s (%d of %d restarts used)\n", res.reason, res.restarts,
	        spec.max_restarts);
	return MLP_EXIT_FAILED;
}

const struct mlp_cmd mlp_cmd_launch = {
        .name = "launch",
        .args = "[--nproc-per-node N] [--max-restarts N] [OPTIONS] -- COMMAND [ARGS...]",
        .summary = "Run a command once per rank with torchrun's environment (DDP launcher).",
        .help = "Each rank gets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK,\n"
                "GROUP_WORLD_SIZE, ROLE_RANK, ROLE_WORLD_SIZE, ROLE_NAME, MASTER_ADDR,\n"
                "MASTER_PORT, TORCHELASTIC_RESTART_COUNT, TORCHELASTIC_MAX_RESTARTS,\n"
                "TORCHELASTIC_RUN_ID and OMP_NUM_THREADS=1 (unless set), so a PyTorch\n"
                "script with init_method=\"env://\" runs unchanged.  Output lines are\n"
                "prefixed [rankN].  When a rank fails, every other rank's process group\n"
                "gets SIGTERM, then SIGKILL after the grace period, and the whole group\n"
                "restarts on a fresh port, up to --max-restarts times; the first failure\n"
                "is reported as the root cause.\n\n"
                "Options (torchrun's underscore spellings work too):\n"
                "  -n, --nproc-per-node N  ranks on this node (default 1)\n"
                "  --nnodes N              nodes in the job (default 1)\n"
                "  --node-rank R           this node's index (default 0)\n"
                "  --master-addr HOST      where rank 0 listens (default 127.0.0.1)\n"
                "  --master-port PORT      its port (default: a free one, new per restart)\n"
                "  --max-restarts N        group restarts after a failure (default 0)\n"
                "  --stall-timeout DUR     kill a group silent for DUR (no output, and no\n"
                "                          change to --progress-file); default: never\n"
                "  --kill-grace DUR        SIGTERM to SIGKILL (default 10s)\n"
                "  --gpus-per-node N       one GPU per rank: local rank i gets the i-th GPU\n"
                "                          of the node (of an inherited CUDA_VISIBLE_DEVICES\n"
                "                          list, if set) as CUDA_VISIBLE_DEVICES; asking for\n"
                "                          more than the node has fails before any rank starts\n"
                "  --run-id ID             TORCHELASTIC_RUN_ID\n"
                "  --progress-file FILE    a file whose changes count as progress\n\n"
                "Exit code: 0 every rank succeeded, 1 the group failed for good,\n"
                "128+N stopped by signal N.\n",
        .exec = launch_exec,
};
