/*
 * launch.h - the data-parallel launcher: one process per rank, torchrun's
 * environment contract, supervision and group restarts.
 *
 * Every rank runs the same command with RANK, LOCAL_RANK, WORLD_SIZE,
 * LOCAL_WORLD_SIZE, GROUP_RANK, GROUP_WORLD_SIZE, ROLE_RANK,
 * ROLE_WORLD_SIZE, ROLE_NAME, MASTER_ADDR, MASTER_PORT,
 * TORCHELASTIC_RESTART_COUNT, TORCHELASTIC_MAX_RESTARTS,
 * TORCHELASTIC_RUN_ID and OMP_NUM_THREADS=1 (unless set), so a PyTorch
 * script using init_method="env://" runs unchanged.  Each rank is a process
 * group of its own.  The first rank to fail is the root cause: every other
 * rank's group gets SIGTERM, then SIGKILL after the grace period, and the
 * whole group starts again on a fresh port, up to max_restarts times.
 * Completion is pidfds in one poll() loop; a stall watchdog kills a group
 * that printed nothing and wrote no metric for stall_timeout.
 */
#ifndef MLP_LAUNCH_H
#define MLP_LAUNCH_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "base/exec.h"

struct mlp_launch_spec {
	int nproc;               /* ranks on this node */
	int nnodes;              /* default 1 */
	int node_rank;           /* this node's index */
	const char *master_addr; /* default 127.0.0.1 */
	int master_port;         /* 0: a free port, new on every restart (one node) */
	int max_restarts;
	int64_t stall_timeout_ms; /* 0: no watchdog */
	int64_t kill_grace_ms;    /* SIGTERM -> SIGKILL */
	int gpus_per_node;        /* > 0: one GPU per rank, through CUDA_VISIBLE_DEVICES */
	char (*gpu_ids)[32];      /* the node's GPUs (mlp_launch_node_gpus) */
	int ngpu_ids;
	const char *gpu_source; /* where they were found, for messages */
	const char *run_id;     /* TORCHELASTIC_RUN_ID */
	char *const *argv;      /* each rank's command (argv[0] absolute) */
	char *const *envp;      /* the base environment */
	const char *cwd;
	const char *progress_file; /* a metrics file whose changes count as progress */
	FILE *out;                 /* rank output, prefixed "[rankN] " */
	const char *label;         /* the prefix's word instead of "rank" ("node": "[nodeN] ") */
};

struct mlp_launch_result {
	bool ok;
	int restarts; /* group restarts used */
	int signal;   /* set when the launcher itself was signalled */
	/* The rank whose own exit was the root cause of the last failure (its
	 * global rank), or -1: none failed, or the cause was something else
	 * (the stall watchdog, a rank that could not start, a signal). */
	int failed_rank;
	struct mlp_exit failed_exit; /* how that rank ended */
	char reason[512];            /* the root cause of the last failure */
};

#define MLP_LAUNCH_MAX_GPUS 64

/*
 * The GPUs of this node, as CUDA_VISIBLE_DEVICES ids: the inherited
 * CUDA_VISIBLE_DEVICES list when set, else one per GPU the NVIDIA driver
 * lists (/proc/driver/nvidia/gpus, or /dev/nvidiaN), numbered from 0.
 * Needs no CUDA.  *source says where they came from.
 */
int mlp_launch_node_gpus(char ids[][32], int max, const char **source);

/* Runs the ranks to completion.  Returns 0 with out filled (ok or not), or
 * a negative code when the launcher itself could not work. */
int mlp_launch_run(struct mlp_launch_result *out, const struct mlp_launch_spec *spec);

/*
 * `mlpipe launch`'s work once its options are read: finds command[0] on
 * PATH, gives the run an id when spec has none, finds the node's GPUs when
 * spec asks for them, runs the ranks, and writes the root cause of a
 * failure to $MLPIPE_REASON (the engine shows it as the stage's reason).
 * Returns as mlp_launch_run; MLP_EINVAL when refused before anything
 * started (a missing program, GPUs), with the message set (and written to
 * $MLPIPE_REASON).  spec's argv, run_id and gpu fields are filled in and
 * freed here.
 */
int mlp_launch_command(struct mlp_launch_result *out, struct mlp_launch_spec *spec,
                       char *const *command);

#endif
