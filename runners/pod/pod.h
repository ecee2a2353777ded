/*
 * pod.h - mlpipe-pod: what runs a training stage's ranks inside one pod of
 * a Kubernetes Job (docs/mlpipe-pod.md).
 *
 * The user's image need not contain mlpipe: an init container copies this
 * program into a shared volume (`mlpipe-pod install /mlpipe`) and the main
 * container runs `/mlpipe/mlpipe-pod run ... -- COMMAND`.  So it links
 * nothing but libc (libcrypto statically, for SHA-256) and uses only the
 * parts of src/base that need libc alone (error, util, exec, crypto), the
 * launcher (runners/launch.c) and the rendezvous's name lookup
 * (runners/train/rdzv.c).
 *
 * main.c reads the command line and the PET_* environment into struct
 * pod_opts; pod.c runs a node (wait for MASTER_ADDR, the ranks, the
 * termination message, the exit code); results.c serves rank 0's result
 * files over HTTP.
 */
#ifndef MLP_POD_H
#define MLP_POD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Exit codes of mlpipe-pod itself; a failed rank's own code passes through. */
enum {
	POD_EXIT_OK = 0,
	POD_EXIT_FAILED = 1, /* a runtime failure of no rank's making */
	POD_EXIT_USAGE = 2,  /* bad options, environment or command */
};

/* A --result NAME=PATH. */
struct pod_result {
	const char *name;
	const char *path; /* relative to the working directory */
};

struct pod_opts {
	int nnodes;              /* PET_NNODES */
	int node_rank;           /* PET_NODE_RANK */
	int nproc;               /* --nproc-per-node, else PET_NPROC_PER_NODE */
	const char *master_addr; /* PET_MASTER_ADDR */
	int master_port;         /* PET_MASTER_PORT; 0: a free one (one node) */
	const char *run_id;      /* TORCHELASTIC_RUN_ID, else MLPIPE_RUN_ID */
	int gpus_per_node;
	int64_t stall_timeout_ms; /* 0: no watchdog */
	int64_t kill_grace_ms;
	int64_t rdzv_timeout_ms;
	int64_t serve_timeout_ms;
	bool once;        /* the command is itself a launcher (torchrun): one per pod */
	int results_port; /* 0: no results server */
	struct pod_result *results;
	size_t nresults;
	const char *termination_log;
	char **command; /* NULL-terminated */
};

/*
 * Writes text (cut to 4096 bytes on a character boundary) to the
 * termination log atomically and prints "mlpipe-pod: TEXT" on stderr.  A
 * log that cannot be written is a warning on stderr, not a failure.
 */
void pod_report(const char *termination_log, const char *text);

/* Runs this node's part of the job; returns the exit status to leave with. */
int pod_run(const struct pod_opts *o);

/* Copies /proc/self/exe to DIR/mlpipe-pod (0755, through a temporary name);
 * returns the exit status, with one line on stderr on failure. */
int pod_install(const char *dir);

#endif
