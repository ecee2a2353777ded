/*
 * evaluate.c - `mlpipe-train evaluate MODEL --data ...`: a saved model's
 * accuracy, loss and per-class accuracy on a data set, printed and written
 * as metrics for a gate stage (train.h, docs/mlpipe-train.md).
 *
 * One process, no collectives: evaluation is cheap next to training.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "base/error.h"
#include "train.h"
#include "base/util.h"

int mlp_train_evaluate(const struct mlp_eval_opts *o)
{
	const char *metrics_path = o->metrics ? o->metrics : getenv("MLPIPE_METRICS");
	const struct mlp_train_backend_ops *ops;
	struct mlp_train_backend *be = NULL;
	struct mlp_dataset *d = NULL;
	struct mlp_metrics metrics = {0};
	struct mlp_batch_stats st = {0};
	struct mlp_shape shape;
	float *params = NULL;
	int32_t *pred = NULL;
	double *class_n = NULL, *class_ok = NULL;
	int classes, rc;

	if ((rc = mlp_train_backend_select(&ops, o->device)) != 0)
		return rc;
	if ((rc = mlp_model_load(&shape, &params, o->model)) != 0)
		return rc;
	classes = shape.sizes[shape.nsizes - 1];
	if ((rc = mlp_dataset_load(&d, &o->data, MLP_DATA_TEST)) != 0 ||
	    (rc = mlp_dataset_check_features(d, (size_t)shape.sizes[0])) != 0 ||
	    (rc = mlp_dataset_check_labels(d, classes)) != 0)
		goto done;
	if ((rc = ops->create(&be, &shape, o->batch)) != 0 ||
	    (rc = ops->set_params(be, params)) != 0)
		goto done;
	pred = xmalloc((size_t)o->batch * sizeof(*pred));
	class_n = xcalloc((size_t)classes, sizeof(double));
	class_ok = xcalloc((size_t)classes, sizeof(double));
	for (size_t i = 0; i < d->n; i += (size_t)o->batch) {
		int n = (int)(d->n - i < (size_t)o->batch ? d->n - i : (size_t)o->batch);

		if ((rc = ops->predict(be, d->x + i * d->features, d->y + i, n, pred, &st)) != 0)
			goto done;
		for (int k = 0; k < n; k++) {
			int32_t y = d->y[i + (size_t)k];

			class_n[y] += 1;
			class_ok[y] += pred[k] == y;
		}
	}

	printf("accuracy %.4f  loss %.4f  samples %zu\n", st.correct / (double)d->n,
	       st.loss_sum / (double)d->n, d->n);
	mlp_metrics_add(&metrics, "accuracy", st.correct / (double)d->n);
	mlp_metrics_add(&metrics, "loss", st.loss_sum / (double)d->n);
	mlp_metrics_add(&metrics, "samples", (double)d->n);
	for (int c = 0; c < classes; c++) {
		char name[64];

		if (class_n[c] == 0) {
			printf("  class %d: no samples\n", c);
			continue;
		}
		printf("  class %d: accuracy %.4f  (%.0f samples)\n", c, class_ok[c] / class_n[c],
		       class_n[c]);
		snprintf(name, sizeof(name), "accuracy_class_%d", c);
		mlp_metrics_add(&metrics, name, class_ok[c] / class_n[c]);
	}
	fflush(stdout);
	if (metrics_path && *metrics_path)
		rc = mlp_metrics_write(&metrics, metrics_path);
done:
	if (be)
		ops->destroy(be);
	mlp_dataset_free(d);
	mlp_metrics_free(&metrics);
	free(params);
	free(pred);
	free(class_n);
	free(class_ok);
	return rc;
}
