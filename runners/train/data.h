/*
 * data.h - training and test data for mlpipe-train: IDX files (the MNIST
 * family, gzip or plain) and CSV files with a label column, loaded whole
 * into memory as float features and integer labels.
 *
 * Loaders validate everything they read (magic, dimensions, lengths,
 * numbers, labels) and fail with one message naming the file and, for CSV,
 * the line; a header that lies about sizes cannot make them allocate more
 * than the data that actually arrives.
 */
#ifndef MLP_TRAIN_DATA_H
#define MLP_TRAIN_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mlp_dataset {
	char *name;      /* for messages: the file it came from */
	size_t n;        /* samples */
	size_t features; /* floats per sample */
	float *x;        /* n x features, row-major */
	int32_t *y;      /* n labels, each >= 0 */
	uint32_t *lines; /* CSV: the line of each sample (for messages); else NULL */
	int32_t max_label;
};

/* What a --data / --test-data argument names. */
struct mlp_data_source {
	const char *path;   /* a directory, a .csv[.gz] file or an IDX images file */
	const char *labels; /* the IDX labels file when path is an images file */
	int label_column;   /* CSV: which column is the label (0-based) */
};

enum mlp_data_role {
	MLP_DATA_TRAIN, /* a directory means its train-* files */
	MLP_DATA_TEST,  /* a directory means its t10k-* files (train-* without) */
};

/*
 * Loads what src names.  A directory must hold
 * train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz] (role
 * TRAIN) or the t10k-* pair (role TEST, falling back to train-*); a file
 * whose name ends in .csv or .csv.gz is CSV; anything else is an IDX images
 * file and needs src->labels.  *out is the caller's (mlp_dataset_free).
 * Returns 0, MLP_ENOTFOUND or MLP_EINVAL (unreadable or bad data), with a
 * message.
 */
int mlp_dataset_load(struct mlp_dataset **out, const struct mlp_data_source *src,
                     enum mlp_data_role role);

/* True when dir is a directory holding a t10k-images/t10k-labels pair. */
bool mlp_data_dir_has_test(const char *dir);

/* IDX images (unsigned bytes, scaled to [0, 1]) and labels (unsigned
 * bytes, one dimension); either may be gzip-compressed. */
int mlp_dataset_load_idx(struct mlp_dataset **out, const char *images, const char *labels);

/* CSV: numeric columns, one of them (label_column, 0-based) the integer
 * label; blank lines are skipped; a first line with a non-numeric field is
 * a header and skipped.  gzip-compressed files are read too. */
int mlp_dataset_load_csv(struct mlp_dataset **out, const char *path, int label_column);

/* "NAME: data has 64 features but the model expects 784" */
int mlp_dataset_check_features(const struct mlp_dataset *d, size_t expected);

/* Every label below classes, or "NAME:LINE: label 12 is out of range for
 * a model with 10 classes (0 to 9)". */
int mlp_dataset_check_labels(const struct mlp_dataset *d, int classes);

/*
 * Moves a seeded random fraction of d's samples into a new dataset
 * *out_holdout; d keeps the rest (in a seeded random order).  The same seed
 * splits the same way on every rank.  fraction must leave both parts
 * non-empty: 0 or MLP_EINVAL.
 */
int mlp_dataset_split(struct mlp_dataset **out_holdout, struct mlp_dataset *d, double fraction,
                      uint64_t seed);

/* Accepts NULL. */
void mlp_dataset_free(struct mlp_dataset *d);

#endif
