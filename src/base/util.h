/*
 * util.h - small things every module uses: memory that cannot fail, a
 * growable buffer, string vectors, number and duration parsing, time.
 *
 * Out of memory is fatal: xmalloc() and friends abort with a message
 * instead of returning NULL, so callers never check.
 */
#ifndef MLP_UTIL_H
#define MLP_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MLP_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

void *xmalloc(size_t size);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *ptr, size_t size);
/* Grows *ptr (an array of *cap elements of size elem) to hold at least
 * need elements. */
void xgrow(void **ptr, size_t *cap, size_t need, size_t elem);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* Formats into a new string the caller frees. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *xvasprintf(const char *fmt, va_list ap);

/* A growable byte buffer, always NUL-terminated once anything was added.
 * Zero-initialise it (struct mlp_buf b = {0}); free with mlp_buf_free(). */
struct mlp_buf {
	char *data;
	size_t len;
	size_t cap;
};

void mlp_buf_add(struct mlp_buf *b, const void *data, size_t len);
void mlp_buf_puts(struct mlp_buf *b, const char *s);
void mlp_buf_putc(struct mlp_buf *b, char c);
/* Appends s escaped as a Prometheus label value (\\, \" and \n), without
 * the quotes; NULL appends nothing. */
void mlp_buf_put_prom_label(struct mlp_buf *b, const char *s);
void mlp_buf_printf(struct mlp_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void mlp_buf_clear(struct mlp_buf *b);
/* Returns the string (never NULL: "" when empty) and hands ownership to
 * the caller; the buffer is empty afterwards. */
char *mlp_buf_detach(struct mlp_buf *b);
/* The contents as a string; "" when empty.  Owned by the buffer. */
const char *mlp_buf_str(const struct mlp_buf *b);
void mlp_buf_free(struct mlp_buf *b);

/* A NULL-terminated vector of owned strings (argv/envp shaped). */
struct mlp_strv {
	char **v;
	size_t len;
	size_t cap;
};

void mlp_strv_push(struct mlp_strv *sv, const char *s);
void mlp_strv_push_owned(struct mlp_strv *sv, char *s);
/* Sets NAME=VALUE in an environment vector, replacing an existing NAME. */
void mlp_strv_setenv(struct mlp_strv *sv, const char *name, const char *value);
/* The value of NAME in an environment vector, or NULL. */
const char *mlp_strv_getenv(const struct mlp_strv *sv, const char *name);
void mlp_strv_free(struct mlp_strv *sv);

/* Parses a whole string as a base-10 integer within [min, max]; returns
 * 0 or MLP_EINVAL (no message set). */
int mlp_parse_int(long long *out, const char *s, long long min, long long max);
/* Parses a whole string as a finite double; 0 or MLP_EINVAL. */
int mlp_parse_double(double *out, const char *s);

/* Parses a duration such as "90s", "1h30m", "250ms", "2d" into
 * milliseconds.  A unit is required.  Returns 0 or MLP_EINVAL with a
 * message explaining what is wrong. */
int mlp_parse_duration(int64_t *out_ms, const char *s);
/* Formats milliseconds compactly ("1.2s", "3m04s", "2h05m") into buf. */
void mlp_format_duration(char *buf, size_t size, int64_t ms);

/* Milliseconds and microseconds on the monotonic clock, and wall-clock
 * milliseconds since the epoch. */
int64_t mlp_mono_ms(void);
int64_t mlp_mono_us(void);
int64_t mlp_wall_ms(void);
/* Formats wall-clock milliseconds as RFC 3339 UTC ("2026-11-26T15:07:08Z"). */
void mlp_format_time(char *buf, size_t size, int64_t wall_ms);

/* Edit distance between two strings (bounded: returns at most 99). */
int mlp_edit_distance(const char *a, const char *b);
/* Of the candidates, the one nearest to word if it is near enough to be a
 * plausible typo, else NULL. */
const char *mlp_suggest(const char *word, const char *const *candidates, size_t n);

/* Quotes s for a POSIX shell (single quotes) and appends it to b. */
void mlp_shell_quote(struct mlp_buf *b, const char *s);

/* Reads a whole file into a new NUL-terminated buffer (the caller frees
 * *out).  Fails with MLP_EINVAL when it is larger than max bytes. */
int mlp_read_file(char **out, size_t *out_len, const char *path, size_t max);
/* Writes a file atomically: a temporary beside it, fsync, rename. */
int mlp_write_file_atomic(const char *path, const void *data, size_t len, int mode);
/* mkdir -p. */
int mlp_mkdirs(const char *path, int mode);
/* An absolute, normalised form of path (which must exist). */
int mlp_realpath(char **out, const char *path);
/* The directory part of path, as a new string ("." when none). */
char *mlp_dirname(const char *path);

/* True when s is valid UTF-8. */
bool mlp_utf8_valid(const char *s, size_t len);

/* Sets close-on-exec / non-blocking on fd; 0 or MLP_EIO. */
int mlp_fd_cloexec(int fd);
int mlp_fd_nonblock(int fd);

#endif
