/*
 * fuzz-pipeline.c - fuzz target for the pipeline-file parser and its
 * validation (src/pipeline/: YAML, keys, types, stages, needs, cycles,
 * durations, retry rules, expressions, schedules, every stage kind, the
 * kubernetes: block): mlp_pipeline_parse, what `mlpipe validate`,
 * `mlpipe run` and `mlpipe serve` read every pipeline.yml with.
 *
 * What must hold, besides no crash, leak or undefined behaviour:
 *
 *  - a refused file is refused with MLP_EINVAL and at least one problem,
 *    each with a message and a position inside the file (line 1 to one
 *    past the last, column from 1);
 *  - an accepted file has no problems; its stages have valid, distinct
 *    names that mlp_pipeline_find_stage finds; every need points at
 *    another stage, and `order` lists every stage once, each after the
 *    stages it needs; every schedule's cron expression parses and its
 *    time zone is valid.
 *
 * Built two ways: with clang's -fsanitize=fuzzer by `make fuzz`, and with
 * tests/fuzz/driver.c into a test of `make check` that runs the seed
 * corpus and a few thousand pseudo-random inputs.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/util.h"
#include "pipeline/cron.h"
#include "pipeline/pipeline.h"

static void fail(const char *what, const char *text, size_t len)
{
	fprintf(stderr, "fuzz-pipeline: %s\nfile (%zu bytes):\n%.*s\n", what, len,
	        (int)(len < 4096 ? len : 4096), text);
	abort();
}

static void check_refused(const struct mlp_diags *d, const char *text, size_t len)
{
	int lines = 1;

	/* YAML's line breaks: \n, \r (\r\n counts once, here twice), and
	 * in UTF-8 NEL, LS and PS */
	for (size_t k = 0; k < len; k++)
		lines += text[k] == '\n' || text[k] == '\r' ||
		         (k + 1 < len && memcmp(text + k, "\xc2\x85", 2) == 0) ||
		         (k + 2 < len && (memcmp(text + k, "\xe2\x80\xa8", 3) == 0 ||
		                          memcmp(text + k, "\xe2\x80\xa9", 3) == 0));
	if (d->len == 0)
		fail("refused without a problem", text, len);
	for (size_t i = 0; i < d->len; i++) {
		const struct mlp_diag *g = &d->items[i];

		if (g->message == NULL || *g->message == '\0' || g->file == NULL ||
		    strcmp(g->file, "pipeline.yml") != 0)
			fail("a problem without a message or the file's name", text, len);
		if (g->pos.line < 1 || g->pos.line > lines + 1 || g->pos.col < 1) {
			fprintf(stderr, "%d:%d: %s\n", g->pos.line, g->pos.col, g->message);
			fail("a problem outside the file", text, len);
		}
	}
}

static void check_accepted(const struct mlp_pipeline *p, const char *text, size_t len)
{
	size_t *seen = xcalloc(p->nstages + 1, sizeof(*seen));

	for (size_t i = 0; i < p->nstages; i++) {
		const struct mlp_stage *s = &p->stages[i];

		if (!mlp_pipeline_stage_name_valid(s->name) ||
		    mlp_pipeline_find_stage(p, s->name) != (ssize_t)i)
			fail("a stage whose name is invalid, repeated or not found", text, len);
		for (size_t k = 0; k < s->nneeds; k++)
			if (s->need_index[k] >= p->nstages || s->need_index[k] == i ||
			    strcmp(p->stages[s->need_index[k]].name, s->needs[k]) != 0)
				fail("a need that is not another stage", text, len);
	}
	/* seen[i]: 1 + the place of stage i in order */
	for (size_t o = 0; o < p->nstages; o++) {
		size_t i = p->order[o];

		if (i >= p->nstages || seen[i])
			fail("order does not list every stage once", text, len);
		seen[i] = o + 1;
		for (size_t k = 0; k < p->stages[i].nneeds; k++)
			if (seen[p->stages[i].need_index[k]] == 0)
				fail("a stage comes in order before one it needs", text, len);
	}
	for (size_t i = 0; i < p->nschedules; i++) {
		struct mlp_cron c;

		if (mlp_cron_parse(&c, p->schedules[i].cron) != 0 ||
		    !mlp_timezone_valid(p->schedules[i].timezone ? p->schedules[i].timezone
		                                                 : "UTC"))
			fail("a schedule whose cron or time zone does not parse", text, len);
	}
	free(seen);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mlp_pipeline *p = NULL;
	struct mlp_diags diags = {0};
	char *text;
	int rc;

	if (size > 1 << 16)
		return 0;
	/* exactly the bytes, without a terminating '\0' to lean on */
	text = xmalloc(size ? size : 1);
	memcpy(text, data, size);
	rc = mlp_pipeline_parse(&p, &diags, "pipeline.yml", text, size);
	if (rc != 0) {
		if (rc != MLP_EINVAL || p != NULL)
			fail("refused without MLP_EINVAL", text, size);
		check_refused(&diags, text, size);
	} else {
		if (p == NULL || diags.len != 0)
			fail("accepted with problems", text, size);
		check_accepted(p, text, size);
	}
	mlp_pipeline_free(p);
	mlp_diags_free(&diags);
	free(text);
	return 0;
}
