/*
 * fuzz-kubeconfig.c - fuzz target for kubeconfig files
 * (src/deploy/k8s-config.c): mlp_k8s_open with --kubeconfig, which reads
 * the YAML (through mlp_yaml_to_json), picks the context, cluster and
 * user as kubectl does, decodes the *-data fields (base64) and sets up
 * tokens, token files and exec plugins.  Nothing is sent and no plugin
 * is run: mlp_k8s_open only prepares the client.
 *
 * The loader reads a path, so each input is written to one file under
 * /tmp (made once per process, rewritten for each input).  The first
 * byte says whether a context is asked for (--context ctx) or the file's
 * current-context is used; the rest is the file.  Files the kubeconfig
 * names (certificate-authority: ...) are read as the real loader would;
 * standard input is /dev/null so that none of them can block.
 *
 * What must hold, besides no crash, leak or undefined behaviour: a
 * refused file comes with MLP_EINVAL, MLP_ENOTFOUND or MLP_EIO and a
 * message that does not contain the file's token (the marker tok-SECRET,
 * where it is only a credential); an accepted one
 * gives a server URL starting with "http", a namespace and an
 * authentication kind.
 *
 * Built two ways: with clang's -fsanitize=fuzzer by `make fuzz`, and with
 * tests/fuzz/driver.c into a test of `make check` that runs the seed
 * corpus and a few thousand pseudo-random inputs.
 */
#include "config.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "base/util.h"
#include "deploy/k8s.h"

static char *path;

static void fail(const char *what, const uint8_t *data, size_t size)
{
	fprintf(stderr, "fuzz-kubeconfig: %s\nfile (%zu bytes):\n%.*s\n", what, size,
	        (int)(size < 4096 ? size : 4096), (const char *)data);
	abort();
}

static void cleanup(void)
{
	if (path)
		unlink(path);
	free(path);
	path = NULL;
}

static void setup(void)
{
	int null;

	if (path)
		return;
	path = xasprintf("/tmp/mlpipe-fuzz-kubeconfig-%ld.yaml", (long)getpid());
	atexit(cleanup);
	if ((null = open("/dev/null", O_RDONLY)) >= 0) {
		dup2(null, 0);
		close(null);
	}
}

/* Whether the input holds the marker token, and only as a credential
 * (token:, password:, --token=): a cluster or user named so may be named
 * in a message. */
static bool token_only_as_credential(const uint8_t *data, size_t size)
{
	static const char *const before[] = {"token: ", "password: ", "--token="};
	const uint8_t *p = data, *hit;
	bool any = false;

	while ((hit = memmem(p, size - (size_t)(p - data), "tok-SECRET", 10)) != NULL) {
		bool ok = false;

		for (size_t i = 0; i < MLP_ARRAY_SIZE(before); i++) {
			size_t n = strlen(before[i]);

			ok |= (size_t)(hit - data) >= n && memcmp(hit - n, before[i], n) == 0;
		}
		if (!ok)
			return false;
		any = true;
		p = hit + 10;
	}
	return any;
}

/* Writes the file plainly: mlp_write_file_atomic's fsync costs more
 * than the parse. */
static void write_config(const uint8_t *data, size_t size)
{
	FILE *f = fopen(path, "wb");

	if (f == NULL || fwrite(data, 1, size, f) != size || fclose(f) != 0) {
		fprintf(stderr, "fuzz-kubeconfig: cannot write %s\n", path);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mlp_k8s_options opt = {0};
	struct mlp_k8s *k = NULL;
	int rc;

	if (size < 1 || size > 1 << 16)
		return 0;
	setup();
	opt.kubeconfig = path;
	opt.context = data[0] & 1 ? "ctx" : NULL;
	write_config(data + 1, size - 1);
	rc = mlp_k8s_open(&k, &opt);
	if (rc != 0) {
		if ((rc != MLP_EINVAL && rc != MLP_ENOTFOUND && rc != MLP_EIO) ||
		    *mlp_error_last() == '\0')
			fail("refused without a known error and a message", data + 1, size - 1);
		if (token_only_as_credential(data, size) && strstr(mlp_error_last(), "tok-SECRET"))
			fail("a message shows the token", data + 1, size - 1);
		return 0;
	}
	if (strncmp(mlp_k8s_server(k), "http", 4) != 0 || *mlp_k8s_namespace(k) == '\0' ||
	    mlp_k8s_auth_kind(k) == NULL)
		fail("accepted without a server, a namespace or an authentication kind", data + 1,
		     size - 1);
	mlp_k8s_close(k);
	return 0;
}
