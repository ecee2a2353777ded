/*
 * train.c - the training loop of mlpipe-train: data-parallel SGD the way
 * PyTorch's DistributedDataParallel does it (train.h, docs/mlpipe-train.md).
 *
 * Every rank runs this same loop:
 *   - rank 0's initial parameters are broadcast, so all ranks start equal;
 *   - each epoch, a permutation of all N training samples seeded by
 *     (seed, epoch) -- identical on every rank -- is padded to a multiple of
 *     the world size W by repeating its start (DistributedSampler with
 *     drop_last=False), and rank r takes positions r, r+W, r+2W, ...;
 *   - --batch is the global batch; each rank steps through its share
 *     batch/W samples at a time (the last step of an epoch may be smaller,
 *     and is equally small on every rank);
 *   - each step a rank computes the mean gradient over its local samples,
 *     the flat gradient is averaged over the ranks (one allreduce), and every
 *     rank takes the same SGD step, so parameters stay identical.
 * Since the local batches are equal, the mean of the ranks' means is the
 * mean over the global batch, and W ranks x batch/W follow the trajectory of
 * one process with the whole batch (up to float rounding).
 *
 * Rank 0 alone prints progress and writes the model, metrics and outputs.
 * Nothing in the step loop allocates.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coll.h"
#include "base/crypto.h"
#include "base/error.h"
#include "train.h"
#include "base/util.h"

/* Samples per forward pass when evaluating. */
#define EVAL_CHUNK 512

/* --- metrics --------------------------------------------------------------- */

void mlp_metrics_add(struct mlp_metrics *m, const char *name, double value)
{
	xgrow((void **)&m->v, &m->cap, m->len + 1, sizeof(*m->v));
	m->v[m->len].name = xstrdup(name);
	m->v[m->len].value = value;
	m->len++;
}

int mlp_metrics_write(const struct mlp_metrics *m, const char *path)
{
	struct mlp_buf b = {0};
	bool first = true;
	int rc;

	mlp_buf_putc(&b, '{');
	for (size_t i = 0; i < m->len; i++) {
		if (!isfinite(m->v[i].value))
			continue;
		mlp_buf_printf(&b, "%s\"%s\": %.9g", first ? "" : ", ", m->v[i].name,
		               m->v[i].value);
		first = false;
	}
	mlp_buf_puts(&b, "}\n");
	rc = mlp_write_file_atomic(path, b.data, b.len, 0644);
	mlp_buf_free(&b);
	return rc;
}

void mlp_metrics_free(struct mlp_metrics *m)
{
	for (size_t i = 0; i < m->len; i++)
		free(m->v[i].name);
	free(m->v);
	m->v = NULL;
	m->len = m->cap = 0;
}

/* --- sampling -------------------------------------------------------------- */

void mlp_train_permutation(uint32_t *perm, uint32_t n, uint64_t seed, uint64_t epoch)
{
	struct mlp_rng rng;

	/* A stream apart from the parameter init's (which uses seed itself). */
	mlp_rng_seed(&rng, (seed + epoch) ^ 0x7065726d75746531ull);
	for (uint32_t i = 0; i < n; i++)
		perm[i] = i;
	for (uint32_t i = n ? n - 1 : 0; i > 0; i--) {
		uint32_t j = (uint32_t)mlp_rng_below(&rng, (uint64_t)i + 1);
		uint32_t t = perm[i];

		perm[i] = perm[j];
		perm[j] = t;
	}
}

/* --- the run --------------------------------------------------------------- */

struct trainer {
	const struct mlp_train_opts *o;
	struct mlp_coll *coll;
	int rank, world;
	const struct mlp_train_backend_ops *ops;
	struct mlp_train_backend *be;
	struct mlp_dataset *train, *test, *val;
	size_t nparams;
	float *params;
	int local_batch;
	float *xb; /* local_batch x features: the gathered batch */
	int32_t *yb;
	uint32_t *perm; /* N */
	uint32_t *mine; /* this rank's sample indices for the epoch */
	long long steps;
	double train_seconds;
	double train_samples; /* globally, over the whole run */
};

struct eval_result {
	double loss, accuracy, count;
};

/* Evaluates d sharded over the ranks (contiguous slices) and sums. */
static int evaluate_sharded(struct trainer *t, const struct mlp_dataset *d, struct eval_result *out)
{
	size_t lo = d->n * (size_t)t->rank / (size_t)t->world;
	size_t hi = d->n * ((size_t)t->rank + 1) / (size_t)t->world;
	struct mlp_batch_stats st = {0};
	double sums[3];
	int rc;

	for (size_t i = lo; i < hi; i += EVAL_CHUNK) {
		int n = (int)(hi - i < EVAL_CHUNK ? hi - i : EVAL_CHUNK);

		rc = t->ops->predict(t->be, d->x + i * d->features, d->y + i, n, NULL, &st);
		if (rc != 0)
			return rc;
	}
	sums[0] = st.loss_sum;
	sums[1] = st.correct;
	sums[2] = (double)(hi - lo);
	if (t->world > 1 && (rc = mlp_coll_allreduce_sum_f64(t->coll, sums, 3)) != 0)
		return rc;
	out->count = sums[2];
	out->loss = sums[2] > 0 ? sums[0] / sums[2] : NAN;
	out->accuracy = sums[2] > 0 ? sums[1] / sums[2] : NAN;
	return 0;
}

static int load_data(struct trainer *t)
{
	const struct mlp_train_opts *o = t->o;
	int inputs = o->shape.sizes[0], classes = o->shape.sizes[o->shape.nsizes - 1];
	int rc = mlp_dataset_load(&t->train, &o->data, MLP_DATA_TRAIN);

	if (rc != 0)
		return rc;
	if (o->test.path) {
		rc = mlp_dataset_load(&t->test, &o->test, MLP_DATA_TEST);
	} else if (mlp_data_dir_has_test(o->data.path)) {
		struct mlp_data_source src = {.path = o->data.path};

		rc = mlp_dataset_load(&t->test, &src, MLP_DATA_TEST);
	}
	if (rc != 0)
		return rc;
	if ((rc = mlp_dataset_check_features(t->train, (size_t)inputs)) != 0 ||
	    (rc = mlp_dataset_check_labels(t->train, classes)) != 0)
		return rc;
	if (t->test && ((rc = mlp_dataset_check_features(t->test, (size_t)inputs)) != 0 ||
	                (rc = mlp_dataset_check_labels(t->test, classes)) != 0))
		return rc;
	if (o->validation_split > 0 &&
	    (rc = mlp_dataset_split(&t->val, t->train, o->validation_split, o->seed)) != 0)
		return rc;
	if (t->train->n > UINT32_MAX) {
		mlp_error_set("%s: more than %u training samples", t->train->name, UINT32_MAX);
		return MLP_EINVAL;
	}
	return 0;
}

/* The rank's indices for an epoch: positions rank, rank+W, ... of the
 * permutation padded to a multiple of W.  Returns how many. */
static size_t epoch_indices(struct trainer *t, uint64_t epoch)
{
	uint32_t n = (uint32_t)t->train->n;
	size_t per_rank = ((size_t)n + (size_t)t->world - 1) / (size_t)t->world;

	mlp_train_permutation(t->perm, n, t->o->seed, epoch);
	for (size_t k = 0; k < per_rank; k++)
		t->mine[k] = t->perm[((size_t)t->rank + k * (size_t)t->world) % n];
	return per_rank;
}

/* Runs one epoch (or until max_steps); sets *stopped when the step limit
 * cut it short. */
static int run_epoch(struct trainer *t, int epoch, struct eval_result *train_res, bool *stopped)
{
	const struct mlp_train_opts *o = t->o;
	struct mlp_sgd sgd = {(float)o->lr, (float)o->momentum, (float)o->weight_decay};
	struct mlp_batch_stats st = {0};
	size_t features = t->train->features;
	size_t count = epoch_indices(t, (uint64_t)epoch);
	size_t done = 0;
	double sums[3];
	int64_t t0 = mlp_mono_us();
	int rc;

	*stopped = false;
	while (done < count) {
		int n = (int)(count - done < (size_t)t->local_batch ? count - done
		                                                    : (size_t)t->local_batch);

		for (int i = 0; i < n; i++) {
			uint32_t idx = t->mine[done + (size_t)i];

			memcpy(t->xb + (size_t)i * features, t->train->x + (size_t)idx * features,
			       features * sizeof(float));
			t->yb[i] = t->train->y[idx];
		}
		if ((rc = t->ops->train_batch(t->be, t->xb, t->yb, n, &st)) != 0)
			return rc;
		/* NCCL runs even for one rank when it was asked for (world size 1
		 * tests of the GPU path). */
		if ((t->world > 1 || mlp_coll_on_device(t->coll)) &&
		    (rc = mlp_coll_allreduce_avg_f32(t->coll, t->ops->grad(t->be), t->nparams)) !=
		            0)
			return rc;
		if ((rc = t->ops->sgd_step(t->be, &sgd)) != 0)
			return rc;
		done += (size_t)n;
		t->steps++;
		if (o->max_steps > 0 && t->steps >= o->max_steps) {
			*stopped = true;
			break;
		}
	}
	sums[0] = st.loss_sum;
	sums[1] = st.correct;
	sums[2] = (double)done;
	if (t->world > 1 && (rc = mlp_coll_allreduce_sum_f64(t->coll, sums, 3)) != 0)
		return rc;
	t->train_seconds += (double)(mlp_mono_us() - t0) / 1e6;
	t->train_samples += sums[2];
	train_res->count = sums[2];
	train_res->loss = sums[0] / sums[2];
	train_res->accuracy = sums[1] / sums[2];
	return 0;
}

static int append_outputs(const char *path, const char *sha, const char *model_path)
{
	char *abs = NULL;
	char *text;
	int fd, rc = 0;
	size_t len;

	if (mlp_realpath(&abs, model_path) != 0)
		abs = xstrdup(model_path);
	text = xasprintf("model_sha256=%s\nmodel_path=%s\n", sha, abs);
	len = strlen(text);
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, text, len) != (ssize_t)len) {
		mlp_error_set_errno(errno, "MLPIPE_OUTPUT %s", path);
		rc = MLP_EIO;
	}
	if (fd >= 0 && close(fd) != 0 && rc == 0) {
		mlp_error_set_errno(errno, "MLPIPE_OUTPUT %s", path);
		rc = MLP_EIO;
	}
	free(text);
	free(abs);
	return rc;
}

/* Rank 0's last duties: model file, params dump, metrics, outputs. */
static int write_results(struct trainer *t, const struct mlp_metrics *metrics)
{
	const struct mlp_train_opts *o = t->o;
	const char *metrics_path = o->metrics ? o->metrics : getenv("MLPIPE_METRICS");
	const char *outputs = getenv("MLPIPE_OUTPUT");
	char sha[MLP_SHA256_HEX_LEN + 1];
	int rc;

	if ((rc = mlp_model_save(o->out, &o->shape, t->params, sha)) != 0)
		return rc;
	printf("model %s  sha256 %s\n", o->out, sha);
	if (o->dump_params && (rc = mlp_params_dump(o->dump_params, t->params, t->nparams)) != 0)
		return rc;
	if (metrics_path && *metrics_path && (rc = mlp_metrics_write(metrics, metrics_path)) != 0)
		return rc;
	if (outputs && *outputs && (rc = append_outputs(outputs, sha, o->out)) != 0)
		return rc;
	return 0;
}

/* Every rank checks that it holds rank 0's parameters: a broken
 * collective shows up here instead of as a silently worse model. */
static int check_params_agree(struct trainer *t)
{
	uint32_t mine = mlp_params_crc32(t->params, t->nparams);
	uint32_t root = mine;
	int rc;

	if (t->world == 1)
		return 0;
	if ((rc = mlp_coll_broadcast(t->coll, &root, sizeof(root), 0)) != 0)
		return rc;
	if (root != mine) {
		mlp_error_set("rank %d's parameters differ from rank 0's after training "
		              "(the gradient allreduce is broken)",
		              t->rank);
		return MLP_ERROR;
	}
	return 0;
}

static void print_epoch(const struct trainer *t, int epoch, const struct eval_result *tr,
                        const struct eval_result *val, const struct eval_result *test,
                        double samples_per_sec, bool stopped)
{
	printf("epoch %d/%d  loss %.4f  accuracy %.4f", epoch + 1, t->o->epochs, tr->loss,
	       tr->accuracy);
	if (t->val)
		printf("  val_accuracy %.4f", val->accuracy);
	if (t->test)
		printf("  test_accuracy %.4f", test->accuracy);
	printf("  samples/s %.0f", samples_per_sec);
	if (stopped)
		printf("  (stopped after %lld steps)", t->steps);
	putchar('\n');
	fflush(stdout);
}

static void trainer_free(struct trainer *t)
{
	if (t->be)
		t->ops->destroy(t->be);
	mlp_coll_close(t->coll);
	mlp_dataset_free(t->train);
	mlp_dataset_free(t->test);
	mlp_dataset_free(t->val);
	free(t->params);
	free(t->xb);
	free(t->yb);
	free(t->perm);
	free(t->mine);
}

/* Joins the group (one process when there is none) and checks that the
 * batch and the backend suit it. */
static int join_group(struct trainer *t)
{
	const struct mlp_train_opts *o = t->o;
	struct mlp_coll_opts copts;
	int rc;

	if ((rc = mlp_coll_opts_from_env(&copts)) != 0)
		return rc;
	if (copts.world_size > 1 && o->batch % copts.world_size != 0) {
		mlp_error_set("--batch %d is not divisible by the world size %d", o->batch,
		              copts.world_size);
		return MLP_EINVAL;
	}
	/* A gradient in device memory is averaged where it lies, by NCCL. */
	if (t->ops->grad_on_device && copts.world_size > 1 &&
	    (copts.backend == NULL || strcmp(copts.backend, "auto") == 0))
		copts.backend = "nccl";
	if ((rc = mlp_coll_open(&t->coll, &copts)) != 0) {
		if (rc == MLP_EINVAL)
			rc = MLP_ERROR; /* a failed join is a runtime failure: restart */
		return rc;
	}
	t->rank = mlp_coll_rank(t->coll);
	t->world = mlp_coll_world_size(t->coll);
	if (t->ops->grad_on_device && t->world > 1 && !mlp_coll_on_device(t->coll)) {
		mlp_error_set("--device %s keeps the gradient in GPU memory, which the %s "
		              "collective backend cannot average (MLPIPE_COLL_BACKEND=nccl)",
		              t->ops->name, mlp_coll_backend(t->coll));
		return MLP_EINVAL;
	}
	t->local_batch = o->batch / t->world;
	return 0;
}

/* The parameters (rank 0's on every rank), the backend holding them and
 * the step loop's buffers. */
static int trainer_setup(struct trainer *t)
{
	const struct mlp_train_opts *o = t->o;
	int rc;

	t->nparams = mlp_shape_nparams(&o->shape);
	t->params = xmalloc(t->nparams * sizeof(float));
	mlp_model_init(t->params, &o->shape, o->seed);
	if (t->world > 1 &&
	    (rc = mlp_coll_broadcast(t->coll, t->params, t->nparams * sizeof(float), 0)) != 0)
		return rc;
	rc = t->ops->create(&t->be, &o->shape,
	                    t->local_batch > EVAL_CHUNK ? t->local_batch : EVAL_CHUNK);
	if (rc != 0 || (rc = t->ops->set_params(t->be, t->params)) != 0)
		return rc;
	t->xb = xmalloc((size_t)t->local_batch * t->train->features * sizeof(float));
	t->yb = xmalloc((size_t)t->local_batch * sizeof(int32_t));
	t->perm = xmalloc(t->train->n * sizeof(uint32_t));
	t->mine = xmalloc((t->train->n / (size_t)t->world + 1) * sizeof(uint32_t));
	return 0;
}

/* Rank 0's first line: what it trains, where, on what. */
static void print_start(const struct trainer *t)
{
	const struct mlp_train_opts *o = t->o;
	char shape[256];

	mlp_shape_format(shape, sizeof(shape), &o->shape);
	printf("mlpipe-train: %s on %s, %zu training samples", shape, t->ops->name, t->train->n);
	if (t->val)
		printf(", %zu validation", t->val->n);
	if (t->test)
		printf(", %zu test", t->test->n);
	printf(", world size %d (%s), batch %d (%d per rank)\n", t->world,
	       mlp_coll_backend(t->coll), o->batch, t->local_batch);
	fflush(stdout);
}

/* The run's metrics: those of the test set, else of the validation split,
 * else of the training data, then the rest.  An early stop counts the
 * last epoch's share done. */
static void final_metrics(struct mlp_metrics *metrics, const struct trainer *t,
                          const struct eval_result *tr, const struct eval_result *val,
                          const struct eval_result *test, int epochs_run, bool stopped)
{
	const struct eval_result *best = t->test ? test : t->val ? val : tr;

	mlp_metrics_add(metrics, "accuracy", best->accuracy);
	mlp_metrics_add(metrics, "loss", best->loss);
	mlp_metrics_add(metrics, "samples_per_sec", t->train_samples / t->train_seconds);
	mlp_metrics_add(metrics, "epochs",
	                stopped ? (double)(epochs_run - 1) +
	                                  tr->count /
	                                          (double)(((t->train->n + (size_t)t->world - 1) /
	                                                    (size_t)t->world) *
	                                                   (size_t)t->world)
	                        : (double)epochs_run);
	mlp_metrics_add(metrics, "world_size", t->world);
	mlp_metrics_add(metrics, "steps", (double)t->steps);
	mlp_metrics_add(metrics, "train_accuracy", tr->accuracy);
	mlp_metrics_add(metrics, "train_loss", tr->loss);
	if (t->val) {
		mlp_metrics_add(metrics, "val_accuracy", val->accuracy);
		mlp_metrics_add(metrics, "val_loss", val->loss);
	}
	if (t->test) {
		mlp_metrics_add(metrics, "test_accuracy", test->accuracy);
		mlp_metrics_add(metrics, "test_loss", test->loss);
	}
}

int mlp_train_run(const struct mlp_train_opts *o)
{
	struct trainer t = {.o = o};
	struct eval_result tr = {0}, val = {NAN, NAN, 0}, test = {NAN, NAN, 0};
	struct mlp_metrics metrics = {0};
	int epochs_run = 0, rc;
	bool stopped = false;

	if ((rc = mlp_train_backend_select(&t.ops, o->device)) != 0)
		return rc;
	/* Input first: a bad file fails fast on every rank, before any wait. */
	if ((rc = load_data(&t)) != 0)
		goto done;
	if ((rc = join_group(&t)) != 0 || (rc = trainer_setup(&t)) != 0)
		goto done;
	if (t.rank == 0)
		print_start(&t);

	for (int epoch = 0; epoch < o->epochs && !stopped; epoch++) {
		double before_s = t.train_seconds;

		if ((rc = run_epoch(&t, epoch, &tr, &stopped)) != 0)
			goto done;
		epochs_run++;
		if (t.val && (rc = evaluate_sharded(&t, t.val, &val)) != 0)
			goto done;
		if (t.test && (rc = evaluate_sharded(&t, t.test, &test)) != 0)
			goto done;
		if (t.rank == 0)
			print_epoch(&t, epoch, &tr, &val, &test,
			            tr.count / (t.train_seconds - before_s), stopped);
	}

	if ((rc = t.ops->get_params(t.be, t.params)) != 0 || (rc = check_params_agree(&t)) != 0)
		goto done;
	if (t.rank == 0) {
		int rc_write;

		if (!t.test && !t.val)
			printf("note: no test set or validation split: accuracy is on the training "
			       "data\n");
		final_metrics(&metrics, &t, &tr, &val, &test, epochs_run, stopped);
		rc_write = write_results(&t, &metrics);
		/* Hold the others until the files are written: a launcher that sees
		 * every rank exit 0 may read them at once. */
		if (t.world > 1 && (rc = mlp_coll_barrier(t.coll)) != 0)
			goto done;
		rc = rc_write;
	} else {
		rc = mlp_coll_barrier(t.coll);
	}
done:
	fflush(stdout);
	mlp_metrics_free(&metrics);
	trainer_free(&t);
	return rc;
}
