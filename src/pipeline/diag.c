/*
 * diag.c - problems found in a pipeline file, and where they are.
 *
 * The struct mlp_diags list of pipeline.h, mlp_pl_report() that adds to
 * it while a file loads, and the positions its entries carry: 1-based
 * lines as libyaml counts them ("\n", "\r\n" and a lone "\r" end a line)
 * and 1-based columns in characters, not bytes, so that "FILE:LINE:COL"
 * points where an editor does.  Knows libyaml only by its 0-based marks;
 * the tree itself is yamltree.c's.
 */
#include "config.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/pipeline-int.h"
#include "base/util.h"

static void diags_vadd(struct mlp_diags *d, const char *file, struct mlp_pos pos, const char *fmt,
                       va_list ap)
{
	struct mlp_diag *item;

	xgrow((void **)&d->items, &d->cap, d->len + 1, sizeof(*d->items));
	item = &d->items[d->len++];
	item->file = xstrdup(file ? file : "");
	item->pos = pos;
	item->message = xvasprintf(fmt, ap);
}

void mlp_diags_add(struct mlp_diags *d, const char *file, struct mlp_pos pos, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	diags_vadd(d, file, pos, fmt, ap);
	va_end(ap);
}

/*
 * A merge sort on positions of d->items[from ...]: qsort() is not stable,
 * and problems found at the same place must stay in the order they were
 * found.
 */
void mlp_pl_diags_sort_from(struct mlp_diags *d, size_t from)
{
	struct mlp_diag *items = d->items + from, *tmp;
	size_t n = d->len - from;

	if (d->len < from + 2)
		return;
	tmp = xmalloc(n * sizeof(*tmp));
	for (size_t width = 1; width < n; width *= 2) {
		for (size_t lo = 0; lo < n; lo += 2 * width) {
			size_t mid = lo + width < n ? lo + width : n;
			size_t hi = lo + 2 * width < n ? lo + 2 * width : n;
			size_t i = lo, j = mid, k = lo;

			while (i < mid && j < hi) {
				const struct mlp_pos *a = &items[i].pos, *b = &items[j].pos;

				if (b->line < a->line || (b->line == a->line && b->col < a->col))
					tmp[k++] = items[j++];
				else
					tmp[k++] = items[i++];
			}
			while (i < mid)
				tmp[k++] = items[i++];
			while (j < hi)
				tmp[k++] = items[j++];
		}
		memcpy(items, tmp, n * sizeof(*tmp));
	}
	free(tmp);
}

void mlp_diags_sort(struct mlp_diags *d)
{
	mlp_pl_diags_sort_from(d, 0);
}

void mlp_diags_print(const struct mlp_diags *d, FILE *f)
{
	for (size_t i = 0; i < d->len; i++) {
		const struct mlp_diag *item = &d->items[i];

		if (item->pos.line > 0)
			fprintf(f, "%s:%d:%d: %s\n", item->file, item->pos.line, item->pos.col,
			        item->message);
		else
			fprintf(f, "%s: %s\n", item->file, item->message);
	}
}

void mlp_diags_free(struct mlp_diags *d)
{
	if (d == NULL)
		return;
	for (size_t i = 0; i < d->len; i++) {
		free(d->items[i].file);
		free(d->items[i].message);
	}
	free(d->items);
	d->items = NULL;
	d->len = d->cap = 0;
}

/* Drops a problem reported twice at the same place (a node shared through
 * an alias is checked once per use) from d->items[from ...], sorted. */
void mlp_pl_diags_dedup_from(struct mlp_diags *d, size_t from)
{
	size_t out = from;

	for (size_t i = from; i < d->len; i++) {
		struct mlp_diag *item = &d->items[i];
		bool dup = false;

		for (size_t j = out; j-- > from;) {
			struct mlp_diag *prev = &d->items[j];

			if (prev->pos.line != item->pos.line || prev->pos.col != item->pos.col)
				break;
			if (strcmp(prev->message, item->message) == 0) {
				dup = true;
				break;
			}
		}
		if (dup) {
			free(item->file);
			free(item->message);
		} else {
			d->items[out++] = *item;
		}
	}
	d->len = out;
}

void mlp_pl_report(struct ctx *c, struct mlp_pos pos, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	diags_vadd(c->diags, c->path, pos, fmt, ap);
	va_end(ap);
}

/* Bytes of the UTF-8 sequence that starts with byte b (1 for stray bytes). */
size_t mlp_pl_utf8_width(unsigned char b)
{
	if (b >= 0xf0 && b < 0xf8)
		return 4;
	if (b >= 0xe0)
		return b < 0xf0 ? 3 : 1;
	if (b >= 0xc0)
		return 2;
	return 1;
}

/* Characters (not bytes) in s[0, n). */
size_t mlp_pl_utf8_chars(const char *s, size_t n)
{
	size_t count = 0;

	for (size_t i = 0; i < n; i++)
		if (((unsigned char)s[i] & 0xc0) != 0x80)
			count++;
	return count;
}

/*
 * Line starts as libyaml counts lines: "\n", "\r\n" and a lone "\r" end a
 * line; a byte order mark is not part of the first line.
 */
void mlp_pl_index_lines(struct ctx *c)
{
	size_t start = 0;

	if (c->len >= 3 && memcmp(c->text, "\xef\xbb\xbf", 3) == 0)
		start = 3;
	xgrow((void **)&c->lines, &c->clines, 1, sizeof(*c->lines));
	c->lines[c->nlines++] = start;
	for (size_t i = start; i < c->len; i++) {
		if (c->text[i] == '\n' ||
		    (c->text[i] == '\r' && (i + 1 >= c->len || c->text[i + 1] != '\n'))) {
			xgrow((void **)&c->lines, &c->clines, c->nlines + 1, sizeof(*c->lines));
			c->lines[c->nlines++] = i + 1;
		}
	}
}

/* The 1-based position of a byte offset. */
struct mlp_pos mlp_pl_pos_of_offset(const struct ctx *c, size_t offset)
{
	size_t lo = 0, hi = c->nlines, col;

	/* The last line that starts at or before offset. */
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (c->lines[mid] <= offset)
			lo = mid;
		else
			hi = mid;
	}
	if (offset < c->lines[lo])
		offset = c->lines[lo];
	col = mlp_pl_utf8_chars(c->text + c->lines[lo], offset - c->lines[lo]);
	return mlp_pl_pos((int)lo + 1, (int)col + 1);
}

/* The byte offset of one of libyaml's 0-based (line, column) marks. */
size_t mlp_pl_offset_of_mark(const struct ctx *c, size_t line, size_t col)
{
	size_t off;

	if (line >= c->nlines)
		return c->len;
	off = c->lines[line];
	while (col-- > 0 && off < c->len && c->text[off] != '\n' && c->text[off] != '\r')
		off += mlp_pl_utf8_width((unsigned char)c->text[off]);
	return off < c->len ? off : c->len;
}
