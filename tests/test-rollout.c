/*
 * test-rollout.c - the rollout's pure parts on recorded objects: the
 * `kubectl rollout status` decision over Deployments captured from a real
 * API server during a rollout and a stuck one (tests/k8s/objects/), the
 * strategic merge patches and their rollback counterparts; the kubeconfig
 * and in-cluster configuration (no request is sent); and the deployments
 * table on a real SQLite file.  The API calls themselves are tested
 * against a real control plane by tests/k8s/rollout.sh (make check-k8s).
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "base/json.h"
#include "deploy/k8s.h"
#include "deploy/rollout.h"
#include "engine/stagekind.h"
#include "store/store.h"
#include "store/store-deployments.h"
#include "base/util.h"
#include "pipeline/yamltree.h"

/* ---- helpers ---------------------------------------------------------- */

static struct mlp_json *object(const char *name)
{
	const char *srcdir = getenv("MLPIPE_TEST_SRCDIR");
	char *dir = srcdir && *srcdir ? xstrdup(srcdir) : mlp_dirname(__FILE__);
	char *path = xasprintf("%s/k8s/objects/%s", dir, name);
	struct mlp_json *j = NULL;
	char *text = NULL;
	size_t len = 0;

	assert_int_equal(mlp_read_file(&text, &len, path, 1 << 20), 0);
	assert_int_equal(mlp_json_parse(&j, text, len), 0);
	free(text);
	free(path);
	free(dir);
	return j;
}

static struct mlp_json *parse(const char *text)
{
	struct mlp_json *j = NULL;

	assert_int_equal(mlp_json_parse(&j, text, strlen(text)), 0);
	return j;
}

static void decide(const char *file, enum mlp_rollout_phase want, const char *message)
{
	struct mlp_json *d = object(file);
	struct mlp_rollout_status st;

	mlp_rollout_status_of(&st, d);
	if (st.phase != want)
		fail_msg("%s: phase %d, want %d (%s)", file, st.phase, want, st.message);
	assert_string_equal(st.message, message);
	mlp_json_free(d);
}

/* ---- the status decision ---------------------------------------------- */

static void test_rollout__complete(void **state)
{
	(void)state;
	decide("complete.json", MLP_ROLLOUT_COMPLETE,
	       "deployment \"model-service\" successfully rolled out");
}

/* Right after a PATCH the old counters look complete: generation first. */
static void test_rollout__unobserved_generation_waits(void **state)
{
	(void)state;
	decide("patched-not-observed.json", MLP_ROLLOUT_WAITING,
	       "Waiting for deployment spec update to be observed...");
}

static void test_rollout__updated_fewer_than_spec(void **state)
{
	(void)state;
	decide("updating.json", MLP_ROLLOUT_PROGRESSING,
	       "Waiting for deployment \"model-service\" rollout to finish: 1 out of 3 new "
	       "replicas have been updated...");
	/* updatedReplicas absent counts as 0. */
	decide("new-replicaset-created.json", MLP_ROLLOUT_PROGRESSING,
	       "Waiting for deployment \"model-service\" rollout to finish: 0 out of 3 new "
	       "replicas have been updated...");
}

static void test_rollout__old_replicas_pending(void **state)
{
	(void)state;
	decide("old-pending-termination.json", MLP_ROLLOUT_PROGRESSING,
	       "Waiting for deployment \"model-service\" rollout to finish: 1 old replicas are "
	       "pending termination...");
}

static void test_rollout__available_fewer_than_updated(void **state)
{
	(void)state;
	decide("available-less.json", MLP_ROLLOUT_PROGRESSING,
	       "Waiting for deployment \"model-service\" rollout to finish: 2 of 3 updated "
	       "replicas are available...");
}

static void test_rollout__deadline_exceeded_fails(void **state)
{
	(void)state;
	decide("deadline-exceeded.json", MLP_ROLLOUT_FAILED,
	       "deployment \"model-service\" exceeded its progress deadline");
}

/* After the rollback patch the previous generation's condition is still
 * there: it must not fail the rollback. */
static void test_rollout__stale_deadline_after_rollback_waits(void **state)
{
	(void)state;
	decide("rollback-stale-deadline.json", MLP_ROLLOUT_WAITING,
	       "Waiting for deployment spec update to be observed...");
}

static void test_rollout__progress_text(void **state)
{
	struct mlp_json *d = object("old-pending-termination.json");
	struct mlp_rollout_status st;
	char buf[128];

	(void)state;
	mlp_rollout_status_of(&st, d);
	mlp_rollout_progress_text(buf, sizeof(buf), &st);
	assert_string_equal(buf, "3/3 updated, 3 available, 1 old");
	mlp_json_free(d);
	d = object("updating.json");
	mlp_rollout_status_of(&st, d);
	mlp_rollout_progress_text(buf, sizeof(buf), &st);
	assert_string_equal(buf, "1/3 updated, 3 available, 3 old");
	mlp_json_free(d);
}

/* A Deployment with no status at all (just created) is not complete. */
static void test_rollout__empty_status_is_not_complete(void **state)
{
	struct mlp_json *d = parse("{\"metadata\":{\"name\":\"x\",\"generation\":1},"
	                           "\"spec\":{\"replicas\":2}}");
	struct mlp_rollout_status st;

	(void)state;
	mlp_rollout_status_of(&st, d);
	assert_int_equal(st.phase, MLP_ROLLOUT_WAITING);
	mlp_json_free(d);
}

/* ---- containers and patches --------------------------------------------- */

static void test_rollout__container_lookup(void **state)
{
	struct mlp_json *d = object("complete.json");
	const struct mlp_json *c;

	(void)state;
	assert_int_equal(mlp_rollout_container(&c, d, "model-container"), 0);
	assert_string_equal(mlp_json_get_string(c, "name"), "model-container");
	assert_int_equal(mlp_rollout_container(&c, d, NULL), 0);
	assert_non_null(c);
	assert_int_equal(mlp_rollout_container(&c, d, "modle-container"), MLP_ENOTFOUND);
	assert_null(c);
	assert_string_equal(mlp_error_last(), "deployment model-service has no container "
	                                      "'modle-container' (it has 'model-container')");
	mlp_json_free(d);
}

static void test_rollout__several_containers_need_a_name(void **state)
{
	struct mlp_json *d =
	        parse("{\"metadata\":{\"name\":\"x\"},\"spec\":{\"template\":"
	              "{\"spec\":{\"containers\":[{\"name\":\"a\"},{\"name\":\"b\"}]}}}}");
	const struct mlp_json *c;

	(void)state;
	assert_int_equal(mlp_rollout_container(&c, d, NULL), MLP_EINVAL);
	assert_non_null(strstr(mlp_error_last(), "'a', 'b'"));
	assert_int_equal(mlp_rollout_container(&c, d, "b"), 0);
	mlp_json_free(d);
}

static void test_rollout__patch_is_strategic_and_conditional(void **state)
{
	struct mlp_json *env = mlp_json_array(), *e = mlp_json_object();
	struct mlp_json *ann = mlp_json_object(), *p;
	const struct mlp_json *c;
	char *text;

	(void)state;
	mlp_json_add_string(e, "name", "MODEL_VERSION");
	mlp_json_add_string(e, "value", "7");
	mlp_json_append(env, e);
	mlp_json_add_string(ann, "mlpipe.io/model", "fashion");
	text = mlp_rollout_patch_json("model-container", "registry.local/model:7", env, ann,
	                              "12345");
	p = parse(text);
	assert_string_equal(mlp_json_string(mlp_json_path(p, "metadata.resourceVersion")), "12345");
	assert_string_equal(
	        mlp_json_get_string(mlp_json_path(p, "spec.template.metadata.annotations"),
	                            "mlpipe.io/model"),
	        "fashion");
	c = mlp_json_path(p, "spec.template.spec.containers");
	/* One entry, named: merged by name, so other containers stay. */
	assert_int_equal(mlp_json_count(c), 1);
	assert_string_equal(mlp_json_get_string(mlp_json_at(c, 0), "name"), "model-container");
	assert_string_equal(mlp_json_get_string(mlp_json_at(c, 0), "image"),
	                    "registry.local/model:7");
	assert_string_equal(
	        mlp_json_get_string(mlp_json_at(mlp_json_get(mlp_json_at(c, 0), "env"), 0),
	                            "value"),
	        "7");
	mlp_json_free(p);
	free(text);
	/* No resourceVersion, no image: neither appears. */
	text = mlp_rollout_patch_json("c", NULL, NULL, NULL, NULL);
	assert_string_equal(text, "{\"spec\":{\"template\":{\"spec\":{\"containers\":"
	                          "[{\"name\":\"c\"}]}}}}");
	free(text);
	mlp_json_free(env);
	mlp_json_free(ann);
}

static void test_rollout__model_env_points_at_the_artifact(void **state)
{
	struct mlp_kvlist env = {0};

	(void)state;
	mlp_kvlist_set(&env, "MODEL_URI", "old");
	mlp_kvlist_set(&env, "LOG_LEVEL", "debug");
	mlp_rollout_model_env(&env, "fashion mnist", 3, "ab12", "/data/a/ab12",
	                      "https://ci:8443//");
	assert_string_equal(mlp_kvlist_get(&env, "MODEL_URI"),
	                    "https://ci:8443/api/v1/models/fashion%20mnist/versions/3/artifact");
	assert_string_equal(mlp_kvlist_get(&env, "MODEL_SHA256"), "ab12");
	assert_string_equal(mlp_kvlist_get(&env, "MODEL_NAME"), "fashion mnist");
	assert_string_equal(mlp_kvlist_get(&env, "MODEL_VERSION"), "3");
	assert_string_equal(mlp_kvlist_get(&env, "LOG_LEVEL"), "debug");
	assert_int_equal(env.len, 5);
	/* No serve address: the artifact on this host. */
	mlp_rollout_model_env(&env, "fashion", 4, "cd34", "/data/a/cd34", NULL);
	assert_string_equal(mlp_kvlist_get(&env, "MODEL_URI"), "file:///data/a/cd34");
	assert_string_equal(mlp_kvlist_get(&env, "MODEL_VERSION"), "4");
	mlp_kvlist_free(&env);
}

static void test_rollout__env_set_clears_value_from(void **state)
{
	struct mlp_json *cur =
	        parse("[{\"name\":\"A\",\"valueFrom\":{\"secretKeyRef\":"
	              "{\"name\":\"s\",\"key\":\"k\"}}},{\"name\":\"B\",\"value\":\"1\"}]");
	struct mlp_kvlist set = {0};
	struct mlp_json *e;
	char *text;

	(void)state;
	mlp_kvlist_set(&set, "A", "x");
	mlp_kvlist_set(&set, "B", "2");
	e = mlp_rollout_env_set(cur, &set);
	text = mlp_json_print(e, false);
	assert_string_equal(text, "[{\"name\":\"A\",\"value\":\"x\",\"valueFrom\":null},"
	                          "{\"name\":\"B\",\"value\":\"2\"}]");
	free(text);
	mlp_json_free(e);
	mlp_json_free(cur);
	mlp_kvlist_free(&set);
}

static void test_rollout__env_restore(void **state)
{
	struct mlp_json *prev = parse("[{\"name\":\"A\",\"valueFrom\":{\"fieldRef\":"
	                              "{\"fieldPath\":\"metadata.name\"}}},"
	                              "{\"name\":\"B\",\"value\":\"1\"}]");
	struct mlp_json *cur = parse("[{\"name\":\"A\",\"value\":\"x\"},{\"name\":\"B\","
	                             "\"value\":\"2\"},{\"name\":\"NEW\",\"value\":\"3\"}]");
	struct mlp_json *keys = parse("{\"A\":\"x\",\"B\":\"2\",\"NEW\":\"3\"}");
	struct mlp_json *e = mlp_rollout_env_restore(cur, prev, keys);
	char *text = mlp_json_print(e, false);

	(void)state;
	assert_string_equal(
	        text,
	        "[{\"name\":\"A\",\"valueFrom\":{\"fieldRef\":{\"fieldPath\":\"metadata.name\"}},"
	        "\"value\":null},{\"name\":\"B\",\"value\":\"1\"},"
	        "{\"name\":\"NEW\",\"$patch\":\"delete\"}]");
	free(text);
	mlp_json_free(e);
	mlp_json_free(prev);
	mlp_json_free(cur);
	mlp_json_free(keys);
}

static void test_rollout__annotations_restore(void **state)
{
	struct mlp_json *prev = parse("{\"mlpipe.io/model\":\"fashion\",\"mlpipe.io/model-version\""
	                              ":\"3\",\"other\":\"kept\"}");
	struct mlp_json *a = mlp_rollout_annotations_restore(prev);
	char *text = mlp_json_print(a, false);

	(void)state;
	/* Ours as they were (absent ones removed); others untouched. */
	assert_string_equal(text, "{\"mlpipe.io/model\":\"fashion\",\"mlpipe.io/model-version\":"
	                          "\"3\",\"mlpipe.io/model-sha256\":null,\"mlpipe.io/run\":null}");
	free(text);
	mlp_json_free(a);
	mlp_json_free(prev);
}

/* ---- configuration ------------------------------------------------------ */

struct dir_fixture {
	char dir[64];
};

static int dir_setup(void **state)
{
	struct dir_fixture *f = xcalloc(1, sizeof(*f));

	snprintf(f->dir, sizeof(f->dir), "/tmp/mlpipe-rollout-XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	*state = f;
	return 0;
}

static int dir_teardown(void **state)
{
	struct dir_fixture *f = *state;
	char *cmd = xasprintf("rm -rf '%s'", f->dir);
	int rc = system(cmd);

	free(cmd);
	free(f);
	return rc == 0 ? 0 : -1;
}

static char *write_file(const char *dir, const char *name, const char *text)
{
	char *path = xasprintf("%s/%s", dir, name);

	assert_int_equal(mlp_write_file_atomic(path, text, strlen(text), 0600), 0);
	return path;
}

static const char kubeconfig[] =
        "apiVersion: v1\n"
        "kind: Config\n"
        "current-context: dev\n"
        "clusters:\n"
        "- name: c1\n"
        "  cluster:\n"
        "    server: https://127.0.0.1:6443/\n"
        "    insecure-skip-tls-verify: true\n"
        "contexts:\n"
        "- name: dev\n"
        "  context: {cluster: c1, user: tok, namespace: ml}\n"
        "- name: certs\n"
        "  context: {cluster: c1, user: cert}\n"
        "- name: plugin\n"
        "  context: {cluster: c1, user: ex}\n"
        "- name: basic\n"
        "  context: {cluster: c1, user: basic}\n"
        "- name: nouser\n"
        "  context: {cluster: c1, user: ghost}\n"
        "users:\n"
        "- name: tok\n"
        "  user: {token: abc}\n"
        "- name: cert\n"
        "  user:\n"
        "    client-certificate-data: LS0tLS1CRUdJTg==\n"
        "    client-key: key.pem\n"
        "- name: ex\n"
        "  user:\n"
        "    exec: {apiVersion: client.authentication.k8s.io/v1beta1, command: /bin/echo,\n"
        "           args: [\"{}\"]}\n"
        "- name: basic\n"
        "  user: {username: a, password: b}\n";

static void test_rollout__kubeconfig_contexts(void **state)
{
	struct dir_fixture *f = *state;
	char *path = write_file(f->dir, "config", kubeconfig);
	char *key = write_file(f->dir, "key.pem", "-----BEGIN PRIVATE KEY-----\n");
	struct mlp_k8s_options o = {.kubeconfig = path};
	struct mlp_k8s *k = NULL;

	assert_int_equal(mlp_k8s_open(&k, &o), 0);
	assert_string_equal(mlp_k8s_server(k), "https://127.0.0.1:6443");
	assert_string_equal(mlp_k8s_namespace(k), "ml");
	assert_string_equal(mlp_k8s_auth_kind(k), "token");
	mlp_k8s_close(k);

	/* Relative file names are relative to the kubeconfig. */
	o.context = "certs";
	assert_int_equal(mlp_k8s_open(&k, &o), 0);
	assert_string_equal(mlp_k8s_auth_kind(k), "client certificate");
	assert_string_equal(mlp_k8s_namespace(k), "default");
	mlp_k8s_close(k);

	o.context = "plugin";
	assert_int_equal(mlp_k8s_open(&k, &o), 0);
	assert_string_equal(mlp_k8s_auth_kind(k), "exec plugin");
	mlp_k8s_close(k);

	o.context = "basic";
	assert_int_equal(mlp_k8s_open(&k, &o), MLP_EINVAL);
	assert_non_null(strstr(mlp_error_last(), "basic auth"));
	o.context = "nouser";
	assert_int_equal(mlp_k8s_open(&k, &o), MLP_EINVAL);
	assert_non_null(strstr(mlp_error_last(), "user 'ghost'"));
	o.context = "nope";
	assert_int_equal(mlp_k8s_open(&k, &o), MLP_ENOTFOUND);
	assert_int_equal(strncmp(mlp_error_last(), "no context 'nope' in ", 21), 0);
	free(path);
	free(key);
}

static void test_rollout__kubeconfig_errors(void **state)
{
	struct dir_fixture *f = *state;
	char *bad = write_file(f->dir, "bad", "clusters: [\n");
	char *noctx = write_file(f->dir, "noctx", "apiVersion: v1\nclusters: []\n");
	struct mlp_k8s_options o = {.kubeconfig = bad};
	struct mlp_k8s *k = NULL;

	assert_int_equal(mlp_k8s_open(&k, &o), MLP_EINVAL);
	assert_non_null(strstr(mlp_error_last(), "/bad:"));
	o.kubeconfig = noctx;
	assert_int_equal(mlp_k8s_open(&k, &o), MLP_EINVAL);
	assert_non_null(strstr(mlp_error_last(), "no current-context"));
	free(bad);
	free(noctx);
}

static void test_rollout__in_cluster(void **state)
{
	struct dir_fixture *f = *state;
	char *tok = write_file(f->dir, "token", "sa-token\n");
	char *ca = write_file(f->dir, "ca.crt", "-----BEGIN CERTIFICATE-----\n");
	char *ns = write_file(f->dir, "namespace", "serving\n");
	char *home = xasprintf("%s/home", f->dir);
	struct mlp_k8s *k = NULL;

	mlp_mkdirs(home, 0700);
	unsetenv("KUBECONFIG");
	setenv("HOME", home, 1);
	unsetenv("KUBERNETES_SERVICE_HOST");
	assert_int_equal(mlp_k8s_open(&k, NULL), MLP_ENOTFOUND);
	setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1", 1);
	setenv("KUBERNETES_SERVICE_PORT", "443", 1);
	setenv("MLPIPE_K8S_SA_DIR", f->dir, 1);
	assert_int_equal(mlp_k8s_open(&k, NULL), 0);
	assert_string_equal(mlp_k8s_server(k), "https://10.0.0.1:443");
	assert_string_equal(mlp_k8s_namespace(k), "serving");
	assert_string_equal(mlp_k8s_auth_kind(k), "service account");
	mlp_k8s_close(k);
	unsetenv("KUBERNETES_SERVICE_HOST");
	free(tok);
	free(ca);
	free(ns);
	free(home);
}

static void test_rollout__yaml_to_json(void **state)
{
	static const char text[] = "a: &x {b: 1, c: true, d: ~, e: \"1\", f: yes}\n"
	                           "g: *x\n"
	                           "h: [one, 2.5]\n";
	struct mlp_json *j = NULL;
	char *out;

	(void)state;
	assert_int_equal(mlp_yaml_to_json(&j, "t.yaml", text, strlen(text)), 0);
	out = mlp_json_print(j, false);
	assert_string_equal(out, "{\"a\":{\"b\":1,\"c\":true,\"d\":null,\"e\":\"1\",\"f\":\"yes\"},"
	                         "\"g\":{\"b\":1,\"c\":true,\"d\":null,\"e\":\"1\",\"f\":\"yes\"},"
	                         "\"h\":[\"one\",2.5]}");
	free(out);
	mlp_json_free(j);
	assert_int_equal(mlp_yaml_to_json(&j, "t.yaml", "a: [", 4), MLP_EINVAL);
	assert_non_null(strstr(mlp_error_last(), "t.yaml:"));
}

/* ---- the deployments table ---------------------------------------------- */

static void test_rollout__deployments_table(void **state)
{
	struct dir_fixture *f = *state;
	char *db = xasprintf("%s/mlpipe.db", f->dir);
	struct mlp_store *s = NULL;
	struct mlp_deployment d =
	                              {
	                                      .namespace_ = "ml",
	                                      .deployment = "model-service",
	                                      .container = "model-container",
	                                      .from_image = "m:1",
	                                      .to_image = "m:2",
	                                      .env = "{\"A\":\"1\"}",
	                                      .previous_env = "[]",
	                                      .previous_annotations = "{}",
	                                      .result = MLP_DEPLOY_PENDING,
	                                      .user = "tester",
	                              },
	                      last;
	struct mlp_deployment *rows = NULL;
	size_t n = 0;
	int64_t id1 = 0, id2 = 0;

	assert_int_equal(mlp_store_open(&s, db, 0), 0);
	assert_int_equal(mlp_store_deployment_last_rollout(&last, s, "ml", "model-service"),
	                 MLP_ENOTFOUND);
	assert_int_equal(mlp_store_deployment_start(&id1, s, &d), 0);
	/* Pending is not in effect yet. */
	assert_int_equal(mlp_store_deployment_last_rollout(&last, s, "ml", "model-service"),
	                 MLP_ENOTFOUND);
	assert_int_equal(
	        mlp_store_deployment_set_previous(s, id1, "m:1b", "[{\"name\":\"X\"}]", "{}"), 0);
	assert_int_equal(mlp_store_deployment_finish(s, id1, MLP_DEPLOY_COMPLETE, NULL, "2"), 0);
	d.from_image = "m:2";
	d.to_image = "m:3";
	d.result = MLP_DEPLOY_DRY_RUN;
	assert_int_equal(mlp_store_deployment_start(&id2, s, &d), 0);
	assert_int_equal(mlp_store_deployment_last_rollout(&last, s, "ml", "model-service"), 0);
	assert_int_equal(last.id, id1);
	assert_string_equal(last.from_image, "m:1b");
	assert_string_equal(last.previous_env, "[{\"name\":\"X\"}]");
	assert_string_equal(last.revision, "2");
	assert_int_equal(last.result, MLP_DEPLOY_COMPLETE);
	assert_true(last.ended_at >= last.started_at);
	mlp_deployment_clear(&last);
	assert_int_equal(mlp_store_deployments_list(&rows, &n, s, NULL, NULL, 0), 0);
	assert_int_equal(n, 2);
	assert_int_equal(rows[0].id, id2); /* newest first */
	assert_string_equal(mlp_deploy_result_name(rows[0].result), "dry_run");
	mlp_deployment_free_all(rows, n);
	assert_int_equal(mlp_store_deployments_list(&rows, &n, s, "other", NULL, 0), 0);
	assert_int_equal(n, 0);
	mlp_deployment_free_all(rows, n);
	mlp_store_close(s);
	free(db);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_rollout__complete),
	        cmocka_unit_test(test_rollout__unobserved_generation_waits),
	        cmocka_unit_test(test_rollout__updated_fewer_than_spec),
	        cmocka_unit_test(test_rollout__old_replicas_pending),
	        cmocka_unit_test(test_rollout__available_fewer_than_updated),
	        cmocka_unit_test(test_rollout__deadline_exceeded_fails),
	        cmocka_unit_test(test_rollout__stale_deadline_after_rollback_waits),
	        cmocka_unit_test(test_rollout__progress_text),
	        cmocka_unit_test(test_rollout__empty_status_is_not_complete),
	        cmocka_unit_test(test_rollout__container_lookup),
	        cmocka_unit_test(test_rollout__several_containers_need_a_name),
	        cmocka_unit_test(test_rollout__patch_is_strategic_and_conditional),
	        cmocka_unit_test(test_rollout__env_set_clears_value_from),
	        cmocka_unit_test(test_rollout__model_env_points_at_the_artifact),
	        cmocka_unit_test(test_rollout__env_restore),
	        cmocka_unit_test(test_rollout__annotations_restore),
	        cmocka_unit_test_setup_teardown(test_rollout__kubeconfig_contexts, dir_setup,
	                                        dir_teardown),
	        cmocka_unit_test_setup_teardown(test_rollout__kubeconfig_errors, dir_setup,
	                                        dir_teardown),
	        cmocka_unit_test_setup_teardown(test_rollout__in_cluster, dir_setup, dir_teardown),
	        cmocka_unit_test(test_rollout__yaml_to_json),
	        cmocka_unit_test_setup_teardown(test_rollout__deployments_table, dir_setup,
	                                        dir_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
