/*
 * webhook.c - push events (see webhook.h).
 *
 * The signature is checked before anything reads the body: the caller
 * passes the raw bytes as received, and mlp_webhook_parse_push is only
 * called on a body that verified.
 */
#include "config.h"

#include <ctype.h>
#include <limits.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "base/crypto.h"
#include "base/error.h"
#include "base/json.h"
#include "pipeline/pipeline.h"
#include "base/util.h"
#include "serve/webhook.h"

const char *mlp_forge_name(enum mlp_forge f)
{
	switch (f) {
	case MLP_FORGE_GITHUB:
		return "github";
	case MLP_FORGE_GITLAB:
		return "gitlab";
	case MLP_FORGE_GITEA:
		return "gitea";
	}
	return "unknown";
}

int mlp_forge_parse(enum mlp_forge *out, const char *name)
{
	if (strcmp(name, "github") == 0)
		*out = MLP_FORGE_GITHUB;
	else if (strcmp(name, "gitlab") == 0)
		*out = MLP_FORGE_GITLAB;
	else if (strcmp(name, "gitea") == 0 || strcmp(name, "forgejo") == 0)
		*out = MLP_FORGE_GITEA;
	else
		return MLP_EINVAL;
	return 0;
}

bool mlp_webhook_verify(enum mlp_forge f, const char *secret, const char *signature,
                        const void *body, size_t len)
{
	char mac[MLP_SHA256_HEX_LEN + 1], given[MLP_SHA256_HEX_LEN + 1];
	size_t slen;

	if (secret == NULL || *secret == '\0' || signature == NULL)
		return false;
	if (f == MLP_FORGE_GITLAB) {
		/* GitLab sends the secret itself; compare hashes so the time
		 * does not depend on the lengths either. */
		char a[MLP_SHA256_HEX_LEN + 1], b[MLP_SHA256_HEX_LEN + 1];

		mlp_sha256_hex(a, secret, strlen(secret));
		mlp_sha256_hex(b, signature, strlen(signature));
		return mlp_equal_ct(a, b, MLP_SHA256_HEX_LEN);
	}
	if (f == MLP_FORGE_GITHUB) {
		if (strncmp(signature, "sha256=", 7) != 0)
			return false;
		signature += 7;
	}
	slen = strlen(signature);
	if (slen != MLP_SHA256_HEX_LEN)
		return false;
	/* Hex digits may come in either case. */
	for (size_t i = 0; i < slen; i++)
		given[i] = (char)tolower((unsigned char)signature[i]);
	given[slen] = '\0';
	mlp_hmac_sha256_hex(mac, secret, strlen(secret), body, len);
	return mlp_equal_ct(mac, given, MLP_SHA256_HEX_LEN);
}

bool mlp_webhook_content_type_ok(bool *form, enum mlp_forge f, const char *content_type)
{
	static const char json[] = "application/json",
	                  urlenc[] = "application/x-www-form-urlencoded";
	size_t len;

	*form = false;
	if (content_type == NULL)
		return false;
	while (*content_type == ' ' || *content_type == '\t')
		content_type++;
	len = strcspn(content_type, "; \t");
	if (len == strlen(json) && strncasecmp(content_type, json, len) == 0)
		return true;
	if (f == MLP_FORGE_GITHUB && len == strlen(urlenc) &&
	    strncasecmp(content_type, urlenc, len) == 0) {
		*form = true;
		return true;
	}
	return false;
}

int mlp_webhook_form_payload(char **out, size_t *out_len, const char *body, size_t len)
{
	const char *p = body, *end = body + len;

	*out = NULL;
	*out_len = 0;
	while (p < end) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		size_t flen = amp ? (size_t)(amp - p) : (size_t)(end - p);

		if (flen >= 8 && memcmp(p, "payload=", 8) == 0 && flen - 8 <= INT_MAX) {
			char *value = xmalloc(flen - 8 + 1), *dec;
			int dlen = 0;

			memcpy(value, p + 8, flen - 8);
			value[flen - 8] = '\0';

			/* A form encodes a space as '+' (and a '+' as %2B); libcurl
			 * decodes the %XX escapes. */
			for (size_t i = 0; i < flen - 8; i++)
				if (value[i] == '+')
					value[i] = ' ';
			dec = curl_easy_unescape(NULL, value, (int)(flen - 8), &dlen);
			free(value);
			if (dec == NULL)
				break;
			*out = xmalloc((size_t)dlen + 1);
			memcpy(*out, dec, (size_t)dlen);
			(*out)[dlen] = '\0';
			*out_len = (size_t)dlen;
			curl_free(dec);
			return 0;
		}
		p += flen + 1;
	}
	mlp_error_set("the form-encoded delivery has no payload field");
	return MLP_EINVAL;
}

static bool is_commit_id(const char *s)
{
	if (s == NULL || strlen(s) != 40)
		return false;
	for (const char *p = s; *p; p++)
		if (!isxdigit((unsigned char)*p))
			return false;
	return true;
}

int mlp_webhook_parse_push(struct mlp_push *out, const char *body, size_t len)
{
	struct mlp_json *j = NULL;
	const char *ref, *after, *url;
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = mlp_json_parse(&j, body, len)) != 0)
		return rc;
	if (!mlp_json_is_object(j)) {
		mlp_error_set("the payload is not a JSON object");
		rc = MLP_EINVAL;
		goto done;
	}
	ref = mlp_json_get_string(j, "ref");
	/* GitLab: checkout_sha is what the ref now points at. */
	after = mlp_json_get_string(j, "checkout_sha");
	if (!is_commit_id(after))
		after = mlp_json_get_string(j, "after");
	if (ref == NULL || strncmp(ref, "refs/", 5) != 0 || !is_commit_id(after)) {
		mlp_error_set("the push payload has no ref or no commit");
		rc = MLP_EINVAL;
		goto done;
	}
	out->ref = xstrdup(ref);
	out->commit = xstrdup(after);
	for (char *p = out->commit; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	out->deleted =
	        mlp_json_get_bool(j, "deleted") || strspn(out->commit, "0") == strlen(out->commit);
	url = mlp_json_get_string(mlp_json_get(j, "repository"), "clone_url");
	if (url == NULL)
		url = mlp_json_get_string(mlp_json_get(j, "repository"), "git_http_url");
	out->clone_url = url ? xstrdup(url) : NULL;
done:
	mlp_json_free(j);
	if (rc != 0)
		mlp_push_clear(out);
	return rc;
}

void mlp_push_clear(struct mlp_push *p)
{
	free(p->ref);
	free(p->commit);
	free(p->clone_url);
	memset(p, 0, sizeof(*p));
}

static bool glob_matches(const char *glob, const char *name)
{
	return fnmatch(glob, name, strstr(glob, "**") ? 0 : FNM_PATHNAME) == 0;
}

bool mlp_branch_matches(const char *globs, const char *branch)
{
	char *copy, *save = NULL;
	bool any = false, match = false;

	if (globs == NULL)
		return true;
	copy = xstrdup(globs);
	for (char *g = strtok_r(copy, ",", &save); g && !match; g = strtok_r(NULL, ",", &save)) {
		while (*g == ' ')
			g++;
		if (*g == '\0')
			continue;
		any = true;
		match = glob_matches(g, branch);
	}
	free(copy);
	return match || !any;
}

static bool any_matches(char **globs, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (glob_matches(globs[i], name))
			return true;
	return false;
}

bool mlp_pipeline_wants_push(const struct mlp_pipeline *p, const char *ref)
{
	if (!p->on_push)
		return false;
	if (strncmp(ref, "refs/heads/", 11) == 0) {
		if (p->npush_branches > 0)
			return any_matches(p->push_branches, p->npush_branches, ref + 11);
		return p->npush_tags == 0;
	}
	if (strncmp(ref, "refs/tags/", 10) == 0) {
		if (p->npush_tags > 0)
			return any_matches(p->push_tags, p->npush_tags, ref + 10);
		return p->npush_branches == 0;
	}
	return false;
}

char *mlp_pipeline_trigger_refusal(const struct mlp_pipeline *p, const char *trigger,
                                   const char *ref)
{
	if (trigger == NULL || strcmp(trigger, "api") == 0 || strcmp(trigger, "cli") == 0)
		return NULL;
	if (strcmp(trigger, "webhook") == 0 || strcmp(trigger, "poll") == 0)
		return mlp_pipeline_wants_push(p, ref)
		               ? NULL
		               : xasprintf("does not run on a push to %s (on.push)", ref);
	if (strcmp(trigger, "schedule") == 0)
		return p->nschedules > 0 ? NULL
		                         : xstrdup("does not run on a schedule (on.schedule)");
	return xasprintf("does not know the trigger '%s'", trigger);
}
