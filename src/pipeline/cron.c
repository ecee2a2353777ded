/*
 * cron.c - parsing cron expressions and checking time zone names (cron.h).
 *
 * The parser is a straight reading of Vixie cron's grammar into bitsets;
 * every message names the field by number and name so that a user can
 * find it in "*\/5 24 * * *" without counting.  Computing the next fire
 * time belongs here too, when it comes, and needs nothing more than the
 * struct holds.
 */
#include "config.h"

#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pipeline/cron.h"
#include "base/error.h"
#include "base/util.h"

#define ZONEINFO_DIR "/usr/share/zoneinfo"

struct field_spec {
	const char *name;
	int min;
	int max;                  /* largest value accepted as written */
	const char *const *names; /* names for min, min+1 ... or NULL */
	size_t nnames;
};

static const char *const month_names[] = {
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
};

static const char *const day_names[] = {
        "SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT",
};

static const struct field_spec fields[5] = {
        {"minute", 0, 59, NULL, 0},
        {"hour", 0, 23, NULL, 0},
        {"day-of-month", 1, 31, NULL, 0},
        {"month", 1, 12, month_names, MLP_ARRAY_SIZE(month_names)},
        {"day-of-week", 0, 7, day_names, MLP_ARRAY_SIZE(day_names)},
};

static const struct {
	const char *name;
	const char *expansion;
} macros[] = {
        {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
        {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
        {"@hourly", "0 * * * *"}, {"@nightly", "0 2 * * *"},
};

/*
 * Reads one value (a number or a name) at *p, advancing *p past it; text
 * is the whole field, for messages.
 * Returns 0 or MLP_EINVAL with a message set.
 */
static int parse_value(int *out, const char **p, const char *text, int fieldno)
{
	const struct field_spec *f = &fields[fieldno];
	const char *s = *p;

	if (isdigit((unsigned char)*s)) {
		long v = 0;

		while (isdigit((unsigned char)*s)) {
			if (v < 1000)
				v = v * 10 + (*s - '0');
			s++;
		}
		if (isalpha((unsigned char)*s))
			goto not_a_value;
		if (v < f->min || v > f->max) {
			mlp_error_set("cron field %d (%s): %.*s is out of range %d-%d", fieldno + 1,
			              f->name, (int)(s - *p), *p, f->min, f->max);
			return MLP_EINVAL;
		}
		*out = (int)v;
		*p = s;
		return 0;
	}
	if (isalpha((unsigned char)*s)) {
		while (isalpha((unsigned char)*s))
			s++;
		for (size_t i = 0; i < f->nnames && s - *p == 3; i++) {
			if (strncasecmp(*p, f->names[i], 3) == 0) {
				*out = f->min + (int)i;
				*p = s;
				return 0;
			}
		}
		if (f->names != NULL) {
			mlp_error_set(
			        "cron field %d (%s): unknown name '%.*s' (use %s-%s or %d-%d)",
			        fieldno + 1, f->name, (int)(s - *p), *p, f->names[0],
			        f->names[f->nnames - 1], f->min, f->max);
			return MLP_EINVAL;
		}
	}
not_a_value:
	while (*s && *s != ',' && *s != '-' && *s != '/')
		s++;
	if (s == *p)
		mlp_error_set("cron field %d (%s): missing number in '%s'", fieldno + 1, f->name,
		              text);
	else
		mlp_error_set("cron field %d (%s): '%.*s' is not a number", fieldno + 1, f->name,
		              (int)(s - *p), *p);
	return MLP_EINVAL;
}

/* Sets the bits of one field (text without spaces) in *bits. */
static int parse_field(uint64_t *bits, bool *star, const char *text, int fieldno)
{
	const struct field_spec *f = &fields[fieldno];
	const char *p = text;

	*bits = 0;
	*star = *text == '*';
	for (;;) {
		int lo, hi, step = 1;
		bool has_range = false;

		if (*p == ',' || *p == '\0') {
			mlp_error_set("cron field %d (%s): empty list item in '%s'", fieldno + 1,
			              f->name, text);
			return MLP_EINVAL;
		}
		if (*p == '*') {
			lo = f->min;
			hi = f->max;
			has_range = true;
			p++;
		} else {
			if (parse_value(&lo, &p, text, fieldno) != 0)
				return MLP_EINVAL;
			hi = lo;
			if (*p == '-') {
				p++;
				if (parse_value(&hi, &p, text, fieldno) != 0)
					return MLP_EINVAL;
				if (hi < lo) {
					mlp_error_set(
					        "cron field %d (%s): range %d-%d goes backwards",
					        fieldno + 1, f->name, lo, hi);
					return MLP_EINVAL;
				}
				has_range = true;
			}
		}
		if (*p == '/') {
			const char *s = ++p;
			long v = 0;

			while (isdigit((unsigned char)*p)) {
				if (v < 1000)
					v = v * 10 + (*p - '0');
				p++;
			}
			if (p == s || (*p != ',' && *p != '\0')) {
				while (*p && *p != ',')
					p++;
				mlp_error_set("cron field %d (%s): step '%.*s' is not a number",
				              fieldno + 1, f->name, (int)(p - s), s);
				return MLP_EINVAL;
			}
			if (v < 1) {
				mlp_error_set("cron field %d (%s): step must be at least 1",
				              fieldno + 1, f->name);
				return MLP_EINVAL;
			}
			if (!has_range)
				hi = f->max; /* "N/S" is "N-MAX/S" */
			step = (int)v;
		}
		if (*p != ',' && *p != '\0') {
			mlp_error_set("cron field %d (%s): unexpected '%c' in '%s'", fieldno + 1,
			              f->name, *p, text);
			return MLP_EINVAL;
		}
		for (int v = lo; v <= hi; v += step)
			*bits |= UINT64_C(1) << v;
		if (*p == '\0')
			break;
		p++;
		if (*p == '\0') {
			mlp_error_set("cron field %d (%s): empty list item in '%s'", fieldno + 1,
			              f->name, text);
			return MLP_EINVAL;
		}
	}
	return 0;
}

int mlp_cron_parse(struct mlp_cron *out, const char *expr)
{
	char *copy = NULL;
	char *words[6];
	char *save = NULL, *w;
	int n = 0, rc = MLP_EINVAL;
	uint64_t bits[5];
	bool star[5];
	const char *text = expr;

	while (isspace((unsigned char)*text))
		text++;
	if (*text == '@') {
		size_t len = strcspn(text, " \t\r\n");
		const char *names[MLP_ARRAY_SIZE(macros)];
		const char *near;

		if (text[len + strspn(text + len, " \t\r\n")] != '\0') {
			mlp_error_set("cron macro '%.*s' takes nothing after it", (int)len, text);
			return MLP_EINVAL;
		}
		for (size_t i = 0; i < MLP_ARRAY_SIZE(macros); i++) {
			names[i] = macros[i].name;
			if (strlen(macros[i].name) == len &&
			    strncasecmp(text, macros[i].name, len) == 0)
				return mlp_cron_parse(out, macros[i].expansion);
		}
		if (len == 7 && strncasecmp(text, "@reboot", 7) == 0) {
			mlp_error_set("cron macro @reboot is not supported (schedules fire at "
			              "times; use @daily, @hourly ... or five fields)");
			return MLP_EINVAL;
		}
		copy = xstrndup(text, len);
		near = mlp_suggest(copy, names, MLP_ARRAY_SIZE(names));
		if (near)
			mlp_error_set("unknown cron macro '%s' (did you mean '%s'?)", copy, near);
		else
			mlp_error_set("unknown cron macro '%s' (known: @yearly, @annually, "
			              "@monthly, @weekly, @daily, @midnight, @hourly, @nightly)",
			              copy);
		free(copy);
		return MLP_EINVAL;
	}
	copy = xstrdup(text);
	for (w = strtok_r(copy, " \t\r\n", &save); w != NULL && n < 6;
	     w = strtok_r(NULL, " \t\r\n", &save))
		words[n++] = w;
	if (n != 5) {
		if (n == 0)
			mlp_error_set("empty cron expression (it needs 5 fields: minute hour "
			              "day-of-month month day-of-week, or a macro such as @daily)");
		else if (n > 5)
			mlp_error_set("cron expression '%s' has more than 5 fields; it needs 5 "
			              "(minute hour day-of-month month day-of-week; there is no "
			              "seconds field) or a macro such as @daily",
			              expr);
		else
			mlp_error_set("cron expression '%s' has %d field%s; it needs 5 (minute "
			              "hour day-of-month month day-of-week) or a macro such as "
			              "@daily",
			              expr, n, n == 1 ? "" : "s");
		goto done;
	}
	for (int i = 0; i < 5; i++)
		if (parse_field(&bits[i], &star[i], words[i], i) != 0)
			goto done;
	out->minutes = bits[0];
	out->hours = (uint32_t)bits[1];
	out->days = (uint32_t)bits[2];
	out->months = (uint16_t)bits[3];
	/* 7 is Sunday too. */
	out->weekdays = (uint8_t)((bits[4] | (bits[4] >> 7)) & 0x7f);
	out->dom_star = star[2];
	out->dow_star = star[4];
	rc = 0;
done:
	free(copy);
	return rc;
}

bool mlp_timezone_valid(const char *name)
{
	char *path;
	char magic[4];
	struct stat st;
	int fd;
	bool ok = false;

	if (name == NULL || *name == '\0' || *name == '/' || strstr(name, "..") != NULL)
		return false;
	if (strcmp(name, "UTC") == 0)
		return true;
	for (const char *p = name; *p; p++)
		if (!isalnum((unsigned char)*p) && strchr("/_+-", *p) == NULL)
			return false;
	path = xasprintf("%s/%s", ZONEINFO_DIR, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	free(path);
	if (fd < 0)
		return false;
	/* Only TZif files are zones; zone.tab, tzdata.zi and friends are not. */
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
	    read(fd, magic, sizeof(magic)) == (ssize_t)sizeof(magic) &&
	    memcmp(magic, "TZif", 4) == 0)
		ok = true;
	close(fd);
	return ok;
}
