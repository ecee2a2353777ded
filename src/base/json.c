/*
 * json.c - the cJSON wrapper (see json.h).
 */
#include "config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/json.h"
#include "base/util.h"

/* struct mlp_json is cJSON itself; the type stays out of our headers. */
#define CJ(j) ((cJSON *)(j))

static struct mlp_json *checked(cJSON *c)
{
	if (c == NULL) {
		fprintf(stderr, "mlpipe: out of memory (json)\n");
		abort();
	}
	return (struct mlp_json *)c;
}

struct mlp_json *mlp_json_object(void)
{
	return checked(cJSON_CreateObject());
}

struct mlp_json *mlp_json_array(void)
{
	return checked(cJSON_CreateArray());
}

void mlp_json_add(struct mlp_json *obj, const char *key, struct mlp_json *child)
{
	cJSON_AddItemToObject(CJ(obj), key, CJ(child));
}

void mlp_json_add_string(struct mlp_json *obj, const char *key, const char *value)
{
	if (value == NULL)
		mlp_json_add_null(obj, key);
	else
		mlp_json_add(obj, key, checked(cJSON_CreateString(value)));
}

void mlp_json_add_number(struct mlp_json *obj, const char *key, double value)
{
	if (!isfinite(value))
		mlp_json_add_null(obj, key);
	else
		mlp_json_add(obj, key, checked(cJSON_CreateNumber(value)));
}

void mlp_json_add_int(struct mlp_json *obj, const char *key, int64_t value)
{
	mlp_json_add(obj, key, checked(cJSON_CreateNumber((double)value)));
}

void mlp_json_add_bool(struct mlp_json *obj, const char *key, bool value)
{
	mlp_json_add(obj, key, checked(cJSON_CreateBool(value)));
}

void mlp_json_add_null(struct mlp_json *obj, const char *key)
{
	mlp_json_add(obj, key, checked(cJSON_CreateNull()));
}

void mlp_json_add_raw(struct mlp_json *obj, const char *key, const char *json)
{
	mlp_json_add(obj, key, checked(cJSON_CreateRaw(json)));
}

void mlp_json_append(struct mlp_json *array, struct mlp_json *child)
{
	cJSON_AddItemToArray(CJ(array), CJ(child));
}

char *mlp_json_print(const struct mlp_json *j, bool pretty)
{
	char *s = pretty ? cJSON_Print(CJ(j)) : cJSON_PrintUnformatted(CJ(j));
	char *copy;

	if (s == NULL) {
		fprintf(stderr, "mlpipe: out of memory (json)\n");
		abort();
	}
	copy = xstrdup(s);
	cJSON_free(s);
	return copy;
}

void mlp_json_free(struct mlp_json *j)
{
	cJSON_Delete(CJ(j));
}

int mlp_json_parse_metrics(struct mlp_metric **out, size_t *n, const char *text, size_t len)
{
	cJSON *root, *item;
	struct mlp_metric *m = NULL;
	size_t count = 0, i = 0;
	const char *end = NULL;

	*out = NULL;
	*n = 0;
	/* Whitespace only (or nothing) means "no metrics". */
	while (len > 0 && strchr(" \t\r\n", text[len - 1]))
		len--;
	if (len == 0)
		return 0;
	root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
	if (root == NULL) {
		mlp_error_set("metrics are not valid JSON (near byte %ld)",
		              end ? (long)(end - text) : 0L);
		return MLP_EINVAL;
	}
	if (!cJSON_IsObject(root)) {
		cJSON_Delete(root);
		mlp_error_set("metrics must be a JSON object of numbers, "
		              "like {\"accuracy\": 0.91}");
		return MLP_EINVAL;
	}
	cJSON_ArrayForEach(item, root) count++;
	m = xcalloc(count, sizeof(*m));
	cJSON_ArrayForEach(item, root)
	{
		if (item->string == NULL || item->string[0] == '\0') {
			mlp_error_set("metrics: empty metric name");
			goto bad;
		}
		if (!cJSON_IsNumber(item) || !isfinite(item->valuedouble)) {
			mlp_error_set("metric '%s' is not a finite number", item->string);
			goto bad;
		}
		for (size_t k = 0; k < i; k++) {
			if (strcmp(m[k].name, item->string) == 0) {
				mlp_error_set("metric '%s' appears twice", item->string);
				goto bad;
			}
		}
		m[i].name = xstrdup(item->string);
		m[i].value = item->valuedouble;
		i++;
	}
	cJSON_Delete(root);
	*out = m;
	*n = i;
	return 0;
bad:
	cJSON_Delete(root);
	mlp_metrics_free(m, i);
	return MLP_EINVAL;
}

void mlp_metrics_free(struct mlp_metric *m, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(m[i].name);
	free(m);
}

/* ---- reading documents ------------------------------------------------ *
 * (mlp_json_parse, mlp_json_get, mlp_json_get_string, mlp_json_is_object:
 * below, with the webhook readers.) */

const struct mlp_json *mlp_json_path(const struct mlp_json *j, const char *path)
{
	char key[128];

	while (j != NULL && *path) {
		size_t n = strcspn(path, ".");

		if (n >= sizeof(key))
			return NULL;
		memcpy(key, path, n);
		key[n] = '\0';
		j = mlp_json_get(j, key);
		path += n;
		if (*path == '.')
			path++;
	}
	return j;
}

const char *mlp_json_string(const struct mlp_json *j)
{
	return j != NULL && cJSON_IsString(CJ(j)) ? CJ(j)->valuestring : NULL;
}

bool mlp_json_number(double *out, const struct mlp_json *j)
{
	if (j == NULL || !cJSON_IsNumber(CJ(j)))
		return false;
	*out = CJ(j)->valuedouble;
	return true;
}

int64_t mlp_json_int(const struct mlp_json *j, int64_t def)
{
	double v;

	if (!mlp_json_number(&v, j) || !isfinite(v) || v > 9.0e15 || v < -9.0e15)
		return def;
	return (int64_t)v;
}

bool mlp_json_is_true(const struct mlp_json *j)
{
	return j != NULL && cJSON_IsTrue(CJ(j));
}

bool mlp_json_is_array(const struct mlp_json *j)
{
	return j != NULL && cJSON_IsArray(CJ(j));
}

bool mlp_json_is_null(const struct mlp_json *j)
{
	return j != NULL && cJSON_IsNull(CJ(j));
}

size_t mlp_json_count(const struct mlp_json *j)
{
	if (j == NULL || !(cJSON_IsArray(CJ(j)) || cJSON_IsObject(CJ(j))))
		return 0;
	return (size_t)cJSON_GetArraySize(CJ(j));
}

const struct mlp_json *mlp_json_at(const struct mlp_json *j, size_t i)
{
	if (j == NULL || !(cJSON_IsArray(CJ(j)) || cJSON_IsObject(CJ(j))) || i > INT32_MAX)
		return NULL;
	return (const struct mlp_json *)cJSON_GetArrayItem(CJ(j), (int)i);
}

const char *mlp_json_key(const struct mlp_json *member)
{
	return member != NULL ? CJ(member)->string : NULL;
}

struct mlp_json *mlp_json_dup(const struct mlp_json *j)
{
	if (j == NULL)
		return checked(cJSON_CreateNull());
	return checked(cJSON_Duplicate(CJ(j), 1));
}

struct mlp_json *mlp_json_new_string(const char *s)
{
	return checked(s ? cJSON_CreateString(s) : cJSON_CreateNull());
}

struct mlp_json *mlp_json_new_null(void)
{
	return checked(cJSON_CreateNull());
}

struct mlp_json *mlp_json_new_bool(bool b)
{
	return checked(cJSON_CreateBool(b));
}

struct mlp_json *mlp_json_new_number(double v)
{
	return checked(isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull());
}

int mlp_json_parse(struct mlp_json **out, const char *text, size_t len)
{
	cJSON *c = cJSON_ParseWithLength(text, len);

	*out = NULL;
	if (c == NULL) {
		mlp_error_set("malformed JSON");
		return MLP_EINVAL;
	}
	*out = (struct mlp_json *)c;
	return 0;
}

const struct mlp_json *mlp_json_get(const struct mlp_json *j, const char *key)
{
	if (j == NULL || !cJSON_IsObject(CJ(j)))
		return NULL;
	return (const struct mlp_json *)cJSON_GetObjectItemCaseSensitive(CJ(j), key);
}

struct mlp_json *mlp_json_get_mut(struct mlp_json *j, const char *key)
{
	if (j == NULL || !cJSON_IsObject(CJ(j)))
		return NULL;
	return (struct mlp_json *)cJSON_GetObjectItemCaseSensitive(CJ(j), key);
}

const char *mlp_json_get_string(const struct mlp_json *j, const char *key)
{
	const cJSON *c = (const cJSON *)mlp_json_get(j, key);

	return cJSON_IsString(c) ? c->valuestring : NULL;
}

bool mlp_json_get_bool(const struct mlp_json *j, const char *key)
{
	return cJSON_IsTrue((const cJSON *)mlp_json_get(j, key));
}

bool mlp_json_is_object(const struct mlp_json *j)
{
	return j != NULL && cJSON_IsObject(CJ(j));
}
