/*
 * live.c - the live view and plain output of a run (see live.h).
 *
 * The live block is redrawn by moving the cursor up over it and clearing
 * to the end of the screen; every line in it is cut to the terminal width
 * so that it never wraps, which would break the arithmetic.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "engine/live.h"
#include "base/util.h"

struct stage_line {
	struct mlp_stage_view v;
	char detail[256];
	bool seen;
};

struct mlp_live {
	const struct mlp_pipeline *p;
	FILE *out;
	bool live;
	bool color;
	int name_width;
	int drawn; /* lines of the block currently on screen */
	int spin;
	struct stage_line *lines;
	struct mlp_engine_observer obs;
};

#define C_RESET "\033[0m"
#define C_DIM "\033[2m"
#define C_RED "\033[31m"
#define C_GREEN "\033[32m"
#define C_YELLOW "\033[33m"
#define C_CYAN "\033[36m"

static const char *col(const struct mlp_live *t, const char *c)
{
	return t->color ? c : "";
}

static int term_width(const struct mlp_live *t)
{
	struct winsize ws;

	if (ioctl(fileno(t->out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20)
		return ws.ws_col;
	return 80;
}

static int term_height(const struct mlp_live *t)
{
	struct winsize ws;

	if (ioctl(fileno(t->out), TIOCGWINSZ, &ws) == 0 && ws.ws_row > 5)
		return ws.ws_row;
	return 24;
}

static const char *status_word(const struct mlp_stage_view *v)
{
	if (v->status == MLP_STATUS_QUEUED)
		return v->retry_at_ms ? "retrying" : "waiting";
	if (v->status == MLP_STATUS_FAILED && v->allowed_failure)
		return "failed (allowed)";
	return mlp_status_name(v->status);
}

static const char *status_color(const struct mlp_stage_view *v)
{
	switch (v->status) {
	case MLP_STATUS_SUCCEEDED:
		return C_GREEN;
	case MLP_STATUS_FAILED:
		return v->allowed_failure ? C_YELLOW : C_RED;
	case MLP_STATUS_RUNNING:
		return C_CYAN;
	case MLP_STATUS_QUEUED:
		return v->retry_at_ms ? C_YELLOW : C_DIM;
	default:
		return C_DIM;
	}
}

static void elapsed_of(char *buf, size_t size, const struct mlp_stage_view *v)
{
	int64_t end = v->ended_ms ? v->ended_ms : mlp_mono_ms();

	if (v->started_ms == 0)
		buf[0] = '\0';
	else
		mlp_format_duration(buf, size, end - v->started_ms);
}

/* One stage's line in the live block, at most width columns. */
static void format_stage(struct mlp_live *t, struct mlp_buf *b, const struct stage_line *l,
                         int width)
{
	static const char spinner[] = "|/-\\";
	const struct mlp_stage_view *v = &l->v;
	char el[32], attempt[32] = "";
	const char *mark;
	struct mlp_buf plain = {0};

	switch (v->status) {
	case MLP_STATUS_RUNNING: {
		static char s[2];

		s[0] = spinner[t->spin % 4];
		mark = s;
		break;
	}
	case MLP_STATUS_SUCCEEDED:
		mark = "+";
		break;
	case MLP_STATUS_FAILED:
		mark = "x";
		break;
	case MLP_STATUS_QUEUED:
		mark = ".";
		break;
	default:
		mark = "-";
		break;
	}
	elapsed_of(el, sizeof(el), v);
	if (v->max_attempts > 1 && v->attempt > 0)
		snprintf(attempt, sizeof(attempt), "attempt %d/%d", v->attempt, v->max_attempts);
	mlp_buf_printf(&plain, " %s %-*.*s  %-10s %7s  %s", mark, t->name_width, t->name_width,
	               v->name, status_word(v), el, attempt);
	if (l->detail[0] && v->status != MLP_STATUS_RUNNING && v->status != MLP_STATUS_SUCCEEDED)
		mlp_buf_printf(&plain, "  %s", l->detail);
	if (plain.len > (size_t)width - 1)
		plain.len = (size_t)width - 1;
	plain.data[plain.len] = '\0';
	mlp_buf_puts(b, col(t, status_color(v)));
	mlp_buf_puts(b, plain.data);
	mlp_buf_puts(b, col(t, C_RESET));
	mlp_buf_putc(b, '\n');
	mlp_buf_free(&plain);
}

static void erase_block(struct mlp_live *t, struct mlp_buf *b)
{
	if (t->drawn > 0)
		mlp_buf_printf(b, "\033[%dA\r\033[J", t->drawn);
	t->drawn = 0;
}

static void draw_block(struct mlp_live *t, struct mlp_buf *b)
{
	int width = term_width(t);
	int room = term_height(t) - 2;
	size_t n = t->p->nstages;
	size_t done = 0, running = 0, failed = 0, shown = 0;

	for (size_t i = 0; i < n; i++) {
		enum mlp_status s = t->lines[i].v.status;

		if (s == MLP_STATUS_RUNNING)
			running++;
		else if (s != MLP_STATUS_QUEUED)
			done++;
		if (s == MLP_STATUS_FAILED && !t->lines[i].v.allowed_failure)
			failed++;
	}
	if ((int)n <= room) {
		for (size_t o = 0; o < n; o++) {
			format_stage(t, b, &t->lines[t->p->order[o]], width);
			shown++;
		}
	} else {
		/* Too many stages for the screen: the running and retrying ones. */
		for (size_t o = 0; o < n && (int)shown < room - 1; o++) {
			const struct stage_line *l = &t->lines[t->p->order[o]];

			if (l->v.status == MLP_STATUS_RUNNING || l->v.retry_at_ms) {
				format_stage(t, b, l, width);
				shown++;
			}
		}
		mlp_buf_printf(b, "%s %zu/%zu done, %zu running, %zu failed%s\n", col(t, C_DIM),
		               done, n, running, failed, col(t, C_RESET));
		shown++;
	}
	t->drawn = (int)shown;
}

static void flush_buf(struct mlp_live *t, struct mlp_buf *b)
{
	fwrite(mlp_buf_str(b), 1, b->len, t->out);
	fflush(t->out);
	mlp_buf_free(b);
}

static void on_stage(void *payload, size_t index, const struct mlp_stage_view *v)
{
	struct mlp_live *t = payload;
	struct stage_line *l = &t->lines[index];
	char el[32];

	l->v = *v;
	snprintf(l->detail, sizeof(l->detail), "%s", v->detail ? v->detail : "");
	l->v.detail = l->detail;
	l->v.name = t->p->stages[index].name;
	if (t->live) {
		struct mlp_buf b = {0};

		erase_block(t, &b);
		draw_block(t, &b);
		flush_buf(t, &b);
		return;
	}
	elapsed_of(el, sizeof(el), v);
	switch (v->status) {
	case MLP_STATUS_RUNNING:
		if (v->max_attempts > 1)
			fprintf(t->out, "== %s: started (attempt %d/%d)\n", v->name, v->attempt,
			        v->max_attempts);
		else
			fprintf(t->out, "== %s: started\n", v->name);
		break;
	case MLP_STATUS_QUEUED:
		if (v->retry_at_ms) {
			char wait[32];

			mlp_format_duration(wait, sizeof(wait), v->retry_at_ms - mlp_mono_ms());
			fprintf(t->out, "== %s: failed after %s (%s); retrying in %s\n", v->name,
			        el, l->detail, wait);
		}
		break;
	case MLP_STATUS_SUCCEEDED:
		fprintf(t->out, "== %s: succeeded in %s\n", v->name, el);
		break;
	case MLP_STATUS_FAILED:
		if (v->started_ms)
			fprintf(t->out, "== %s: %s after %s (%s)\n", v->name, status_word(v), el,
			        l->detail);
		else
			fprintf(t->out, "== %s: %s (%s)\n", v->name, status_word(v), l->detail);
		break;
	default:
		fprintf(t->out, "== %s: %s (%s)\n", v->name, status_word(v), l->detail);
		break;
	}
	fflush(t->out);
}

static void on_log(void *payload, size_t index, const char *line, size_t len)
{
	struct mlp_live *t = payload;
	struct mlp_buf b = {0};

	if (t->live)
		erase_block(t, &b);
	mlp_buf_printf(&b, "%s%-*s |%s ", col(t, C_DIM), t->name_width, t->p->stages[index].name,
	               col(t, C_RESET));
	mlp_buf_add(&b, line, len);
	mlp_buf_putc(&b, '\n');
	if (t->live)
		draw_block(t, &b);
	flush_buf(t, &b);
}

static void on_tick(void *payload)
{
	struct mlp_live *t = payload;
	struct mlp_buf b = {0};

	t->spin++;
	erase_block(t, &b);
	draw_block(t, &b);
	flush_buf(t, &b);
}

struct mlp_live *mlp_live_new(const struct mlp_pipeline *p, FILE *out, int live)
{
	struct mlp_live *t = xcalloc(1, sizeof(*t));
	const char *term = getenv("TERM");
	const char *no_color = getenv("NO_COLOR");
	bool tty = isatty(fileno(out)) && !(term && strcmp(term, "dumb") == 0);

	t->p = p;
	t->out = out;
	t->live = live < 0 ? tty : live != 0;
	t->color = tty && !(no_color && no_color[0]);
	t->lines = xcalloc(p->nstages, sizeof(*t->lines));
	for (size_t i = 0; i < p->nstages; i++) {
		int len = (int)strlen(p->stages[i].name);

		t->lines[i].v.name = p->stages[i].name;
		t->lines[i].v.status = MLP_STATUS_QUEUED;
		t->lines[i].v.max_attempts = p->stages[i].retry.max + 1;
		if (len > t->name_width)
			t->name_width = len;
	}
	if (t->name_width > 24)
		t->name_width = 24;
	t->obs.stage = on_stage;
	t->obs.log = on_log;
	t->obs.tick = t->live ? on_tick : NULL;
	t->obs.tick_ms = t->live ? 250 : 0;
	t->obs.payload = t;
	return t;
}

const struct mlp_engine_observer *mlp_live_observer(struct mlp_live *t)
{
	return &t->obs;
}

void mlp_live_finish(struct mlp_live *t, int64_t run_id, const struct mlp_engine_result *r,
                     int64_t elapsed_ms)
{
	struct mlp_buf b = {0};
	char el[32];
	const char *c = r->status == MLP_STATUS_SUCCEEDED ? C_GREEN
	                : r->status == MLP_STATUS_FAILED  ? C_RED
	                                                  : C_YELLOW;

	if (t->live) {
		erase_block(t, &b);
		draw_block(t, &b);
		t->drawn = 0;
	}
	mlp_format_duration(el, sizeof(el), elapsed_ms);
	mlp_buf_printf(&b, "%srun %lld %s in %s%s", col(t, c), (long long)run_id,
	               mlp_status_name(r->status), el, col(t, C_RESET));
	if (r->message)
		mlp_buf_printf(&b, ": %s", r->message);
	mlp_buf_putc(&b, '\n');
	flush_buf(t, &b);
}

void mlp_live_free(struct mlp_live *t)
{
	if (t == NULL)
		return;
	free(t->lines);
	free(t);
}
