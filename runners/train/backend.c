/*
 * backend.c - the table of compute backends this build has, and --device.
 *
 * A GPU backend joins by adding its ops to the table under its build
 * condition (MLP_TRAIN_CUDA, set by Makefile.am when the CUDA backend is
 * compiled); nothing else in mlpipe-train names a particular backend.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "base/error.h"
#ifdef MLP_TRAIN_CUDA
#include "gpu.h"
#endif
#include "base/util.h"

#ifdef MLP_TRAIN_CUDA
extern const struct mlp_train_backend_ops mlp_train_backend_cuda;
#endif

/* In preference order for "auto". */
static const struct mlp_train_backend_ops *const backends[] = {
#ifdef MLP_TRAIN_CUDA
        &mlp_train_backend_cuda,
#endif
        &mlp_train_backend_cpu,
};

int mlp_train_backend_select(const struct mlp_train_backend_ops **out, const char *device)
{
	bool is_auto = strcmp(device, "auto") == 0;

	for (size_t i = 0; i < MLP_ARRAY_SIZE(backends); i++) {
		const struct mlp_train_backend_ops *ops = backends[i];

		if (!is_auto && strcmp(device, ops->name) != 0)
			continue;
		if (ops->available && !ops->available()) {
			if (is_auto)
				continue;
#ifdef MLP_TRAIN_CUDA
			if (ops == &mlp_train_backend_cuda) {
				int gpu, rc = mlp_gpu_pick_device(&gpu);
				char *why = xstrdup(
				        rc != 0 ? mlp_error_last()
				                : "LOCAL_WORLD_SIZE is larger than the number "
				                  "of visible GPUs");

				mlp_error_set("--device cuda: %s", why);
				free(why);
				return MLP_EINVAL;
			}
#endif
			mlp_error_set("--device %s: no usable %s device on this machine", device,
			              ops->name);
			return MLP_EINVAL;
		}
		*out = ops;
		return 0;
	}
	if (strcmp(device, "cuda") == 0)
		mlp_error_set("--device cuda: this mlpipe-train was built without its CUDA "
		              "backend (use --device cpu or auto)");
	else
		mlp_error_set("--device wants cpu, cuda or auto, not '%s'", device);
	return MLP_EINVAL;
}
