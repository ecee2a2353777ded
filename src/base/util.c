/*
 * util.c - memory, buffers, vectors, parsing and time helpers (util.h).
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "base/util.h"

static void oom(size_t size)
{
	fprintf(stderr, "mlpipe: out of memory (allocating %zu bytes)\n", size);
	abort();
}

void *xmalloc(size_t size)
{
	void *p = malloc(size ? size : 1);

	if (p == NULL)
		oom(size);
	return p;
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (p == NULL)
		oom(n * size);
	return p;
}

void *xrealloc(void *ptr, size_t size)
{
	void *p = realloc(ptr, size ? size : 1);

	if (p == NULL)
		oom(size);
	return p;
}

void xgrow(void **ptr, size_t *cap, size_t need, size_t elem)
{
	size_t n = *cap ? *cap : 8;

	if (need <= *cap)
		return;
	while (n < need) {
		if (n > SIZE_MAX / 2 / elem)
			oom(SIZE_MAX);
		n *= 2;
	}
	*ptr = xrealloc(*ptr, n * elem);
	*cap = n;
}

char *xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);

	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

char *xvasprintf(const char *fmt, va_list ap)
{
	char *p;

	if (vasprintf(&p, fmt, ap) < 0)
		oom(0);
	return p;
}

char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *p;

	va_start(ap, fmt);
	p = xvasprintf(fmt, ap);
	va_end(ap);
	return p;
}

void mlp_buf_add(struct mlp_buf *b, const void *data, size_t len)
{
	xgrow((void **)&b->data, &b->cap, b->len + len + 1, 1);
	if (len)
		memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
}

void mlp_buf_puts(struct mlp_buf *b, const char *s)
{
	mlp_buf_add(b, s, strlen(s));
}

void mlp_buf_putc(struct mlp_buf *b, char c)
{
	mlp_buf_add(b, &c, 1);
}

void mlp_buf_put_prom_label(struct mlp_buf *b, const char *s)
{
	for (; s && *s; s++) {
		if (*s == '\\' || *s == '"')
			mlp_buf_putc(b, '\\');
		if (*s == '\n')
			mlp_buf_puts(b, "\\n");
		else
			mlp_buf_putc(b, *s);
	}
}

void mlp_buf_printf(struct mlp_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	xgrow((void **)&b->data, &b->cap, b->len + (size_t)n + 1, 1);
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void mlp_buf_clear(struct mlp_buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

char *mlp_buf_detach(struct mlp_buf *b)
{
	char *p = b->data ? b->data : xstrdup("");

	b->data = NULL;
	b->len = b->cap = 0;
	return p;
}

const char *mlp_buf_str(const struct mlp_buf *b)
{
	return b->data ? b->data : "";
}

void mlp_buf_free(struct mlp_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

void mlp_strv_push_owned(struct mlp_strv *sv, char *s)
{
	xgrow((void **)&sv->v, &sv->cap, sv->len + 2, sizeof(char *));
	sv->v[sv->len++] = s;
	sv->v[sv->len] = NULL;
}

void mlp_strv_push(struct mlp_strv *sv, const char *s)
{
	mlp_strv_push_owned(sv, xstrdup(s));
}

static ssize_t strv_find_env(const struct mlp_strv *sv, const char *name)
{
	size_t n = strlen(name);

	for (size_t i = 0; i < sv->len; i++)
		if (strncmp(sv->v[i], name, n) == 0 && sv->v[i][n] == '=')
			return (ssize_t)i;
	return -1;
}

void mlp_strv_setenv(struct mlp_strv *sv, const char *name, const char *value)
{
	ssize_t i = strv_find_env(sv, name);
	char *entry = xasprintf("%s=%s", name, value);

	if (i >= 0) {
		free(sv->v[i]);
		sv->v[i] = entry;
	} else {
		mlp_strv_push_owned(sv, entry);
	}
}

const char *mlp_strv_getenv(const struct mlp_strv *sv, const char *name)
{
	ssize_t i = strv_find_env(sv, name);

	return i >= 0 ? sv->v[i] + strlen(name) + 1 : NULL;
}

void mlp_strv_free(struct mlp_strv *sv)
{
	for (size_t i = 0; i < sv->len; i++)
		free(sv->v[i]);
	free(sv->v);
	sv->v = NULL;
	sv->len = sv->cap = 0;
}

int mlp_parse_int(long long *out, const char *s, long long min, long long max)
{
	char *end;
	long long v;

	if (s == NULL || *s == '\0' || isspace((unsigned char)*s))
		return MLP_EINVAL;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return MLP_EINVAL;
	*out = v;
	return 0;
}

int mlp_parse_double(double *out, const char *s)
{
	char *end;
	double v;

	if (s == NULL || *s == '\0' || isspace((unsigned char)*s))
		return MLP_EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || *end != '\0' || !isfinite(v))
		return MLP_EINVAL;
	*out = v;
	return 0;
}

int mlp_parse_duration(int64_t *out_ms, const char *s)
{
	static const struct {
		const char *unit;
		int64_t ms;
	} units[] = {
	        {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000},
	};
	const char *p = s;
	double total = 0;
	bool any = false;

	if (*p == '\0') {
		mlp_error_set("empty duration");
		return MLP_EINVAL;
	}
	while (*p) {
		char *end;
		double v;
		size_t best = 0, best_len = 0;

		if (!isdigit((unsigned char)*p) && *p != '.')
			goto bad;
		errno = 0;
		v = strtod(p, &end);
		if (end == p || errno != 0 || v < 0)
			goto bad;
		p = end;
		for (size_t i = 0; i < MLP_ARRAY_SIZE(units); i++) {
			size_t ul = strlen(units[i].unit);

			if (strncmp(p, units[i].unit, ul) == 0 && ul > best_len) {
				best = i;
				best_len = ul;
			}
		}
		if (best_len == 0) {
			if (*p == '\0' && !any)
				mlp_error_set(
				        "duration '%s' has no unit (write e.g. '%ss' or '%sm')", s,
				        s, s);
			else
				goto bad;
			return MLP_EINVAL;
		}
		p += best_len;
		total += v * (double)units[best].ms;
		any = true;
	}
	if (total > 1e15)
		goto bad;
	*out_ms = (int64_t)total;
	return 0;
bad:
	mlp_error_set("bad duration '%s' (expected a number and a unit: ms, s, m, h, d, "
	              "as in '90s' or '1h30m')",
	              s);
	return MLP_EINVAL;
}

void mlp_format_duration(char *buf, size_t size, int64_t ms)
{
	if (ms < 0)
		ms = 0;
	if (ms < 1000)
		snprintf(buf, size, "%lldms", (long long)ms);
	else if (ms < 60000)
		snprintf(buf, size, "%.1fs", (double)ms / 1000.0);
	else if (ms < 3600000)
		snprintf(buf, size, "%lldm%02llds", (long long)(ms / 60000),
		         (long long)(ms / 1000 % 60));
	else
		snprintf(buf, size, "%lldh%02lldm", (long long)(ms / 3600000),
		         (long long)(ms / 60000 % 60));
}

int64_t mlp_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t mlp_mono_ms(void)
{
	return mlp_mono_us() / 1000;
}

int64_t mlp_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void mlp_format_time(char *buf, size_t size, int64_t wall_ms)
{
	time_t t = (time_t)(wall_ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Optimal string alignment distance: Levenshtein plus adjacent
 * transpositions, so "rnu" is one edit from "run". */
int mlp_edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	int d[62][62];

	if (la > 60 || lb > 60)
		return 99;
	for (size_t i = 0; i <= la; i++)
		d[i][0] = (int)i;
	for (size_t j = 0; j <= lb; j++)
		d[0][j] = (int)j;
	for (size_t i = 1; i <= la; i++) {
		for (size_t j = 1; j <= lb; j++) {
			int ca = tolower((unsigned char)a[i - 1]),
			    cb = tolower((unsigned char)b[j - 1]);
			int v = d[i - 1][j - 1] + (ca != cb);

			if (d[i - 1][j] + 1 < v)
				v = d[i - 1][j] + 1;
			if (d[i][j - 1] + 1 < v)
				v = d[i][j - 1] + 1;
			if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) &&
			    tolower((unsigned char)a[i - 2]) == cb && d[i - 2][j - 2] + 1 < v)
				v = d[i - 2][j - 2] + 1;
			d[i][j] = v;
		}
	}
	return d[la][lb] > 99 ? 99 : d[la][lb];
}

const char *mlp_suggest(const char *word, const char *const *candidates, size_t n)
{
	const char *best = NULL;
	int best_d = 99;
	size_t wl = strlen(word);
	/* One letter is no evidence of a typo: "c" is as near "a" as "b" is. */
	int limit = wl <= 1 ? 0 : wl <= 3 ? 1 : wl <= 6 ? 2 : 3;

	for (size_t i = 0; i < n; i++) {
		int d;

		if (candidates[i] == NULL)
			continue;
		d = mlp_edit_distance(word, candidates[i]);
		/* A prefix typed so far ("need" for "needs") also counts. */
		if (d > limit && strncmp(candidates[i], word, wl) == 0 && wl >= 3)
			d = limit;
		if (d < best_d) {
			best_d = d;
			best = candidates[i];
		}
	}
	return best_d <= limit ? best : NULL;
}

void mlp_shell_quote(struct mlp_buf *b, const char *s)
{
	mlp_buf_putc(b, '\'');
	for (; *s; s++) {
		if (*s == '\'')
			mlp_buf_puts(b, "'\\''");
		else
			mlp_buf_putc(b, *s);
	}
	mlp_buf_putc(b, '\'');
}

int mlp_read_file(char **out, size_t *out_len, const char *path, size_t max)
{
	struct mlp_buf b = {0};
	char chunk[65536];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;

	if (fd < 0) {
		mlp_error_set_errno(errno, "%s", path);
		return errno == ENOENT ? MLP_ENOTFOUND : MLP_EIO;
	}
	if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
		close(fd);
		mlp_error_set("%s: is a directory", path);
		return MLP_EINVAL;
	}
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			mlp_error_set_errno(errno, "%s", path);
			close(fd);
			mlp_buf_free(&b);
			return MLP_EIO;
		}
		if (n == 0)
			break;
		if (b.len + (size_t)n > max) {
			mlp_error_set("%s: file is too large (limit %zu bytes)", path, max);
			close(fd);
			mlp_buf_free(&b);
			return MLP_EINVAL;
		}
		mlp_buf_add(&b, chunk, (size_t)n);
	}
	close(fd);
	if (out_len)
		*out_len = b.len;
	*out = mlp_buf_detach(&b);
	return 0;
}

int mlp_write_file_atomic(const char *path, const void *data, size_t len, int mode)
{
	char *tmp = xasprintf("%s.tmp.%ld", path, (long)getpid());
	const char *p = data;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	int rc = MLP_EIO;

	if (fd < 0) {
		mlp_error_set_errno(errno, "%s", tmp);
		free(tmp);
		return MLP_EIO;
	}
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			mlp_error_set_errno(errno, "writing %s", tmp);
			goto done;
		}
		p += n;
		len -= (size_t)n;
	}
	if (fsync(fd) != 0) {
		mlp_error_set_errno(errno, "fsync %s", tmp);
		goto done;
	}
	if (close(fd) != 0) {
		fd = -1;
		mlp_error_set_errno(errno, "closing %s", tmp);
		goto done;
	}
	fd = -1;
	if (rename(tmp, path) != 0) {
		mlp_error_set_errno(errno, "renaming %s to %s", tmp, path);
		goto done;
	}
	rc = 0;
done:
	if (fd >= 0)
		close(fd);
	if (rc != 0)
		unlink(tmp);
	free(tmp);
	return rc;
}

int mlp_mkdirs(const char *path, int mode)
{
	char *p = xstrdup(path);
	int rc = 0;

	for (char *s = p + 1;; s++) {
		if (*s == '/' || *s == '\0') {
			char c = *s;

			*s = '\0';
			if (mkdir(p, (mode_t)mode) != 0 && errno != EEXIST) {
				mlp_error_set_errno(errno, "cannot create directory %s", p);
				rc = MLP_EIO;
				break;
			}
			*s = c;
			if (c == '\0')
				break;
		}
	}
	free(p);
	return rc;
}

int mlp_realpath(char **out, const char *path)
{
	char *r = realpath(path, NULL);

	if (r == NULL) {
		mlp_error_set_errno(errno, "%s", path);
		return errno == ENOENT ? MLP_ENOTFOUND : MLP_EIO;
	}
	*out = xstrdup(r);
	free(r);
	return 0;
}

char *mlp_dirname(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		return xstrdup(".");
	if (slash == path)
		return xstrdup("/");
	return xstrndup(path, (size_t)(slash - path));
}

bool mlp_utf8_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + len;

	while (p < end) {
		unsigned c = *p;
		size_t n;
		unsigned cp;

		if (c < 0x80) {
			p++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			n = 1;
			cp = c & 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			n = 2;
			cp = c & 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			n = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if ((size_t)(end - p) <= n)
			return false;
		for (size_t i = 1; i <= n; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (p[i] & 0x3f);
		}
		if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) ||
		    (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		p += n + 1;
	}
	return true;
}

int mlp_fd_cloexec(int fd)
{
	int flags = fcntl(fd, F_GETFD);

	if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) {
		mlp_error_set_errno(errno, "fcntl");
		return MLP_EIO;
	}
	return 0;
}

int mlp_fd_nonblock(int fd)
{
	int flags = fcntl(fd, F_GETFL);

	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
		mlp_error_set_errno(errno, "fcntl");
		return MLP_EIO;
	}
	return 0;
}
