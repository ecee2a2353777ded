/*
 * status.c - the names of run and stage statuses (see status.h).
 */
#include "config.h"

#include <string.h>

#include "base/error.h"
#include "base/status.h"
#include "base/util.h"

static const char *const status_names[] = {
        [MLP_STATUS_QUEUED] = "queued",           [MLP_STATUS_RUNNING] = "running",
        [MLP_STATUS_SUCCEEDED] = "succeeded",     [MLP_STATUS_FAILED] = "failed",
        [MLP_STATUS_SKIPPED] = "skipped",         [MLP_STATUS_CANCELLED] = "cancelled",
        [MLP_STATUS_INTERRUPTED] = "interrupted",
};

const char *mlp_status_name(enum mlp_status s)
{
	return (size_t)s < MLP_ARRAY_SIZE(status_names) ? status_names[s] : "unknown";
}

int mlp_status_parse(enum mlp_status *out, const char *name)
{
	for (size_t i = 0; i < MLP_ARRAY_SIZE(status_names); i++) {
		if (strcmp(status_names[i], name) == 0) {
			*out = (enum mlp_status)i;
			return 0;
		}
	}
	return MLP_EINVAL;
}
