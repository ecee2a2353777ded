/*
 * stage-io.c - the files a stage talks back through (see stage-io.h): their
 * names, the environment that carries them, reading them after an attempt
 * and writing them from a stage that runs inside mlpipe.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "engine/stage-io.h"

/* Neither file may be larger: a stage that writes more is broken. */
#define OUTPUT_MAX_BYTES (1024 * 1024)

void mlp_stage_io_init(struct mlp_stage_io *io, const char *dir, const char *stage, int attempt)
{
	mlp_stage_io_clear(io);
	io->output_path = xasprintf("%s/%s.%d.output", dir, stage, attempt);
	io->metrics_path = xasprintf("%s/%s.%d.metrics.json", dir, stage, attempt);
	io->reason_path = xasprintf("%s/%s.%d.reason", dir, stage, attempt);
}

void mlp_stage_io_clear(struct mlp_stage_io *io)
{
	free(io->output_path);
	free(io->metrics_path);
	free(io->reason_path);
	memset(io, 0, sizeof(*io));
}

void mlp_stage_io_setenv(struct mlp_strv *env, const struct mlp_stage_io *io)
{
	mlp_strv_setenv(env, MLP_STAGE_ENV_OUTPUT, io->output_path);
	mlp_strv_setenv(env, MLP_STAGE_ENV_METRICS, io->metrics_path);
	mlp_strv_setenv(env, MLP_STAGE_ENV_REASON, io->reason_path);
}

static bool valid_key(const char *s, size_t len)
{
	if (len == 0 ||
	    !(s[0] == '_' || (s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z')))
		return false;
	for (size_t i = 1; i < len; i++) {
		char c = s[i];

		if (!(c == '_' || c == '-' || (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') ||
		      (c >= 'a' && c <= 'z')))
			return false;
	}
	return true;
}

int mlp_outputs_parse(struct mlp_kvlist *out, const char *text, size_t len)
{
	const char *p = text, *end = text + len;
	int lineno = 0;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		const char *eq, *heredoc = NULL;
		char *key;

		lineno++;
		if (le > p && le[-1] == '\r')
			le--;
		if (le == p) {
			p = nl ? nl + 1 : end;
			continue;
		}
		eq = memchr(p, '=', (size_t)(le - p));
		for (const char *q = p; q + 1 < le; q++) {
			if (q[0] == '<' && q[1] == '<' && (eq == NULL || q < eq)) {
				heredoc = q;
				break;
			}
		}
		if (heredoc) {
			char *delim = xstrndup(heredoc + 2, (size_t)(le - heredoc - 2));
			struct mlp_buf value = {0};
			bool closed = false;

			if (!valid_key(p, (size_t)(heredoc - p)) || delim[0] == '\0') {
				mlp_error_set("$MLPIPE_OUTPUT line %d: expected KEY<<DELIMITER",
				              lineno);
				free(delim);
				return MLP_EINVAL;
			}
			key = xstrndup(p, (size_t)(heredoc - p));
			p = nl ? nl + 1 : end;
			while (p < end) {
				const char *n2 = memchr(p, '\n', (size_t)(end - p));
				const char *e2 = n2 ? n2 : end;
				size_t l2 = (size_t)(e2 - p);

				lineno++;
				if (l2 > 0 && p[l2 - 1] == '\r')
					l2--;
				if (l2 == strlen(delim) && memcmp(p, delim, l2) == 0) {
					closed = true;
					p = n2 ? n2 + 1 : end;
					break;
				}
				if (value.len)
					mlp_buf_putc(&value, '\n');
				mlp_buf_add(&value, p, l2);
				p = n2 ? n2 + 1 : end;
			}
			if (!closed) {
				mlp_error_set(
				        "$MLPIPE_OUTPUT: value of '%s' is missing its closing "
				        "delimiter '%s'",
				        key, delim);
				free(key);
				free(delim);
				mlp_buf_free(&value);
				return MLP_EINVAL;
			}
			mlp_kvlist_set(out, key, mlp_buf_str(&value));
			free(key);
			free(delim);
			mlp_buf_free(&value);
			continue;
		}
		if (eq == NULL || !valid_key(p, (size_t)(eq - p))) {
			mlp_error_set("$MLPIPE_OUTPUT line %d: expected KEY=VALUE (KEY: letters, "
			              "digits, '_' and '-')",
			              lineno);
			return MLP_EINVAL;
		}
		key = xstrndup(p, (size_t)(eq - p));
		{
			char *value = xstrndup(eq + 1, (size_t)(le - eq - 1));

			mlp_kvlist_set(out, key, value);
			free(value);
		}
		free(key);
		p = nl ? nl + 1 : end;
	}
	return 0;
}

int mlp_stage_io_collect(struct mlp_kvlist *outputs, struct mlp_metric **metrics, size_t *nmetrics,
                         const struct mlp_stage_io *io)
{
	char *text = NULL;
	size_t len = 0;
	int rc;

	rc = mlp_read_file(&text, &len, io->output_path, OUTPUT_MAX_BYTES);
	if (rc == 0) {
		rc = mlp_outputs_parse(outputs, text, len);
		free(text);
		if (rc != 0)
			return rc;
	} else if (rc != MLP_ENOTFOUND) {
		return rc;
	}
	rc = mlp_read_file(&text, &len, io->metrics_path, OUTPUT_MAX_BYTES);
	if (rc == 0) {
		rc = mlp_json_parse_metrics(metrics, nmetrics, text, len);
		free(text);
		if (rc != 0) {
			char *msg = xasprintf("$MLPIPE_METRICS: %s", mlp_error_last());

			mlp_error_set("%s", msg);
			free(msg);
		}
		return rc;
	}
	return rc == MLP_ENOTFOUND ? 0 : rc;
}

bool mlp_stage_io_reason(char *buf, size_t size, const struct mlp_stage_io *io)
{
	char *text = NULL;
	size_t len = 0;
	char *nl;

	if (mlp_read_file(&text, &len, io->reason_path, 4096) != 0)
		return false;
	nl = strchr(text, '\n');
	if (nl)
		*nl = '\0';
	if (text[0])
		snprintf(buf, size, "%s", text);
	free(text);
	return buf[0] != '\0';
}

int mlp_stage_io_write(const char *env_name, const char *text, size_t len)
{
	const char *path = getenv(env_name);

	if (path == NULL || *path == '\0')
		return 0;
	return mlp_write_file_atomic(path, text, len, 0644);
}
