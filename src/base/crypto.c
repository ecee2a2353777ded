/*
 * crypto.c - SHA-256 and constant-time comparison over OpenSSL (crypto.h).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/crypto.h"
#include "base/error.h"

static void to_hex(char *out, const unsigned char *md, unsigned int len)
{
	static const char digits[] = "0123456789abcdef";

	for (unsigned int i = 0; i < len; i++) {
		out[2 * i] = digits[md[i] >> 4];
		out[2 * i + 1] = digits[md[i] & 15];
	}
	out[2 * len] = '\0';
}

void mlp_crypto_no_config(void)
{
	OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CONFIG, NULL);
}

void mlp_sha256_hex(char out[MLP_SHA256_HEX_LEN + 1], const void *data, size_t len)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;

	if (EVP_Digest(data, len, md, &md_len, EVP_sha256(), NULL) != 1) {
		fprintf(stderr, "mlpipe: SHA-256 failed\n");
		abort();
	}
	to_hex(out, md, md_len);
}

int mlp_sha256_file_hex(char out[MLP_SHA256_HEX_LEN + 1], const char *path)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	unsigned char buf[1 << 16];
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int rc = MLP_EIO;

	if (ctx == NULL) {
		fprintf(stderr, "mlpipe: out of memory (sha256)\n");
		abort();
	}
	if (fd < 0) {
		mlp_error_set_errno(errno, "%s", path);
		goto done;
	}
	/* OpenSSL without a usable provider (a broken openssl.cnf) fails
	 * here: an error, never an empty digest. */
	if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
		mlp_error_set("SHA-256 of %s: OpenSSL has no SHA-256 (its configuration?)", path);
		goto done;
	}
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			mlp_error_set_errno(errno, "reading %s", path);
			goto done;
		}
		if (n == 0)
			break;
		if (EVP_DigestUpdate(ctx, buf, (size_t)n) != 1)
			break;
	}
	if (EVP_DigestFinal_ex(ctx, md, &md_len) != 1 || md_len != MLP_SHA256_HEX_LEN / 2) {
		mlp_error_set("SHA-256 of %s failed (OpenSSL)", path);
		goto done;
	}
	to_hex(out, md, md_len);
	rc = 0;
done:
	if (fd >= 0)
		close(fd);
	EVP_MD_CTX_free(ctx);
	return rc;
}

bool mlp_equal_ct(const void *a, const void *b, size_t len)
{
	return CRYPTO_memcmp(a, b, len) == 0;
}

void mlp_hmac_sha256_hex(char out[MLP_SHA256_HEX_LEN + 1], const void *key, size_t keylen,
                         const void *data, size_t len)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	static const unsigned char empty[1];

	if (HMAC(EVP_sha256(), keylen ? key : empty, (int)keylen, len ? data : empty, len, md,
	         &mdlen) == NULL) {
		fprintf(stderr, "mlpipe: HMAC-SHA256 failed\n");
		abort();
	}
	to_hex(out, md, mdlen);
}

int mlp_random_bytes(void *buf, size_t len)
{
	if (RAND_bytes(buf, (int)len) != 1) {
		mlp_error_set("cannot read random bytes");
		return MLP_EIO;
	}
	return 0;
}
