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
	int expect_gpus;     /* fail when fewer are visible; 0: at least 1 */
	long long max_bytes; /* largest all-reduce in the sweep */
	int iters;           /* timed iterations per size */
	int timeout_ms;      /* per collective, then ncclCommAbort */
};

/* Lists the devices and runs the NCCL all-reduce sweep, printing a table
 * like nccl-tests' (size, time, algbw, busbw).  Returns 0, or MLP_EIO with
 * the message set. */
int mlp_gpu_check(const struct mlp_gpu_check_opts *opts);

/*
 * The device this rank uses (gpu-util.c): 0 when CUDA_VISIBLE_DEVICES names
 * a single device (the launcher gave each rank its own), else LOCAL_RANK.
 * Returns 0, MLP_EIO when no GPU is usable (with mlp_gpu_count's reason) or
 * MLP_EINVAL for "LOCAL_RANK 1 but only 1 GPU visible".
 */
int mlp_gpu_pick_device(int *out);

/* Whether every local rank can have a GPU of its own, so that --device
 * auto picks the GPU on all of them or on none: mlp_gpu_pick_device
 * succeeds and LOCAL_WORLD_SIZE (default 1) GPUs are visible, or the
 * launcher gave each rank one through CUDA_VISIBLE_DEVICES. */
int mlp_gpu_usable_by_all_local_ranks(void);

/* cuBLAS sgemm throughput in FP32 (no TF32), size x size x size, timed
 * over iters calls after warm-up: the reference peak for bench/gpu.
 * Prints one line; returns 0 or MLP_EIO. */
int mlp_gpu_gemm_peak(double *out_tflops, int size, int iters);

/* mlpipe-train's GPU commands (gpu-cmd.c, in every build): argv[0] is
 * "gpu-check", "gpu-count" or "gemm-peak".  Returns the exit status, or -1
 * when argv[0] is none of them. */
int mlp_train_gpu_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif

#endif
