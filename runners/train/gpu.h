/*
 * gpu.h - what mlpipe-train knows about GPUs: discovery, and the NCCL
 * preflight check (`mlpipe-train gpu-check`, also `mlpipe gpu-check`).
 *
 * Host code calling the CUDA runtime and NCCL is plain C; only kernels go
 * through nvcc (kernels.cu).  Everything here exists only in builds with
 * CUDA; without it mlp_gpu_count() is 0.
 */
#ifndef MLP_GPU_H
#define MLP_GPU_H

#ifdef __cplusplus
extern "C" {
#endif

/* Visible CUDA devices; any CUDA error (no driver, no device, a driver
 * too old: "insufficient driver" is not "zero devices") counts as none.
 * why (may be NULL) gets the reason when it is 0. */
int mlp_gpu_count(const char **why);

struct mlp_gpu_check_opts {
	int expect_gpus;      /* fail when fewer are visible; 0: at least 1 */
	long long max_bytes;  /* largest all-reduce in the sweep */
	int iters;            /* timed iterations per size */
	int timeout_ms;       /* per collective, then ncclCommAbort */
};

/* Lists the devices and runs the NCCL all-reduce sweep, printing a table
 * like nccl-tests' (size, time, algbw, busbw).  Returns 0, or MLP_EIO with
 * the message set. */
int mlp_gpu_check(const struct mlp_gpu_check_opts *opts);

#ifdef __cplusplus
}
#endif

#endif
