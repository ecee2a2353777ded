/*
 * json.h - JSON in and out.  The only module that includes cJSON.
 *
 * Building: a tree of struct mlp_json values, printed once.  Reading: the
 * narrow shapes mlpipe accepts from outside (a flat object of numbers for
 * $MLPIPE_METRICS), each validated with a clear message.
 */
#ifndef MLP_JSON_H
#define MLP_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mlp_json;

struct mlp_json *mlp_json_object(void);
struct mlp_json *mlp_json_array(void);
/* Adders take ownership of child; string values are copied.  A NULL
 * string adds JSON null. */
void mlp_json_add(struct mlp_json *obj, const char *key, struct mlp_json *child);
void mlp_json_add_string(struct mlp_json *obj, const char *key, const char *value);
void mlp_json_add_number(struct mlp_json *obj, const char *key, double value);
void mlp_json_add_int(struct mlp_json *obj, const char *key, int64_t value);
void mlp_json_add_bool(struct mlp_json *obj, const char *key, bool value);
void mlp_json_add_null(struct mlp_json *obj, const char *key);
/* Adds text that is already JSON (mlpipe's own, e.g. a stored gate
 * decision) as it is; it is not checked. */
void mlp_json_add_raw(struct mlp_json *obj, const char *key, const char *json);
void mlp_json_append(struct mlp_json *array, struct mlp_json *child);
/* Prints as a new string the caller frees. */
char *mlp_json_print(const struct mlp_json *j, bool pretty);
/* Accepts NULL. */
void mlp_json_free(struct mlp_json *j);

struct mlp_metric {
	char *name;
	double value;
};

/*
 * Parses a flat JSON object whose values are all finite numbers
 * ({"accuracy": 0.91, "loss": 0.3}).  On success *out is an array of *n
 * metrics (free with mlp_metrics_free); otherwise MLP_EINVAL with a message
 * naming what is wrong.
 */
int mlp_json_parse_metrics(struct mlp_metric **out, size_t *n, const char *text, size_t len);
void mlp_metrics_free(struct mlp_metric *m, size_t n);

#endif
