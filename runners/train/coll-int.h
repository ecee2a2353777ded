/*
 * coll-int.h - what the collective backends share (never included outside
 * runners/train/coll*.c).
 */
#ifndef MLP_COLL_INT_H
#define MLP_COLL_INT_H

#include <stdbool.h>

#include "coll.h"
#include "rdzv.h"

enum coll_dtype { COLL_F32_AVG, COLL_F64_SUM };

struct coll_ops {
	const char *name;
	int (*allreduce)(struct mlp_coll *c, void *buf, size_t n, enum coll_dtype t);
	int (*broadcast)(struct mlp_coll *c, void *buf, size_t bytes, int root);
	int (*barrier)(struct mlp_coll *c);
	void (*close)(struct mlp_coll *c);
};

struct mlp_coll {
	const struct coll_ops *ops;
	int rank;
	int world;
	int timeout_ms;
	bool failed;
	struct rdzv_table table; /* who is where, from the rendezvous */
	void *impl;              /* the backend's state */
};

int coll_shm_open(struct mlp_coll *c, const struct mlp_coll_opts *o);
int coll_tcp_open(struct mlp_coll *c, const struct mlp_coll_opts *o, int listen_fd);
/* coll-nccl.c, only in mlpipe-train built with CUDA and NCCL (coll.c holds a
 * weak reference: NULL elsewhere).  Joins the rendezvous itself; on failure
 * leaves c->table to the caller and c->impl NULL. */
int coll_nccl_open(struct mlp_coll *c, const struct mlp_coll_opts *o);

/* Bytes per element of a type. */
static inline size_t coll_elem_size(enum coll_dtype t)
{
	return t == COLL_F32_AVG ? 4 : 8;
}

#endif
