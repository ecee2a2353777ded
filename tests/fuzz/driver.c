/*
 * driver.c - runs a libFuzzer target without libFuzzer, for `make check`:
 * every file named on the command line (a seed corpus), then -runs=N
 * inputs from a fixed pseudo-random sequence, then -runs=N mutations of
 * the seeds (bytes flipped, inserted, deleted, spans copied: what reaches
 * past the first checks of a structured format), all the same on every
 * machine, so a failure reproduces.  Prints TAP.
 */
#include "config.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The seeds run so far, kept for the mutations. */
static struct {
	char *data;
	size_t len;
} * seeds;
static size_t nseeds;

static size_t run_file(const char *path)
{
	char *data = NULL;
	size_t len = 0;

	if (mlp_read_file(&data, &len, path, 1 << 20) != 0)
		return 0;
	LLVMFuzzerTestOneInput((const uint8_t *)data, len);
	seeds = xrealloc(seeds, (nseeds + 1) * sizeof(*seeds));
	seeds[nseeds].data = data;
	seeds[nseeds++].len = len;
	return 1;
}

static uint64_t xorshift(uint64_t *x)
{
	*x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
	return *x;
}

/* Runs a copy of a seed with one to four mutations. */
static void run_mutation(uint64_t *x)
{
	size_t pick = (size_t)(xorshift(x) % nseeds), len = seeds[pick].len;
	size_t cap = len + 64;
	uint8_t *buf = xmalloc(cap);
	int n = 1 + (int)(xorshift(x) % 4);

	memcpy(buf, seeds[pick].data, len);
	for (int m = 0; m < n; m++) {
		size_t at = len ? (size_t)(xorshift(x) % len) : 0;
		size_t span = 1 + (size_t)(xorshift(x) % 8);

		switch (xorshift(x) % 4) {
		case 0: /* flip a byte */
			if (len)
				buf[at] ^= (uint8_t)(1 + xorshift(x) % 255);
			break;
		case 1: /* insert a byte */
			if (len < cap) {
				memmove(buf + at + 1, buf + at, len - at);
				buf[at] = (uint8_t)xorshift(x);
				len++;
			}
			break;
		case 2: /* delete a span */
			if (span > len - at)
				span = len - at;
			memmove(buf + at, buf + at + span, len - at - span);
			len -= span;
			break;
		default: /* copy a span over another place */
			if (len) {
				size_t from = (size_t)(xorshift(x) % len);

				if (span > len - at)
					span = len - at;
				if (span > len - from)
					span = len - from;
				memmove(buf + at, buf + from, span);
			}
			break;
		}
	}
	/* exactly len bytes, so that ASan sees a read past them */
	{
		uint8_t *exact = xmalloc(len ? len : 1);

		memcpy(exact, buf, len);
		LLVMFuzzerTestOneInput(exact, len);
		free(exact);
	}
	free(buf);
}

static size_t run_path(const char *path)
{
	struct stat st;
	DIR *d;
	struct dirent *e;
	size_t n = 0;

	if (stat(path, &st) != 0)
		return 0;
	if (!S_ISDIR(st.st_mode))
		return run_file(path);
	if ((d = opendir(path)) == NULL)
		return 0;
	while ((e = readdir(d)) != NULL) {
		char *p;

		if (e->d_name[0] == '.')
			continue;
		p = xasprintf("%s/%s", path, e->d_name);
		n += run_file(p);
		free(p);
	}
	closedir(d);
	return n;
}

int main(int argc, char **argv)
{
	unsigned long runs = 0;
	uint64_t x = 0x9e3779b97f4a7c15ull;
	size_t files = 0;

	if (argc == 1) {
		/* under make check: this target's seed corpus and 2000 inputs */
		const char *src = getenv("MLPIPE_TEST_SRCDIR");
		const char *name = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
		char *dir;

		if (strncmp(name, "fuzz-", 5) == 0)
			name += 5;
		dir = xasprintf("%s/fuzz/corpus/%.*s", src ? src : "tests",
		                (int)strcspn(name, "-."), name);
		files += run_path(dir);
		free(dir);
		runs = 2000;
	}
	for (int i = 1; i < argc; i++) {
		if (strncmp(argv[i], "-runs=", 6) == 0)
			runs = strtoul(argv[i] + 6, NULL, 10);
		else
			files += run_path(argv[i]);
	}
	static const char alphabet[] = "'\"`$\\\n\t #;|&(){}<>EOF-x*";

	for (unsigned long r = 0; r < runs; r++) {
		uint8_t buf[256];
		size_t len;

		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		len = (size_t)(x % sizeof(buf));
		for (size_t k = 0; k < len; k++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			/* mostly the characters shells care about */
			if ((x >> 8) % 4)
				buf[k] = (uint8_t)alphabet[(x >> 16) % (sizeof(alphabet) - 1)];
			else
				buf[k] = (uint8_t)(x >> 24);
		}
		LLVMFuzzerTestOneInput(buf, len);
	}
	for (unsigned long r = 0; nseeds > 0 && r < runs; r++)
		run_mutation(&x);
	printf("1..1\nok 1 - %zu corpus files, %lu generated inputs and %lu mutations\n", files,
	       runs, nseeds > 0 ? runs : 0);
	for (size_t k = 0; k < nseeds; k++)
		free(seeds[k].data);
	free(seeds);
	return 0;
}
