/*
 * graph.c - the stages as a graph: needs resolved to stage indices, a
 * topological order, and the cycles that prevent one.
 *
 * Runs once every stage is read, since needs may name stages further
 * down.  Every walk uses explicit stacks and queues, so that no input can
 * make us recurse deeply.  pipeline.h's queries on the result,
 * mlp_pipeline_find_stage() and mlp_pipeline_depends_on(), are here too.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "pipeline/pipeline-int.h"
#include "base/util.h"

/* mlp_pipeline_find_stage() in constant time, for files with many stages. */
ssize_t mlp_pl_find_stage(const struct ctx *c, const char *name)
{
	size_t i;

	return mlp_pl_strtab_get(&c->stage_index, name, &i) ? (ssize_t)i : -1;
}

const char **mlp_pl_stage_names(const struct mlp_pipeline *p)
{
	const char **names = xcalloc(p->nstages + 1, sizeof(*names));

	for (size_t i = 0; i < p->nstages; i++)
		names[i] = p->stages[i].name;
	return names;
}

void mlp_pl_resolve_needs(struct ctx *c)
{
	struct mlp_pipeline *p = c->p;
	const char **names = mlp_pl_stage_names(p);

	for (size_t i = 0; i < p->nstages; i++) {
		struct mlp_stage *st = &p->stages[i];

		st->need_index = xcalloc(st->nneeds + 1, sizeof(*st->need_index));
		for (size_t j = 0; j < st->nneeds; j++) {
			ssize_t k = mlp_pl_find_stage(c, st->needs[j]);

			st->need_index[j] = SIZE_MAX;
			if (k < 0) {
				const char *near;

				/* Never suggest the stage itself. */
				names[i] = NULL;
				near = mlp_suggest(st->needs[j], names, p->nstages);
				names[i] = st->name;
				if (near)
					mlp_pl_report(c, st->needs_pos[j],
					              "stage '%s' needs '%s', which does not "
					              "exist (did you mean '%s'?)",
					              st->name, st->needs[j], near);
				else
					mlp_pl_report(c, st->needs_pos[j],
					              "stage '%s' needs '%s', which does not "
					              "exist",
					              st->name, st->needs[j]);
				continue;
			}
			if ((size_t)k == i) {
				mlp_pl_report(c, st->needs_pos[j], "stage '%s' needs itself",
				              st->name);
				continue;
			}
			for (size_t m = 0; m < j; m++) {
				if (st->need_index[m] == (size_t)k) {
					mlp_pl_report(c, st->needs_pos[j],
					              "stage '%s' needs '%s' twice (first at "
					              "%d:%d)",
					              st->name, st->needs[j], st->needs_pos[m].line,
					              st->needs_pos[m].col);
					k = -1;
					break;
				}
			}
			if (k >= 0)
				st->need_index[j] = (size_t)k;
		}
	}
	free(names);
}

/* A min-heap of stage indices, for Kahn's algorithm in file order. */
struct heap {
	size_t *v;
	size_t len;
};

static void heap_push(struct heap *h, size_t x)
{
	size_t i = h->len++;

	h->v[i] = x;
	while (i > 0 && h->v[(i - 1) / 2] > h->v[i]) {
		size_t parent = (i - 1) / 2, t = h->v[parent];

		h->v[parent] = h->v[i];
		h->v[i] = t;
		i = parent;
	}
}

static size_t heap_pop(struct heap *h)
{
	size_t top = h->v[0], i = 0;

	h->v[0] = h->v[--h->len];
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i, t;

		if (l < h->len && h->v[l] < h->v[m])
			m = l;
		if (r < h->len && h->v[r] < h->v[m])
			m = r;
		if (m == i)
			break;
		t = h->v[m];
		h->v[m] = h->v[i];
		h->v[i] = t;
		i = m;
	}
	return top;
}

/*
 * The reverse of needs, as compressed rows: the stages that need stage u
 * are list[start[u]] .. list[start[u + 1] - 1], in file order.  Both
 * arrays are the caller's to free.
 */
static void dependents_of(const struct mlp_pipeline *p, size_t **out_start, size_t **out_list)
{
	size_t n = p->nstages, nedges = 0;
	size_t *start = xcalloc(n + 2, sizeof(*start));
	size_t *fill = xcalloc(n + 1, sizeof(*fill));
	size_t *list;

	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < p->stages[i].nneeds; j++)
			if (p->stages[i].need_index[j] != SIZE_MAX) {
				start[p->stages[i].need_index[j] + 1]++;
				nedges++;
			}
	for (size_t i = 0; i < n; i++)
		start[i + 1] += start[i];
	list = xmalloc((nedges + 1) * sizeof(*list));
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < p->stages[i].nneeds; j++) {
			size_t w = p->stages[i].need_index[j];

			if (w != SIZE_MAX)
				list[start[w] + fill[w]++] = i;
		}
	free(fill);
	*out_start = start;
	*out_list = list;
}

/* Kosaraju's working arrays, each with an entry per stage (and one more,
 * so that none is empty). */
struct scc {
	const struct mlp_pipeline *p;
	size_t *order;                /* stages in finishing order of the first walk */
	size_t *comp;                 /* the component of each stage */
	size_t *comp_size;            /* stages per component; 0 once reported */
	size_t ncomp;                 /* components so far */
	size_t *stack;                /* the walks' stack, then a path */
	size_t *parent;               /* breadth-first tree; SIZE_MAX between uses */
	size_t *queue;                /* breadth-first queue */
	size_t *dep_start, *dep_list; /* from dependents_of() */
};

/* 1: finishing order of a depth-first walk along needs. */
static void scc_finish_order(struct scc *g)
{
	const struct mlp_pipeline *p = g->p;
	size_t n = p->nstages, norder = 0;
	size_t *edge = xcalloc(n + 1, sizeof(*edge));
	bool *seen = xcalloc(n + 1, sizeof(*seen));

	for (size_t s = 0; s < n; s++) {
		size_t top = 0;

		if (seen[s])
			continue;
		seen[s] = true;
		g->stack[top++] = s;
		while (top > 0) {
			size_t u = g->stack[top - 1];

			if (edge[u] < p->stages[u].nneeds) {
				size_t w = p->stages[u].need_index[edge[u]++];

				if (w != SIZE_MAX && !seen[w]) {
					seen[w] = true;
					g->stack[top++] = w;
				}
			} else {
				g->order[norder++] = u;
				top--;
			}
		}
	}
	free(edge);
	free(seen);
}

/* 2: components along reversed edges, in reverse finishing order. */
static void scc_components(struct scc *g)
{
	size_t n = g->p->nstages;

	for (size_t i = 0; i < n; i++)
		g->comp[i] = SIZE_MAX;
	for (size_t oi = n; oi-- > 0;) {
		size_t s = g->order[oi], top = 0;

		if (g->comp[s] != SIZE_MAX)
			continue;
		g->comp[s] = g->ncomp;
		g->stack[top++] = s;
		while (top > 0) {
			size_t u = g->stack[--top];

			g->comp_size[g->ncomp]++;
			for (size_t k = g->dep_start[u]; k < g->dep_start[u + 1]; k++) {
				size_t w = g->dep_list[k];

				if (g->comp[w] == SIZE_MAX) {
					g->comp[w] = g->ncomp;
					g->stack[top++] = w;
				}
			}
		}
		g->ncomp++;
	}
}

/* 3: the shortest cycle through stage s inside its component, found
 * breadth-first until an edge leads back to s, and reported at s. */
static void report_cycle_from(struct ctx *c, struct scc *g, size_t s)
{
	const struct mlp_pipeline *p = g->p;
	size_t head = 0, tail = 0, last = SIZE_MAX, len = 0;
	struct mlp_buf msg = {0};

	g->queue[tail++] = s;
	g->parent[s] = s;
	while (head < tail && last == SIZE_MAX) {
		size_t u = g->queue[head++];

		for (size_t j = 0; j < p->stages[u].nneeds; j++) {
			size_t w = p->stages[u].need_index[j];

			if (w == SIZE_MAX || g->comp[w] != g->comp[s])
				continue;
			if (w == s) {
				last = u;
				break;
			}
			if (g->parent[w] == SIZE_MAX) {
				g->parent[w] = u;
				g->queue[tail++] = w;
			}
		}
	}
	/* The path s -> ... -> last, read backwards from last. */
	for (size_t u = last; u != SIZE_MAX && u != s; u = g->parent[u])
		g->stack[len++] = u;
	mlp_buf_printf(&msg, "dependency cycle: %s", p->stages[s].name);
	while (len > 0)
		mlp_buf_printf(&msg, " -> %s", p->stages[g->stack[--len]].name);
	mlp_buf_printf(&msg, " -> %s", p->stages[s].name);
	mlp_pl_report(c, p->stages[s].pos, "%s", mlp_buf_str(&msg));
	mlp_buf_free(&msg);
	for (size_t i = 0; i < tail; i++)
		g->parent[g->queue[i]] = SIZE_MAX;
}

/*
 * Reports each strongly connected component of two or more stages once,
 * naming its shortest cycle through the component's first stage (in file
 * order): "dependency cycle: a -> b -> a", where an arrow reads "needs".
 * Kosaraju's algorithm with explicit stacks, so that no input can make us
 * recurse deeply.
 */
static void report_cycles(struct ctx *c)
{
	const struct mlp_pipeline *p = c->p;
	size_t n = p->nstages;
	struct scc g = {0};

	g.p = p;
	g.order = xmalloc((n + 1) * sizeof(*g.order));
	g.comp = xmalloc((n + 1) * sizeof(*g.comp));
	g.comp_size = xcalloc(n + 1, sizeof(*g.comp_size));
	g.stack = xmalloc((n + 1) * sizeof(*g.stack));
	g.parent = xmalloc((n + 1) * sizeof(*g.parent));
	g.queue = xmalloc((n + 1) * sizeof(*g.queue));
	dependents_of(p, &g.dep_start, &g.dep_list);
	scc_finish_order(&g);
	scc_components(&g);
	for (size_t i = 0; i < n; i++)
		g.parent[i] = SIZE_MAX;
	for (size_t s = 0; s < n; s++) {
		if (g.comp_size[g.comp[s]] < 2)
			continue;
		g.comp_size[g.comp[s]] = 0; /* reported */
		report_cycle_from(c, &g, s);
	}
	free(g.order);
	free(g.comp);
	free(g.comp_size);
	free(g.stack);
	free(g.parent);
	free(g.queue);
	free(g.dep_start);
	free(g.dep_list);
}

/* Kahn's algorithm, ties broken by file order; false when there is a cycle. */
static bool topological_order(struct mlp_pipeline *p)
{
	size_t n = p->nstages;
	size_t *indegree = xcalloc(n + 1, sizeof(*indegree));
	struct heap h = {xmalloc((n + 1) * sizeof(size_t)), 0};
	size_t *dep_start, *dep_list;
	size_t done = 0;

	dependents_of(p, &dep_start, &dep_list);
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < p->stages[i].nneeds; j++)
			if (p->stages[i].need_index[j] != SIZE_MAX)
				indegree[i]++;
	free(p->order);
	p->order = xmalloc((n + 1) * sizeof(*p->order));
	for (size_t i = 0; i < n; i++)
		if (indegree[i] == 0)
			heap_push(&h, i);
	while (h.len > 0) {
		size_t u = heap_pop(&h);

		p->order[done++] = u;
		for (size_t k = dep_start[u]; k < dep_start[u + 1]; k++)
			if (--indegree[dep_list[k]] == 0)
				heap_push(&h, dep_list[k]);
	}
	free(indegree);
	free(dep_start);
	free(dep_list);
	free(h.v);
	return done == n;
}

void mlp_pl_order_stages(struct ctx *c)
{
	struct mlp_pipeline *p = c->p;

	if (!topological_order(p)) {
		free(p->order);
		p->order = NULL;
		report_cycles(c);
	}
}

ssize_t mlp_pipeline_find_stage(const struct mlp_pipeline *p, const char *name)
{
	for (size_t i = 0; i < p->nstages; i++)
		if (strcmp(p->stages[i].name, name) == 0)
			return (ssize_t)i;
	return -1;
}

bool mlp_pipeline_depends_on(const struct mlp_pipeline *p, size_t index, size_t ancestor)
{
	bool *seen;
	size_t *stack;
	size_t top = 0;
	bool found = false;

	if (index >= p->nstages || ancestor >= p->nstages)
		return false;
	seen = xcalloc(p->nstages, sizeof(*seen));
	stack = xmalloc(p->nstages * sizeof(*stack));
	stack[top++] = index;
	while (top > 0 && !found) {
		const struct mlp_stage *st = &p->stages[stack[--top]];

		for (size_t j = 0; j < st->nneeds; j++) {
			size_t w = st->need_index ? st->need_index[j] : SIZE_MAX;

			if (w == SIZE_MAX || seen[w])
				continue;
			if (w == ancestor) {
				found = true;
				break;
			}
			seen[w] = true;
			stack[top++] = w;
		}
	}
	free(seen);
	free(stack);
	return found;
}
