/*
 * kvlist.c - the ordered string map (see kvlist.h).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "base/kvlist.h"
#include "base/util.h"

void mlp_kvlist_add(struct mlp_kvlist *l, const char *key, const char *value, struct mlp_pos pos)
{
	xgrow((void **)&l->items, &l->cap, l->len + 1, sizeof(*l->items));
	l->items[l->len].key = xstrdup(key);
	l->items[l->len].value = xstrdup(value);
	l->items[l->len].pos = pos;
	l->len++;
}

void mlp_kvlist_set(struct mlp_kvlist *l, const char *key, const char *value)
{
	for (size_t i = 0; i < l->len; i++) {
		if (strcmp(l->items[i].key, key) == 0) {
			free(l->items[i].value);
			l->items[i].value = xstrdup(value);
			return;
		}
	}
	mlp_kvlist_add(l, key, value, (struct mlp_pos){0, 0});
}

const char *mlp_kvlist_get(const struct mlp_kvlist *l, const char *key)
{
	for (size_t i = 0; i < l->len; i++)
		if (strcmp(l->items[i].key, key) == 0)
			return l->items[i].value;
	return NULL;
}

void mlp_kvlist_free(struct mlp_kvlist *l)
{
	for (size_t i = 0; i < l->len; i++) {
		free(l->items[i].key);
		free(l->items[i].value);
	}
	free(l->items);
	l->items = NULL;
	l->len = l->cap = 0;
}
