/*
 * cron-tz.c - time zones from TZif files, and cron next-fire times
 * (cron.h).
 *
 * A zone is a table of transitions (instant, offset) read from the 64-bit
 * part of a version 2+ TZif file, plus the POSIX TZ rule in its footer
 * ("CET-1CEST,M3.5.0,M10.5.0/3") for instants after the last one.  Both
 * answer one question: the period (start, end, offset, offset before) that
 * holds an instant.  mlp_cron_next walks forward over real instants in
 * whole minutes, never across a transition in one step, so a skipped or
 * repeated wall-clock hour is always seen as such; a day or an hour that
 * cannot match is skipped in one step, which keeps a yearly schedule to a
 * few thousand steps.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "pipeline/cron.h"
#include "base/error.h"
#include "base/util.h"

#define ZONEINFO_DIR "/usr/share/zoneinfo"
#define TZIF_MAX_BYTES (1024 * 1024)

struct tz_rule_date {
	char kind; /* 'M' month.week.day, 'J' Julian 1-365, 'n' 0-365 */
	int month, week, wday, day;
	int32_t secs; /* local time of day of the change */
};

struct mlp_tz {
	int64_t *times; /* transition instants, ascending */
	int32_t *offs;  /* offset in force from times[i] */
	size_t n;
	int32_t off0;  /* before the first transition */
	bool has_rule; /* the footer rule applies after the last one */
	int32_t std_off, dst_off;
	bool has_dst;
	struct tz_rule_date start, end;
};

struct tz_period {
	int64_t start; /* INT64_MIN: since always */
	int64_t end;   /* INT64_MAX: forever */
	int32_t off;
	int32_t prev_off; /* the offset before start */
};

/* ---- calendar arithmetic (proleptic Gregorian, days since 1970-01-01) --- */

static int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;

	return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static int64_t days_from_civil(int64_t y, int m, int d)
{
	int64_t era;
	int64_t yoe, doy, doe;

	y -= m <= 2;
	era = floor_div(y, 400);
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
	int64_t era, doe, yoe, doy, mp;

	z += 719468;
	era = floor_div(z, 146097);
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*d = (int)(doy - (153 * mp + 2) / 5 + 1);
	*m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

static bool is_leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int64_t y, int m)
{
	static const int dim[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

	return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

/* 0 = Sunday. */
static int weekday(int64_t days)
{
	return (int)(((days % 7) + 7 + 4) % 7);
}

/* ---- the POSIX TZ rule of the footer ------------------------------------ */

static bool parse_tz_name(const char **p)
{
	const char *s = *p;

	if (*s == '<') {
		const char *e = strchr(s, '>');

		if (e == NULL || e == s + 1)
			return false;
		*p = e + 1;
		return true;
	}
	while ((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z'))
		s++;
	if (s - *p < 3)
		return false;
	*p = s;
	return true;
}

/* [+-]hh[:mm[:ss]] into seconds; max_hours bounds hh. */
static bool parse_tz_time(const char **p, int32_t *out, int max_hours)
{
	const char *s = *p;
	int sign = 1, part[3] = {0, 0, 0};

	if (*s == '+' || *s == '-')
		sign = *s++ == '-' ? -1 : 1;
	for (int i = 0; i < 3; i++) {
		int v = 0, digits = 0;

		while (*s >= '0' && *s <= '9' && digits < 3) {
			v = v * 10 + (*s++ - '0');
			digits++;
		}
		if (digits == 0)
			return false;
		part[i] = v;
		if (*s != ':' || i == 2)
			break;
		s++;
	}
	if (part[0] > max_hours || part[1] > 59 || part[2] > 59)
		return false;
	*out = sign * (part[0] * 3600 + part[1] * 60 + part[2]);
	*p = s;
	return true;
}

static bool parse_int_range(const char **p, int *out, int lo, int hi)
{
	const char *s = *p;
	int v = 0, digits = 0;

	while (*s >= '0' && *s <= '9' && digits < 4) {
		v = v * 10 + (*s++ - '0');
		digits++;
	}
	if (digits == 0 || v < lo || v > hi)
		return false;
	*out = v;
	*p = s;
	return true;
}

static bool parse_rule_date(const char **p, struct tz_rule_date *r)
{
	const char *s = *p;

	memset(r, 0, sizeof(*r));
	r->secs = 7200;
	if (*s == 'M') {
		s++;
		r->kind = 'M';
		if (!parse_int_range(&s, &r->month, 1, 12) || *s++ != '.' ||
		    !parse_int_range(&s, &r->week, 1, 5) || *s++ != '.' ||
		    !parse_int_range(&s, &r->wday, 0, 6))
			return false;
	} else if (*s == 'J') {
		s++;
		r->kind = 'J';
		if (!parse_int_range(&s, &r->day, 1, 365))
			return false;
	} else {
		r->kind = 'n';
		if (!parse_int_range(&s, &r->day, 0, 365))
			return false;
	}
	if (*s == '/') {
		s++;
		if (!parse_tz_time(&s, &r->secs, 167))
			return false;
	}
	*p = s;
	return true;
}

static bool parse_posix_tz(struct mlp_tz *tz, const char *s)
{
	int32_t v;

	if (!parse_tz_name(&s) || !parse_tz_time(&s, &v, 24))
		return false;
	tz->std_off = -v; /* POSIX offsets are west of Greenwich */
	tz->has_rule = true;
	if (*s == '\0')
		return true;
	if (!parse_tz_name(&s))
		return false;
	tz->has_dst = true;
	tz->dst_off = tz->std_off + 3600;
	if (*s != ',' && *s != '\0') {
		if (!parse_tz_time(&s, &v, 24))
			return false;
		tz->dst_off = -v;
	}
	if (*s == '\0') {
		/* No rule given: the United States' since 2007, as glibc does. */
		s = ",M3.2.0,M11.1.0";
	}
	if (*s++ != ',' || !parse_rule_date(&s, &tz->start) || *s++ != ',' ||
	    !parse_rule_date(&s, &tz->end))
		return false;
	return *s == '\0';
}

/* The local midnight (as days since the epoch) on which r falls in year y. */
static int64_t rule_day(const struct tz_rule_date *r, int64_t y)
{
	int64_t jan1 = days_from_civil(y, 1, 1);

	if (r->kind == 'J')
		return jan1 + r->day - 1 + (is_leap(y) && r->day >= 60 ? 1 : 0);
	if (r->kind == 'n')
		return jan1 + r->day;
	{
		int64_t first = days_from_civil(y, r->month, 1);
		int day = 1 + (r->wday - weekday(first) + 7) % 7 + (r->week - 1) * 7;

		while (day > days_in_month(y, r->month))
			day -= 7;
		return first + day - 1;
	}
}

static void rule_period(const struct mlp_tz *tz, int64_t t, struct tz_period *p)
{
	struct {
		int64_t at;
		int32_t off;
	} tr[6], tmp;
	int64_t y, days = floor_div(t, 86400);
	int m, d, n = 0;

	if (!tz->has_dst) {
		p->start = INT64_MIN;
		p->end = INT64_MAX;
		p->off = p->prev_off = tz->std_off;
		return;
	}
	civil_from_days(days, &y, &m, &d);
	for (int64_t yy = y - 1; yy <= y + 1; yy++) {
		/* DST starts at a standard-time wall clock, ends at a DST one. */
		tr[n].at = rule_day(&tz->start, yy) * 86400 + tz->start.secs - tz->std_off;
		tr[n++].off = tz->dst_off;
		tr[n].at = rule_day(&tz->end, yy) * 86400 + tz->end.secs - tz->dst_off;
		tr[n++].off = tz->std_off;
	}
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && tr[j - 1].at > tr[j].at; j--) {
			tmp = tr[j];
			tr[j] = tr[j - 1];
			tr[j - 1] = tmp;
		}
	for (int i = n - 1; i >= 0; i--) {
		if (tr[i].at <= t) {
			p->start = tr[i].at;
			p->off = tr[i].off;
			p->prev_off =
			        i > 0 ? tr[i - 1].off
			              : (tr[i].off == tz->std_off ? tz->dst_off : tz->std_off);
			p->end = i + 1 < n ? tr[i + 1].at : INT64_MAX;
			return;
		}
	}
	/* Cannot happen: the year before holds two changes before t. */
	p->start = INT64_MIN;
	p->end = tr[0].at;
	p->off = p->prev_off = tr[0].off == tz->std_off ? tz->dst_off : tz->std_off;
}

static void tz_period(const struct mlp_tz *tz, int64_t t, struct tz_period *p)
{
	size_t lo = 0, hi = tz->n;

	if (tz->n == 0 || t < tz->times[0]) {
		if (tz->n == 0 && tz->has_rule) {
			rule_period(tz, t, p);
			return;
		}
		p->start = INT64_MIN;
		p->end = tz->n ? tz->times[0] : INT64_MAX;
		p->off = p->prev_off = tz->off0;
		return;
	}
	/* The last transition at or before t. */
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (tz->times[mid] <= t)
			lo = mid;
		else
			hi = mid;
	}
	if (lo + 1 == tz->n && tz->has_rule) {
		rule_period(tz, t, p);
		if (p->start < tz->times[lo]) {
			p->start = tz->times[lo];
			p->prev_off = lo > 0 ? tz->offs[lo - 1] : tz->off0;
		}
		return;
	}
	p->start = tz->times[lo];
	p->off = tz->offs[lo];
	p->prev_off = lo > 0 ? tz->offs[lo - 1] : tz->off0;
	p->end = lo + 1 < tz->n ? tz->times[lo + 1] : INT64_MAX;
}

/* ---- TZif --------------------------------------------------------------- */

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const unsigned char *p)
{
	return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

static int parse_tzif(struct mlp_tz *tz, const unsigned char *b, size_t len)
{
	uint32_t cnt[6];
	size_t v1, pos, timecnt, typecnt;
	const unsigned char *times, *idx, *types;

	/* Header: magic, version, 15 reserved, six counts (RFC 8536). */
	if (len < 44 || memcmp(b, "TZif", 4) != 0 || b[4] < '2')
		return MLP_EINVAL;
	for (int i = 0; i < 6; i++)
		cnt[i] = be32(b + 20 + 4 * i);
	/* isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt */
	v1 = 44 + (size_t)cnt[3] * 5 + (size_t)cnt[4] * 6 + cnt[5] + (size_t)cnt[2] * 8 + cnt[1] +
	     cnt[0];
	if (v1 + 44 > len || memcmp(b + v1, "TZif", 4) != 0)
		return MLP_EINVAL;
	b += v1;
	len -= v1;
	for (int i = 0; i < 6; i++)
		cnt[i] = be32(b + 20 + 4 * i);
	timecnt = cnt[3];
	typecnt = cnt[4];
	pos = 44 + timecnt * 9 + typecnt * 6 + cnt[5] + (size_t)cnt[2] * 12 + cnt[1] + cnt[0];
	if (typecnt == 0 || pos > len)
		return MLP_EINVAL;
	times = b + 44;
	idx = times + timecnt * 8;
	types = idx + timecnt;
	tz->times = xcalloc(timecnt ? timecnt : 1, sizeof(*tz->times));
	tz->offs = xcalloc(timecnt ? timecnt : 1, sizeof(*tz->offs));
	tz->n = timecnt;
	tz->off0 = (int32_t)be32(types);
	for (size_t i = 0; i < timecnt; i++) {
		if (idx[i] >= typecnt)
			return MLP_EINVAL;
		tz->times[i] = be64(times + 8 * i);
		tz->offs[i] = (int32_t)be32(types + 6 * idx[i]);
		if (i > 0 && tz->times[i] <= tz->times[i - 1])
			return MLP_EINVAL;
	}
	/* Footer: "\nPOSIX-TZ\n"; empty means no rule. */
	if (pos < len && b[pos] == '\n') {
		const unsigned char *nl = memchr(b + pos + 1, '\n', len - pos - 1);

		if (nl && nl > b + pos + 1) {
			char *rule =
			        xstrndup((const char *)b + pos + 1, (size_t)(nl - b - pos - 1));
			bool ok = parse_posix_tz(tz, rule);

			free(rule);
			if (!ok)
				return MLP_EINVAL;
		}
	}
	return 0;
}

int mlp_tz_open(struct mlp_tz **out, const char *name)
{
	char *path, *data = NULL;
	size_t len;
	int rc;

	*out = NULL;
	if (!mlp_timezone_valid(name)) {
		mlp_error_set("unknown time zone '%s' (want an IANA name such as "
		              "Europe/Berlin, or UTC)",
		              name ? name : "");
		return MLP_EINVAL;
	}
	if (strcmp(name, "UTC") == 0) {
		*out = xcalloc(1, sizeof(**out));
		return 0;
	}
	path = xasprintf("%s/%s", ZONEINFO_DIR, name);
	rc = mlp_read_file(&data, &len, path, TZIF_MAX_BYTES);
	if (rc == 0)
		rc = mlp_tz_parse(out, data, len, path);
	free(path);
	free(data);
	return rc;
}

int mlp_tz_parse(struct mlp_tz **out, const void *data, size_t len, const char *what)
{
	struct mlp_tz *tz = xcalloc(1, sizeof(*tz));

	*out = NULL;
	if (parse_tzif(tz, data, len) != 0) {
		mlp_error_set("time zone file %s is damaged or older than TZif version 2", what);
		mlp_tz_free(tz);
		return MLP_EINVAL;
	}
	*out = tz;
	return 0;
}

void mlp_tz_free(struct mlp_tz *tz)
{
	if (tz == NULL)
		return;
	free(tz->times);
	free(tz->offs);
	free(tz);
}

int mlp_tz_offset(const struct mlp_tz *tz, int64_t t)
{
	struct tz_period p;

	tz_period(tz, t, &p);
	return p.off;
}

/* ---- next fire ---------------------------------------------------------- */

struct wall {
	int64_t days; /* local days since the epoch */
	int32_t sod;  /* seconds into the local day */
	int month, mday, wday, hour, minute;
};

static void wall_of(struct wall *w, int64_t local)
{
	int64_t y;

	w->days = floor_div(local, 86400);
	w->sod = (int32_t)(local - w->days * 86400);
	civil_from_days(w->days, &y, &w->month, &w->mday);
	w->wday = weekday(w->days);
	w->hour = w->sod / 3600;
	w->minute = w->sod / 60 % 60;
}

static bool day_matches(const struct mlp_cron *c, const struct wall *w)
{
	bool dom = (c->days >> w->mday) & 1, dow = (c->weekdays >> w->wday) & 1;

	if (!((c->months >> w->month) & 1))
		return false;
	return c->dom_star || c->dow_star ? dom && dow : dom || dow;
}

static bool wall_matches(const struct mlp_cron *c, int64_t local)
{
	struct wall w;

	wall_of(&w, local);
	return day_matches(c, &w) && ((c->hours >> w.hour) & 1) && ((c->minutes >> w.minute) & 1);
}

/* Whether a wall minute in [from, to) matches: a skipped stretch. */
static bool gap_matches(const struct mlp_cron *c, int64_t from, int64_t to)
{
	for (int64_t l = floor_div(from + 59, 60) * 60; l < to; l += 60)
		if (wall_matches(c, l))
			return true;
	return false;
}

int mlp_cron_next(int64_t *out, const struct mlp_cron *c, const struct mlp_tz *tz, int64_t after)
{
	const int64_t limit = after + INT64_C(10) * 366 * 86400;
	const bool every_hour = (c->hours & 0xffffffu) == 0xffffffu;
	/* Not the next whole UTC minute: in a zone whose offset has seconds
	 * (LMT, "<+0330>-3:30:30") the wall clock's whole minutes fall in
	 * between; the steps below find the first of them. */
	int64_t t = after + 1;

	while (t < limit) {
		struct tz_period p;
		struct wall w;
		int64_t local, next;

		tz_period(tz, t, &p);
		/* At a change that skips wall time, fire for what was skipped. */
		if (t == p.start && p.off > p.prev_off &&
		    gap_matches(c, p.start + p.prev_off, p.start + p.off)) {
			*out = t;
			return 0;
		}
		local = t + p.off;
		wall_of(&w, local);
		if (!day_matches(c, &w)) {
			next = t + (86400 - w.sod);
		} else if (!((c->hours >> w.hour) & 1)) {
			next = t + (3600 - w.sod % 3600);
		} else if (!((c->minutes >> w.minute) & 1) || w.sod % 60 != 0) {
			next = t + (60 - w.sod % 60);
		} else if (p.off < p.prev_off && local - p.prev_off < p.start && !every_hour) {
			/* This wall time already happened before the clocks went
			 * back: it fired then. */
			next = t + 60;
		} else {
			*out = t;
			return 0;
		}
		/* Never step over a change of offset: it must be looked at. */
		t = next < p.end ? next : p.end;
	}
	mlp_error_set("the schedule never fires in the next ten years");
	return MLP_ENOTFOUND;
}
