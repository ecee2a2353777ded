/*
 * request.h - parsing an infer request's JSON and writing its answer
 * (request.c); used by server.c and tests/test-model-server.c.
 */
#ifndef MLP_MODEL_SERVER_REQUEST_H
#define MLP_MODEL_SERVER_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

#include "base/util.h"

/* One parsed infer request; ms_infer_free() frees what it holds. */
struct ms_infer {
	char *id;      /* the request's "id", or NULL */
	int rows;      /* 1 .. max_batch */
	float *x;      /* rows x features */
	float *logits; /* rows x classes, filled by the caller */
	bool want_logits;
	bool want_class;
};

/* Parses and checks an infer body for a model with features inputs and a
 * limit of max_batch rows.  Returns 0, or MLP_EINVAL with a message fit
 * for the client (r is then still to be freed). */
int ms_infer_parse(struct ms_infer *r, const char *body, size_t len, int features, int max_batch);

void ms_infer_free(struct ms_infer *r);

/* The answer's JSON (a new string) for a request whose logits are
 * computed. */
char *ms_infer_answer(const struct ms_infer *r, const char *name, const char *version, int classes);

/* Appends s to b as a JSON string. */
void ms_json_string(struct mlp_buf *b, const char *s);

#endif
