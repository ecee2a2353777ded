/*
 * model-server.h - the parts of mlpipe-model-server (docs/model-server.md)
 * and the state they share: the loaded model and its forward pass
 * (infer.c), the dynamic batcher (batch.c), the background loader
 * (loader.c), the Prometheus counters (metrics.c) and the HTTP front end
 * (server.c); main.c reads the flags and owns the process's lifetime.
 *
 * The program links no libmlpipe.a: only src/base's error, util and
 * crypto, and runners/train/model.c for the model file.
 */
#ifndef MLP_MODEL_SERVER_H
#define MLP_MODEL_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/crypto.h"
#include "model.h"

#define MS_PROG "mlpipe-model-server"

/* What the flags and the environment say (main.c). */
struct ms_opts {
	const char *model_uri;  /* file:///abs, /abs, http://, https:// */
	const char *sha256;     /* 64 hex, or NULL (file only) */
	const char *name;       /* served model name */
	const char *version;    /* served model version */
	const char *token_file; /* bearer token for http(s), or NULL */
	const char *ca_file;    /* extra CA bundle for https, or NULL */
	char host[64];          /* numeric listen address */
	int port;
	int max_batch;       /* rows in one forward pass; also a request's limit */
	long batch_delay_us; /* how long the batcher waits for more rows */
	size_t max_body;     /* bytes of one request body */
	int threads;         /* HTTP worker threads */
};

/* A decoded model, immutable once loaded. */
struct ms_model {
	struct mlp_shape shape;
	int layers; /* nsizes - 1 */
	float *params;
	size_t woff[MLP_MODEL_MAX_SIZES];
	size_t boff[MLP_MODEL_MAX_SIZES];
	int widest; /* the widest layer after the input */
	char sha256[MLP_SHA256_HEX_LEN + 1];
	char shape_text[256]; /* "784-256-10" */
};

/* Decodes a model file image named name (messages) into a new model; the
 * caller frees it with ms_model_free().  Returns 0 or MLP_EINVAL. */
int ms_model_open(struct ms_model **out, const uint8_t *data, size_t len, const char *name);

/* Frees a model; NULL is fine. */
void ms_model_free(struct ms_model *m);

/* Features and classes of a model. */
int ms_model_features(const struct ms_model *m);
int ms_model_classes(const struct ms_model *m);

/* Floats of scratch space ms_model_forward() needs for n rows. */
size_t ms_model_scratch(const struct ms_model *m, int n);

/* The forward pass for n rows of x (n x features, row-major) into logits
 * (n x classes): per layer one product over all n rows in which every
 * element is summed in a fixed order, so a row's logits are the same bits
 * alone or in any batch (infer.c says why not sgemm). */
void ms_model_forward(const struct ms_model *m, const float *x, int n, float *logits,
                      float *scratch);

/* The class of one row of logits: the first index of the largest value. */
int ms_argmax(const float *logits, int classes);

/* Prometheus counters and histograms (metrics.c); every function is safe
 * to call from any thread. */
struct ms_metrics;

/* A new set of metrics for the model name; buckets of the batch-size
 * histogram are 1, 2, 4, ... up to max_batch.  Free with ms_metrics_free(). */
struct ms_metrics *ms_metrics_new(const char *name, int max_batch);
void ms_metrics_free(struct ms_metrics *m);
void ms_metrics_request(struct ms_metrics *m);
void ms_metrics_error(struct ms_metrics *m, int status);
void ms_metrics_latency(struct ms_metrics *m, double seconds);
void ms_metrics_batch(struct ms_metrics *m, int rows);
void ms_metrics_load_failure(struct ms_metrics *m);

/* Appends the text exposition format 0.0.4 of every metric to out (a
 * NUL-terminated string the caller frees); model is the loaded model or
 * NULL, version its version. */
char *ms_metrics_render(struct ms_metrics *m, const struct ms_model *model, const char *version,
                        bool ready);

/* The dynamic batcher (batch.c): a thread that merges the rows of requests
 * that arrive together into one forward pass. */
struct ms_batcher;

/* Starts the batcher thread; metrics may be NULL.  Returns 0 or MLP_ERROR. */
int ms_batcher_start(struct ms_batcher **out, int max_batch, long delay_us,
                     struct ms_metrics *metrics);

/* Stops the thread once every queued request is answered, and frees the
 * batcher; NULL is fine. */
void ms_batcher_stop(struct ms_batcher *b);

/* Announces a request whose body is on its way: while any are, the
 * batcher waits (up to its delay) for their rows before it runs.  Each
 * call is matched by one ms_batcher_run() or ms_batcher_abandon(). */
void ms_batcher_arriving(struct ms_batcher *b);
void ms_batcher_abandon(struct ms_batcher *b);

/* Computes the logits of rows rows of x (1 .. max_batch) with model m,
 * together with whatever other requests are queued, and blocks until they
 * are in logits (rows x classes). */
void ms_batcher_run(struct ms_batcher *b, const struct ms_model *m, const float *x, int rows,
                    float *logits);

/* Where the process is (shared by the threads). */
struct ms_state {
	struct ms_opts opts;
	_Atomic(struct ms_model *) model; /* set once, when verified and decoded */
	atomic_bool ready;
	atomic_bool stopping;
	struct ms_metrics *metrics;
	struct ms_batcher *batcher;
};

/* The background loader (loader.c): fetches opts.model_uri, checks its
 * SHA-256, decodes it and publishes it in st->model and st->ready;
 * retries network failures with backoff until it succeeds, fails for
 * good (a mismatch, a 4xx, an invalid model) or is stopped. */
struct ms_loader;

int ms_loader_start(struct ms_loader **out, struct ms_state *st);

/* Stops a running loader (an ongoing transfer is aborted), joins its
 * thread and frees it; NULL is fine. */
void ms_loader_stop(struct ms_loader *l);

/* The HTTP front end (server.c). */
struct ms_server;

/* Listens on opts.host:opts.port and serves the routes of
 * docs/model-server.md.  Returns 0, MLP_EINVAL or MLP_EIO. */
int ms_server_start(struct ms_server **out, struct ms_state *st);

/* The port it listens on (useful with port 0). */
int ms_server_port(const struct ms_server *s);

/* Stops accepting connections; answers every request already accepted;
 * waits for the open connections to go idle, at most until deadline_us
 * (mlp_mono_us()), then closes them and frees the server.  NULL is fine.
 * Returns how many requests the server had begun to read were not
 * answered (cut short by the deadline or an error; a client that went
 * away is not counted): 0 when the stop lost nothing. */
long long ms_server_shutdown(struct ms_server *s, int64_t deadline_us);

#endif
