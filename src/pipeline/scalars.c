/*
 * scalars.c - one value of the YAML tree read as what its key wants.
 *
 * YAML 1.2 core schema resolution (null, booleans, numbers; yes/no/on/off
 * stay strings), the getters that turn a node into a string, integer,
 * number, boolean, duration or one of a few words and otherwise report
 * "'KEY' must be WHAT, not DESCRIPTION" at the value, and the helpers
 * every walker of a section shares: usable pairs, unknown keys, mappings
 * where one is needed, and noting values that hold ${{ }} expressions for
 * the checks after the walk.  What a key means is the caller's business.
 */
#include "config.h"

#include <ctype.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/error.h"
#include "pipeline/pipeline-int.h"
#include "base/util.h"

bool mlp_pl_is_null(const struct node *n)
{
	return n == NULL ||
	       (n->type == NODE_SCALAR && n->plain &&
	        (n->len == 0 || strcmp(n->value, "~") == 0 || strcmp(n->value, "null") == 0 ||
	         strcmp(n->value, "Null") == 0 || strcmp(n->value, "NULL") == 0));
}

bool mlp_pl_bool_word(bool *out, const char *s)
{
	static const char *const trues[] = {"true", "True", "TRUE"};
	static const char *const falses[] = {"false", "False", "FALSE"};

	for (size_t i = 0; i < 3; i++) {
		if (strcmp(s, trues[i]) == 0) {
			*out = true;
			return true;
		}
		if (strcmp(s, falses[i]) == 0) {
			*out = false;
			return true;
		}
	}
	return false;
}

/* YAML 1.1 booleans that YAML 1.2 (and we) read as strings. */
static bool yaml11_bool_word(const char *s)
{
	static const char *const words[] = {"yes", "no", "on", "off", "y", "n"};

	for (size_t i = 0; i < MLP_ARRAY_SIZE(words); i++)
		if (strcasecmp(s, words[i]) == 0)
			return true;
	return false;
}

bool mlp_pl_int_syntax(const char *s)
{
	if (*s == '-' || *s == '+')
		s++;
	if (!isdigit((unsigned char)*s))
		return false;
	while (isdigit((unsigned char)*s))
		s++;
	return *s == '\0';
}

bool mlp_pl_number_syntax(const char *s)
{
	bool digits = false;

	if (*s == '-' || *s == '+')
		s++;
	while (isdigit((unsigned char)*s)) {
		s++;
		digits = true;
	}
	if (*s == '.') {
		s++;
		while (isdigit((unsigned char)*s)) {
			s++;
			digits = true;
		}
	}
	if (!digits)
		return false;
	if (*s == 'e' || *s == 'E') {
		s++;
		if (*s == '-' || *s == '+')
			s++;
		if (!isdigit((unsigned char)*s))
			return false;
		while (isdigit((unsigned char)*s))
			s++;
	}
	return *s == '\0';
}

/* How a value is named in messages: "a list", "'two'", "the string \"5\"". */
char *mlp_pl_describe(const struct node *n)
{
	size_t len;
	bool cut;
	bool b;

	if (n->type == NODE_MAP)
		return xstrdup("a mapping");
	if (n->type == NODE_SEQ)
		return xstrdup("a list");
	if (n->plain && n->len == 0)
		return xstrdup("an empty value");
	if (mlp_pl_is_null(n))
		return xstrdup("null");
	if (!n->plain && (mlp_pl_number_syntax(n->value) || mlp_pl_bool_word(&b, n->value)))
		return xasprintf("the string \"%s\"", n->value);
	len = strcspn(n->value, "\r\n");
	cut = n->value[len] != '\0';
	if (len > 40) {
		len = 40;
		while (len > 0 && ((unsigned char)n->value[len] & 0xc0) == 0x80)
			len--;
		cut = true;
	}
	return xasprintf("'%.*s%s'", (int)len, n->value, cut ? "..." : "");
}

/* Reports "'KEY' must be WHAT, not DESCRIPTION" at the value. */
void mlp_pl_wrong_type(struct ctx *c, const char *key, const struct node *v, const char *what)
{
	char *d = mlp_pl_describe(v);

	mlp_pl_report(c, v->pos, "'%s' must be %s, not %s", key, what, d);
	free(d);
}

static void check_no_expr(struct ctx *c, const char *key, const struct node *v)
{
	if (strstr(v->value, "${{") != NULL)
		mlp_pl_report(c, v->pos,
		              "'%s' cannot hold expressions (${{ }} is expanded only in "
		              "run, command, data, test_data, env, image and model.path)",
		              key);
}

/* Any non-null scalar, as text.  *out is replaced (freed first). */
bool mlp_pl_get_string(char **out, struct ctx *c, const char *key, const struct node *v)
{
	if (v->type != NODE_SCALAR || mlp_pl_is_null(v)) {
		mlp_pl_wrong_type(c, key, v, "a string");
		return false;
	}
	free(*out);
	*out = xstrdup(v->value);
	return true;
}

/* A string where ${{ }} expressions are not expanded. */
bool mlp_pl_get_name(char **out, struct ctx *c, const char *key, const struct node *v)
{
	if (!mlp_pl_get_string(out, c, key, v))
		return false;
	check_no_expr(c, key, v);
	return true;
}

bool mlp_pl_get_int(long long *out, struct ctx *c, const char *key, const struct node *v,
                    long long min, long long max)
{
	long long value;
	bool below;

	if (v->type != NODE_SCALAR || !v->plain || !mlp_pl_int_syntax(v->value)) {
		mlp_pl_wrong_type(c, key, v, "an integer");
		return false;
	}
	if (mlp_parse_int(&value, v->value, min, max) == 0) {
		*out = value;
		return true;
	}
	/* Out of range, or beyond what a long long holds. */
	if (mlp_parse_int(&value, v->value, LLONG_MIN, LLONG_MAX) == 0)
		below = value < min;
	else
		below = v->value[0] == '-';
	if (max < INT_MAX && min > LLONG_MIN)
		mlp_pl_report(c, v->pos, "'%s' must be from %lld to %lld, not %s", key, min, max,
		              v->value);
	else if (below)
		mlp_pl_report(c, v->pos, "'%s' must be at least %lld, not %s", key, min, v->value);
	else
		mlp_pl_report(c, v->pos, "'%s' must be at most %lld, not %s", key, max, v->value);
	return false;
}

bool mlp_pl_get_int32(int *out, struct ctx *c, const char *key, const struct node *v, int min)
{
	long long value;

	if (!mlp_pl_get_int(&value, c, key, v, min, INT_MAX))
		return false;
	*out = (int)value;
	return true;
}

bool mlp_pl_get_number(double *out, struct ctx *c, const char *key, const struct node *v)
{
	if (v->type != NODE_SCALAR || !v->plain || !mlp_pl_number_syntax(v->value) ||
	    mlp_parse_double(out, v->value) != 0) {
		mlp_pl_wrong_type(c, key, v, "a number");
		return false;
	}
	return true;
}

bool mlp_pl_get_bool(bool *out, struct ctx *c, const char *key, const struct node *v)
{
	if (v->type == NODE_SCALAR && v->plain && mlp_pl_bool_word(out, v->value))
		return true;
	if (v->type == NODE_SCALAR && v->plain && yaml11_bool_word(v->value))
		mlp_pl_report(c, v->pos,
		              "'%s' must be true or false, not '%s' (YAML 1.2 reads "
		              "yes/no/on/off as strings)",
		              key, v->value);
	else
		mlp_pl_wrong_type(c, key, v, "true or false");
	return false;
}

/* A duration; with positive, 0 is refused. */
bool mlp_pl_get_duration(int64_t *out, struct ctx *c, const char *key, const struct node *v,
                         bool positive)
{
	int64_t ms;

	if (v->type != NODE_SCALAR || mlp_pl_is_null(v)) {
		mlp_pl_wrong_type(c, key, v, "a duration string such as '30m'");
		return false;
	}
	if (mlp_parse_duration(&ms, v->value) != 0) {
		mlp_pl_report(c, v->pos, "'%s': %s", key, mlp_error_last());
		return false;
	}
	if (positive && ms == 0) {
		mlp_pl_report(c, v->pos, "'%s' must be more than 0", key);
		return false;
	}
	*out = ms;
	return true;
}

/* One of a few words; *out is the index in options. */
bool mlp_pl_get_enum(int *out, struct ctx *c, const char *key, const struct node *v,
                     const char *const *options, size_t n)
{
	struct mlp_buf list = {0};

	if (v->type == NODE_SCALAR && !mlp_pl_is_null(v)) {
		for (size_t i = 0; i < n; i++) {
			if (strcmp(v->value, options[i]) == 0) {
				*out = (int)i;
				return true;
			}
		}
	}
	for (size_t i = 0; i < n; i++)
		mlp_buf_printf(&list, "%s%s", i == 0 ? "" : i + 1 == n ? " or " : ", ", options[i]);
	mlp_pl_wrong_type(c, key, v, mlp_buf_str(&list));
	mlp_buf_free(&list);
	return false;
}

/* A string or a list of strings. */
bool mlp_pl_get_string_list(char ***out, struct mlp_pos **out_pos, size_t *n, struct ctx *c,
                            const char *key, const struct node *v)
{
	const struct node *const *items = (const struct node *const *)&v;
	size_t count = 1;
	bool ok = true;

	if (v->type == NODE_SEQ) {
		items = (const struct node *const *)v->items;
		count = v->nitems;
	} else if (v->type != NODE_SCALAR || mlp_pl_is_null(v)) {
		mlp_pl_wrong_type(c, key, v, "a string or a list of strings");
		return false;
	}
	for (size_t i = 0; i < count; i++) {
		const struct node *item = items[i];

		if (item->type != NODE_SCALAR || mlp_pl_is_null(item)) {
			char *d = mlp_pl_describe(item);

			mlp_pl_report(c, item->pos, "'%s' entries must be strings, not %s", key, d);
			free(d);
			ok = false;
			continue;
		}
		*out = xrealloc(*out, (*n + 1) * sizeof(**out));
		(*out)[*n] = xstrdup(item->value);
		if (out_pos != NULL) {
			*out_pos = xrealloc(*out_pos, (*n + 1) * sizeof(**out_pos));
			(*out_pos)[*n] = item->pos;
		}
		(*n)++;
	}
	return ok;
}

/* Pairs the walkers look at: not duplicates, with a string key. */
bool mlp_pl_pair_usable(const struct pair *pr)
{
	return pr->dup_of == NULL && pr->key->type == NODE_SCALAR;
}

void mlp_pl_unknown_key(struct ctx *c, const struct node *key, const char *const *known, size_t n,
                        const char *where)
{
	const char *near = mlp_suggest(key->value, known, n);

	if (near)
		mlp_pl_report(c, key->pos, "unknown key '%s'%s (did you mean '%s'?)", key->value,
		              where, near);
	else
		mlp_pl_report(c, key->pos, "unknown key '%s'%s", key->value, where);
}

/* A mapping where one is needed; null counts as an empty mapping when
 * null_ok. */
bool mlp_pl_want_map(struct ctx *c, const char *key, const struct node *v, const char *what,
                     bool null_ok)
{
	if (v->type == NODE_MAP || (null_ok && mlp_pl_is_null(v)))
		return true;
	mlp_pl_wrong_type(c, key, v, what);
	return false;
}

static void note_expr_as(struct ctx *c, size_t stage, const struct node *v, bool shell)
{
	if (v->type != NODE_SCALAR || strstr(v->value, "${{") == NULL)
		return;
	xgrow((void **)&c->exprs, &c->cexprs, c->nexprs + 1, sizeof(*c->exprs));
	c->exprs[c->nexprs].stage = stage;
	c->exprs[c->nexprs].node = v;
	c->exprs[c->nexprs].shell = shell;
	c->nexprs++;
}

void mlp_pl_note_expr(struct ctx *c, size_t stage, const struct node *v)
{
	note_expr_as(c, stage, v, false);
}

/* A value that runs as a /bin/sh command (run, train.command). */
void mlp_pl_note_shell_expr(struct ctx *c, size_t stage, const struct node *v)
{
	note_expr_as(c, stage, v, true);
}
