/*
 * expr.c - scanning and expanding ${{ ... }} expressions (see expr.h).
 *
 * The grammar is deliberately small: a dotted path of identifiers, with
 * optional spaces inside the braces.  Anything else is an error at
 * validation time, so a typo never reaches a running command.
 */
#include "config.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "expr.h"

#define MAX_PARTS 4

static int is_ident_char(int c)
{
	return isalnum(c) || c == '_' || c == '-';
}

/* Splits "a.b.c" into parts (in place); returns the count or -1. */
static int split_path(char *s, char **parts)
{
	int n = 0;
	char *p = s;

	for (;;) {
		char *start = p;

		while (is_ident_char((unsigned char)*p))
			p++;
		if (p == start || n == MAX_PARTS)
			return -1;
		parts[n++] = start;
		if (*p == '\0')
			return n;
		if (*p != '.')
			return -1;
		*p++ = '\0';
	}
}

static int classify(struct mlp_expr_ref *ref, char *body)
{
	char *parts[MAX_PARTS];
	int n = split_path(body, parts);

	if (n < 0) {
		mlp_error_set("malformed expression '${{ %s }}' (expected e.g. "
		              "${{ env.NAME }} or ${{ stages.S.outputs.KEY }})",
		              body);
		return MLP_EINVAL;
	}
	if (strcmp(parts[0], "run") == 0) {
		if (n == 2 && strcmp(parts[1], "id") == 0) {
			ref->kind = MLP_EXPR_RUN_ID;
			return 0;
		}
		mlp_error_set("unknown expression 'run%s%s': the run context has only "
		              "'run.id'",
		              n > 1 ? "." : "", n > 1 ? parts[1] : "");
		return MLP_EINVAL;
	}
	if (strcmp(parts[0], "env") == 0) {
		if (n == 2) {
			ref->kind = MLP_EXPR_ENV;
			ref->name = parts[1];
			return 0;
		}
		mlp_error_set("expression 'env' needs a variable name: ${{ env.NAME }}");
		return MLP_EINVAL;
	}
	if (strcmp(parts[0], "stages") == 0) {
		if (n == 4 && strcmp(parts[2], "outputs") == 0) {
			ref->kind = MLP_EXPR_OUTPUT;
		} else if (n == 4 && strcmp(parts[2], "metrics") == 0) {
			ref->kind = MLP_EXPR_METRIC;
		} else {
			mlp_error_set("expression 'stages' takes the form "
			              "${{ stages.STAGE.outputs.KEY }} or "
			              "${{ stages.STAGE.metrics.NAME }}");
			return MLP_EINVAL;
		}
		ref->stage = parts[1];
		ref->name = parts[3];
		return 0;
	}
	{
		static const char *const contexts[] = {"run", "env", "stages"};
		const char *near = mlp_suggest(parts[0], contexts, MLP_ARRAY_SIZE(contexts));

		if (near)
			mlp_error_set("unknown context '%s' in expression (did you mean '%s'?)",
			              parts[0], near);
		else
			mlp_error_set("unknown context '%s' in expression (known: run, env, "
			              "stages)",
			              parts[0]);
	}
	return MLP_EINVAL;
}

int mlp_expr_scan(const char *text, size_t *err_offset,
                  int (*cb)(const struct mlp_expr_ref *ref, void *payload), void *payload)
{
	const char *p = text;

	while ((p = strstr(p, "${{")) != NULL) {
		const char *close = strstr(p + 3, "}}");
		struct mlp_expr_ref ref = {0};
		const char *b, *e;
		char *body;
		int rc;

		if (close == NULL) {
			mlp_error_set("unterminated expression: '${{' without '}}'");
			if (err_offset)
				*err_offset = (size_t)(p - text);
			return MLP_EINVAL;
		}
		b = p + 3;
		e = close;
		while (b < e && (*b == ' ' || *b == '\t'))
			b++;
		while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		body = xstrndup(b, (size_t)(e - b));
		ref.offset = (size_t)(p - text);
		ref.length = (size_t)(close + 2 - p);
		rc = classify(&ref, body);
		if (rc == 0)
			rc = cb(&ref, payload);
		else if (err_offset)
			*err_offset = (size_t)(p - text);
		free(body);
		if (rc != 0)
			return rc;
		p = close + 2;
	}
	return 0;
}

struct expand_state {
	const char *text;
	size_t done; /* bytes of text already copied */
	struct mlp_buf out;
	int shell_quote;
	mlp_expr_resolve_fn resolve;
	void *payload;
};

static int expand_one(const struct mlp_expr_ref *ref, void *payload)
{
	struct expand_state *st = payload;
	const char *value = NULL;
	int rc = st->resolve(&value, ref, st->payload);

	if (rc != 0)
		return rc;
	mlp_buf_add(&st->out, st->text + st->done, ref->offset - st->done);
	if (st->shell_quote)
		mlp_shell_quote(&st->out, value);
	else
		mlp_buf_puts(&st->out, value);
	st->done = ref->offset + ref->length;
	return 0;
}

int mlp_expr_expand(char **out, const char *text, int shell_quote, mlp_expr_resolve_fn resolve,
                    void *payload)
{
	struct expand_state st = {
	        .text = text,
	        .shell_quote = shell_quote,
	        .resolve = resolve,
	        .payload = payload,
	};
	int rc = mlp_expr_scan(text, NULL, expand_one, &st);

	if (rc != 0) {
		mlp_buf_free(&st.out);
		return rc;
	}
	mlp_buf_puts(&st.out, text + st.done);
	*out = mlp_buf_detach(&st.out);
	return 0;
}
