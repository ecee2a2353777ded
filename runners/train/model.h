/*
 * model.h - the shape of an MLP classifier, its parameters as one flat
 * array, their seeded initialisation, and the model file (docs/model-format.md).
 *
 * Layout of the flat parameter array (and of the gradient, which has the
 * same layout so that one allreduce covers it): for each layer l = 1..L,
 * W_l (sizes[l] rows x sizes[l-1] columns, row-major) then b_l (sizes[l]).
 * Every backend, every collective and the file use this one layout.
 *
 * The PRNG (splitmix64 seeding xoshiro256**) is ours so that a seed means
 * the same numbers on every machine and in every build.
 */
#ifndef MLP_TRAIN_MODEL_H
#define MLP_TRAIN_MODEL_H

#include <stddef.h>
#include <stdint.h>

#define MLP_MODEL_MAX_SIZES 32            /* layer sizes, input to output */
#define MLP_MODEL_MAX_WIDTH (1u << 20)    /* units in one layer */
#define MLP_MODEL_MAX_PARAMS (1ull << 28) /* 1 GiB of float32 */
#define MLP_MODEL_VERSION 1

/* Layer sizes, input first: {784, 256, 10} is one hidden layer. */
struct mlp_shape {
	int nsizes; /* 2 .. MLP_MODEL_MAX_SIZES */
	int sizes[MLP_MODEL_MAX_SIZES];
};

/* Checks a shape (counts and widths within the limits above) and sets a
 * message when it is not one.  Returns 0 or MLP_EINVAL. */
int mlp_shape_check(const struct mlp_shape *s);

/* Parses "784,256,10" into out; 0 or MLP_EINVAL with a message. */
int mlp_shape_parse(struct mlp_shape *out, const char *text);

/* Formats the shape as "784-256-10" into buf. */
void mlp_shape_format(char *buf, size_t size, const struct mlp_shape *s);

/* Number of parameters of a checked shape. */
size_t mlp_shape_nparams(const struct mlp_shape *s);

/* Offsets into the flat array of layer l's weights and bias (l from 1). */
size_t mlp_shape_weight_offset(const struct mlp_shape *s, int l);
size_t mlp_shape_bias_offset(const struct mlp_shape *s, int l);

/* A seeded random stream: xoshiro256** seeded through splitmix64. */
struct mlp_rng {
	uint64_t s[4];
};

void mlp_rng_seed(struct mlp_rng *r, uint64_t seed);
uint64_t mlp_rng_next(struct mlp_rng *r);
/* Uniform in [0, 1) with 24 random bits (every value exact in float). */
float mlp_rng_float(struct mlp_rng *r);
/* Uniform in [0, bound) without modulo bias; bound > 0. */
uint64_t mlp_rng_below(struct mlp_rng *r, uint64_t bound);

/* Initialises params (mlp_shape_nparams floats) like PyTorch's nn.Linear:
 * W and b uniform in [-1/sqrt(fan_in), 1/sqrt(fan_in)), from seed. */
void mlp_model_init(float *params, const struct mlp_shape *s, uint64_t seed);

/* Serialises shape + params into a new buffer (the caller frees *out) in
 * the model file format. */
void mlp_model_encode(uint8_t **out, size_t *out_len, const struct mlp_shape *s,
                      const float *params);

/* Parses a model file image.  name is used in messages ("model.bin:
 * truncated (expected 814120 bytes, got 1000)").  On success *out_params
 * is a new array the caller frees.  Returns 0 or MLP_EINVAL. */
int mlp_model_decode(struct mlp_shape *out_shape, float **out_params, const uint8_t *data,
                     size_t len, const char *name);

/* Writes the model file atomically (temporary, fsync, rename) and, when
 * sha256_hex is not NULL, the SHA-256 of its bytes (65 chars with NUL).
 * Returns 0 or MLP_EIO. */
int mlp_model_save(const char *path, const struct mlp_shape *s, const float *params,
                   char *sha256_hex);

/* Reads and checks a model file; *out_params is the caller's to free.
 * Returns 0, MLP_ENOTFOUND, or MLP_EINVAL (unreadable or not a valid model). */
int mlp_model_load(struct mlp_shape *out_shape, float **out_params, const char *path);

/* CRC-32 of params as they are in memory: a cheap fingerprint for
 * checking that ranks hold the same parameters. */
uint32_t mlp_params_crc32(const float *params, size_t n);

/* Writes params as raw little-endian float32 (no header), atomically. */
int mlp_params_dump(const char *path, const float *params, size_t n);

#endif
