/*
 * kvlist.h - an ordered string map with positions: a pipeline's env:,
 * a stage's outputs, --var, rollout env.  Base layer (includes nothing of
 * mlpipe's).
 */
#ifndef MLP_KVLIST_H
#define MLP_KVLIST_H

#include <stddef.h>

/* A position in a file, 1-based; line 0 means "unknown". */
struct mlp_pos {
	int line;
	int col;
};

/* Values may hold ${{ }} expressions, expanded when a stage starts. */
struct mlp_kv {
	char *key;
	char *value;
	struct mlp_pos pos; /* of the value */
};

/* Zero-initialise; free with mlp_kvlist_free(). */
struct mlp_kvlist {
	struct mlp_kv *items;
	size_t len;
	size_t cap;
};

/* Appends key=value (copies both), also when key is already there. */
void mlp_kvlist_add(struct mlp_kvlist *l, const char *key, const char *value, struct mlp_pos pos);
/* Sets key to value (copies both): replaces an existing key's value. */
void mlp_kvlist_set(struct mlp_kvlist *l, const char *key, const char *value);
/* The value of key (the first one), or NULL; owned by the list. */
const char *mlp_kvlist_get(const struct mlp_kvlist *l, const char *key);
/* Frees the items and leaves an empty list; accepts an empty list. */
void mlp_kvlist_free(struct mlp_kvlist *l);

#endif
