/*
 * yamltree.c - the YAML tree: libyaml's events into nodes of our own, and
 * that tree as a JSON value for YAML files that are not pipelines
 * (yamltree.h).
 *
 * The one file that runs libyaml's parser.  Before libyaml sees the text,
 * the bytes are checked (binary data, UTF-8) so that those problems get a
 * plain message and a position.  The tree resolves aliases (an alias is
 * the anchored node itself, shared) and merge keys ("<<: *base"), records
 * duplicate keys, and stops at the limits that protect us from hostile
 * input: nesting deeper than MAX_DEPTH and alias expansions beyond
 * MAX_EXPANSIONS.  A YAML error here is the only problem reported: the
 * tree is unusable after it.  What keys mean is for the other files.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "base/error.h"
#include "base/json.h"
#include "pipeline/pipeline-int.h"
#include "pipeline/yamltree.h"
#include "base/util.h"

/* Collections may nest this deep; deeper is refused, not recursed into. */
#define MAX_DEPTH 64
/* Nodes that aliases may add to the document in all ("billion laughs"). */
#define MAX_EXPANSIONS 100000
/* Subtree sizes saturate here so that they cannot overflow. */
#define SIZE_CAP ((size_t)1 << 30)

/* ------------------------------------------------------------------ */
/* A string -> index hash table (anchors, keys of one mapping)         */
/* ------------------------------------------------------------------ */

static size_t str_hash(const char *s)
{
	size_t h = 14695981039346656037ULL;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

bool mlp_pl_strtab_get(const struct strtab *t, const char *key, size_t *val)
{
	if (t->cap == 0)
		return false;
	for (size_t i = str_hash(key) & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
		if (t->keys[i] == NULL)
			return false;
		if (strcmp(t->keys[i], key) == 0) {
			*val = t->vals[i];
			return true;
		}
	}
}

void mlp_pl_strtab_put(struct strtab *t, const char *key, size_t val)
{
	size_t i;

	if ((t->len + 1) * 2 > t->cap) {
		struct strtab bigger = {0};

		bigger.cap = t->cap ? t->cap * 2 : 16;
		bigger.keys = xcalloc(bigger.cap, sizeof(*bigger.keys));
		bigger.vals = xcalloc(bigger.cap, sizeof(*bigger.vals));
		for (size_t j = 0; j < t->cap; j++)
			if (t->keys[j] != NULL)
				mlp_pl_strtab_put(&bigger, t->keys[j], t->vals[j]);
		free(t->keys);
		free(t->vals);
		*t = bigger;
	}
	for (i = str_hash(key) & (t->cap - 1); t->keys[i] != NULL; i = (i + 1) & (t->cap - 1)) {
		if (strcmp(t->keys[i], key) == 0) {
			t->vals[i] = val;
			return;
		}
	}
	t->keys[i] = key;
	t->vals[i] = val;
	t->len++;
}

void mlp_pl_strtab_free(struct strtab *t)
{
	free(t->keys);
	free(t->vals);
	memset(t, 0, sizeof(*t));
}

/* ------------------------------------------------------------------ */
/* The YAML tree                                                       */
/* ------------------------------------------------------------------ */

static struct node *node_new(struct ctx *c, enum node_type type, const yaml_event_t *ev)
{
	struct node *n = xcalloc(1, sizeof(*n));

	n->type = type;
	n->sline = ev->start_mark.line;
	n->scol = ev->start_mark.column;
	n->eline = ev->end_mark.line;
	n->ecol = ev->end_mark.column;
	n->pos = mlp_pl_pos((int)n->sline + 1, (int)n->scol + 1);
	n->size = 1;
	n->next = c->nodes;
	c->nodes = n;
	return n;
}

static void nodes_free(struct node *n)
{
	while (n != NULL) {
		struct node *next = n->next;

		free(n->value);
		free(n->items);
		free(n->pairs);
		free(n->anchor);
		free(n);
		n = next;
	}
}

static size_t size_add(size_t a, size_t b)
{
	return a + b > SIZE_CAP ? SIZE_CAP : a + b;
}

static bool is_merge_key(const struct node *key)
{
	return key->type == NODE_SCALAR && key->plain && strcmp(key->value, "<<") == 0;
}

static void anchor_register(struct ctx *c, struct node *n)
{
	xgrow((void **)&c->anchors, &c->canchors, c->nanchors + 1, sizeof(*c->anchors));
	c->anchors[c->nanchors] = n;
	mlp_pl_strtab_put(&c->anchor_index, n->anchor, c->nanchors);
	c->nanchors++;
}

static void pairs_push(struct pair **pairs, size_t *n, size_t *cap, struct pair pr)
{
	xgrow((void **)pairs, cap, *n + 1, sizeof(**pairs));
	(*pairs)[(*n)++] = pr;
}

/* Merges one source mapping into out (keys already present win). */
static void merge_from(struct pair **out, size_t *nout, size_t *cout, struct strtab *seen,
                       const struct node *src)
{
	for (size_t i = 0; i < src->npairs; i++) {
		const struct pair *sp = &src->pairs[i];
		struct pair pr = {sp->key, sp->value, NULL, true};
		size_t ignored;

		if (sp->dup_of != NULL || sp->key->type != NODE_SCALAR ||
		    mlp_pl_strtab_get(seen, sp->key->value, &ignored))
			continue;
		mlp_pl_strtab_put(seen, sp->key->value, SIZE_MAX);
		pairs_push(out, nout, cout, pr);
	}
}

/*
 * A mapping is complete: marks duplicate keys, then replaces each "<<"
 * entry by the entries of the mapping(s) it names that the mapping does
 * not define itself (YAML's merge key: explicit keys win, and of several
 * merged mappings the first wins).
 */
static void map_finish(struct ctx *c, struct node *m)
{
	struct strtab seen = {0};
	struct pair *out = NULL;
	size_t nout = 0, cout = 0;
	bool has_merge = false;

	for (size_t i = 0; i < m->npairs; i++) {
		struct pair *pr = &m->pairs[i];
		size_t first;

		if (is_merge_key(pr->key)) {
			has_merge = true;
			continue;
		}
		if (pr->key->type != NODE_SCALAR)
			continue;
		if (mlp_pl_strtab_get(&seen, pr->key->value, &first))
			pr->dup_of = m->pairs[first].key;
		else
			mlp_pl_strtab_put(&seen, pr->key->value, i);
	}
	if (has_merge) {
		for (size_t i = 0; i < m->npairs; i++) {
			struct pair *pr = &m->pairs[i];
			const struct node *v = pr->value;

			if (!is_merge_key(pr->key)) {
				pairs_push(&out, &nout, &cout, *pr);
				continue;
			}
			if (v->type == NODE_MAP) {
				merge_from(&out, &nout, &cout, &seen, v);
			} else if (v->type == NODE_SEQ) {
				for (size_t j = 0; j < v->nitems; j++) {
					if (v->items[j]->type == NODE_MAP)
						merge_from(&out, &nout, &cout, &seen, v->items[j]);
					else
						mlp_pl_report(c, v->items[j]->pos,
						              "'<<' merges mappings only, "
						              "as in '<<: [*a, *b]'");
				}
			} else {
				mlp_pl_report(c, v->pos,
				              "'<<' needs a mapping or a list of mappings, as "
				              "in '<<: *base'");
			}
		}
		free(m->pairs);
		m->pairs = out;
		m->npairs = nout;
		m->cpairs = cout;
	}
	mlp_pl_strtab_free(&seen);
	for (size_t i = 0; i < m->npairs; i++)
		m->size =
		        size_add(m->size, size_add(m->pairs[i].key->size, m->pairs[i].value->size));
}

static void syntax_error(struct ctx *c, const yaml_parser_t *parser)
{
	struct mlp_pos pos;
	const char *problem = parser->problem ? parser->problem : "YAML syntax error";

	if (parser->error == YAML_READER_ERROR)
		pos = mlp_pl_pos_of_offset(c, parser->problem_offset);
	else
		pos = mlp_pl_pos((int)parser->problem_mark.line + 1,
		                 (int)parser->problem_mark.column + 1);
	if (parser->error == YAML_SCANNER_ERROR) {
		size_t line = parser->problem_mark.line;
		size_t off = mlp_pl_offset_of_mark(c, line, parser->problem_mark.column);

		if (line < c->nlines && off < c->len && c->text[off] == '\t') {
			size_t i = c->lines[line];

			while (i < off && (c->text[i] == ' ' || c->text[i] == '\t'))
				i++;
			if (i == off) {
				mlp_pl_report(c, pos,
				              "tab character used for indentation (YAML allows "
				              "spaces only)");
				return;
			}
		}
	}
	if (parser->context != NULL && parser->error != YAML_READER_ERROR &&
	    strcmp(parser->context, "while scanning for the next token") != 0)
		mlp_pl_report(c, pos, "%s (%s that starts at %zu:%zu)", problem, parser->context,
		              parser->context_mark.line + 1, parser->context_mark.column + 1);
	else
		mlp_pl_report(c, pos, "%s", problem);
}

static void scalar_init(struct node *n, const yaml_event_t *ev)
{
	const char *tag = (const char *)ev->data.scalar.tag;

	n->value = xstrndup((const char *)ev->data.scalar.value, ev->data.scalar.length);
	n->len = ev->data.scalar.length;
	n->style = ev->data.scalar.style;
	n->plain = n->style == YAML_PLAIN_SCALAR_STYLE && tag == NULL;
	if (tag != NULL && (strcmp(tag, YAML_INT_TAG) == 0 || strcmp(tag, YAML_FLOAT_TAG) == 0 ||
	                    strcmp(tag, YAML_BOOL_TAG) == 0 || strcmp(tag, YAML_NULL_TAG) == 0))
		n->plain = true;
}

/* The collections open around the next node, while the tree is built. */
struct builder {
	struct node *stack[MAX_DEPTH];
	struct node *pending_key[MAX_DEPTH]; /* a mapping's key, awaiting its value */
	size_t depth;
	struct node *root;
	int docs;
};

static struct mlp_pos event_pos(const yaml_event_t *ev)
{
	return mlp_pl_pos((int)ev->start_mark.line + 1, (int)ev->start_mark.column + 1);
}

/* An alias: the anchored node itself, or NULL after reporting why not. */
static struct node *alias_node(struct ctx *c, const yaml_event_t *ev)
{
	const char *name = (const char *)ev->data.alias.anchor;
	struct node *n;
	size_t idx;

	if (!mlp_pl_strtab_get(&c->anchor_index, name, &idx)) {
		mlp_pl_report(c, event_pos(ev),
		              "unknown anchor '%s' (an alias '*%s' needs an '&%s' "
		              "before it)",
		              name, name, name);
		return NULL;
	}
	n = c->anchors[idx];
	c->expansions += n->size;
	if (c->expansions > MAX_EXPANSIONS) {
		mlp_pl_report(c, event_pos(ev), "too many alias expansions (more than %d nodes)",
		              MAX_EXPANSIONS);
		return NULL;
	}
	return n;
}

static struct node *scalar_node(struct ctx *c, const yaml_event_t *ev)
{
	struct node *n = node_new(c, NODE_SCALAR, ev);

	scalar_init(n, ev);
	if (ev->data.scalar.anchor != NULL) {
		n->anchor = xstrdup((const char *)ev->data.scalar.anchor);
		anchor_register(c, n);
	}
	return n;
}

/* A sequence or mapping starts; its anchor is registered when it ends. */
static struct node *collection_node(struct ctx *c, const yaml_event_t *ev)
{
	const yaml_char_t *anchor = ev->type == YAML_SEQUENCE_START_EVENT
	                                    ? ev->data.sequence_start.anchor
	                                    : ev->data.mapping_start.anchor;
	struct node *n =
	        node_new(c, ev->type == YAML_SEQUENCE_START_EVENT ? NODE_SEQ : NODE_MAP, ev);

	if (anchor != NULL)
		n->anchor = xstrdup((const char *)anchor);
	return n;
}

static void collection_end(struct ctx *c, struct node *m, const yaml_event_t *ev)
{
	m->eline = ev->end_mark.line;
	m->ecol = ev->end_mark.column;
	if (m->type == NODE_MAP)
		map_finish(c, m);
	else
		for (size_t i = 0; i < m->nitems; i++)
			m->size = size_add(m->size, m->items[i]->size);
	if (m->anchor != NULL)
		anchor_register(c, m);
}

/* Puts n where the innermost open collection wants it (the root, an item,
 * a key or a value); with push, n becomes the innermost one. */
static void attach(struct builder *b, struct node *n, bool push)
{
	size_t depth = b->depth;

	if (depth == 0) {
		b->root = n;
	} else if (b->stack[depth - 1]->type == NODE_SEQ) {
		struct node *s = b->stack[depth - 1];

		xgrow((void **)&s->items, &s->citems, s->nitems + 1, sizeof(*s->items));
		s->items[s->nitems++] = n;
	} else if (b->pending_key[depth - 1] == NULL) {
		b->pending_key[depth - 1] = n;
	} else {
		struct node *m = b->stack[depth - 1];
		struct pair pr = {b->pending_key[depth - 1], n, NULL, false};

		pairs_push(&m->pairs, &m->npairs, &m->cpairs, pr);
		b->pending_key[depth - 1] = NULL;
	}
	if (push) {
		b->stack[depth] = n;
		b->pending_key[depth] = NULL;
		b->depth++;
	}
}

/* One parser event into the tree; -1 after reporting a problem that ends
 * the parse. */
static int tree_event(struct ctx *c, struct builder *b, const yaml_event_t *ev, bool *done)
{
	struct node *n;

	switch (ev->type) {
	case YAML_STREAM_END_EVENT:
		*done = true;
		return 0;
	case YAML_DOCUMENT_START_EVENT:
		if (b->docs++ > 0) {
			mlp_pl_report(c, event_pos(ev),
			              "a second YAML document (a pipeline file holds one)");
			return -1;
		}
		return 0;
	case YAML_ALIAS_EVENT:
		n = alias_node(c, ev);
		if (n == NULL)
			return -1;
		attach(b, n, false);
		return 0;
	case YAML_SCALAR_EVENT:
		attach(b, scalar_node(c, ev), false);
		return 0;
	case YAML_SEQUENCE_START_EVENT:
	case YAML_MAPPING_START_EVENT:
		if (b->depth == MAX_DEPTH) {
			mlp_pl_report(c, event_pos(ev), "nesting too deep (more than %d levels)",
			              MAX_DEPTH);
			return -1;
		}
		attach(b, collection_node(c, ev), true);
		return 0;
	case YAML_SEQUENCE_END_EVENT:
	case YAML_MAPPING_END_EVENT:
		collection_end(c, b->stack[--b->depth], ev);
		return 0;
	default:
		return 0;
	}
}

/*
 * Runs libyaml over the text and builds the tree.  Returns 0 with *root
 * (NULL for a stream with no document), or -1 after reporting the one
 * problem that stopped it.
 */
static int build_tree(struct ctx *c, struct node **root)
{
	yaml_parser_t parser;
	yaml_event_t ev;
	struct builder b = {0};
	int rc = 0;
	bool done = false;

	*root = NULL;
	if (!yaml_parser_initialize(&parser)) {
		mlp_pl_report(c, mlp_pl_pos(1, 1), "cannot start the YAML parser");
		return -1;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)c->text, c->len);
	while (!done && rc == 0) {
		if (!yaml_parser_parse(&parser, &ev)) {
			syntax_error(c, &parser);
			rc = -1;
			break;
		}
		rc = tree_event(c, &b, &ev, &done);
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&parser);
	*root = b.root;
	return rc;
}

/*
 * Checks the raw bytes: no NUL or other control bytes (a binary file), and
 * valid UTF-8.  Reports the first problem and returns false.
 */
static bool check_bytes(struct ctx *c)
{
	const unsigned char *s = (const unsigned char *)c->text;
	bool utf8_ok = mlp_utf8_valid(c->text, c->len);

	for (size_t i = 0; i < c->len; i++) {
		unsigned char b = s[i];

		if ((b < 0x20 && b != '\t' && b != '\n' && b != '\r') || b == 0x7f) {
			mlp_pl_report(c, mlp_pl_pos_of_offset(c, i),
			              "binary data in pipeline file");
			return false;
		}
		if (b >= 0x80 && !utf8_ok) {
			size_t w = mlp_pl_utf8_width(b);

			if (w == 1 || i + w > c->len || !mlp_utf8_valid(c->text + i, w)) {
				mlp_pl_report(c, mlp_pl_pos_of_offset(c, i),
				              "invalid UTF-8 byte 0x%02x", b);
				return false;
			}
			i += w - 1;
		}
	}
	return true;
}

/*
 * Steps 1 and 2 of loading: checks the bytes, then builds the tree.
 * Returns 0 with *root (NULL for a stream with no document), or -1 after
 * reporting the one problem that stopped it.
 */
int mlp_pl_tree_read(struct ctx *c, struct node **root)
{
	*root = NULL;
	if (!check_bytes(c))
		return -1;
	return build_tree(c, root);
}

void mlp_pl_tree_free(struct ctx *c)
{
	nodes_free(c->nodes);
	c->nodes = NULL;
	mlp_pl_strtab_free(&c->anchor_index);
	free(c->anchors);
	c->anchors = NULL;
	c->nanchors = c->canchors = 0;
}

/* ------------------------------------------------------------------ */
/* Other YAML documents as JSON values (yamltree.h)                    */
/* ------------------------------------------------------------------ */

/* Converts a node; the tree's limits already bound depth and size. */
static struct mlp_json *node_to_json(const struct node *n)
{
	struct mlp_json *j;
	bool b;
	double d;

	if (mlp_pl_is_null(n))
		return mlp_json_new_null();
	switch (n->type) {
	case NODE_SEQ:
		j = mlp_json_array();
		for (size_t i = 0; i < n->nitems; i++)
			mlp_json_append(j, node_to_json(n->items[i]));
		return j;
	case NODE_MAP:
		j = mlp_json_object();
		for (size_t i = 0; i < n->npairs; i++) {
			const struct pair *pr = &n->pairs[i];

			if (pr->dup_of != NULL || pr->key->type != NODE_SCALAR)
				continue;
			mlp_json_add(j, pr->key->value, node_to_json(pr->value));
		}
		return j;
	case NODE_SCALAR:
		if (n->plain && mlp_pl_bool_word(&b, n->value))
			return mlp_json_new_bool(b);
		if (n->plain && mlp_pl_number_syntax(n->value) &&
		    mlp_parse_double(&d, n->value) == 0)
			return mlp_json_new_number(d);
		return mlp_json_new_string(n->value);
	}
	return mlp_json_new_null();
}

int mlp_yaml_to_json(struct mlp_json **out, const char *path, const char *text, size_t len)
{
	struct mlp_diags diags = {0};
	struct ctx c = {0};
	struct node *root = NULL;
	int rc = 0;

	*out = NULL;
	c.path = path;
	c.text = text;
	c.len = len;
	c.diags = &diags;
	mlp_pl_index_lines(&c);
	if (mlp_pl_tree_read(&c, &root) != 0) {
		if (diags.len)
			mlp_error_set("%s:%d:%d: %s", path, diags.items[0].pos.line,
			              diags.items[0].pos.col, diags.items[0].message);
		else
			mlp_error_set("%s: not a YAML document", path);
		rc = MLP_EINVAL;
	} else {
		*out = node_to_json(root);
	}
	mlp_pl_tree_free(&c);
	free(c.lines);
	mlp_diags_free(&diags);
	return rc;
}
