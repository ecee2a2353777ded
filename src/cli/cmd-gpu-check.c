/*
 * cmd-gpu-check.c - `mlpipe gpu-check`: the GPU and NCCL preflight check,
 * by hand or as a pipeline stage (`run: mlpipe gpu-check --expect-gpus 8`).
 *
 * The check itself lives in mlpipe-train (runners/train/gpu-check.c), the
 * one program linked with CUDA and NCCL; this command finds it -- next to
 * the running mlpipe, else on PATH -- and replaces itself with
 * `mlpipe-train gpu-check ARGS...`, so that its output and exit status are
 * the check's: 0 passed, 1 failed (no GPU, fewer than expected, a
 * collective that did not complete, or a build without CUDA), 2 bad options.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cmd.h"
#include "base/exec.h"
#include "base/util.h"

static char *find_trainer(const char *self_exe)
{
	char *dir = mlp_dirname(self_exe);
	char *beside = xasprintf("%s/mlpipe-train", dir);
	char *found = NULL;

	free(dir);
	if (access(beside, X_OK) == 0)
		return beside;
	free(beside);
	if (mlp_exec_find(&found, "mlpipe-train") != 0)
		return NULL;
	return found;
}

static int gpu_check_exec(int argc, char **argv)
{
	char *self = mlp_cmd_self_exe();
	char *trainer;
	char **args;

	for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			mlp_cmd_print_help(&mlp_cmd_gpu_check, stdout);
			free(self);
			return MLP_EXIT_OK;
		}
	}
	trainer = find_trainer(self);
	if (trainer == NULL) {
		mlp_cmd_error("gpu-check: mlpipe-train is neither next to %s nor on PATH", self);
		free(self);
		return MLP_EXIT_FAILED;
	}
	free(self);
	args = xcalloc((size_t)argc + 2, sizeof(*args));
	args[0] = trainer;
	args[1] = "gpu-check";
	for (int i = 1; i < argc; i++)
		args[i + 1] = argv[i];
	fflush(stdout);
	fflush(stderr);
	execv(trainer, args);
	mlp_cmd_error("gpu-check: cannot run %s: %s", trainer, strerror(errno));
	free(args);
	free(trainer);
	return MLP_EXIT_FAILED;
}

const struct mlp_cmd mlp_cmd_gpu_check = {
        .name = "gpu-check",
        .args = "[--expect-gpus N] [--max-bytes B] [--iters N] [--timeout DUR]",
        .summary = "Check this node's GPUs and NCCL: devices, then an all-reduce sweep.",
        .help = "Lists the visible GPUs (name, memory, compute capability, PCI id) with\n"
                "the driver, CUDA runtime and NCCL versions, then all-reduces buffers\n"
                "from 8 bytes to --max-bytes across all of them with NCCL and prints,\n"
                "per size, the time and the bandwidths as nccl-tests define them:\n"
                "algbw = bytes / time, busbw = algbw * 2(n-1)/n for n GPUs.  Ends with\n"
                "\"all-reduce over N GPUs: ok\".  Runs mlpipe-train gpu-check (next to\n"
                "mlpipe, else on PATH); usable as a pipeline stage before training.\n\n"
                "Options:\n"
                "  --expect-gpus N   fail unless at least N GPUs are visible (default 1)\n"
                "  --max-bytes B     largest all-reduce: 4096, 64K, 64M, 1G (default 64M)\n"
                "  --iters N         timed all-reduces per size (default 20)\n"
                "  --timeout DUR     a collective not done by then is aborted and the\n"
                "                    check fails (default 30s)\n\n"
                "Exit code: 0 passed, 1 failed (no GPU, fewer than expected, NCCL did\n"
                "not complete, or mlpipe-train was built without CUDA), 2 bad options.\n",
        .exec = gpu_check_exec,
};
