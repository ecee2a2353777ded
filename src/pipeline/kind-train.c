/*
 * kind-train.c - train stages: what the keys under `train:` mean.
 *
 * A train stage runs either mlpipe's own trainer (`builtin:`: the layer
 * sizes, the data and the hyperparameters of a small network) or the
 * user's program (`command:`, run per rank with /bin/sh -c), as `ranks`
 * processes on each of `nodes` nodes.  Here each key is read and checked
 * and the defaults are set; running it is the engine's.
 */
#include "config.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/pipeline-int.h"
#include "base/util.h"

/* What a builtin block holds before its keys are read. */
static void builtin_defaults(struct mlp_builtin_train *b)
{
	b->epochs = 1;
	b->batch = 64;
	b->lr = 0.01;
	b->momentum = 0.9;
	b->weight_decay = 0;
	b->seed = 42;
	b->validation_split = 0;
	b->device = xstrdup("auto");
}

/* builtin.layers: the sizes from inputs to outputs, at least 2. */
static void builtin_layers(struct ctx *c, struct mlp_builtin_train *b, const struct node *val)
{
	long long n;

	if (val->type != NODE_SEQ) {
		mlp_pl_wrong_type(c, "layers", val, "a list of layer sizes such as [784, 256, 10]");
		return;
	}
	if (val->nitems < 2) {
		mlp_pl_report(c, val->pos,
		              "'layers' needs at least 2 sizes (inputs and "
		              "outputs), not %zu",
		              val->nitems);
		return;
	}
	free(b->layers);
	b->layers = xcalloc(val->nitems, sizeof(*b->layers));
	b->nlayers = val->nitems;
	for (size_t j = 0; j < val->nitems; j++)
		if (mlp_pl_get_int(&n, c, "layers", val->items[j], 1, INT_MAX))
			b->layers[j] = (int)n;
}

static void parse_builtin(struct ctx *c, size_t si, const struct pair *kp)
{
	static const char *const keys[] = {
	        "layers",    "epochs",           "batch",  "lr",
	        "momentum",  "weight_decay",     "seed",   "data",
	        "test_data", "validation_split", "device",
	};
	static const char *const devices[] = {"auto", "cpu", "cuda"};
	struct mlp_builtin_train *b = &c->p->stages[si].train.builtin;
	const struct node *v = kp->value;
	bool has_layers = false;
	long long n;
	double d;
	int which;

	builtin_defaults(b);
	b->pos = kp->key->pos;
	if (!mlp_pl_want_map(c, "builtin", v, "a mapping (layers, epochs, data ...)", false))
		return;
	for (size_t i = 0; i < v->npairs; i++) {
		const struct pair *pr = &v->pairs[i];
		const char *k = pr->key->value;
		const struct node *val = pr->value;

		if (!mlp_pl_pair_usable(pr))
			continue;
		if (strcmp(k, "layers") == 0) {
			has_layers = true;
			builtin_layers(c, b, val);
		} else if (strcmp(k, "epochs") == 0) {
			mlp_pl_get_int32(&b->epochs, c, k, val, 1);
		} else if (strcmp(k, "batch") == 0) {
			mlp_pl_get_int32(&b->batch, c, k, val, 1);
		} else if (strcmp(k, "lr") == 0) {
			if (mlp_pl_get_number(&d, c, k, val)) {
				if (d <= 0)
					mlp_pl_report(c, val->pos,
					              "'lr' must be more than 0, not %s",
					              val->value);
				else
					b->lr = d;
			}
		} else if (strcmp(k, "momentum") == 0) {
			if (mlp_pl_get_number(&d, c, k, val)) {
				if (d < 0 || d >= 1)
					mlp_pl_report(c, val->pos,
					              "'momentum' must be at least 0 and less than "
					              "1, not %s",
					              val->value);
				else
					b->momentum = d;
			}
		} else if (strcmp(k, "weight_decay") == 0) {
			if (mlp_pl_get_number(&d, c, k, val)) {
				if (d < 0)
					mlp_pl_report(c, val->pos,
					              "'weight_decay' must be at least 0, not %s",
					              val->value);
				else
					b->weight_decay = d;
			}
		} else if (strcmp(k, "seed") == 0) {
			if (mlp_pl_get_int(&n, c, k, val, 0, LLONG_MAX))
				b->seed = n;
		} else if (strcmp(k, "data") == 0) {
			if (mlp_pl_get_string(&b->data, c, k, val))
				mlp_pl_note_expr(c, si, val);
		} else if (strcmp(k, "test_data") == 0) {
			if (mlp_pl_get_string(&b->test_data, c, k, val))
				mlp_pl_note_expr(c, si, val);
		} else if (strcmp(k, "validation_split") == 0) {
			if (mlp_pl_get_number(&d, c, k, val)) {
				if (d < 0 || d >= 1)
					mlp_pl_report(c, val->pos,
					              "'validation_split' must be at least 0 and "
					              "less than 1, not %s",
					              val->value);
				else
					b->validation_split = d;
			}
		} else if (strcmp(k, "device") == 0) {
			if (mlp_pl_get_enum(&which, c, k, val, devices, MLP_ARRAY_SIZE(devices))) {
				free(b->device);
				b->device = xstrdup(devices[which]);
			}
		} else {
			mlp_pl_unknown_key(c, pr->key, keys, MLP_ARRAY_SIZE(keys), " in builtin");
		}
	}
	if (!has_layers)
		mlp_pl_report(c, kp->key->pos,
		              "missing 'layers' in builtin (the layer sizes, as in "
		              "[784, 256, 10])");
	if (b->data == NULL)
		mlp_pl_report(c, kp->key->pos, "missing 'data' in builtin (the training data)");
}

void mlp_pl_parse_train(struct ctx *c, size_t si, const struct pair *kp)
{
	static const char *const keys[] = {
	        "ranks",         "nodes",   "gpus_per_node", "max_restarts",
	        "stall_timeout", "builtin", "command",
	};
	struct mlp_stage *st = &c->p->stages[si];
	struct mlp_train *t = &st->train;
	const struct node *v = kp->value;
	const struct node *first_program = NULL;
	bool has_ranks = false;

	t->ranks = 1;
	t->nodes = 1;
	if (!mlp_pl_want_map(c, "train", v, "a mapping (ranks, builtin or command ...)", false))
		return;
	for (size_t i = 0; i < v->npairs; i++) {
		const struct pair *pr = &v->pairs[i];
		const char *k = pr->key->value;
		const struct node *val = pr->value;

		if (!mlp_pl_pair_usable(pr))
			continue;
		if (strcmp(k, "ranks") == 0) {
			has_ranks = true;
			mlp_pl_get_int32(&t->ranks, c, k, val, 1);
		} else if (strcmp(k, "nodes") == 0) {
			mlp_pl_get_int32(&t->nodes, c, k, val, 1);
		} else if (strcmp(k, "gpus_per_node") == 0) {
			mlp_pl_get_int32(&t->gpus_per_node, c, k, val, 0);
		} else if (strcmp(k, "max_restarts") == 0) {
			mlp_pl_get_int32(&t->max_restarts, c, k, val, 0);
		} else if (strcmp(k, "stall_timeout") == 0) {
			mlp_pl_get_duration(&t->stall_timeout_ms, c, k, val, false);
		} else if (strcmp(k, "builtin") == 0 || strcmp(k, "command") == 0) {
			if (first_program != NULL) {
				mlp_pl_report(c, pr->key->pos,
				              "train has both 'builtin' and 'command': give "
				              "it only one");
				continue;
			}
			first_program = pr->key;
			if (strcmp(k, "builtin") == 0) {
				t->has_builtin = true;
				parse_builtin(c, si, pr);
			} else if (mlp_pl_get_string(&t->command, c, k, val)) {
				t->command_pos = val->pos;
				mlp_pl_note_shell_expr(c, si, val);
			}
		} else {
			mlp_pl_unknown_key(c, pr->key, keys, MLP_ARRAY_SIZE(keys), " in train");
		}
	}
	/* One rank per GPU unless told otherwise. */
	if (!has_ranks && t->gpus_per_node > 0)
		t->ranks = t->gpus_per_node;
	if (first_program == NULL)
		mlp_pl_report(c, kp->key->pos,
		              "train needs 'builtin' (mlpipe's own trainer) or "
		              "'command' (your program)");
}
