/*
 * serve.h - `mlpipe serve` as a library: webhooks, schedules, the HTTP API
 * and /metrics, the git poller, and the dispatcher that executes the runs
 * they queue (src/serve/README.md, docs/serve.md).
 *
 * One entry point.  The command (src/cli/cmd-serve.c) only turns its
 * options into struct mlp_serve_opts; everything else is here.
 */
#ifndef MLP_SERVE_H
#define MLP_SERVE_H

#include <stdbool.h>

struct mlp_kvlist;

struct mlp_serve_opts {
	/* KEY = VALUE lines (docs/serve.md), or NULL. */
	const char *config_file;
	/* Settings over the file's, by the same keys ("listen", "jobs",
	 * "poll_interval", "grace", "tls_cert", "tls_key", "port_file", ...),
	 * applied in order; or NULL. */
	const struct mlp_kvlist *settings;
	/* The database, or NULL for the default one (store.h). */
	const char *db_path;
	/* The mlpipe binary each queued run is executed with, as `SELF exec-run
	 * --db DB --run ID`; required. */
	const char *self_exe;
};

/*
 * Serves until SIGTERM, SIGINT or SIGHUP, then lets the runs still going
 * finish for the grace period, cancels them, and returns 0 once none is
 * left (a second signal ends the grace period at once).  Logs on stderr.
 *
 * It blocks SIGCHLD, SIGTERM, SIGINT and SIGHUP in the calling thread
 * (and so in the threads it starts) and ignores SIGPIPE, and reaps every
 * child of the process: call it from a process that has no children of
 * its own to wait for.  The runs' children get the signal mask the caller
 * had.
 *
 * Fails with a negative MLP_E* and the message set (mlp_error_last()).
 * *out_bad_settings says whether the settings were the cause (a bad file,
 * line, key or value: the caller's usage error), in which case nothing
 * was opened or started; otherwise it is false (the database, the
 * address, TLS, ...).
 */
int mlp_serve_run(bool *out_bad_settings, const struct mlp_serve_opts *opts);

/*
 * API token scopes (docs/api.md): "runs:read", "runs:write", "models:read",
 * or "all".  A token's scopes are a comma-separated list of these.
 */
/* Whether text is a known scope name. */
bool mlp_serve_scope_known(const char *text);
/* Whether a token with scopes (the comma-separated list) may use need. */
bool mlp_serve_scope_allows(const char *scopes, const char *need);

#endif
