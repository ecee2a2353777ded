/*
 * pipeline.h - pipeline files (pipeline.yml) as typed structs.
 *
 * The pipeline module is the only one that includes libyaml.  It parses a
 * file into a struct mlp_pipeline and validates everything that can be
 * checked without running anything: YAML syntax, unknown keys, types,
 * duplicate keys and stages, needs, cycles, durations, retry rules,
 * expressions, and the settings of every stage kind (run, train, gate,
 * rollout), so that later work only adds execution.
 *
 * Every problem becomes one struct mlp_diag ("FILE:LINE:COL: message");
 * the loader collects all of them rather than stopping at the first.
 */
#ifndef MLP_PIPELINE_H
#define MLP_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "base/kvlist.h"

/* Largest pipeline file we read. */
#define MLP_PIPELINE_MAX_BYTES (1024 * 1024)

struct mlp_diag {
	char *file;
	struct mlp_pos pos;
	char *message;
};

/* A list of problems, in file order.  Zero-initialise; free with
 * mlp_diags_free(). */
struct mlp_diags {
	struct mlp_diag *items;
	size_t len;
	size_t cap;
};

void mlp_diags_add(struct mlp_diags *d, const char *file, struct mlp_pos pos, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
/* Sorts by line and column, keeping the order of equal positions. */
void mlp_diags_sort(struct mlp_diags *d);
/* Prints one "FILE:LINE:COL: message" line per problem. */
void mlp_diags_print(const struct mlp_diags *d, FILE *f);
void mlp_diags_free(struct mlp_diags *d);

enum mlp_stage_kind {
	MLP_STAGE_RUN,
	MLP_STAGE_TRAIN,
	MLP_STAGE_GATE,
	MLP_STAGE_ROLLOUT,
};

const char *mlp_stage_kind_name(enum mlp_stage_kind kind);

/* When a stage runs, given how its needs ended (GitHub Actions' meaning). */
enum mlp_stage_if {
	MLP_IF_SUCCESS, /* default: every need succeeded */
	MLP_IF_FAILURE, /* some stage this one depends on (transitively) failed */
	MLP_IF_ALWAYS,  /* whatever happened, unless the run was cancelled */
};

enum mlp_retry_match {
	MLP_RETRY_ANY,     /* any failure ("any") */
	MLP_RETRY_EXIT,    /* "exit" (any non-zero exit) or "exit:N" */
	MLP_RETRY_SIGNAL,  /* "signal" (any) or "signal:KILL" / "signal:9" */
	MLP_RETRY_TIMEOUT, /* "timeout" */
};

struct mlp_retry_rule {
	enum mlp_retry_match match;
	int value; /* exit code or signal number; -1 for any */
};

struct mlp_retry {
	int max;                   /* extra attempts after the first; 0 = none */
	int64_t backoff_ms;        /* delay before the first retry (default 1s) */
	double backoff_factor;     /* multiplies the delay after each retry (default 2) */
	int64_t backoff_max_ms;    /* cap on the delay (default 5m) */
	struct mlp_retry_rule *on; /* empty: retry on any failure */
	size_t non;
};

struct mlp_builtin_train {
	int *layers; /* at least 2 sizes, each >= 1 */
	size_t nlayers;
	int epochs;              /* default 1 */
	int batch;               /* global batch, default 64 */
	double lr;               /* default 0.01 */
	double momentum;         /* default 0.9 */
	double weight_decay;     /* default 0 */
	long long seed;          /* default 42 */
	char *data;              /* training data: IDX directory/file or CSV */
	char *test_data;         /* optional held-out data */
	double validation_split; /* fraction held out when no test_data; default 0 */
	char *device;            /* "auto" (default), "cpu" or "cuda" */
	struct mlp_pos pos;
};

struct mlp_train {
	int ranks;                /* processes per node, default 1 */
	int nodes;                /* default 1 */
	int gpus_per_node;        /* 0 = CPU only */
	int max_restarts;         /* default 0 */
	int64_t stall_timeout_ms; /* 0 = no watchdog */
	bool has_builtin;
	struct mlp_builtin_train builtin;
	char *command; /* a user's program, run per rank with /bin/sh -c */
	struct mlp_pos command_pos;
};

struct mlp_model_ref {
	bool set;
	char *name;
	char *path; /* relative to the stage's working directory */
	struct mlp_pos pos;
};

enum mlp_gate_op { MLP_OP_GE, MLP_OP_GT, MLP_OP_LE, MLP_OP_LT };

struct mlp_gate_require {
	char *metric;
	enum mlp_gate_op op;
	double value;
	struct mlp_pos pos;
};

enum mlp_baseline { MLP_BASELINE_NONE, MLP_BASELINE_DEPLOYED, MLP_BASELINE_APPROVED };

struct mlp_gate {
	char *name; /* gate name; defaults to model */
	char *model;
	char *metrics_from; /* a stage this one needs (transitively) */
	struct mlp_gate_require *require;
	size_t nrequire;
	enum mlp_baseline baseline;
	bool has_max_regression;
	double max_regression;        /* absolute, or a fraction when relative */
	bool max_regression_relative; /* written with a '%' */
	struct mlp_kvlist directions; /* metric -> "higher" | "lower" */
	bool allow_empty;
};

enum mlp_on_failure { MLP_ON_FAILURE_ROLLBACK, MLP_ON_FAILURE_KEEP };

struct mlp_rollout {
	char *deployment;
	char *namespace_; /* default "default" */
	char *container;
	char *image; /* may hold expressions */
	struct mlp_kvlist env;
	char *context;
	int64_t timeout_ms; /* default 10m */
	enum mlp_on_failure on_failure;
	bool dry_run;
	/* model: the model to set as configuration (MODEL_URI, MODEL_SHA256,
	 * MODEL_NAME, MODEL_VERSION in the container's env); NULL: none.
	 * model_base_url: where `mlpipe serve` answers, for MODEL_URI (NULL:
	 * a file:// URI of the artifact in the data directory). */
	char *model;
	char *model_base_url;
};

enum mlp_runs_on {
	MLP_RUNS_ON_LOCAL,      /* default: processes on this machine */
	MLP_RUNS_ON_KUBERNETES, /* a Job of pods on a cluster (docs/kubernetes.md) */
};

struct mlp_k8s_toleration {
	char *key;       /* NULL: every key (with operator Exists) */
	char *operator_; /* "Equal" (default) or "Exists" */
	char *value;
	char *effect;    /* NULL: every effect */
	int64_t seconds; /* tolerationSeconds; -1: none */
};

/*
 * kubernetes: where a stage that runs-on: kubernetes goes and what its
 * pods get.  The pipeline's block gives defaults; a stage's own block
 * overrides them key by key (each list or map as a whole).  Unset strings
 * are NULL.
 */
struct mlp_k8s_settings {
	bool set; /* the block was written */
	struct mlp_pos pos;
	char *context;                   /* kubeconfig context; NULL: current, or in-cluster */
	char *kubeconfig;                /* NULL: $KUBECONFIG, ~/.kube/config, in-cluster */
	char *namespace_;                /* NULL: the context's */
	char *image;                     /* the training image; may hold expressions */
	char *helper_image;              /* mlpipe's image, for the in-pod helper */
	char *service_account;           /* the pods' ServiceAccount */
	char *queue;                     /* a Kueue LocalQueue: the Job starts suspended */
	char *workdir;                   /* the containers' working directory */
	char *pull_policy;               /* Always, IfNotPresent, Never */
	int64_t start_timeout_ms;        /* 0: unset (default 10m) */
	struct mlp_kvlist resources;     /* cpu: 8, memory: 64Gi ... */
	struct mlp_kvlist node_selector; /* label: value */
	struct mlp_kvlist annotations;   /* on the pods */
	struct mlp_kvlist labels;        /* on every object */
	struct mlp_k8s_toleration *tolerations;
	size_t ntolerations;
	bool has_tolerations;
	char *checkout_repo;   /* an init container clones this at the run's commit */
	char *checkout_secret; /* a Secret with its credentials */
	char *checkout_path;   /* where in the pod (default /workspace) */
};

struct mlp_stage {
	char *name;
	struct mlp_pos pos; /* of the name */
	enum mlp_stage_kind kind;
	struct mlp_pos kind_pos;
	char *description;

	char **needs;
	struct mlp_pos *needs_pos;
	size_t *need_index; /* indices into pipeline->stages, resolved */
	size_t nneeds;

	enum mlp_stage_if cond;
	bool continue_on_error;
	int64_t timeout_ms;    /* 0: none (the default comes from defaults:) */
	int64_t kill_grace_ms; /* TERM -> KILL delay, default 10s */
	struct mlp_retry retry;
	struct mlp_kvlist env;
	char *workdir; /* NULL: the run's workspace */

	char *run; /* MLP_STAGE_RUN: the shell command */
	struct mlp_pos run_pos;
	struct mlp_train train;
	struct mlp_model_ref model;
	struct mlp_gate gate;
	struct mlp_rollout rollout;

	enum mlp_runs_on runs_on;
	struct mlp_pos runs_on_pos;
	struct mlp_k8s_settings k8s; /* merged with the pipeline's */
};

struct mlp_schedule {
	char *cron;                   /* 5 fields or a macro (@daily, @nightly ...) */
	char *timezone;               /* IANA name, default "UTC" */
	char *concurrency;            /* "forbid" (default), "allow", "replace" */
	int64_t starting_deadline_ms; /* 0: none */
	struct mlp_pos pos;
};

struct mlp_pipeline {
	char *path; /* as given */
	char *dir;  /* absolute directory of the file */
	char *text; /* the file's bytes, NUL-terminated */
	size_t text_len;

	char *name; /* default: the file name without extension */
	struct mlp_kvlist env;
	char *workdir; /* relative to dir; NULL = dir */

	bool on_push;
	char **push_branches; /* glob patterns; none = every branch */
	size_t npush_branches;
	char **push_tags;
	size_t npush_tags;
	struct mlp_schedule *schedules;
	size_t nschedules;

	int64_t default_timeout_ms;
	int64_t default_kill_grace_ms;
	struct mlp_retry default_retry;
	struct mlp_k8s_settings k8s; /* kubernetes: defaults for stages */

	struct mlp_stage *stages; /* in file order */
	size_t nstages;
	size_t *order; /* a topological order of stage indices */
};

/*
 * Reads and validates a pipeline file.  On success *out is the pipeline
 * (free with mlp_pipeline_free()) and diags is empty.  On failure returns
 * MLP_EINVAL with every problem in diags (sorted by position), or MLP_EIO /
 * MLP_ENOTFOUND with a message set when the file cannot be read.
 */
int mlp_pipeline_load(struct mlp_pipeline **out, struct mlp_diags *diags, const char *path);

/* The same for text already in memory; path is used for messages and to
 * find the directory. */
int mlp_pipeline_parse(struct mlp_pipeline **out, struct mlp_diags *diags, const char *path,
                       const char *text, size_t len);

void mlp_pipeline_free(struct mlp_pipeline *p);
/* Frees what a kubernetes: block holds (kubernetes.c). */
void mlp_k8s_settings_free(struct mlp_k8s_settings *k);

/* The index of the named stage, or -1. */
ssize_t mlp_pipeline_find_stage(const struct mlp_pipeline *p, const char *name);

/* Whether s is a valid stage name: letters, digits, '_' and '-', starting
 * with a letter or '_' (what a pipeline file may name a stage). */
bool mlp_pipeline_stage_name_valid(const char *s);

/* True when stage `ancestor` is reachable from stage `index` through needs. */
bool mlp_pipeline_depends_on(const struct mlp_pipeline *p, size_t index, size_t ancestor);

#endif
