/*
 * crypto.h - hashes and signatures.  The only module that includes OpenSSL.
 */
#ifndef MLP_CRYPTO_H
#define MLP_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>

#define MLP_SHA256_HEX_LEN 64

/* Writes the lower-case hex SHA-256 of data (65 bytes with the NUL). */
void mlp_sha256_hex(char out[MLP_SHA256_HEX_LEN + 1], const void *data, size_t len);

/* The SHA-256 of a file's contents; 0 or MLP_EIO with a message. */
int mlp_sha256_file_hex(char out[MLP_SHA256_HEX_LEN + 1], const char *path);

/* Compares two buffers in time that depends only on len. */
bool mlp_equal_ct(const void *a, const void *b, size_t len);

/* The lower-case hex HMAC-SHA256 of data under key (65 bytes with NUL). */
void mlp_hmac_sha256_hex(char out[MLP_SHA256_HEX_LEN + 1], const void *key, size_t keylen,
                         const void *data, size_t len);

/* Keeps OpenSSL from reading its configuration file (openssl.cnf): for a
 * program that runs in images whose OpenSSL setup is not its own (one may
 * name providers a statically linked libcrypto cannot load).  Call it
 * before any other function here. */
void mlp_crypto_no_config(void);

/* Fills buf with len bytes from the system's CSPRNG; 0 or MLP_EIO with a
 * message. */
int mlp_random_bytes(void *buf, size_t len);

#endif
