/*
 * test-webhook.c - unit tests of webhook verification and push parsing
 * (webhook.h) and the HMAC underneath (crypto.h).
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/crypto.h"
#include "base/error.h"
#include "pipeline/pipeline.h"
#include "serve/webhook.h"

static void test_webhook__hmac_matches_githubs_test_vector(void **state)
{
	char mac[MLP_SHA256_HEX_LEN + 1];
	const char *key = "It's a Secret to Everybody", *body = "Hello, World!";

	(void)state;
	mlp_hmac_sha256_hex(mac, key, strlen(key), body, strlen(body));
	assert_string_equal(mac,
	                    "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
	assert_true(mlp_webhook_verify(
	        MLP_FORGE_GITHUB, key,
	        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17", body,
	        strlen(body)));
	/* Gitea: bare hex, either case. */
	assert_true(mlp_webhook_verify(
	        MLP_FORGE_GITEA, key,
	        "757107EA0EB2509FC211221CCE984B8A37570B6D7586C22C46F4379C8B043E17", body,
	        strlen(body)));
}

static void test_webhook__forgeries_are_refused(void **state)
{
	const char *key = "It's a Secret to Everybody", *body = "Hello, World!";
	const char *good =
	        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

	(void)state;
	/* One bit of the body, the key, the prefix, the length, or nothing. */
	assert_false(mlp_webhook_verify(MLP_FORGE_GITHUB, key, good, "Hello, World?", 13));
	assert_false(mlp_webhook_verify(MLP_FORGE_GITHUB, "it's a secret", good, body, 13));
	assert_false(mlp_webhook_verify(MLP_FORGE_GITHUB, key, good + 7, body, 13));
	assert_false(mlp_webhook_verify(MLP_FORGE_GITHUB, key, "sha256=757107ea", body, 13));
	assert_false(mlp_webhook_verify(MLP_FORGE_GITHUB, key, NULL, body, 13));
	assert_false(mlp_webhook_verify(MLP_FORGE_GITHUB, "", "sha256=", body, 13));
	/* GitLab sends the token itself. */
	assert_true(mlp_webhook_verify(MLP_FORGE_GITLAB, "tok", "tok", body, 13));
	assert_false(mlp_webhook_verify(MLP_FORGE_GITLAB, "tok", "tok2", body, 13));
}

static void test_webhook__push_payloads(void **state)
{
	struct mlp_push p;
	const char *gh = "{\"ref\":\"refs/heads/"
	                 "main\",\"after\":\"0123456789ABCDEF0123456789abcdef01234567\","
	                 "\"repository\":{\"clone_url\":\"https://x/y.git\"}}";
	const char *del = "{\"ref\":\"refs/heads/"
	                  "old\",\"after\":\"0000000000000000000000000000000000000000\","
	                  "\"deleted\":true}";
	const char *gl = "{\"ref\":\"refs/heads/"
	                 "dev\",\"after\":\"1111111111111111111111111111111111111111\","
	                 "\"checkout_sha\":\"2222222222222222222222222222222222222222\"}";

	(void)state;
	assert_int_equal(mlp_webhook_parse_push(&p, gh, strlen(gh)), 0);
	assert_string_equal(p.ref, "refs/heads/main");
	assert_string_equal(p.commit, "0123456789abcdef0123456789abcdef01234567");
	assert_string_equal(p.clone_url, "https://x/y.git");
	assert_false(p.deleted);
	mlp_push_clear(&p);
	assert_int_equal(mlp_webhook_parse_push(&p, del, strlen(del)), 0);
	assert_true(p.deleted);
	mlp_push_clear(&p);
	assert_int_equal(mlp_webhook_parse_push(&p, gl, strlen(gl)), 0);
	assert_string_equal(p.commit, "2222222222222222222222222222222222222222");
	mlp_push_clear(&p);
	assert_int_equal(mlp_webhook_parse_push(&p, "{\"ref\":", 7), MLP_EINVAL);
	assert_int_equal(mlp_webhook_parse_push(&p, "[1]", 3), MLP_EINVAL);
	assert_int_equal(
	        mlp_webhook_parse_push(&p, "{\"ref\":\"refs/heads/x\",\"after\":\"zz\"}", 35),
	        MLP_EINVAL);
}

static void test_webhook__branch_globs(void **state)
{
	(void)state;
	assert_true(mlp_branch_matches("main", "main"));
	assert_false(mlp_branch_matches("main", "maint"));
	assert_true(mlp_branch_matches("main,release/*", "release/1.2"));
	assert_false(mlp_branch_matches("release/*", "release/1/hotfix"));
	assert_true(mlp_branch_matches("release/**", "release/1/hotfix"));
	assert_true(mlp_branch_matches("", "anything"));
}

static struct mlp_pipeline *load(const char *text)
{
	struct mlp_pipeline *p = NULL;
	struct mlp_diags d = {0};

	assert_int_equal(mlp_pipeline_parse(&p, &d, "p.yml", text, strlen(text)), 0);
	mlp_diags_free(&d);
	return p;
}

static void test_webhook__pipeline_push_filters(void **state)
{
	struct mlp_pipeline *p;

	(void)state;
	p = load("on:\n  push:\n    branches: [main]\nstages:\n  a:\n    run: true\n");
	assert_true(mlp_pipeline_wants_push(p, "refs/heads/main"));
	assert_false(mlp_pipeline_wants_push(p, "refs/heads/dev"));
	assert_false(mlp_pipeline_wants_push(p, "refs/tags/v1"));
	mlp_pipeline_free(p);
	/* Only tags: branch pushes do not match (GitHub's meaning). */
	p = load("on:\n  push:\n    tags: [\"v*\"]\nstages:\n  a:\n    run: true\n");
	assert_false(mlp_pipeline_wants_push(p, "refs/heads/main"));
	assert_true(mlp_pipeline_wants_push(p, "refs/tags/v1"));
	mlp_pipeline_free(p);
	p = load("on: push\nstages:\n  a:\n    run: true\n");
	assert_true(mlp_pipeline_wants_push(p, "refs/heads/any"));
	assert_true(mlp_pipeline_wants_push(p, "refs/tags/v1"));
	mlp_pipeline_free(p);
	p = load("stages:\n  a:\n    run: true\n");
	assert_false(mlp_pipeline_wants_push(p, "refs/heads/main"));
	mlp_pipeline_free(p);
}

/* Every trigger obeys on: the same way; by hand always runs. */
static void test_webhook__trigger_rules(void **state)
{
	struct mlp_pipeline *p;
	char *why;

	(void)state;
	p = load("stages:\n  a:\n    run: true\n");
	assert_null(mlp_pipeline_trigger_refusal(p, "api", "refs/heads/main"));
	assert_null(mlp_pipeline_trigger_refusal(p, "cli", "refs/heads/main"));
	assert_null(mlp_pipeline_trigger_refusal(p, NULL, "refs/heads/main"));
	why = mlp_pipeline_trigger_refusal(p, "poll", "refs/heads/main");
	assert_string_equal(why, "does not run on a push to refs/heads/main (on.push)");
	free(why);
	why = mlp_pipeline_trigger_refusal(p, "webhook", "refs/heads/main");
	assert_non_null(why);
	free(why);
	why = mlp_pipeline_trigger_refusal(p, "schedule", "refs/heads/main");
	assert_string_equal(why, "does not run on a schedule (on.schedule)");
	free(why);
	why = mlp_pipeline_trigger_refusal(p, "carrier-pigeon", "refs/heads/main");
	assert_non_null(why);
	free(why);
	mlp_pipeline_free(p);
	p = load("on:\n  push:\n    branches: [main]\n  schedule:\n    - cron: \"@daily\"\n"
	         "stages:\n  a:\n    run: true\n");
	assert_null(mlp_pipeline_trigger_refusal(p, "poll", "refs/heads/main"));
	assert_null(mlp_pipeline_trigger_refusal(p, "webhook", "refs/heads/main"));
	assert_null(mlp_pipeline_trigger_refusal(p, "schedule", "refs/heads/main"));
	why = mlp_pipeline_trigger_refusal(p, "poll", "refs/heads/dev");
	assert_non_null(why);
	free(why);
	mlp_pipeline_free(p);
}

/* Content types by forge, and GitHub's form: '+' is a space, %2B a '+'. */
static void test_webhook__form_deliveries(void **state)
{
	static const char body[] = "x=1&payload=%7B%22m%22%3A%22a+b%2Bc%22%7D&y=2";
	char *out = NULL;
	size_t len = 0;
	bool form;

	(void)state;
	assert_true(mlp_webhook_content_type_ok(&form, MLP_FORGE_GITHUB, "application/json"));
	assert_false(form);
	assert_true(mlp_webhook_content_type_ok(&form, MLP_FORGE_GITHUB,
	                                        "Application/X-WWW-Form-Urlencoded; charset=x"));
	assert_true(form);
	assert_false(mlp_webhook_content_type_ok(&form, MLP_FORGE_GITLAB,
	                                         "application/x-www-form-urlencoded"));
	assert_false(mlp_webhook_content_type_ok(&form, MLP_FORGE_GITEA, "text/plain"));
	assert_false(mlp_webhook_content_type_ok(&form, MLP_FORGE_GITHUB, NULL));
	assert_false(mlp_webhook_content_type_ok(&form, MLP_FORGE_GITHUB, "application/jsonx"));
	assert_true(mlp_webhook_content_type_ok(&form, MLP_FORGE_GITEA, " application/json ;x"));
	assert_int_equal(mlp_webhook_form_payload(&out, &len, body, strlen(body)), 0);
	assert_string_equal(out, "{\"m\":\"a b+c\"}");
	assert_int_equal(len, strlen(out));
	free(out);
	assert_int_equal(mlp_webhook_form_payload(&out, &len, "payload=", 8), 0);
	assert_int_equal(len, 0);
	free(out);
	/* Only the bytes given count: no read past len. */
	assert_int_equal(mlp_webhook_form_payload(&out, &len, "payload=%41%42", 12), 0);
	assert_string_equal(out, "A%");
	free(out);
	assert_int_equal(mlp_webhook_form_payload(&out, &len, "payloadx=1&p=2", 14), MLP_EINVAL);
	assert_null(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_webhook__hmac_matches_githubs_test_vector),
	        cmocka_unit_test(test_webhook__forgeries_are_refused),
	        cmocka_unit_test(test_webhook__push_payloads),
	        cmocka_unit_test(test_webhook__branch_globs),
	        cmocka_unit_test(test_webhook__pipeline_push_filters),
	        cmocka_unit_test(test_webhook__trigger_rules),
	        cmocka_unit_test(test_webhook__form_deliveries),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
