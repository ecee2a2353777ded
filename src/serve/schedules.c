/*
 * schedules.c - cron firing for `mlpipe serve`: the schedules of every
 * project's pipeline file, when each fires next, and queueing its run when
 * it is due (serve-int.h, docs/serve.md).
 *
 * Runs in the main loop only, on its connection `ctl`; the loop asks how
 * long it may wait (serve_schedules_timeout_ms()) and calls back when a
 * schedule is due.  The pipeline file is read from the project's mirror,
 * which the poller fetches (poller.c).  Each fire is one transaction
 * (store-queue.c), so a restart neither loses nor repeats one.
 *
 * The schedules' clock is the wall clock, or under the test hook
 * MLPIPE_SERVE_TEST_CLOCK the Unix time written in a file.
 */
#include "config.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "base/error.h"
#include "base/git.h"
#include "base/util.h"
#include "pipeline/pipeline.h"
#include "serve/serve-int.h"
#include "store/store.h"
#include "store/store-queue.h"

/* ---- the clock ------------------------------------------------------------- */

/*
 * The wall clock, or under the test hook the time in the clock file (kept
 * when the file cannot be read, as while a test replaces it).
 */
int64_t serve_clock_now(struct serve *sv)
{
	char *text = NULL;
	size_t len;
	long long t;

	if (sv->clock_file == NULL)
		return mlp_wall_ms() / 1000;
	if (mlp_read_file(&text, &len, sv->clock_file, 64) == 0) {
		while (len > 0 && strchr(" \t\r\n", text[len - 1]))
			text[--len] = '\0';
		if (mlp_parse_int(&t, text, 0, INT64_MAX / 1000) == 0)
			sv->clock_now = t;
	}
	free(text);
	return sv->clock_now;
}

int serve_clock_open(struct serve *sv)
{
	const char *file = getenv("MLPIPE_SERVE_TEST_CLOCK");
	char *dir;
	int rc = 0;

	if (file == NULL || *file == '\0')
		return 0;
	sv->clock_file = xstrdup(file);
	dir = mlp_dirname(sv->clock_file);
	sv->clock_fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
	if (sv->clock_fd < 0 ||
	    inotify_add_watch(sv->clock_fd, dir, IN_CLOSE_WRITE | IN_MOVED_TO) < 0 ||
	    serve_clock_now(sv) == 0) {
		mlp_error_set("MLPIPE_SERVE_TEST_CLOCK=%s: not a file holding a Unix time",
		              sv->clock_file);
		rc = MLP_EINVAL;
	}
	free(dir);
	return rc;
}

void serve_clock_drain(struct serve *sv)
{
	char ev[4096];

	while (read(sv->clock_fd, ev, sizeof(ev)) > 0)
		;
}

/* ---- loading --------------------------------------------------------------- */

static void schedule_clear(struct serve_schedule *s)
{
	free(s->key);
	free(s->project);
	free(s->branch);
	free(s->expr);
	free(s->zone);
	free(s->concurrency);
	mlp_tz_free(s->tz);
}

void serve_schedules_free(struct serve *sv)
{
	for (size_t i = 0; i < sv->nscheds; i++)
		schedule_clear(&sv->scheds[i]);
	free(sv->scheds);
	sv->scheds = NULL;
	sv->nscheds = 0;
}

/*
 * Fills s (zeroed) from schedule number k of project's pipeline file
 * (watched on branch): its next fire time, counted from its last fire, or
 * from now when it never fired.  False, logged, when its expression or zone
 * is invalid (s then owns nothing).
 */
static bool schedule_init(struct serve *sv, struct serve_schedule *s, const char *project,
                          const char *branch, size_t k, const struct mlp_schedule *ms, int64_t now)
{
	int64_t last = 0;
	bool fresh = false;

	s->zone = xstrdup(ms->timezone ? ms->timezone : "UTC");
	if (mlp_cron_parse(&s->cron, ms->cron) != 0 || mlp_tz_open(&s->tz, s->zone) != 0) {
		serve_log(sv, "schedule %s #%zu: %s", project, k + 1, mlp_error_last());
		free(s->zone);
		return false;
	}
	s->key = xasprintf("%s#%zu %s %s", project, k + 1, ms->cron, s->zone);
	s->project = xstrdup(project);
	s->branch = xstrdup(branch);
	s->expr = xstrdup(ms->cron);
	s->concurrency = xstrdup(ms->concurrency ? ms->concurrency : "forbid");
	s->deadline_ms = ms->starting_deadline_ms;
	if (mlp_store_schedule_last(&last, sv->ctl, s->key) != 0 || last == 0) {
		/* New: it starts counting now, nothing to catch up. */
		int64_t none;

		last = now;
		fresh = true;
		mlp_store_schedule_fire(&none, sv->ctl, s->key, now, NULL);
	}
	if (mlp_cron_next(&s->next, &s->cron, s->tz, last) != 0)
		s->next = INT64_MAX;
	if (fresh && s->next != INT64_MAX) {
		char when[40];

		mlp_format_time(when, sizeof(when), s->next * 1000);
		serve_log(sv, "schedule %s: new; first fire at %s", s->key, when);
	}
	return true;
}

/*
 * Appends the schedules of project p: those of the pipeline file at the
 * head of its default branch (the first branch it watches that is not a
 * pattern) in the mirror; none when that cannot be read or parsed.
 */
static void load_project(struct serve *sv, const struct mlp_project *p, int64_t now,
                         struct serve_schedule **sc, size_t *len, size_t *cap)
{
	char branch[256], *ref, *mirror, *commit = NULL, *text = NULL;
	const char *b = mlp_project_default_branch(p, branch, sizeof(branch));
	struct mlp_pipeline *pl = NULL;
	struct mlp_diags diags = {0};
	size_t tlen;

	mirror = mlp_project_mirror(sv->ctl, p->name);
	ref = xasprintf("refs/heads/%s", b);
	if (access(mirror, F_OK) == 0 && mlp_git_resolve(&commit, mirror, ref) == 0 &&
	    mlp_git_read_file(&text, &tlen, mirror, commit, p->pipeline_path,
	                      MLP_PIPELINE_MAX_BYTES) == 0 &&
	    mlp_pipeline_parse(&pl, &diags, p->pipeline_path, text, tlen) == 0) {
		for (size_t k = 0; k < pl->nschedules; k++) {
			xgrow((void **)sc, cap, *len + 1, sizeof(**sc));
			memset(&(*sc)[*len], 0, sizeof(**sc));
			if (schedule_init(sv, &(*sc)[*len], p->name, b, k, &pl->schedules[k], now))
				(*len)++;
		}
	}
	mlp_pipeline_free(pl);
	mlp_diags_free(&diags);
	free(text);
	free(commit);
	free(ref);
	free(mirror);
}

/*
 * A schedule is known by project, position, expression and zone, so a
 * changed one starts afresh (no catch-up for it).
 */
void serve_schedules_reload(struct serve *sv)
{
	struct mlp_project *ps = NULL;
	struct serve_schedule *sc = NULL;
	size_t n = 0, len = 0, cap = 0;
	int64_t now = serve_clock_now(sv);

	if (mlp_store_projects_list(&ps, &n, sv->ctl) != 0)
		return;
	for (size_t i = 0; i < n; i++)
		load_project(sv, &ps[i], now, &sc, &len, &cap);
	mlp_project_free_all(ps, n);
	serve_schedules_free(sv);
	sv->scheds = sc;
	sv->nscheds = len;
}

/* ---- firing ---------------------------------------------------------------- */

/* Fires a due schedule once (however many fire times were missed). */
static void fire_schedule(struct serve *sv, struct serve_schedule *s, int64_t now)
{
	int64_t fire = s->next, t = s->next, active = 0, id = 0;
	bool run = true;
	char why[160] = "";

	/* The latest fire time that has passed: catch up once, not N times. */
	for (int i = 0; i < 100000; i++) {
		int64_t nx;

		if (mlp_cron_next(&nx, &s->cron, s->tz, t) != 0 || nx > now)
			break;
		fire = t = nx;
	}
	if (s->deadline_ms > 0 && (now - fire) * 1000 > s->deadline_ms) {
		run = false;
		snprintf(why, sizeof(why), "missed by more than its starting_deadline");
	}
	if (run && mlp_store_schedule_active(&active, sv->ctl, s->key) == 0 && active) {
		if (strcmp(s->concurrency, "forbid") == 0) {
			run = false;
			snprintf(why, sizeof(why), "run %lld is still going (concurrency: forbid)",
			         (long long)active);
		} else if (strcmp(s->concurrency, "replace") == 0) {
			serve_run_cancel(sv, active);
		}
	}
	{
		char *ref = xasprintf("refs/heads/%s", s->branch);
		struct mlp_run_queued q = {
		        .project = s->project,
		        .trigger = "schedule",
		        .user = "schedule",
		        .git_ref = ref,
		        .schedule = s->key,
		};

		if (mlp_store_schedule_fire(&id, sv->ctl, s->key, now, run ? &q : NULL) != 0)
			serve_log(sv, "schedule %s: %s", s->key, mlp_error_last());
		else if (run)
			serve_log(sv, "schedule %s: run %lld queued", s->key, (long long)id);
		else
			serve_log(sv, "schedule %s: not run: %s", s->key, why);
		free(ref);
	}
	if (mlp_cron_next(&s->next, &s->cron, s->tz, now) != 0)
		s->next = INT64_MAX;
}

bool serve_schedules_fire_due(struct serve *sv, int64_t now)
{
	bool fired = false;

	for (size_t i = 0; i < sv->nscheds && !atomic_load(&sv->stopping); i++)
		if (sv->scheds[i].next <= now) {
			fire_schedule(sv, &sv->scheds[i], now);
			fired = true;
		}
	return fired;
}

int64_t serve_schedules_timeout_ms(struct serve *sv, int64_t now)
{
	int64_t next = INT64_MAX, timeout_ms;

	for (size_t i = 0; i < sv->nscheds; i++)
		if (sv->scheds[i].next < next)
			next = sv->scheds[i].next;
	/* Wait for the earliest schedule; look again at least every five
	 * minutes in case the wall clock was set. */
	timeout_ms = next == INT64_MAX ? 300000 : (next - now) * 1000 - mlp_wall_ms() % 1000;
	/* The test clock stands still: only its file moves it. */
	if (sv->clock_file)
		timeout_ms = 300000;
	if (timeout_ms > 300000)
		timeout_ms = 300000;
	if (timeout_ms < 0)
		timeout_ms = 0;
	return timeout_ms;
}
