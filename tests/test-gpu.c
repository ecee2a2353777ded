/*
 * test-gpu.c - the CUDA backend against the CPU backend, through the
 * backend ops directly: the same seed and data give the same gradient,
 * the same SGD step, the same predictions, and after many steps the same
 * loss (1e-3 relative) and accuracy (0.5%); parameters round-trip; bad
 * batches are refused; and the rank's GPU is chosen as docs/gpu.md says.
 *
 * Without a usable GPU there is nothing to run: the binary prints
 * "1..0 # SKIP no CUDA device" and exits 0, which the TAP driver shows
 * as a skip (cmocka's skip() would count as a failure there).
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/backend.h"
#include "train/gpu.h"
#include "train/model.h"
#include "base/error.h"
#include "base/util.h"

/* A teacher problem: x uniform in [-1, 1), the label the arg-max of a
 * fixed random linear map, so that a model can learn it. */
struct problem {
	int n, features, classes;
	float *x;
	int32_t *y;
};

static void problem_make(struct problem *p, int n, int features, int classes, uint64_t seed)
{
	struct mlp_rng r;
	float *teacher = xmalloc((size_t)features * (size_t)classes * sizeof(float));

	/* one teacher per shape; seed picks the samples */
	mlp_rng_seed(&r, (uint64_t)features * 1000 + (uint64_t)classes);
	p->n = n;
	p->features = features;
	p->classes = classes;
	p->x = xmalloc((size_t)n * (size_t)features * sizeof(float));
	p->y = xmalloc((size_t)n * sizeof(int32_t));
	for (int k = 0; k < features * classes; k++)
		teacher[k] = 2 * mlp_rng_float(&r) - 1;
	mlp_rng_seed(&r, seed);
	for (int i = 0; i < n; i++) {
		float best = -INFINITY;

		for (int j = 0; j < features; j++)
			p->x[(size_t)i * features + j] = 2 * mlp_rng_float(&r) - 1;
		for (int c = 0; c < classes; c++) {
			float z = 0;

			for (int j = 0; j < features; j++)
				z += teacher[c * features + j] * p->x[(size_t)i * features + j];
			if (z > best) {
				best = z;
				p->y[i] = c;
			}
		}
	}
	free(teacher);
}

static void problem_free(struct problem *p)
{
	free(p->x);
	free(p->y);
}

static struct mlp_shape shape_of(const int *sizes, int nsizes)
{
	struct mlp_shape s = {.nsizes = nsizes};

	for (int i = 0; i < nsizes; i++)
		s.sizes[i] = sizes[i];
	return s;
}

/* Both backends for shape, holding the same seeded parameters. */
struct pair {
	struct mlp_shape shape;
	size_t nparams;
	struct mlp_train_backend *cpu, *gpu;
	float *init;
};

static void pair_open(struct pair *p, const struct mlp_shape *shape, int max_batch, uint64_t seed)
{
	p->shape = *shape;
	p->nparams = mlp_shape_nparams(shape);
	p->init = xmalloc(p->nparams * sizeof(float));
	mlp_model_init(p->init, shape, seed);
	assert_int_equal(mlp_train_backend_cpu.create(&p->cpu, shape, max_batch), 0);
	if (mlp_train_backend_cuda.create(&p->gpu, shape, max_batch) != 0)
		fail_msg("cuda create: %s", mlp_error_last());
	assert_int_equal(p->cpu->ops->set_params(p->cpu, p->init), 0);
	assert_int_equal(p->gpu->ops->set_params(p->gpu, p->init), 0);
}

static void pair_close(struct pair *p)
{
	mlp_train_backend_cpu.destroy(p->cpu);
	mlp_train_backend_cuda.destroy(p->gpu);
	free(p->init);
}

static float *device_to_host(const float *dev, size_t n)
{
	float *h = xmalloc(n * sizeof(float));

	assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
	assert_int_equal(cudaMemcpy(h, dev, n * sizeof(float), cudaMemcpyDeviceToHost),
	                 cudaSuccess);
	return h;
}

/* max |a - b| / max(1, max |a|) */
static double rel_max_diff(const float *a, const float *b, size_t n)
{
	double d = 0, scale = 1;

	for (size_t i = 0; i < n; i++) {
		if (fabs((double)a[i] - b[i]) > d)
			d = fabs((double)a[i] - b[i]);
		if (fabs((double)a[i]) > scale)
			scale = fabs((double)a[i]);
	}
	return d / scale;
}

static double max_abs_diff(const float *a, const float *b, size_t n)
{
	double d = 0;

	for (size_t i = 0; i < n; i++)
		if (fabs((double)a[i] - b[i]) > d)
			d = fabs((double)a[i] - b[i]);
	return d;
}

static double max_abs(const float *a, size_t n)
{
	double m = 0;

	for (size_t i = 0; i < n; i++)
		if (fabs((double)a[i]) > m)
			m = fabs((double)a[i]);
	return m;
}

static void params_of(struct mlp_train_backend *b, float *out)
{
	assert_int_equal(b->ops->get_params(b, out), 0);
}

static void test_gpu__backend_is_selected(void **state)
{
	const struct mlp_train_backend_ops *ops = NULL;

	(void)state;
	assert_int_equal(mlp_train_backend_select(&ops, "cuda"), 0);
	assert_string_equal(ops->name, "cuda");
	assert_true(ops->grad_on_device);
	assert_int_equal(mlp_train_backend_select(&ops, "auto"), 0);
	assert_string_equal(ops->name, "cuda");
	assert_int_equal(mlp_train_backend_select(&ops, "cpu"), 0);
	assert_string_equal(ops->name, "cpu");
}

static void test_gpu__params_round_trip(void **state)
{
	int sizes[] = {13, 7, 4};
	struct mlp_shape shape = shape_of(sizes, 3);
	size_t n = mlp_shape_nparams(&shape);
	struct mlp_train_backend *b = NULL;
	float *in = xmalloc(n * sizeof(float)), *out = xmalloc(n * sizeof(float));

	(void)state;
	assert_int_equal(mlp_train_backend_cuda.create(&b, &shape, 16), 0);
	params_of(b, out);
	assert_true(max_abs(out, n) == 0.0); /* zero until set_params */
	mlp_model_init(in, &shape, 9);
	assert_int_equal(b->ops->set_params(b, in), 0);
	params_of(b, out);
	assert_memory_equal(in, out, n * sizeof(float));
	mlp_train_backend_cuda.destroy(b);
	mlp_train_backend_cuda.destroy(NULL);
	free(in);
	free(out);
}

static void test_gpu__refuses_bad_batches(void **state)
{
	int sizes[] = {4, 3};
	struct mlp_shape shape = shape_of(sizes, 2);
	struct mlp_train_backend *b = NULL;
	struct mlp_batch_stats st = {0};
	float x[4 * 9] = {0};
	int32_t y[9] = {0};

	(void)state;
	assert_int_equal(mlp_train_backend_cuda.create(&b, &shape, 8), 0);
	assert_int_equal(b->ops->train_batch(b, x, y, 9, &st), MLP_EINVAL);
	assert_non_null(strstr(mlp_error_last(), "1 to 8"));
	assert_int_equal(b->ops->train_batch(b, x, y, 0, &st), MLP_EINVAL);
	assert_int_equal(b->ops->predict(b, x, y, 9, NULL, &st), MLP_EINVAL);
	mlp_train_backend_cuda.destroy(b);
	assert_int_equal(mlp_train_backend_cuda.create(&b, &shape, 0), MLP_EINVAL);
}

/* One batch from the same parameters: the same loss, accuracy and
 * gradient up to float rounding. */
static void test_gpu__gradient_matches_cpu(void **state)
{
	int sizes[] = {784, 256, 64, 10};
	struct mlp_shape shape = shape_of(sizes, 4);
	struct problem pb;
	struct pair p;
	struct mlp_batch_stats sc = {0}, sg = {0};
	float *gg;
	double diff;

	(void)state;
	problem_make(&pb, 100, 784, 10, 5);
	pair_open(&p, &shape, 128, 11);
	assert_int_equal(p.cpu->ops->train_batch(p.cpu, pb.x, pb.y, pb.n, &sc), 0);
	assert_int_equal(p.gpu->ops->train_batch(p.gpu, pb.x, pb.y, pb.n, &sg), 0);
	assert_true(fabs(sc.loss_sum - sg.loss_sum) <= 1e-5 * fabs(sc.loss_sum));
	assert_true(fabs(sc.correct - sg.correct) <= 1);
	gg = device_to_host(p.gpu->ops->grad(p.gpu), p.nparams);
	diff = max_abs_diff(p.cpu->ops->grad(p.cpu), gg, p.nparams) /
	       max_abs(p.cpu->ops->grad(p.cpu), p.nparams);
	print_message("# gradient: max diff %.3g of the largest component\n", diff);
	assert_true(max_abs(gg, p.nparams) > 0);
	assert_true(diff <= 1e-4);
	/* stats are added, not overwritten; the same batch buffer twice in a
	 * row is page-locked and uploaded from directly: the same gradient */
	for (int again = 2; again <= 3; again++) {
		assert_int_equal(p.gpu->ops->train_batch(p.gpu, pb.x, pb.y, pb.n, &sg), 0);
		assert_true(fabs(sg.loss_sum - again * sc.loss_sum) <= 1e-5 * fabs(sc.loss_sum));
		free(gg);
		gg = device_to_host(p.gpu->ops->grad(p.gpu), p.nparams);
		assert_true(max_abs_diff(p.cpu->ops->grad(p.cpu), gg, p.nparams) <=
		            1e-4 * max_abs(p.cpu->ops->grad(p.cpu), p.nparams));
	}
	/* a smaller batch from the same buffer */
	assert_int_equal(p.cpu->ops->train_batch(p.cpu, pb.x, pb.y, 50, &sc), 0);
	assert_int_equal(p.gpu->ops->train_batch(p.gpu, pb.x, pb.y, 50, &sg), 0);
	free(gg);
	gg = device_to_host(p.gpu->ops->grad(p.gpu), p.nparams);
	assert_true(max_abs_diff(p.cpu->ops->grad(p.cpu), gg, p.nparams) <=
	            1e-4 * max_abs(p.cpu->ops->grad(p.cpu), p.nparams));
	free(gg);
	pair_close(&p);
	problem_free(&pb);
}

/* The SGD step from the same gradient: torch.optim.SGD's update, with and
 * without momentum and weight decay, the first step and later ones. */
static void test_gpu__sgd_matches_cpu(void **state)
{
	static const struct mlp_sgd opts[] = {
	        {0.1f, 0.0f, 0.0f},
	        {0.1f, 0.0f, 0.01f},
	        {0.05f, 0.9f, 0.0f},
	        {0.05f, 0.9f, 1e-3f},
	};
	int sizes[] = {31, 17, 5};
	struct mlp_shape shape = shape_of(sizes, 3);
	struct mlp_rng r;

	(void)state;
	mlp_rng_seed(&r, 77);
	for (size_t k = 0; k < MLP_ARRAY_SIZE(opts); k++) {
		struct pair p;
		float *g, *pc, *pg;

		pair_open(&p, &shape, 8, 3 + k);
		g = xmalloc(p.nparams * sizeof(float));
		pc = xmalloc(p.nparams * sizeof(float));
		for (int step = 0; step < 3; step++) {
			for (size_t i = 0; i < p.nparams; i++)
				g[i] = 2 * mlp_rng_float(&r) - 1;
			memcpy(p.cpu->ops->grad(p.cpu), g, p.nparams * sizeof(float));
			assert_int_equal(cudaMemcpy(p.gpu->ops->grad(p.gpu), g,
			                            p.nparams * sizeof(float),
			                            cudaMemcpyHostToDevice),
			                 cudaSuccess);
			assert_int_equal(p.cpu->ops->sgd_step(p.cpu, &opts[k]), 0);
			assert_int_equal(p.gpu->ops->sgd_step(p.gpu, &opts[k]), 0);
		}
		params_of(p.cpu, pc);
		pg = xmalloc(p.nparams * sizeof(float));
		params_of(p.gpu, pg);
		print_message("# sgd lr %g momentum %g wd %g: max diff %.3g\n", opts[k].lr,
		              opts[k].momentum, opts[k].weight_decay,
		              rel_max_diff(pc, pg, p.nparams));
		assert_true(rel_max_diff(pc, pg, p.nparams) <= 1e-6);
		/* set_params forgets the momentum: the next step starts it again */
		assert_int_equal(p.cpu->ops->set_params(p.cpu, p.init), 0);
		assert_int_equal(p.gpu->ops->set_params(p.gpu, p.init), 0);
		memcpy(p.cpu->ops->grad(p.cpu), g, p.nparams * sizeof(float));
		assert_int_equal(cudaMemcpy(p.gpu->ops->grad(p.gpu), g, p.nparams * sizeof(float),
		                            cudaMemcpyHostToDevice),
		                 cudaSuccess);
		assert_int_equal(p.cpu->ops->sgd_step(p.cpu, &opts[k]), 0);
		assert_int_equal(p.gpu->ops->sgd_step(p.gpu, &opts[k]), 0);
		params_of(p.cpu, pc);
		params_of(p.gpu, pg);
		assert_true(rel_max_diff(pc, pg, p.nparams) <= 1e-6);
		free(g);
		free(pc);
		free(pg);
		pair_close(&p);
	}
}

/* N steps of training on both: loss within 1e-3 relative, accuracy within
 * 0.5%, parameters close; then the same predictions on held-out data. */
static void train_both(const int *sizes, int nsizes, int batch, int steps, float lr, float momentum,
                       float wd)
{
	struct mlp_shape shape = shape_of(sizes, nsizes);
	int classes = sizes[nsizes - 1];
	struct mlp_sgd sgd = {lr, momentum, wd};
	struct problem train, test;
	struct mlp_batch_stats sc = {0}, sg = {0}, tc = {0}, tg = {0};
	struct pair p;
	float *pc, *pg;
	int32_t *pred_c, *pred_g;
	int mismatched = 0;
	double rel_loss, acc_c, acc_g;

	problem_make(&train, batch * 16, sizes[0], classes, 21);
	problem_make(&test, 1000, sizes[0], classes, 22);
	pair_open(&p, &shape, batch > 1000 ? batch : 1000, 1);
	for (int s = 0; s < steps; s++) {
		int off = (s % 16) * batch;

		assert_int_equal(p.cpu->ops->train_batch(p.cpu, train.x + (size_t)off * sizes[0],
		                                         train.y + off, batch, &sc),
		                 0);
		assert_int_equal(p.gpu->ops->train_batch(p.gpu, train.x + (size_t)off * sizes[0],
		                                         train.y + off, batch, &sg),
		                 0);
		assert_int_equal(p.cpu->ops->sgd_step(p.cpu, &sgd), 0);
		assert_int_equal(p.gpu->ops->sgd_step(p.gpu, &sgd), 0);
	}
	rel_loss = fabs(sc.loss_sum - sg.loss_sum) / fabs(sc.loss_sum);
	acc_c = sc.correct / ((double)steps * batch);
	acc_g = sg.correct / ((double)steps * batch);
	pc = xmalloc(p.nparams * sizeof(float));
	pg = xmalloc(p.nparams * sizeof(float));
	params_of(p.cpu, pc);
	params_of(p.gpu, pg);
	print_message("# %d steps of %d: loss %.6f vs %.6f (rel %.2g), accuracy %.4f vs %.4f, "
	              "params max diff %.3g\n",
	              steps, batch, sc.loss_sum / (steps * batch), sg.loss_sum / (steps * batch),
	              rel_loss, acc_c, acc_g, rel_max_diff(pc, pg, p.nparams));
	assert_true(rel_loss <= 1e-3);
	assert_true(fabs(acc_c - acc_g) <= 0.005);
	assert_true(rel_max_diff(pc, pg, p.nparams) <= 1e-3);
	assert_true(acc_c > 1.5 / classes); /* it learned something */

	pred_c = xmalloc(1000 * sizeof(int32_t));
	pred_g = xmalloc(1000 * sizeof(int32_t));
	assert_int_equal(p.cpu->ops->predict(p.cpu, test.x, test.y, 1000, pred_c, &tc), 0);
	assert_int_equal(p.gpu->ops->predict(p.gpu, test.x, test.y, 1000, pred_g, &tg), 0);
	for (int i = 0; i < 1000; i++)
		mismatched += pred_c[i] != pred_g[i];
	print_message("# predict: accuracy %.4f vs %.4f, %d of 1000 predictions differ\n",
	              tc.correct / 1000, tg.correct / 1000, mismatched);
	assert_true(mismatched <= 5);
	assert_true(fabs(tc.correct - tg.correct) <= 5);
	assert_true(fabs(tc.loss_sum - tg.loss_sum) <= 1e-3 * fabs(tc.loss_sum));
	/* predict without pred still counts */
	memset(&tg, 0, sizeof(tg));
	assert_int_equal(p.gpu->ops->predict(p.gpu, test.x, test.y, 1000, NULL, &tg), 0);
	assert_true(fabs(tc.correct - tg.correct) <= 5);

	free(pred_c);
	free(pred_g);
	free(pc);
	free(pg);
	pair_close(&p);
	problem_free(&train);
	problem_free(&test);
}

static void test_gpu__training_matches_cpu_small(void **state)
{
	int sizes[] = {20, 32, 16, 5};

	(void)state;
	train_both(sizes, 4, 32, 200, 0.05f, 0.9f, 1e-4f);
}

static void test_gpu__training_matches_cpu_mnist_shape(void **state)
{
	int sizes[] = {784, 256, 10};

	(void)state;
	train_both(sizes, 3, 64, 100, 0.05f, 0.0f, 0.0f);
}

static void test_gpu__training_matches_cpu_odd_batch(void **state)
{
	int sizes[] = {33, 129, 3};

	(void)state;
	train_both(sizes, 3, 37, 60, 0.1f, 0.5f, 0.0f);
}

/* Saves and restores one environment variable around a test. */
static void set_env(const char *name, const char *value)
{
	if (value)
		setenv(name, value, 1);
	else
		unsetenv(name);
}

static void test_gpu__placement(void **state)
{
	char *cvd = getenv("CUDA_VISIBLE_DEVICES") ? xstrdup(getenv("CUDA_VISIBLE_DEVICES")) : NULL;
	char *lr = getenv("LOCAL_RANK") ? xstrdup(getenv("LOCAL_RANK")) : NULL;
	int count = mlp_gpu_count(NULL), dev = -1;
	char *too_far = xasprintf("%d", count);
	char *want = xasprintf("LOCAL_RANK %d but only %d GPU%s visible", count, count,
	                       count == 1 ? "" : "s");

	(void)state;
	set_env("CUDA_VISIBLE_DEVICES", NULL);
	set_env("LOCAL_RANK", "0");
	assert_int_equal(mlp_gpu_pick_device(&dev), 0);
	assert_int_equal(dev, 0);
	set_env("LOCAL_RANK", too_far);
	assert_int_equal(mlp_gpu_pick_device(&dev), MLP_EINVAL);
	assert_string_equal(mlp_error_last(), want);
	/* one device named per rank: it is device 0 whatever LOCAL_RANK says */
	set_env("CUDA_VISIBLE_DEVICES", "0");
	dev = -1;
	assert_int_equal(mlp_gpu_pick_device(&dev), 0);
	assert_int_equal(dev, 0);
	set_env("CUDA_VISIBLE_DEVICES", cvd);
	set_env("LOCAL_RANK", lr);
	free(cvd);
	free(lr);
	free(too_far);
	free(want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_gpu__backend_is_selected),
	        cmocka_unit_test(test_gpu__params_round_trip),
	        cmocka_unit_test(test_gpu__refuses_bad_batches),
	        cmocka_unit_test(test_gpu__gradient_matches_cpu),
	        cmocka_unit_test(test_gpu__sgd_matches_cpu),
	        cmocka_unit_test(test_gpu__training_matches_cpu_small),
	        cmocka_unit_test(test_gpu__training_matches_cpu_mnist_shape),
	        cmocka_unit_test(test_gpu__training_matches_cpu_odd_batch),
	        cmocka_unit_test(test_gpu__placement),
	};
	const char *why = NULL;

	if (mlp_gpu_count(&why) == 0) {
		printf("# %s\n1..0 # SKIP no CUDA device\n", why ? why : "none visible");
		return 0;
	}
	/* The tests run as one process on one GPU. */
	unsetenv("WORLD_SIZE");
	unsetenv("LOCAL_WORLD_SIZE");
	unsetenv("LOCAL_RANK");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
