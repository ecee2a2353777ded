/*
 * config.c - the settings of `mlpipe serve`: defaults, the --config file
 * (KEY = VALUE lines) and the command's options over it (serve-int.h).
 *
 * Only parsing and checking here: nothing is opened or started.  Each
 * option of the command is a key of the file (docs/serve.md), so both go
 * through config_set() and say the same thing about a bad value.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/kvlist.h"
#include "base/util.h"
#include "serve/serve-int.h"

#define DEFAULT_BODY_MAX (1024 * 1024)

static int parse_listen(struct serve_config *c, const char *v)
{
	const char *colon = strrchr(v, ':');
	long long port;

	if (colon == NULL || mlp_parse_int(&port, colon + 1, 0, 65535) != 0) {
		mlp_error_set("--listen wants HOST:PORT, not '%s'", v);
		return MLP_EINVAL;
	}
	free(c->host);
	if (v[0] == '[' && colon > v + 1 && colon[-1] == ']')
		c->host = xstrndup(v + 1, (size_t)(colon - v - 2));
	else
		c->host = xstrndup(v, (size_t)(colon - v));
	c->port = (int)port;
	return 0;
}

/* Sets one setting (from the file or an option). */
static int config_set(struct serve_config *c, const char *key, const char *v)
{
	long long n;

	if (strcmp(key, "listen") == 0)
		return parse_listen(c, v);
	if (strcmp(key, "tls_cert") == 0 || strcmp(key, "tls_key") == 0) {
		char **slot = key[4] == 'c' ? &c->tls_cert : &c->tls_key;

		free(*slot);
		*slot = xstrdup(v);
		return 0;
	}
	if (strcmp(key, "port_file") == 0) {
		free(c->port_file);
		c->port_file = xstrdup(v);
		return 0;
	}
	if (strcmp(key, "jobs") == 0 || strcmp(key, "per_project") == 0 ||
	    strcmp(key, "resume_limit") == 0) {
		if (mlp_parse_int(&n, v, 1, 4096) != 0) {
			mlp_error_set("%s wants a number from 1 to 4096, not '%s'", key, v);
			return MLP_EINVAL;
		}
		if (key[0] == 'j')
			c->jobs = (int)n;
		else if (key[0] == 'p')
			c->per_project = (int)n;
		else
			c->resume_limit = (int)n;
		return 0;
	}
	if (strcmp(key, "body_max") == 0) {
		if (mlp_parse_int(&n, v, 1024, 64 << 20) != 0) {
			mlp_error_set("body_max wants bytes from 1024 to 67108864, not '%s'", v);
			return MLP_EINVAL;
		}
		c->body_max = (size_t)n;
		return 0;
	}
	if (strcmp(key, "http_threads") == 0) {
		if (mlp_parse_int(&n, v, 1, 256) != 0) {
			mlp_error_set("http_threads wants a number from 1 to 256, not '%s'", v);
			return MLP_EINVAL;
		}
		c->http_threads = (int)n;
		return 0;
	}
	if (strcmp(key, "max_connections") == 0 || strcmp(key, "max_connections_per_ip") == 0) {
		bool per_ip = strcmp(key, "max_connections_per_ip") == 0;

		if (mlp_parse_int(&n, v, per_ip ? 0 : 16, 1 << 20) != 0) {
			mlp_error_set("%s wants a number from %d to 1048576, not '%s'", key,
			              per_ip ? 0 : 16, v);
			return MLP_EINVAL;
		}
		if (per_ip)
			c->max_connections_per_ip = (int)n;
		else
			c->max_connections = (int)n;
		return 0;
	}
	if (strcmp(key, "request_timeout") == 0) {
		int64_t ms;

		if (mlp_parse_duration(&ms, v) != 0)
			return MLP_EINVAL;
		if (ms < 1000 || ms > 3600 * 1000) {
			mlp_error_set("request_timeout wants a duration from 1s to 1h, not '%s'",
			              v);
			return MLP_EINVAL;
		}
		c->request_timeout_ms = ms;
		return 0;
	}
	if (strcmp(key, "poll_interval") == 0 || strcmp(key, "grace") == 0) {
		int64_t ms;

		if (strcmp(v, "0") == 0)
			ms = 0;
		else if (mlp_parse_duration(&ms, v) != 0)
			return MLP_EINVAL;
		if (key[0] == 'p')
			c->poll_interval_ms = ms;
		else
			c->grace_ms = ms;
		return 0;
	}
	if (strcmp(key, "dispatch") == 0) {
		if (strcmp(v, "true") != 0 && strcmp(v, "false") != 0) {
			mlp_error_set("dispatch wants true or false, not '%s'", v);
			return MLP_EINVAL;
		}
		c->dispatch = v[0] == 't';
		return 0;
	}
	mlp_error_set("unknown setting '%s'", key);
	return MLP_EINVAL;
}

/* KEY = VALUE lines; '#' starts a comment. */
static int config_read_file(struct serve_config *c, const char *path)
{
	char *text = NULL, *save = NULL;
	size_t len;
	int lineno = 0, rc;

	if ((rc = mlp_read_file(&text, &len, path, 1 << 20)) != 0)
		return rc;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *eq, *k, *v, *end;

		lineno++;
		if ((end = strchr(line, '#')) != NULL)
			*end = '\0';
		while (*line == ' ' || *line == '\t')
			line++;
		if (*line == '\0')
			continue;
		if ((eq = strchr(line, '=')) == NULL) {
			mlp_error_set("%s: '%s' is not KEY = VALUE", path, line);
			rc = MLP_EINVAL;
			break;
		}
		k = line;
		v = eq + 1;
		for (end = eq; end > k && (end[-1] == ' ' || end[-1] == '\t'); end--)
			;
		*end = '\0';
		while (*v == ' ' || *v == '\t')
			v++;
		for (end = v + strlen(v); end > v && strchr(" \t\r", end[-1]); end--)
			;
		*end = '\0';
		if ((rc = config_set(c, k, v)) != 0) {
			char *msg = xasprintf("%s: %s", path, mlp_error_last());

			mlp_error_set("%s", msg);
			free(msg);
			break;
		}
	}
	free(text);
	return rc;
}

int serve_config_load(struct serve_config *c, const char *file, const struct mlp_kvlist *settings)
{
	int rc;

	memset(c, 0, sizeof(*c));
	c->host = xstrdup("127.0.0.1");
	c->port = 8080;
	c->jobs = 2;
	c->per_project = 1;
	c->poll_interval_ms = 60000;
	c->grace_ms = 30000;
	c->body_max = DEFAULT_BODY_MAX;
	c->http_threads = 4;
	c->max_connections = 2048;
	c->max_connections_per_ip = 128;
	c->request_timeout_ms = 30000;
	c->resume_limit = 3;
	c->dispatch = true;
	/* The file first, then the options over it. */
	if (file && (rc = config_read_file(c, file)) != 0)
		return rc;
	for (size_t i = 0; settings && i < settings->len; i++)
		if ((rc = config_set(c, settings->items[i].key, settings->items[i].value)) != 0)
			return rc;
	return 0;
}

void serve_config_clear(struct serve_config *c)
{
	free(c->host);
	free(c->tls_cert);
	free(c->tls_key);
	free(c->port_file);
	memset(c, 0, sizeof(*c));
}
