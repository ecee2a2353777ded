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

/* ---- reading documents (k8s API objects, kubeconfigs) -----------------
 *
 * A parsed document is a struct mlp_json too; the getters below never
 * fail loudly: a missing member or a value of another type gives NULL (or
 * false), so callers walk optional structure without checks at each step.
 * mlp_json_parse, mlp_json_get, mlp_json_get_string and mlp_json_is_object
 * are declared in the next section.
 */

/* Follows members separated by '.': "status.observedGeneration".  Keys
 * holding '.' need mlp_json_get. */
const struct mlp_json *mlp_json_path(const struct mlp_json *j, const char *path);
/* The string value, or NULL when j is not a string. */
const char *mlp_json_string(const struct mlp_json *j);
/* True and *out when j is a number. */
bool mlp_json_number(double *out, const struct mlp_json *j);
/* The number as an integer, or def when j is not a number. */
int64_t mlp_json_int(const struct mlp_json *j, int64_t def);
/* True when j is the JSON value true. */
bool mlp_json_is_true(const struct mlp_json *j);
bool mlp_json_is_array(const struct mlp_json *j);
bool mlp_json_is_null(const struct mlp_json *j);
/* Elements of an array or members of an object: their count, and the
 * i-th (NULL when out of range).  The key of an object member, else NULL. */
size_t mlp_json_count(const struct mlp_json *j);
const struct mlp_json *mlp_json_at(const struct mlp_json *j, size_t i);
const char *mlp_json_key(const struct mlp_json *member);
/* A deep copy (the caller frees), or JSON null when j is NULL. */
struct mlp_json *mlp_json_dup(const struct mlp_json *j);
/* New scalar values, for mlp_json_add and mlp_json_append. */
struct mlp_json *mlp_json_new_string(const char *s);
struct mlp_json *mlp_json_new_null(void);
struct mlp_json *mlp_json_new_bool(bool b);
struct mlp_json *mlp_json_new_number(double v);

/* ---- reading arbitrary documents (webhook payloads, API bodies) ---------
 *
 * A parsed document is a tree of struct mlp_json; lookups return borrowed
 * pointers into it (NULL when absent or of another type), freed with the
 * root by mlp_json_free.
 */

/* Parses text; MLP_EINVAL with a message when it is not JSON. */
int mlp_json_parse(struct mlp_json **out, const char *text, size_t len);
/* The member key of an object (NULL: absent, or j is not an object). */
const struct mlp_json *mlp_json_get(const struct mlp_json *j, const char *key);
/* The same, for a document being built. */
struct mlp_json *mlp_json_get_mut(struct mlp_json *j, const char *key);
/* A member's string value, or NULL when absent or not a string. */
const char *mlp_json_get_string(const struct mlp_json *j, const char *key);
/* A member's boolean value; false when absent or not a boolean. */
bool mlp_json_get_bool(const struct mlp_json *j, const char *key);
/* Whether j is an object. */
bool mlp_json_is_object(const struct mlp_json *j);

#endif
