/*
 * test-k8s-job.c - the objects of a stage attempt on Kubernetes
 * (deploy/k8s-job-manifest.c) against golden files: for fixed specs, each
 * object mlp_k8s_job_manifests() builds is printed (2-space indent, keys
 * in the order they were added) and compared with
 * tests/k8s/golden/CASE.OBJECT.json, which were reviewed field by field
 * against the Kubernetes API (v1 Secret and Service, batch/v1 Job).  A
 * change to the manifests shows up as a diff of those files:
 *
 *     MLPIPE_UPDATE_GOLDEN=1 make check TESTS=tests/test-k8s-job
 *
 * rewrites them (docs/testing.md); review the diff before committing it.
 *
 * Besides the goldens: the objects' base name (a DNS label short enough
 * for the pods' hostnames, long stage names hashed), every label a valid
 * Kubernetes label, and no env value anywhere but in the Secret.
 */
#include "config.h"

#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/crypto.h"
#include "base/error.h"
#include "base/json.h"
#include "base/util.h"
#include "deploy/k8s-job.h"

/* ---- printing and comparing ------------------------------------------- */

static void pretty(struct mlp_buf *b, const struct mlp_json *j, int depth)
{
	bool obj = mlp_json_is_object(j), arr = mlp_json_is_array(j);
	size_t n = mlp_json_count(j);
	char *s;

	if ((!obj && !arr) || n == 0) {
		s = mlp_json_print(j, false);
		mlp_buf_puts(b, s);
		free(s);
		return;
	}
	mlp_buf_puts(b, obj ? "{\n" : "[\n");
	for (size_t i = 0; i < n; i++) {
		const struct mlp_json *m = mlp_json_at(j, i);

		mlp_buf_printf(b, "%*s", (depth + 1) * 2, "");
		if (obj) {
			struct mlp_json *key = mlp_json_new_string(mlp_json_key(m));

			s = mlp_json_print(key, false);
			mlp_buf_printf(b, "%s: ", s);
			free(s);
			mlp_json_free(key);
		}
		pretty(b, m, depth + 1);
		mlp_buf_puts(b, i + 1 < n ? ",\n" : "\n");
	}
	mlp_buf_printf(b, "%*s%s", depth * 2, "", obj ? "}" : "]");
}

static char *golden_path(const char *name)
{
	const char *srcdir = getenv("MLPIPE_TEST_SRCDIR");
	char *dir, *path;

	if (srcdir != NULL && *srcdir)
		return xasprintf("%s/k8s/golden/%s.json", srcdir, name);
	dir = mlp_dirname(__FILE__);
	path = xasprintf("%s/k8s/golden/%s.json", dir, name);
	free(dir);
	return path;
}

/* The first line where want and got differ, 1-based. */
static int first_difference(const char *want, const char *got, const char **w, const char **g)
{
	int line = 1;

	*w = want;
	*g = got;
	for (; *want && *want == *got; want++, got++)
		if (*want == '\n') {
			line++;
			*w = want + 1;
			*g = got + 1;
		}
	return line;
}

/* obj printed equals tests/k8s/golden/NAME.json, or (MLPIPE_UPDATE_GOLDEN=1)
 * is written there. */
static void check_golden(const char *name, const struct mlp_json *obj)
{
	const char *update = getenv("MLPIPE_UPDATE_GOLDEN");
	char *path = golden_path(name), *want = NULL;
	struct mlp_buf got = {0};

	pretty(&got, obj, 0);
	mlp_buf_putc(&got, '\n');
	if (update && strcmp(update, "1") == 0) {
		assert_int_equal(mlp_write_file_atomic(path, got.data, got.len, 0644), 0);
		print_message("# wrote %s\n", path);
	} else if (mlp_read_file(&want, NULL, path, 1 << 20) != 0) {
		fail_msg("cannot read %s (%s): MLPIPE_UPDATE_GOLDEN=1 writes it", path,
		         mlp_error_last());
	} else if (strcmp(want, got.data) != 0) {
		const char *w, *g;
		int line = first_difference(want, got.data, &w, &g);

		fail_msg("%s differs from what is built, from line %d:\n  golden: %.*s\n  built:  "
		         "%.*s\n(if the change is meant, rerun with MLPIPE_UPDATE_GOLDEN=1 and "
		         "review the diff)",
		         path, line, (int)strcspn(w, "\n"), w, (int)strcspn(g, "\n"), g);
	}
	free(want);
	mlp_buf_free(&got);
	free(path);
}

/* ---- what Kubernetes accepts ------------------------------------------ */

/* A DNS label (RFC 1123): at most 63 of [a-z0-9-], alphanumeric at both ends. */
static bool dns_label(const char *s)
{
	size_t len = strlen(s);

	if (len == 0 || len > 63 || !isalnum((unsigned char)s[0]) ||
	    !isalnum((unsigned char)s[len - 1]))
		return false;
	for (; *s; s++)
		if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '-'))
			return false;
	return true;
}

/* A label value: empty, or at most 63 of [A-Za-z0-9._-], alphanumeric at both ends. */
static bool label_value(const char *s)
{
	size_t len = strlen(s);

	if (len == 0)
		return true;
	if (len > 63 || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[len - 1]))
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_' && *s != '.')
			return false;
	return true;
}

static void check_labels(const struct mlp_json *labels, const char *where)
{
	for (size_t i = 0; i < mlp_json_count(labels); i++) {
		const struct mlp_json *m = mlp_json_at(labels, i);
		const char *v = mlp_json_string(m);

		if (v == NULL || !label_value(v))
			fail_msg("%s: label %s has the value '%s', which is not a label value",
			         where, mlp_json_key(m), v ? v : "(not a string)");
	}
}

/* Every object's name is a DNS label and its labels (and its pods') valid. */
static void check_valid(struct mlp_json **objs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const char *name = mlp_json_get_string(mlp_json_get(objs[i], "metadata"), "name");

		assert_non_null(name);
		if (!dns_label(name))
			fail_msg("object %zu's name '%s' is not a DNS label", i, name);
		check_labels(mlp_json_path(objs[i], "metadata.labels"), name);
		check_labels(mlp_json_path(objs[i], "spec.template.metadata.labels"), name);
	}
}

/* ---- the specs ---------------------------------------------------------- */

static const struct mlp_pos nowhere = {0, 0};

/* Values that must reach the pods only through the Secret. */
#define VALUE_1 "s3cr3t-value-of-hf-token"
#define VALUE_2 "postgres://user:pw-in-env@db/x"

static void add(struct mlp_kvlist *l, const char *key, const char *value)
{
	mlp_kvlist_add(l, key, value, nowhere);
}

struct fixture {
	struct mlp_k8s_settings k8s;
	struct mlp_kvlist env;
	struct mlp_k8s_toleration tolerations[2];
	struct mlp_k8s_job_spec spec;
};

static void fixture_free(struct fixture *f)
{
	mlp_kvlist_free(&f->k8s.resources);
	mlp_kvlist_free(&f->k8s.node_selector);
	mlp_kvlist_free(&f->k8s.annotations);
	mlp_kvlist_free(&f->k8s.labels);
	mlp_kvlist_free(&f->env);
}

static void common(struct fixture *f)
{
	memset(f, 0, sizeof(*f));
	f->k8s.start_timeout_ms = 5 * 60 * 1000;
	add(&f->env, "HF_TOKEN", VALUE_1);
	add(&f->env, "DATABASE_URL", VALUE_2);
	f->spec = (struct mlp_k8s_job_spec){
	        .k8s = &f->k8s,
	        .namespace_ = "ml",
	        .image = "registry.example.com/team/train:v3",
	        .helper_image = "mlpipe/mlpipe:0.9.0",
	        .store_id = "0123456789abcdef",
	        .run_id = 42,
	        .stage = "train",
	        .attempt = 1,
	        .grace_ms = 5000,
	        .env = &f->env,
	};
}

/* (a) the builtin trainer on 2 nodes x 2 ranks, one Job per node, with
 * every pod setting there is. */
static void per_node_spec(struct fixture *f)
{
	static char *const argv[] = {
	        "mlpipe-train",   "train", "--layers", "784,256,10", "--epochs",   "3",
	        "--batch",        "64",    "--lr",     "0.05",       "--momentum", "0.9",
	        "--weight-decay", "0",     "--seed",   "42",         "--data",     "data/train.csv",
	        "--device",       "auto",  "--out",    "model.bin",  NULL,
	};

	common(f);
	f->k8s.service_account = "trainer";
	f->k8s.pull_policy = "IfNotPresent";
	add(&f->k8s.resources, "cpu", "8");
	add(&f->k8s.resources, "memory", "64Gi");
	add(&f->k8s.node_selector, "cloud.example.com/gpu", "a100");
	add(&f->k8s.annotations, "example.com/owner", "ml-team");
	add(&f->k8s.labels, "team", "vision");
	f->tolerations[0] = (struct mlp_k8s_toleration){.key = "nvidia.com/gpu",
	                                                .operator_ = "Exists",
	                                                .effect = "NoSchedule",
	                                                .seconds = -1};
	f->tolerations[1] = (struct mlp_k8s_toleration){.key = "example.com/maintenance",
	                                                .operator_ = "Equal",
	                                                .value = "soon",
	                                                .effect = "NoExecute",
	                                                .seconds = 300};
	f->k8s.tolerations = f->tolerations;
	f->k8s.ntolerations = 2;
	f->k8s.has_tolerations = true;
	f->spec.nodes = 2;
	f->spec.ranks = 2;
	f->spec.gpus_per_node = 2;
	f->spec.stall_timeout_ms = 600000;
	f->spec.deadline_ms = 2 * 3600 * 1000 + 10000;
	f->spec.argv = argv;
	f->spec.model_path = "model.bin";
}

/* (b) an Indexed Job held by a Kueue queue, cloning the run's commit. */
static void indexed_queue_spec(struct fixture *f)
{
	common(f);
	f->k8s.queue = "team-a";
	f->k8s.checkout_repo = "https://git.example.com/team/models.git";
	f->k8s.checkout_secret = "git-credentials";
	f->spec.stage = "fine-tune";
	f->spec.attempt = 2;
	f->spec.commit = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567";
	f->spec.nodes = 2;
	f->spec.ranks = 4;
	f->spec.gpus_per_node = 4;
	f->spec.once = true;
	f->spec.script = "torchrun --nnodes \"$PET_NNODES\" train.py --out 'out/model.pt'\n";
	f->spec.model_path = "out/model.pt";
}

/* (c) a run stage: its script once, on one pod. */
static void run_once_spec(struct fixture *f)
{
	common(f);
	f->k8s.workdir = "/work";
	f->spec.stage = "prepare_data";
	f->spec.nodes = 1;
	f->spec.ranks = 1;
	f->spec.once = true;
	f->spec.grace_ms = 0;
	f->spec.script = "python prepare.py --split 0.2 > \"$MLPIPE_OUTPUT\"\n";
}

static const char *const object_names[] = {"secret", "service", "job"};

/* Builds the manifests of f in mode and checks them against CASE.*.json. */
static void check_case(const char *name, struct fixture *f, enum mlp_k8s_job_mode mode)
{
	struct mlp_json **objs = NULL;
	size_t n = 0;

	mlp_k8s_job_manifests(&objs, &n, &f->spec, mode);
	assert_int_equal(n, mode == MLP_K8S_JOB_INDEXED ? 3 : 2 + (size_t)f->spec.nodes);
	check_valid(objs, n);
	for (size_t i = 0; i < n; i++) {
		char *file = i < 2 || mode == MLP_K8S_JOB_INDEXED
		                     ? xasprintf("%s.%s", name, object_names[i < 2 ? i : 2])
		                     : xasprintf("%s.job-%zu", name, i - 2);

		check_golden(file, objs[i]);
		free(file);
		mlp_json_free(objs[i]);
	}
	free(objs);
}

static void test_k8s_job__golden_per_node(void **state)
{
	struct fixture f;

	(void)state;
	per_node_spec(&f);
	check_case("per-node", &f, MLP_K8S_JOB_PER_NODE);
	fixture_free(&f);
}

static void test_k8s_job__golden_indexed_queue(void **state)
{
	struct fixture f;

	(void)state;
	indexed_queue_spec(&f);
	check_case("indexed-queue", &f, MLP_K8S_JOB_INDEXED);
	fixture_free(&f);
}

static void test_k8s_job__golden_run_once(void **state)
{
	struct fixture f;

	(void)state;
	run_once_spec(&f);
	check_case("run-once", &f, MLP_K8S_JOB_INDEXED);
	fixture_free(&f);
}

/* ---- env values stay in the Secret -------------------------------------- */

static void check_values_in_secret_only(struct fixture *f, enum mlp_k8s_job_mode mode)
{
	struct mlp_json **objs = NULL;
	size_t n = 0;

	mlp_k8s_job_manifests(&objs, &n, &f->spec, mode);
	for (size_t i = 0; i < n; i++) {
		char *text = mlp_json_print(objs[i], false);
		const char *kind = mlp_json_get_string(objs[i], "kind");

		for (size_t v = 0; v < f->env.len; v++) {
			const char *value = f->env.items[v].value;
			char *key = xasprintf("env.%s", f->env.items[v].key);

			if (strcmp(kind, "Secret") == 0)
				assert_string_equal(
				        mlp_json_get_string(mlp_json_get(objs[i], "stringData"),
				                            key),
				        value);
			else if (strstr(text, value) != NULL)
				fail_msg("the value of %s is in the %s: %s", f->env.items[v].key,
				         kind, text);
			free(key);
		}
		free(text);
		mlp_json_free(objs[i]);
	}
	free(objs);
}

static void test_k8s_job__env_values_only_in_the_secret(void **state)
{
	struct fixture f;

	(void)state;
	per_node_spec(&f);
	check_values_in_secret_only(&f, MLP_K8S_JOB_PER_NODE);
	check_values_in_secret_only(&f, MLP_K8S_JOB_INDEXED);
	fixture_free(&f);
	indexed_queue_spec(&f);
	check_values_in_secret_only(&f, MLP_K8S_JOB_INDEXED);
	fixture_free(&f);
	run_once_spec(&f);
	check_values_in_secret_only(&f, MLP_K8S_JOB_INDEXED);
	fixture_free(&f);
}

/* ---- the base name ------------------------------------------------------ */

static void check_base(int64_t run, const char *stage, int attempt, const char *want)
{
	char *got = mlp_k8s_job_base_name(run, stage, attempt);

	assert_string_equal(got, want);
	free(got);
}

static void test_k8s_job__base_name_short(void **state)
{
	char hex[MLP_SHA256_HEX_LEN + 1], *want;
	char *a, *b;

	(void)state;
	check_base(42, "train", 1, "mlp-42-train-1");
	check_base(1, "a-b-c", 3, "mlp-1-a-b-c-3");
	/* A name that had to change carries the stage's own hash. */
	mlp_sha256_hex(hex, "Fine_Tune", 9);
	want = xasprintf("mlp-7-fine-tune-%.6s-12", hex);
	check_base(7, "Fine_Tune", 12, want);
	free(want);
	/* so stages whose names differ only in case or '_' never share objects. */
	a = mlp_k8s_job_base_name(1, "train_a", 1);
	b = mlp_k8s_job_base_name(1, "train-a", 1);
	assert_string_not_equal(a, b);
	free(a);
	free(b);
	a = mlp_k8s_job_base_name(1, "Train-a", 1);
	b = mlp_k8s_job_base_name(1, "train-A", 1);
	assert_string_not_equal(a, b);
	free(a);
	free(b);
}

/* A name at the limit stays as it is. */
static void test_k8s_job__base_name_at_the_limit(void **state)
{
	char stage[64];
	char *want;

	(void)state;
	/* "mlp-1-" + stage + "-1" = 52 characters */
	memset(stage, 'x', 44);
	stage[44] = '\0';
	want = xasprintf("mlp-1-%s-1", stage);
	assert_int_equal(strlen(want), 52);
	check_base(1, stage, 1, want);
	free(want);
}

static void test_k8s_job__base_name_long_is_hashed(void **state)
{
	static const char *const stages[] = {
	        "train_the_very_large_language_model_on_all_of_the_data_we_have",
	        "train_the_very_large_language_model_on_all_of_the_data_we_had",
	        "Train_The_Very_Large_Language_Model_On_All_Of_The_Data_We_Have_",
	        "_________________________________________________________________x",
	};
	char *names[MLP_ARRAY_SIZE(stages)];

	(void)state;
	for (size_t i = 0; i < MLP_ARRAY_SIZE(stages); i++) {
		char *again, *host;

		names[i] = mlp_k8s_job_base_name(9223372036854775807LL, stages[i], 17);
		if (strlen(names[i]) > 52)
			fail_msg("'%s' is %zu characters (at most 52)", names[i], strlen(names[i]));
		if (!dns_label(names[i]))
			fail_msg("'%s' is not a DNS label", names[i]);
		assert_true(strncmp(names[i], "mlp-9223372036854775807-", 24) == 0);
		assert_string_equal(names[i] + strlen(names[i]) - 3, "-17");
		/* The pods' hostnames BASE-N, N < 1000, are labels too. */
		host = xasprintf("%s-999", names[i]);
		assert_true(dns_label(host));
		free(host);
		again = mlp_k8s_job_base_name(9223372036854775807LL, stages[i], 17);
		assert_string_equal(again, names[i]);
		free(again);
	}
	/* Stages that share the kept prefix still get names of their own. */
	assert_string_not_equal(names[0], names[1]);
	for (size_t i = 0; i < MLP_ARRAY_SIZE(stages); i++)
		free(names[i]);
}

/* The value of the train container's env NAME in a Job. */
static const char *env_of(const struct mlp_json *job, const char *name)
{
	const struct mlp_json *c =
	        mlp_json_at(mlp_json_path(job, "spec.template.spec.containers"), 0);
	const struct mlp_json *env = mlp_json_get(c, "env");

	for (size_t i = 0; i < mlp_json_count(env); i++) {
		const char *n = mlp_json_get_string(mlp_json_at(env, i), "name");

		if (n && strcmp(n, name) == 0)
			return mlp_json_get_string(mlp_json_at(env, i), "value");
	}
	fail_msg("no env %s in the Job", name);
	return NULL;
}

/* Any stage name the pipeline accepts (letters, digits, '_' and '-',
 * starting with a letter or '_', any length) makes valid objects. */
static void test_k8s_job__any_stage_name_makes_valid_labels(void **state)
{
	static const char *const stages[] = {
	        "_prep",
	        "train_",
	        "train-",
	        "_",
	        "Train_The_Very_Large_Language_Model_On_All_Of_The_Data_We_Have_Got",
	};

	(void)state;
	for (size_t i = 0; i < MLP_ARRAY_SIZE(stages); i++) {
		struct fixture f;
		struct mlp_json **objs = NULL;
		size_t n = 0;

		run_once_spec(&f);
		f.spec.stage = stages[i];
		mlp_k8s_job_manifests(&objs, &n, &f.spec, MLP_K8S_JOB_INDEXED);
		check_valid(objs, n);
		/* The pods still say which stage they run, in full. */
		assert_string_equal(env_of(objs[2], "MLPIPE_STAGE"), stages[i]);
		for (size_t j = 0; j < n; j++)
			mlp_json_free(objs[j]);
		free(objs);
		fixture_free(&f);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_k8s_job__golden_per_node),
	        cmocka_unit_test(test_k8s_job__golden_indexed_queue),
	        cmocka_unit_test(test_k8s_job__golden_run_once),
	        cmocka_unit_test(test_k8s_job__env_values_only_in_the_secret),
	        cmocka_unit_test(test_k8s_job__base_name_short),
	        cmocka_unit_test(test_k8s_job__base_name_at_the_limit),
	        cmocka_unit_test(test_k8s_job__base_name_long_is_hashed),
	        cmocka_unit_test(test_k8s_job__any_stage_name_makes_valid_labels),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
