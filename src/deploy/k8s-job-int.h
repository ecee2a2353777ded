/*
 * k8s-job-int.h - what the files of the Kubernetes executor share
 * (k8s-job.c: the attempt's life; k8s-job-pods.c: following pods, their
 * logs and rank 0's results); never included outside src/deploy/k8s-job*.c.
 */
#ifndef MLP_K8S_JOB_INT_H
#define MLP_K8S_JOB_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "deploy/k8s-job.h"
#include "deploy/k8s.h"

struct gang;

/* A thread that streams one pod's log into the stage log, reconnecting
 * from the last timestamp until the container has ended. */
struct follower {
	pthread_t thread;
	bool started;
	struct gang *g;
	char *pod;
	volatile int terminated; /* the main loop saw the container end */
	volatile int stop;       /* give up now */
	volatile int done;       /* the thread has finished */
	int64_t last_s;          /* the last line's timestamp */
	long last_ns;
	long same;      /* lines written with that timestamp */
	long skip_same; /* of those, still to skip in a resumed stream */
	long lines;
};

/* One pod of the gang, as last listed. */
struct pod {
	char *name;
	int node;
	bool started;    /* the main container runs or ran */
	bool terminated; /* the main container ended */
	bool failed;     /* ... not with 0, or the pod failed */
	int exit_code;
	int64_t finished_s; /* when it ended, for the first failure */
	char *why;          /* a failure, in words */
	char *waiting;      /* why it is not running yet */
	char *failed_init;  /* the init container that failed, if one did */
	struct follower log;
};

/* The results thread: long-polls rank 0's /status through pods/proxy. */
struct results {
	pthread_t thread;
	bool started;
	struct gang *g;
	char *pod;
	volatile int stop;
	volatile int done;       /* the thread has finished */
	struct mlp_json *status; /* the final answer (state done); owned */
	char error[256];
};

struct gang {
	struct mlp_k8s *k;
	const struct mlp_k8s_options *kopt; /* for the threads' own clients */
	const struct mlp_k8s_job_spec *spec;
	const struct mlp_k8s_job_io *io;
	char *base;
	const char *ns;
	pthread_mutex_t out_lock; /* lines to io->log */
	struct pod **pods;
	size_t npods, cpods;
	struct results results;
};

/* Writes one line to the stage log (whole, under the lock). */
void gang_print(struct gang *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Starts the follower of p if it has none; stops and joins every thread
 * (waiting at most until deadline_ms for the logs to end by themselves). */
void gang_follow(struct gang *g, struct pod *p);
void gang_join_followers(struct gang *g, int64_t deadline_ms);

/* Starts the results thread on node 0's pod; joins it. */
void gang_results_start(struct gang *g, const char *pod);
void gang_results_join(struct gang *g);

/* Downloads rank 0's result files to where io says (sha256 checked) and
 * tells the pod it may go. */
int gang_fetch_results(struct gang *g);

#endif
