/*
 * data.c - IDX and CSV loaders, data directories, holdout splits (data.h).
 *
 * Both formats go through zlib's gzread, which reads gzip-compressed and
 * plain files alike.  Buffers grow with the bytes that really arrive (up to
 * what the header promised), so a corrupt header claiming billions of
 * samples fails as "truncated" instead of as an out-of-memory abort.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "data.h"
#include "base/error.h"
#include "model.h"
#include "base/util.h"

/* Samples x features may not exceed this (16 GiB of floats). */
#define DATA_MAX_VALUES (1ull << 32)
/* A CSV file may not exceed this many bytes (uncompressed). */
#define CSV_MAX_BYTES (4ull << 30)

static struct mlp_dataset *dataset_new(const char *name)
{
	struct mlp_dataset *d = xcalloc(1, sizeof(*d));

	d->name = xstrdup(name);
	return d;
}

void mlp_dataset_free(struct mlp_dataset *d)
{
	if (d == NULL)
		return;
	free(d->name);
	free(d->x);
	free(d->y);
	free(d->lines);
	free(d);
}

/* --- gzip-or-plain reading ------------------------------------------------- */

static int gz_open(gzFile *out, const char *path)
{
	struct stat st;
	gzFile f;

	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
		mlp_error_set("%s: is a directory", path);
		return MLP_EINVAL;
	}
	errno = 0;
	f = gzopen(path, "rb");
	if (f == NULL) {
		int e = errno ? errno : ENOMEM;

		mlp_error_set_errno(e, "%s", path);
		return e == ENOENT ? MLP_ENOTFOUND : MLP_EINVAL;
	}
	gzbuffer(f, 1 << 17);
	*out = f;
	return 0;
}

/*
 * Reads up to want bytes into *buf (grown as data arrives; *buf may be NULL
 * on entry) and reports how many came in *got.  A decompression error sets
 * a message and returns MLP_EINVAL; a short file is not an error here.
 */
static int gz_read_upto(gzFile f, const char *path, uint8_t **buf, size_t want, size_t *got)
{
	size_t cap = 0, have = 0;
	uint8_t *b = *buf;

	if (b != NULL)
		cap = want;
	while (have < want) {
		size_t chunk = want - have;
		int n;

		if (chunk > (1u << 24))
			chunk = 1u << 24;
		if (have + chunk > cap) {
			/* Start at what the header promised, at most 64 MiB, then double. */
			size_t ncap = cap ? cap : (want < (64u << 20) ? want : (64u << 20));

			while (ncap < have + chunk)
				ncap = ncap * 2 > want ? want : ncap * 2;
			b = xrealloc(b, ncap);
			cap = ncap;
		}
		n = gzread(f, b + have, (unsigned)chunk);
		if (n < 0) {
			int errnum;
			const char *msg = gzerror(f, &errnum);

			*buf = b;
			*got = have;
			if (errnum == Z_ERRNO)
				mlp_error_set_errno(errno, "%s", path);
			else
				mlp_error_set("%s: corrupt gzip data (%s)", path, msg);
			return MLP_EINVAL;
		}
		if (n == 0)
			break;
		have += (size_t)n;
	}
	*buf = b;
	*got = have;
	/* A stream cut short reports Z_BUF_ERROR after handing over what it had. */
	{
		int errnum;
		const char *msg = gzerror(f, &errnum);

		if (errnum != Z_OK && errnum != Z_STREAM_END && have < want) {
			if (errnum == Z_BUF_ERROR)
				return 0; /* truncated: the caller says so with sizes */
			mlp_error_set("%s: corrupt gzip data (%s)", path, msg);
			return MLP_EINVAL;
		}
	}
	return 0;
}

/* True when the stream has at least one more byte. */
static bool gz_has_more(gzFile f)
{
	return gzgetc(f) != -1;
}

/* --- IDX ------------------------------------------------------------------- */

struct idx_header {
	int ndims;
	uint32_t dims[4];
};

static int idx_read_header(struct idx_header *h, gzFile f, const char *path)
{
	uint8_t raw[4 + 16];
	uint8_t *p = raw;
	size_t got;
	int rc = gz_read_upto(f, path, &p, 4, &got);

	if (rc != 0)
		return rc;
	if (got < 4) {
		mlp_error_set("%s: truncated (expected an IDX header, got %zu bytes)", path, got);
		return MLP_EINVAL;
	}
	if (raw[0] != 0 || raw[1] != 0 || raw[3] < 1 || raw[3] > 4) {
		mlp_error_set("%s: not an IDX file (bad magic %02x%02x%02x%02x)", path, raw[0],
		              raw[1], raw[2], raw[3]);
		return MLP_EINVAL;
	}
	if (raw[2] != 0x08) {
		mlp_error_set(
		        "%s: IDX element type 0x%02x is not supported (only 0x08, unsigned bytes)",
		        path, raw[2]);
		return MLP_EINVAL;
	}
	h->ndims = raw[3];
	p = raw + 4;
	rc = gz_read_upto(f, path, &p, 4 * (size_t)h->ndims, &got);
	if (rc != 0)
		return rc;
	if (got < 4 * (size_t)h->ndims) {
		mlp_error_set("%s: truncated (the IDX header is cut short)", path);
		return MLP_EINVAL;
	}
	for (int i = 0; i < h->ndims; i++) {
		const uint8_t *d = raw + 4 + 4 * i;

		h->dims[i] =
		        (uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3];
	}
	return 0;
}

/* Reads exactly len bytes of IDX payload into a new buffer, or explains. */
static int idx_read_payload(uint8_t **out, gzFile f, const char *path, size_t len, const char *what)
{
	uint8_t *b = NULL;
	size_t got;
	int rc = gz_read_upto(f, path, &b, len, &got);

	if (rc == 0 && got < len) {
		mlp_error_set("%s: truncated (expected %zu bytes of %s, got %zu)", path, len, what,
		              got);
		rc = MLP_EINVAL;
	}
	if (rc == 0 && gz_has_more(f)) {
		mlp_error_set("%s: trailing data after %zu bytes of %s (corrupt header?)", path,
		              len, what);
		rc = MLP_EINVAL;
	}
	if (rc != 0) {
		free(b);
		return rc;
	}
	*out = b;
	return 0;
}

static int idx_load_images(struct mlp_dataset *d, const char *path)
{
	struct idx_header h;
	gzFile f;
	uint8_t *raw = NULL;
	uint64_t features = 1;
	size_t total;
	int rc = gz_open(&f, path);

	if (rc != 0)
		return rc;
	rc = idx_read_header(&h, f, path);
	if (rc != 0)
		goto done;
	if (h.ndims < 2) {
		mlp_error_set("%s: an images file needs at least 2 dimensions, this one has 1 "
		              "(is it a labels file?)",
		              path);
		rc = MLP_EINVAL;
		goto done;
	}
	for (int i = 1; i < h.ndims; i++)
		features *= h.dims[i];
	if (h.dims[0] == 0 || features == 0 || features > MLP_MODEL_MAX_WIDTH ||
	    (uint64_t)h.dims[0] * features > DATA_MAX_VALUES) {
		mlp_error_set("%s: corrupt header (%u samples of %llu values)", path, h.dims[0],
		              (unsigned long long)features);
		rc = MLP_EINVAL;
		goto done;
	}
	total = (size_t)h.dims[0] * (size_t)features;
	rc = idx_read_payload(&raw, f, path, total, "image data");
	if (rc != 0)
		goto done;
	d->n = h.dims[0];
	d->features = (size_t)features;
	d->x = xmalloc(total * sizeof(float));
	for (size_t i = 0; i < total; i++)
		d->x[i] = (float)raw[i] * (1.0f / 255.0f);
done:
	free(raw);
	gzclose(f);
	return rc;
}

static int idx_load_labels(struct mlp_dataset *d, const char *path)
{
	struct idx_header h;
	gzFile f;
	uint8_t *raw = NULL;
	int rc = gz_open(&f, path);

	if (rc != 0)
		return rc;
	rc = idx_read_header(&h, f, path);
	if (rc != 0)
		goto done;
	if (h.ndims != 1) {
		mlp_error_set("%s: a labels file has 1 dimension, this one has %d "
		              "(is it an images file?)",
		              path, h.ndims);
		rc = MLP_EINVAL;
		goto done;
	}
	if (h.dims[0] != d->n) {
		mlp_error_set("%s: %u labels for %zu images", path, h.dims[0], d->n);
		rc = MLP_EINVAL;
		goto done;
	}
	rc = idx_read_payload(&raw, f, path, d->n, "labels");
	if (rc != 0)
		goto done;
	d->y = xmalloc(d->n * sizeof(int32_t));
	d->max_label = 0;
	for (size_t i = 0; i < d->n; i++) {
		d->y[i] = raw[i];
		if (d->y[i] > d->max_label)
			d->max_label = d->y[i];
	}
done:
	free(raw);
	gzclose(f);
	return rc;
}

int mlp_dataset_load_idx(struct mlp_dataset **out, const char *images, const char *labels)
{
	struct mlp_dataset *d = dataset_new(images);
	int rc = idx_load_images(d, images);

	if (rc == 0)
		rc = idx_load_labels(d, labels);
	if (rc != 0) {
		mlp_dataset_free(d);
		return rc;
	}
	*out = d;
	return 0;
}

/* --- CSV ------------------------------------------------------------------- */

static bool is_blank(const char *s, const char *end)
{
	for (; s < end; s++)
		if (*s != ' ' && *s != '\t' && *s != '\r')
			return false;
	return true;
}

/*
 * Splits the line [s, end) at commas into fields, trimming blanks; the
 * fields are NUL-terminated in place (the comma or line end is overwritten).
 * Returns the number of fields, or -1 when there are more than max.
 */
static int split_fields(char *s, char *end, char **fields, int max)
{
	int n = 0;

	for (;;) {
		char *comma = memchr(s, ',', (size_t)(end - s));
		char *fe = comma ? comma : end;
		char *fs = s;

		if (n == max)
			return -1;
		while (fs < fe && (*fs == ' ' || *fs == '\t'))
			fs++;
		while (fe > fs && (fe[-1] == ' ' || fe[-1] == '\t' || fe[-1] == '\r'))
			fe--;
		*fe = '\0';
		fields[n++] = fs;
		if (comma == NULL)
			return n;
		s = comma + 1;
	}
}

/* A field as it may appear in a message: at most 40 bytes, anything but
 * printable ASCII shown as '?', so that a binary file makes one clean line. */
static void field_for_message(char out[41], const char *s)
{
	size_t i;

	for (i = 0; i < 40 && s[i]; i++)
		out[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
	out[i] = '\0';
}

static bool parse_float(float *out, const char *s)
{
	char *end;
	double v;

	if (*s == '\0')
		return false;
	errno = 0;
	v = strtod(s, &end);
	if (*end != '\0' || !isfinite(v) || fabs(v) > 3.4e38)
		return false;
	*out = (float)v;
	return true;
}

/* All fields are numbers: a row of data, not a header. */
static bool all_numeric(char **fields, int nf)
{
	bool numeric = true;

	for (int i = 0; i < nf && numeric; i++) {
		float v;

		numeric = parse_float(&v, fields[i]);
	}
	return numeric;
}

/* The first data row, with ncols columns, fixes the shape: checks it
 * against the label column and allocates for rows_cap rows.  0 or
 * MLP_EINVAL with a message. */
static int csv_shape(struct mlp_dataset *d, int ncols, size_t lineno, int label_column,
                     size_t rows_cap)
{
	if (ncols < 2) {
		mlp_error_set("%s:%zu: a CSV row needs a label and at least one feature", d->name,
		              lineno);
		return MLP_EINVAL;
	}
	if (label_column >= ncols) {
		mlp_error_set("%s: --label-column %d, but the file has %d columns "
		              "(0 to %d)",
		              d->name, label_column, ncols, ncols - 1);
		return MLP_EINVAL;
	}
	d->features = (size_t)ncols - 1;
	if (rows_cap * d->features > DATA_MAX_VALUES) {
		mlp_error_set("%s: too large (more than %llu values)", d->name,
		              (unsigned long long)DATA_MAX_VALUES);
		return MLP_EINVAL;
	}
	d->x = xmalloc(rows_cap * d->features * sizeof(float));
	d->y = xmalloc(rows_cap * sizeof(int32_t));
	d->lines = xmalloc(rows_cap * sizeof(uint32_t));
	return 0;
}

/* Appends one data row (line lineno, its nf fields) to d: the label and
 * the features.  0 or MLP_EINVAL with a message naming the line. */
static int csv_add_row(struct mlp_dataset *d, char **fields, int nf, int label_column,
                       size_t lineno)
{
	float *row = d->x + d->n * d->features;
	const char *lf = fields[label_column];
	char *lend;
	double lv;

	errno = 0;
	lv = *lf ? strtod(lf, &lend) : NAN;
	if (*lf == '\0' || *lend != '\0' || !isfinite(lv) || lv != floor(lv)) {
		char shown[41];

		field_for_message(shown, lf);
		mlp_error_set("%s:%zu: label '%s' is not an integer", d->name, lineno, shown);
		return MLP_EINVAL;
	}
	if (lv < 0 || lv > (double)INT32_MAX) {
		mlp_error_set("%s:%zu: label %.0f is out of range (labels are 0, "
		              "1, 2, ...)",
		              d->name, lineno, lv);
		return MLP_EINVAL;
	}
	for (int i = 0, j = 0; i < nf; i++) {
		if (i == label_column)
			continue;
		if (!parse_float(&row[j++], fields[i])) {
			char shown[41];

			field_for_message(shown, fields[i]);
			mlp_error_set("%s:%zu: column %d: '%s' is not a number", d->name, lineno, i,
			              shown);
			return MLP_EINVAL;
		}
	}
	d->y[d->n] = (int32_t)lv;
	if (d->y[d->n] > d->max_label)
		d->max_label = d->y[d->n];
	d->lines[d->n] = lineno > UINT32_MAX ? UINT32_MAX : (uint32_t)lineno;
	d->n++;
	return 0;
}

static int csv_parse(struct mlp_dataset *d, char *text, size_t len, int label_column)
{
	size_t maxf = MLP_MODEL_MAX_WIDTH + 1;
	char **fields = xmalloc(maxf * sizeof(*fields));
	size_t rows_cap = 1, lineno = 0;
	int ncols = -1, rc = MLP_EINVAL;
	bool first = true;
	char *p = text, *end = text + len;

	if (memchr(text, '\0', len) != NULL) {
		mlp_error_set("%s: not a CSV text file (it holds NUL bytes)", d->name);
		goto done;
	}
	/* Every data row is one line: the line count bounds the rows. */
	for (char *q = text; q < end; q++)
		rows_cap += *q == '\n';
	d->max_label = 0;
	while (p < end) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		char *le = nl ? nl : end;
		int nf;

		lineno++;
		if (is_blank(p, le)) {
			p = le + 1;
			continue;
		}
		nf = split_fields(p, le, fields, (int)maxf);
		if (nf < 0) {
			mlp_error_set("%s:%zu: more than %zu columns", d->name, lineno, maxf);
			goto done;
		}
		if (ncols < 0) {
			if (!all_numeric(fields, nf) && first) {
				first = false;
				p = le + 1; /* a header */
				continue;
			}
			ncols = nf;
			if (csv_shape(d, ncols, lineno, label_column, rows_cap) != 0)
				goto done;
		}
		if (nf != ncols) {
			mlp_error_set("%s:%zu: %d columns, but the first row has %d", d->name,
			              lineno, nf, ncols);
			goto done;
		}
		if (csv_add_row(d, fields, nf, label_column, lineno) != 0)
			goto done;
		p = le + 1;
	}
	if (d->n == 0) {
		mlp_error_set("%s: no data rows", d->name);
		goto done;
	}
	rc = 0;
done:
	free(fields);
	return rc;
}

int mlp_dataset_load_csv(struct mlp_dataset **out, const char *path, int label_column)
{
	struct mlp_dataset *d;
	uint8_t *text = NULL;
	size_t got;
	gzFile f;
	int rc = gz_open(&f, path);

	if (rc != 0)
		return rc;
	rc = gz_read_upto(f, path, &text, CSV_MAX_BYTES + 1, &got);
	gzclose(f);
	if (rc != 0) {
		free(text);
		return rc;
	}
	if (got > CSV_MAX_BYTES) {
		free(text);
		mlp_error_set("%s: too large (limit %llu bytes)", path,
		              (unsigned long long)CSV_MAX_BYTES);
		return MLP_EINVAL;
	}
	d = dataset_new(path);
	if (got == 0) {
		mlp_error_set("%s: empty file", path);
		rc = MLP_EINVAL;
	} else {
		rc = csv_parse(d, (char *)text, got, label_column);
	}
	free(text);
	if (rc != 0) {
		mlp_dataset_free(d);
		return rc;
	}
	*out = d;
	return 0;
}

/* --- sources --------------------------------------------------------------- */

static bool file_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);

	return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* dir/base or dir/base.gz, whichever exists (NULL when neither). */
static char *find_idx(const char *dir, const char *base)
{
	char *p = xasprintf("%s/%s", dir, base);
	char *gz;

	if (file_exists(p))
		return p;
	gz = xasprintf("%s.gz", p);
	free(p);
	if (file_exists(gz))
		return gz;
	free(gz);
	return NULL;
}

bool mlp_data_dir_has_test(const char *dir)
{
	char *i = find_idx(dir, "t10k-images-idx3-ubyte");
	char *l = find_idx(dir, "t10k-labels-idx1-ubyte");
	bool ok = i && l;

	free(i);
	free(l);
	return ok;
}

static int load_dir(struct mlp_dataset **out, const char *dir, enum mlp_data_role role)
{
	const char *prefix = role == MLP_DATA_TEST && mlp_data_dir_has_test(dir) ? "t10k" : "train";
	char *ibase = xasprintf("%s-images-idx3-ubyte", prefix);
	char *lbase = xasprintf("%s-labels-idx1-ubyte", prefix);
	char *images = find_idx(dir, ibase);
	char *labels = find_idx(dir, lbase);
	int rc;

	if (images == NULL || labels == NULL) {
		mlp_error_set("%s: no %s[.gz] in this directory", dir, images ? lbase : ibase);
		rc = MLP_EINVAL;
	} else {
		rc = mlp_dataset_load_idx(out, images, labels);
	}
	free(ibase);
	free(lbase);
	free(images);
	free(labels);
	return rc;
}

int mlp_dataset_load(struct mlp_dataset **out, const struct mlp_data_source *src,
                     enum mlp_data_role role)
{
	struct stat st;

	if (stat(src->path, &st) != 0) {
		int e = errno;

		mlp_error_set_errno(e, "%s", src->path);
		return e == ENOENT ? MLP_ENOTFOUND : MLP_EINVAL;
	}
	if (S_ISDIR(st.st_mode)) {
		if (src->labels) {
			mlp_error_set(
			        "%s: a directory holds its own labels (drop the labels option)",
			        src->path);
			return MLP_EINVAL;
		}
		return load_dir(out, src->path, role);
	}
	if (ends_with(src->path, ".csv") || ends_with(src->path, ".csv.gz")) {
		if (src->labels) {
			mlp_error_set("%s: a CSV file has a label column, not a labels file",
			              src->path);
			return MLP_EINVAL;
		}
		return mlp_dataset_load_csv(out, src->path, src->label_column);
	}
	if (src->labels == NULL) {
		mlp_error_set("%s: an IDX images file needs its labels file "
		              "(--labels / --test-labels), or name a directory or a .csv file",
		              src->path);
		return MLP_EINVAL;
	}
	return mlp_dataset_load_idx(out, src->path, src->labels);
}

/* --- checks and splits ----------------------------------------------------- */

int mlp_dataset_check_features(const struct mlp_dataset *d, size_t expected)
{
	if (d->features != expected) {
		mlp_error_set("%s: data has %zu features but the model expects %zu", d->name,
		              d->features, expected);
		return MLP_EINVAL;
	}
	return 0;
}

int mlp_dataset_check_labels(const struct mlp_dataset *d, int classes)
{
	if (d->max_label < classes)
		return 0;
	for (size_t i = 0; i < d->n; i++) {
		if (d->y[i] < classes)
			continue;
		if (d->lines)
			mlp_error_set("%s:%u: label %d is out of range for a model with %d classes "
			              "(0 to %d)",
			              d->name, d->lines[i], d->y[i], classes, classes - 1);
		else
			mlp_error_set(
			        "%s: label %d (sample %zu) is out of range for a model with %d "
			        "classes (0 to %d)",
			        d->name, d->y[i], i, classes, classes - 1);
		return MLP_EINVAL;
	}
	return 0;
}

static void dataset_take(struct mlp_dataset *dst, const struct mlp_dataset *src, const size_t *rows,
                         size_t n)
{
	dst->n = n;
	dst->features = src->features;
	dst->x = xmalloc((n ? n : 1) * src->features * sizeof(float));
	dst->y = xmalloc((n ? n : 1) * sizeof(int32_t));
	dst->lines = src->lines ? xmalloc((n ? n : 1) * sizeof(uint32_t)) : NULL;
	dst->max_label = 0;
	for (size_t i = 0; i < n; i++) {
		size_t r = rows[i];

		memcpy(dst->x + i * src->features, src->x + r * src->features,
		       src->features * sizeof(float));
		dst->y[i] = src->y[r];
		if (dst->y[i] > dst->max_label)
			dst->max_label = dst->y[i];
		if (dst->lines)
			dst->lines[i] = src->lines[r];
	}
}

int mlp_dataset_split(struct mlp_dataset **out_holdout, struct mlp_dataset *d, double fraction,
                      uint64_t seed)
{
	size_t nh = (size_t)llround(fraction * (double)d->n);
	struct mlp_dataset *hold, train = {0};
	struct mlp_rng rng;
	size_t *perm;

	if (!(fraction > 0 && fraction < 1) || nh == 0 || nh >= d->n) {
		mlp_error_set("--validation-split %g of %zu samples leaves an empty part", fraction,
		              d->n);
		return MLP_EINVAL;
	}
	perm = xmalloc(d->n * sizeof(*perm));
	for (size_t i = 0; i < d->n; i++)
		perm[i] = i;
	/* A stream of its own, so that the split does not shift the init. */
	mlp_rng_seed(&rng, seed ^ 0x73706c6974ull);
	for (size_t i = d->n - 1; i > 0; i--) {
		size_t j = (size_t)mlp_rng_below(&rng, (uint64_t)i + 1);
		size_t t = perm[i];

		perm[i] = perm[j];
		perm[j] = t;
	}
	hold = dataset_new(d->name);
	dataset_take(hold, d, perm, nh);
	dataset_take(&train, d, perm + nh, d->n - nh);
	free(perm);
	free(d->x);
	free(d->y);
	free(d->lines);
	d->n = train.n;
	d->x = train.x;
	d->y = train.y;
	d->lines = train.lines;
	d->max_label = train.max_label;
	*out_holdout = hold;
	return 0;
}
