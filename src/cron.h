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
	uint64_t minutes;  /* bit m set: fires at minute m (0-59) */
	uint32_t hours;    /* bit h: hour h (0-23) */
	uint32_t days;     /* bit d: day of month d (1-31); bit 0 unused */
	uint16_t months;   /* bit m: month m (1-12); bit 0 unused */
	uint8_t weekdays;  /* bit d: day of week d (0-6, 0 = Sunday) */
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

#endif
