/*
 * cron.h - cron expressions and time zone names for schedules.
 *
 * A schedule in a pipeline file (on.schedule[].cron) is a classic five
 * field cron expression, "MIN HOUR DOM MONTH DOW", or one of the macros
 * below.  Parsing turns it into one bitset per field, which is all that
 * both validation and a next-fire computation need: a time matches when
 * its minute, hour and month bits are set and its day matches (see
 * dom_star / dow_star).  This module knows nothing of YAML or pipelines.
 *
 * Fields accept what Vixie cron accepts: '*', numbers, ranges "1-5",
 * steps "1-30/2" (and '*' with a step, every 15
 * minutes), lists "1,15,30", and three-letter names
 * for months (JAN-DEC) and days (SUN-SAT), in any case.  Day-of-week takes
 * 0-7 where both 0 and 7 are Sunday.  We also accept "N/S", meaning
 * "N-MAX/S", as cronie does.
 *
 * Macros:
 *   @yearly, @annually   0 0 1 1 *
 *   @monthly             0 0 1 * *
 *   @weekly              0 0 * * 0
 *   @daily, @midnight    0 0 * * *
 *   @hourly              0 * * * *
 *   @nightly             0 2 * * *   (mlpipe's own: 02:00, the quiet hour
 *                                     of most clusters)
 * @reboot is rejected: a server's start is not a time.
 */
#ifndef MLP_CRON_H
#define MLP_CRON_H

#include <stdbool.h>
#include <stdint.h>

struct mlp_cron {
	uint64_t minutes; /* bit m set: fires at minute m (0-59) */
	uint32_t hours;   /* bit h: hour h (0-23) */
	uint32_t days;    /* bit d: day of month d (1-31); bit 0 unused */
	uint16_t months;  /* bit m: month m (1-12); bit 0 unused */
	uint8_t weekdays; /* bit d: day of week d (0-6, 0 = Sunday) */
	/*
	 * Vixie cron's day rule: when the day-of-month or the day-of-week
	 * field starts with '*' (so a '*' with a step counts too), a day matches
	 * when both fields match; when neither does, a day matches when
	 * either field matches ("0 0 1,15 * MON" fires on the 1st, the 15th
	 * and every Monday).
	 */
	bool dom_star;
	bool dow_star;
};

/*
 * Parses a cron expression (five fields or a macro) into *out.  Returns 0,
 * or MLP_EINVAL with a message naming the field and the problem, such as
 * "cron field 2 (hour): 24 is out of range 0-23".  *out is left
 * unspecified on failure.
 */
int mlp_cron_parse(struct mlp_cron *out, const char *expr);

/*
 * True when name is a time zone we can use: "UTC", or a TZif file under
 * /usr/share/zoneinfo ("Europe/Berlin").  Names that are empty, absolute,
 * contain "..", or contain characters no zone name has are refused
 * without touching the file system.
 */
bool mlp_timezone_valid(const char *name);

/* ---- time zones and next fire times (cron-tz.c) ------------------------
 *
 * Zones are read from the TZif files of the system's tzdata (version 2+
 * 64-bit transitions, and the footer's POSIX TZ rule for times after the
 * last one) by this module itself: no setenv("TZ"), so any thread may ask
 * about any zone at any time.
 */

struct mlp_tz;

/*
 * Loads the zone called name ("UTC", "Europe/Berlin").  Errors: MLP_EINVAL
 * with a message when the name is not a zone (see mlp_timezone_valid) or
 * its file is damaged.  Free with mlp_tz_free (accepts NULL).
 */
int mlp_tz_open(struct mlp_tz **out, const char *name);
void mlp_tz_free(struct mlp_tz *tz);

/* The same from the bytes of a TZif file (what names it in the message:
 * its path).  MLP_EINVAL with a message when they are not a version 2+
 * TZif file. */
int mlp_tz_parse(struct mlp_tz **out, const void *data, size_t len, const char *what);

/* The zone's offset from UTC, in seconds east, at time t (Unix seconds). */
int mlp_tz_offset(const struct mlp_tz *tz, int64_t t);

/*
 * The first time strictly after `after` (Unix seconds) at which c fires in
 * zone tz, into *out.  Fields are matched against the zone's wall clock,
 * with Vixie cron's rules for daylight saving changes:
 *   - a wall time skipped when clocks go forward fires at the first valid
 *     minute after the gap (02:30 on a spring-forward night fires at the
 *     03:00 that follows), once however many skipped minutes match;
 *   - a wall time repeated when clocks go back fires once, at its first
 *     occurrence, unless the hour field is '*' (every hour): such a
 *     schedule keeps firing in real time through the repeated hour.
 * Returns 0, or MLP_ENOTFOUND with a message when it never fires within
 * ten years ("0 0 30 2 *").
 */
int mlp_cron_next(int64_t *out, const struct mlp_cron *c, const struct mlp_tz *tz, int64_t after);

#endif
