/*
 * results.h - the rank-0 pod's results server: a tiny HTTP/1.1 server
 * (docs/mlpipe-pod.md, "Results") that the executor reaches through the
 * API server's pods/proxy subresource.
 *
 *   GET  /status[?wait=N]  {"state":"running"} or, once finished,
 *                          {"state":"done","exit_code":..,"reason":..,"files":{..}}
 *   GET  /files/NAME       the bytes of a result file (streamed)
 *   POST /done             "bye": the pod may exit now
 *
 * It serves from a thread of its own, in one poll() loop over all its
 * connections, so that no client (slow, silent, long-polling) can hold up
 * the ranks or another client.
 */
#ifndef MLP_POD_RESULTS_H
#define MLP_POD_RESULTS_H

#include "pod.h"

struct pod_results;

/* Request limits. */
#define POD_RESULTS_MAX_REQUEST 8192 /* request line, headers and body */
#define POD_RESULTS_READ_TIMEOUT_MS 10000
#define POD_RESULTS_MAX_WAIT_S 60 /* the cap on /status?wait=N */

/*
 * Listens on 0.0.0.0:port (SO_REUSEADDR) and starts serving; /status says
 * "running" until pod_results_finish().  files (borrowed: they must outlive
 * the server) are the --result NAME=PATH pairs.  Returns 0, or MLP_EIO
 * with a message when the port cannot be had.  The caller must have
 * blocked the signals it handles: the server's thread inherits the mask.
 */
int pod_results_open(struct pod_results **out, int port, const struct pod_result *files,
                     size_t nfiles);

/*
 * The ranks have ended: takes the size and SHA-256 of every result file
 * that exists as a regular file now (this reads them whole), then /status
 * says "done" with exit_code, reason ("" for none) and those files, and
 * long polls are answered.
 */
void pod_results_finish(struct pod_results *rs, int exit_code, const char *reason);

/* A descriptor that becomes readable once a POST /done was answered. */
int pod_results_done_fd(const struct pod_results *rs);

/* Stops serving: connections still being answered get at most a second
 * more; then the thread ends and everything is freed.  NULL is fine. */
void pod_results_close(struct pod_results *rs);

#endif
