/*
 * backend.h - where mlpipe-train's arithmetic happens: the interface a
 * compute backend (CPU with BLAS here; CUDA with cuBLAS later) implements.
 *
 * The training loop (train.c) owns data, sampling, collectives and files;
 * a backend owns the parameters, the gradient and the optimizer state in
 * its own memory, in the flat layout of model.h.  Inputs arrive as host
 * arrays (a device backend copies them); the gradient stays where the
 * backend keeps it, and grad_on_device says whether that is device memory
 * (so that a device collective such as NCCL can average it in place).
 *
 * Semantics every backend must match, so that results do not depend on the
 * device beyond float rounding:
 *   - layers: z = a W^T + b; ReLU after every layer but the last;
 *   - loss: softmax cross-entropy on the last layer's outputs;
 *   - train_batch leaves in the gradient the MEAN over its n samples (what
 *     PyTorch's reduction="mean" gives), and reports the SUM of per-sample
 *     losses and the number of correct arg-max predictions;
 *   - sgd_step is torch.optim.SGD (dampening 0, no Nesterov): g = grad +
 *     wd * p; buf = g on the first step, else buf = momentum * buf + g;
 *     p -= lr * buf (no buffer at all when momentum is 0).
 */
#ifndef MLP_TRAIN_BACKEND_H
#define MLP_TRAIN_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "model.h"

struct mlp_batch_stats {
	double loss_sum; /* sum of per-sample losses */
	double correct;  /* samples predicted right */
};

struct mlp_sgd {
	float lr;
	float momentum;
	float weight_decay;
};

struct mlp_train_backend;

struct mlp_train_backend_ops {
	const char *name;    /* "cpu", "cuda": what --device names */
	bool grad_on_device; /* grad() points into device memory */

	/* Whether this machine can run the backend (a GPU is there). */
	bool (*available)(void);
	/* A backend for shape that accepts batches of up to max_batch samples;
	 * the parameters are zero until set_params.  0 or a negative MLP_E*
	 * with a message. */
	int (*create)(struct mlp_train_backend **out, const struct mlp_shape *shape, int max_batch);
	/* Accepts NULL. */
	void (*destroy)(struct mlp_train_backend *b);

	/* Copies host params (mlp_shape_nparams floats) in, and forgets the
	 * optimizer state; or copies the current ones out. */
	int (*set_params)(struct mlp_train_backend *b, const float *params);
	int (*get_params)(struct mlp_train_backend *b, float *params);

	/* Forward and backward over n (1..max_batch) samples: x is n rows of
	 * sizes[0] floats, y n labels below the class count.  Fills the
	 * gradient (the mean over the n samples) and adds to *stats. */
	int (*train_batch)(struct mlp_train_backend *b, const float *x, const int32_t *y, int n,
	                   struct mlp_batch_stats *stats);
	/* The flat gradient (mlp_shape_nparams floats) that train_batch filled
	 * and sgd_step consumes; a collective may average it in place between
	 * the two. */
	float *(*grad)(struct mlp_train_backend *b);
	/* One optimizer step with the gradient as it is now. */
	int (*sgd_step)(struct mlp_train_backend *b, const struct mlp_sgd *opt);

	/* Forward only over n samples: adds to *stats and, when pred is not
	 * NULL, writes each sample's predicted class (host memory). */
	int (*predict)(struct mlp_train_backend *b, const float *x, const int32_t *y, int n,
	               int32_t *pred, struct mlp_batch_stats *stats);
};

/* Every backend starts with this, so that b->ops works on any of them. */
struct mlp_train_backend {
	const struct mlp_train_backend_ops *ops;
};

extern const struct mlp_train_backend_ops mlp_train_backend_cpu;
/* Only in builds with CUDA (backend-cuda.c; MLP_TRAIN_CUDA is then defined). */
extern const struct mlp_train_backend_ops mlp_train_backend_cuda;

/*
 * The backend for a --device value: "cpu", "cuda" (when built with it), or
 * "auto" (a GPU backend when built and a device is there, else the CPU).
 * Returns 0 or MLP_EINVAL with a message naming what this build offers.
 */
int mlp_train_backend_select(const struct mlp_train_backend_ops **out, const char *device);

#endif
