/*
 * error.c - the per-thread last error message (see error.h).
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/error.h"

static _Thread_local char last_message[1024];

void mlp_error_set(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(last_message, sizeof(last_message), fmt, ap);
	va_end(ap);
}

void mlp_error_set_errno(int errnum, const char *fmt, ...)
{
	va_list ap;
	size_t len;

	va_start(ap, fmt);
	vsnprintf(last_message, sizeof(last_message), fmt, ap);
	va_end(ap);
	len = strlen(last_message);
	snprintf(last_message + len, sizeof(last_message) - len, ": %s", strerror(errnum));
}

const char *mlp_error_last(void)
{
	return last_message[0] ? last_message : "unknown error";
}

void mlp_error_clear(void)
{
	last_message[0] = '\0';
}

void mlp_error_warn(const char *fmt, ...)
{
	va_list ap;

	fputs("mlpipe: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}
