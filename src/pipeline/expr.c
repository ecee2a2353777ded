/*
 * expr.c - scanning and expanding ${{ ... }} expressions (see expr.h).
 *
 * The grammar is deliberately small: a dotted path of identifiers, with
 * optional spaces inside the braces.  Anything else is an error at
 * validation time, so a typo never reaches a running command.
 */
#include "config.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "pipeline/expr.h"
#include "base/shell.h"

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
		if (n == 2 && strcmp(parts[1], "commit") == 0) {
			ref->kind = MLP_EXPR_RUN_COMMIT;
			return 0;
		}
		mlp_error_set("unknown expression 'run%s%s': the run context has only "
		              "'run.id' and 'run.commit'",
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

/* Values of these kinds are always numbers (or hex digits, or empty):
 * inert in any shell context. */
static bool is_number_kind(enum mlp_expr_kind kind)
{
	return kind == MLP_EXPR_RUN_ID || kind == MLP_EXPR_RUN_COMMIT || kind == MLP_EXPR_METRIC;
}

static char *ref_text(const struct mlp_expr_ref *ref)
{
	switch (ref->kind) {
	case MLP_EXPR_RUN_ID:
		return xstrdup("run.id");
	case MLP_EXPR_RUN_COMMIT:
		return xstrdup("run.commit");
	case MLP_EXPR_ENV:
		return xasprintf("env.%s", ref->name);
	case MLP_EXPR_OUTPUT:
		return xasprintf("stages.%s.outputs.%s", ref->stage, ref->name);
	case MLP_EXPR_METRIC:
		return xasprintf("stages.%s.metrics.%s", ref->stage, ref->name);
	}
	return xstrdup("?");
}

/* Sets the message for a value that may not be placed at site; returns
 * MLP_EINVAL.  site NULL: the shell does not read the spot as the start of
 * anything (after "$$", say). */
static int refuse(const struct mlp_expr_ref *ref, const struct mlp_sh_site *site)
{
	char *name = ref_text(ref);

	mlp_error_set("${{ %s }} is %s, so its value could run as code; pass it through "
	              "env: and use \"$NAME\" instead",
	              name, site ? site->uncertain : "where the shell does not read an expression");
	free(name);
	return MLP_EINVAL;
}

struct expand_state {
	const char *text;
	size_t done; /* bytes of text already copied */
	struct mlp_buf out;
	enum mlp_expr_quoting quoting;
	struct mlp_sh_sites sites;
	mlp_expr_resolve_fn resolve;
	void *payload;
};

static int expand_one(const struct mlp_expr_ref *ref, void *payload)
{
	struct expand_state *st = payload;
	const struct mlp_sh_site *site = NULL;
	const char *value = NULL;
	int rc;

	if (st->quoting == MLP_EXPR_SHELL) {
		site = mlp_sh_sites_find(&st->sites, ref->offset);
		if ((site == NULL || site->uncertain) && !is_number_kind(ref->kind))
			return refuse(ref, site);
	}
	if ((rc = st->resolve(&value, ref, st->payload)) != 0)
		return rc;
	mlp_buf_add(&st->out, st->text + st->done, ref->offset - st->done);
	if (site && !site->uncertain) {
		rc = mlp_sh_quote(&st->out, site, value, st->text + ref->offset + ref->length);
		if (rc != 0) {
			char *name = ref_text(ref), *why = xstrdup(mlp_error_last());

			mlp_error_set("${{ %s }}: %s", name, why);
			free(name);
			free(why);
			return rc;
		}
	} else {
		mlp_buf_puts(&st->out, value);
	}
	st->done = ref->offset + ref->length;
	return 0;
}

int mlp_expr_expand(char **out, const char *text, enum mlp_expr_quoting quoting,
                    mlp_expr_resolve_fn resolve, void *payload)
{
	struct expand_state st = {
	        .text = text,
	        .quoting = quoting,
	        .resolve = resolve,
	        .payload = payload,
	};
	int rc = 0;

	if (quoting == MLP_EXPR_SHELL)
		rc = mlp_sh_scan(&st.sites, text, NULL);
	if (rc == 0)
		rc = mlp_expr_scan(text, NULL, expand_one, &st);
	mlp_sh_sites_free(&st.sites);
	if (rc != 0) {
		mlp_buf_free(&st.out);
		return rc;
	}
	mlp_buf_puts(&st.out, text + st.done);
	*out = mlp_buf_detach(&st.out);
	return 0;
}

struct shell_check {
	const struct mlp_sh_sites *sites;
	void (*report)(size_t offset, const char *message, void *payload);
	void *payload;
};

static int check_one(const struct mlp_expr_ref *ref, void *payload)
{
	struct shell_check *sc = payload;
	const struct mlp_sh_site *site = mlp_sh_sites_find(sc->sites, ref->offset);

	if ((site == NULL || site->uncertain) && !is_number_kind(ref->kind)) {
		refuse(ref, site);
		sc->report(ref->offset, mlp_error_last(), sc->payload);
	}
	return 0;
}

void mlp_expr_check_shell(const char *command,
                          void (*report)(size_t offset, const char *message, void *payload),
                          void *payload)
{
	struct mlp_sh_sites sites = {0};
	struct shell_check sc = {&sites, report, payload};
	size_t err_offset = 0;

	if (mlp_sh_scan(&sites, command, &err_offset) != 0) {
		char *msg = xasprintf("%s: cannot tell how to quote the expressions in it",
		                      mlp_error_last());

		report(err_offset, msg, payload);
		free(msg);
	} else {
		/* malformed expressions are reported by the caller's own scan */
		(void)mlp_expr_scan(command, NULL, check_one, &sc);
	}
	mlp_sh_sites_free(&sites);
}
