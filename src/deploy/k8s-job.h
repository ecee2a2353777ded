/*
 * k8s-job.h - one stage attempt as a gang of pods on Kubernetes.
 *
 * The objects (k8s-job-manifest.c): a Secret that owns everything else
 * (the stage's env values and shell script live in it), a headless
 * Service (publishNotReadyAddresses) that gives every pod a DNS name, and
 * the pods' Job: one Indexed Job on API servers >= 1.24, else one
 * single-pod Job per node with a fixed hostname, as JobSet does.  Every
 * pod runs the in-pod helper mlpipe-pod (copied from the helper image by
 * an init container into an emptyDir at /mlpipe), which runs the node's
 * ranks with torchrun's environment contract and, on node 0, serves the
 * results ($MLPIPE_OUTPUT, $MLPIPE_METRICS, the model) on a pod port.
 *
 * The life (k8s-job.c): sweep what dead attempts of this store left,
 * create, wait for the whole gang to run (or Kueue's admission), stream
 * every pod's log, watch for the first failure, fetch the results through
 * the API server's pods/proxy, then delete everything and wait until the
 * pods are gone.  docs/kubernetes.md is the user's side of it.
 */
#ifndef MLP_K8S_JOB_H
#define MLP_K8S_JOB_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "base/util.h"
#include "pipeline/pipeline.h"

struct mlp_k8s;
struct mlp_k8s_options;
struct mlp_json;

#define MLP_K8S_MASTER_PORT 29500
#define MLP_K8S_RESULTS_PORT 8476
#define MLP_K8S_DEFAULT_START_TIMEOUT_MS (10 * 60 * 1000)
/* activeDeadlineSeconds when the stage has no timeout. */
#define MLP_K8S_DEFAULT_DEADLINE_S (24 * 3600)

/* How the pods' Job is made. */
enum mlp_k8s_job_mode {
	MLP_K8S_JOB_INDEXED,  /* one Indexed Job (API server >= 1.24) */
	MLP_K8S_JOB_PER_NODE, /* one single-pod Job per node (older servers) */
};

/* Everything one attempt's objects are made from, resolved. */
struct mlp_k8s_job_spec {
	const struct mlp_k8s_settings *k8s; /* the stage's merged settings */
	const char *namespace_;             /* resolved: settings, else the context's */
	const char *image;                  /* expressions resolved */
	const char *helper_image;           /* NULL: mlpipe/mlpipe:VERSION */
	const char *store_id;               /* which mlpipe store owns the objects */
	int64_t run_id;
	const char *stage;
	int attempt;
	const char *commit; /* the run's commit (checkout), may be NULL */

	int nodes;
	int ranks;         /* per pod */
	int gpus_per_node; /* also the default nvidia.com/gpu request */
	bool once;         /* run the command once per pod (torchrun, run stages) */
	int64_t stall_timeout_ms;
	int64_t grace_ms;    /* the pods' terminationGracePeriod */
	int64_t deadline_ms; /* activeDeadlineSeconds; 0: the default */

	char *const *argv;            /* the container's command (after mlpipe-pod run --) */
	const char *script;           /* a shell script, run as /bin/sh SCRIPT; or NULL */
	const struct mlp_kvlist *env; /* NAME=value for the pods (kept in the Secret) */
	const char *model_path;       /* in the pod, relative to its workdir; may be NULL */
};

/* The objects' base name: mlp-RUN-STAGE-ATTEMPT as a DNS label short
 * enough for the pods' hostnames (BASE-N).  The caller frees it. */
char *mlp_k8s_job_base_name(int64_t run_id, const char *stage, int attempt);

/*
 * The manifests, in creation order: [0] the Secret, [1] the Service, then
 * the Job(s).  ownerReferences to the Secret are added at create time
 * (they need its uid).  *out is an array of n objects; free each with
 * mlp_json_free and the array with free().
 */
void mlp_k8s_job_manifests(struct mlp_json ***out, size_t *n, const struct mlp_k8s_job_spec *spec,
                           enum mlp_k8s_job_mode mode);

/* What became of the attempt. */
struct mlp_k8s_job_result {
	bool ok;
	int exit_code; /* the root cause's exit code, or 1 */
	char reason[1024];
};

/* Where the results go on this machine. */
struct mlp_k8s_job_io {
	const char *output_path;           /* $MLPIPE_OUTPUT; may be NULL */
	const char *metrics_path;          /* $MLPIPE_METRICS; may be NULL */
	const char *model_dest;            /* the model file; may be NULL */
	FILE *log;                         /* the pods' lines and progress */
	const volatile sig_atomic_t *stop; /* set by SIGTERM / SIGINT: cancel */
};

/*
 * Runs one attempt to its end on the cluster k talks to (the log and
 * results threads open their own clients with kopt).  Returns 0 with
 * *out filled (ok or not), or a negative code with a message when the
 * attempt could not be tried (RBAC forbids, the server dropped a field,
 * the objects could not be created).  Whatever it created is deleted,
 * and it returns only once the pods are gone (or after the grace period
 * and a bounded wait).
 */
int mlp_k8s_job_run(struct mlp_k8s_job_result *out, struct mlp_k8s *k,
                    const struct mlp_k8s_options *kopt, const struct mlp_k8s_job_spec *spec,
                    const struct mlp_k8s_job_io *io);

/*
 * Deletes what attempts of store_id left in namespace ns whose runs are
 * over (is_over says so for a run id).  Returns the number swept, or a
 * negative code.  Quiet unless something was swept (one line each on log).
 */
int mlp_k8s_job_sweep(struct mlp_k8s *k, const char *ns, const char *store_id,
                      bool (*is_over)(int64_t run_id, void *payload), void *payload, FILE *log);

#endif
