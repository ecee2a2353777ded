/*
 * yamltree.h - a YAML document as a JSON value, for files mlpipe reads
 * that are not pipelines (kubeconfigs).
 *
 * Implemented in yamltree.c (src/pipeline/ is the only module that
 * includes libyaml), with the same parser and the same protections as
 * pipeline files (depth, alias expansion limits, merge keys).  Scalars
 * become strings, except plain null/~ (JSON null), plain true/false
 * (booleans) and plain numbers; a duplicate key keeps its first value.
 */
#ifndef MLP_YAMLTREE_H
#define MLP_YAMLTREE_H

#include <stddef.h>

struct mlp_json;

/*
 * Parses text (one YAML document; path names it in messages) into *out
 * (free with mlp_json_free; JSON null for an empty document).  MLP_EINVAL
 * with a message "PATH:LINE:COL: problem" on a YAML error.
 */
int mlp_yaml_to_json(struct mlp_json **out, const char *path, const char *text, size_t len);

#endif
