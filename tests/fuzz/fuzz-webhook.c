/*
 * fuzz-webhook.c - fuzz target for webhook deliveries of every forge
 * (src/serve/webhook.c): what `mlpipe serve` does with a POST to
 * /hooks/FORGE after reading it.
 *
 * The first byte picks the forge (GitHub, GitLab, Gitea/Forgejo) and the
 * Content-Type (JSON, JSON with parameters, GitHub's form encoding, or
 * none).  The first line after it is the signature header; the rest is
 * the body.  The signature is checked (mlp_webhook_verify) but need not
 * be valid: the parsing after it runs either way, as it would for a
 * delivery signed with the right secret.  A signature line "VALID" is
 * replaced by the right one, which must then be accepted.
 *
 * A form body gives its payload= field (mlp_webhook_form_payload); the
 * JSON is read as a push (mlp_webhook_parse_push), and the ref is matched
 * against pipelines with on.push filters.  What must hold, besides no
 * crash, leak or undefined behaviour: a refusal comes with MLP_EINVAL and
 * a message; an accepted push has a ref under refs/ and a commit of 40
 * lower-case hex digits; mlp_pipeline_trigger_refusal agrees with
 * mlp_pipeline_wants_push.
 *
 * Built two ways: with clang's -fsanitize=fuzzer by `make fuzz`, and with
 * tests/fuzz/driver.c into a test of `make check` that runs the seed
 * corpus and a few thousand pseudo-random inputs.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/crypto.h"
#include "base/error.h"
#include "base/util.h"
#include "pipeline/pipeline.h"
#include "serve/webhook.h"

#define SECRET "s3cret"

static const char *const pipeline_texts[] = {
        "on: { push: { branches: [main, 'release/**', 'feat/*'], tags: ['v*'] } }\n"
        "stages: { a: { run: x } }\n",
        "on: { push: { tags: ['v[0-9]*'] } }\nstages: { a: { run: x } }\n",
        "on: push\nstages: { a: { run: x } }\n",
        "stages: { a: { run: x } }\n",
};
static struct mlp_pipeline *pipelines[MLP_ARRAY_SIZE(pipeline_texts)];

static const char *const content_types[] = {
        "application/json",
        " Application/JSON; charset=utf-8",
        "application/x-www-form-urlencoded",
        NULL,
};

static void fail(const char *what, const char *body, size_t len)
{
	fprintf(stderr, "fuzz-webhook: %s\nbody (%zu bytes): %.*s\n", what, len,
	        (int)(len < 4096 ? len : 4096), body);
	abort();
}

static void load_pipelines(void)
{
	for (size_t i = 0; i < MLP_ARRAY_SIZE(pipeline_texts); i++) {
		struct mlp_diags d = {0};

		if (pipelines[i] == NULL &&
		    mlp_pipeline_parse(&pipelines[i], &d, "p.yml", pipeline_texts[i],
		                       strlen(pipeline_texts[i])) != 0) {
			mlp_diags_print(&d, stderr);
			abort();
		}
		mlp_diags_free(&d);
	}
}

static void check_push(const char *json, size_t len)
{
	struct mlp_push push;
	int rc = mlp_webhook_parse_push(&push, json, len);

	if (rc != 0) {
		if (rc != MLP_EINVAL || *mlp_error_last() == '\0')
			fail("a refused push without MLP_EINVAL and a message", json, len);
		return;
	}
	if (push.ref == NULL || strncmp(push.ref, "refs/", 5) != 0 || push.commit == NULL ||
	    strlen(push.commit) != 40 || strspn(push.commit, "0123456789abcdef") != 40)
		fail("a push without a ref under refs/ or a commit of 40 hex digits", json, len);
	for (size_t i = 0; i < MLP_ARRAY_SIZE(pipelines); i++) {
		bool wants = mlp_pipeline_wants_push(pipelines[i], push.ref);
		char *why = mlp_pipeline_trigger_refusal(pipelines[i], "webhook", push.ref);

		if (wants != (why == NULL))
			fail("trigger_refusal and wants_push disagree", json, len);
		free(why);
	}
	(void)mlp_branch_matches("main, release/**,,feat/*", push.ref + 5);
	mlp_push_clear(&push);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	enum mlp_forge forge;
	const char *ctype;
	const uint8_t *nl;
	char *sig, *body, *json = NULL, mac[MLP_SHA256_HEX_LEN + 1];
	size_t blen, jlen = 0;
	bool form = false, ok;

	if (size < 1 || size > 1 << 16)
		return 0;
	load_pipelines();
	forge = (enum mlp_forge)(data[0] % 3);
	ctype = content_types[data[0] / 3 % MLP_ARRAY_SIZE(content_types)];
	data++, size--;
	nl = memchr(data, '\n', size);
	sig = xstrndup((const char *)data, nl ? (size_t)(nl - data) : size);
	blen = nl ? size - (size_t)(nl + 1 - data) : 0;
	/* exactly the bytes, without a terminating '\0' to lean on */
	body = xmalloc(blen ? blen : 1);
	if (blen)
		memcpy(body, nl + 1, blen);

	ok = mlp_webhook_content_type_ok(&form, forge, ctype);
	if (form && (!ok || forge != MLP_FORGE_GITHUB))
		fail("a form content type for a forge that has none", body, blen);
	if (strcmp(sig, "VALID") == 0) {
		free(sig);
		mlp_hmac_sha256_hex(mac, SECRET, strlen(SECRET), body, blen);
		sig = forge == MLP_FORGE_GITLAB   ? xstrdup(SECRET)
		      : forge == MLP_FORGE_GITHUB ? xasprintf("sha256=%s", mac)
		                                  : xstrdup(mac);
		if (!mlp_webhook_verify(forge, SECRET, sig, body, blen))
			fail("the right signature is refused", body, blen);
	} else {
		(void)mlp_webhook_verify(forge, SECRET, sig, body, blen);
	}
	/* what serve does after a good signature (or none asked for) */
	if (form) {
		int rc = mlp_webhook_form_payload(&json, &jlen, body, blen);

		if (rc != 0 && (rc != MLP_EINVAL || *mlp_error_last() == '\0'))
			fail("a form without a payload refused without a message", body, blen);
		if (rc == 0) {
			if (json == NULL || json[jlen] != '\0')
				fail("a payload that is not NUL-terminated", body, blen);
			check_push(json, jlen);
		}
		free(json);
	} else {
		check_push(body, blen);
	}
	free(body);
	free(sig);
	return 0;
}
