/*
 * cmd.h - the `mlpipe COMMAND` table: one command per cmd-*.c file.
 *
 * A command is found by its full name or a unique prefix ("val" for
 * validate); an unknown one gets the nearest name as a suggestion.
 */
#ifndef MLP_CMD_H
#define MLP_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/status.h"

struct mlp_cmd {
	const char *name;
	const char *args;    /* after the name in the usage line */
	const char *summary; /* one line for `mlpipe help` */
	const char *help;    /* the rest of `mlpipe help NAME` */
	/* Started by mlpipe itself (exec-run, stage-gate, stage-rollout):
	 * listed by help as "(internal)", never matched by a prefix or
	 * suggested. */
	bool internal;
	int (*exec)(int argc, char **argv);
};

extern const struct mlp_cmd mlp_cmd_help;
extern const struct mlp_cmd mlp_cmd_version;
extern const struct mlp_cmd mlp_cmd_validate;
extern const struct mlp_cmd mlp_cmd_run;
extern const struct mlp_cmd mlp_cmd_runs;
extern const struct mlp_cmd mlp_cmd_logs;
extern const struct mlp_cmd mlp_cmd_launch;
extern const struct mlp_cmd mlp_cmd_models;
extern const struct mlp_cmd mlp_cmd_gate;
extern const struct mlp_cmd mlp_cmd_stage_gate;
extern const struct mlp_cmd mlp_cmd_serve;
extern const struct mlp_cmd mlp_cmd_project;
extern const struct mlp_cmd mlp_cmd_token;
extern const struct mlp_cmd mlp_cmd_schedules;
extern const struct mlp_cmd mlp_cmd_exec_run;
extern const struct mlp_cmd mlp_cmd_rollout;
extern const struct mlp_cmd mlp_cmd_rollback;
extern const struct mlp_cmd mlp_cmd_deployments;
extern const struct mlp_cmd mlp_cmd_stage_rollout;
extern const struct mlp_cmd mlp_cmd_stage_k8s;
extern const struct mlp_cmd mlp_cmd_gpu_check;

/* NULL-terminated, in the order `mlpipe help` lists them. */
extern const struct mlp_cmd *const mlp_cmd_table[];

/* c->internal, for the table's readers. */
bool mlp_cmd_internal(const struct mlp_cmd *c);

/* The command named name (or by a unique prefix of it), or NULL; on NULL
 * *ambiguous says whether several matched. */
const struct mlp_cmd *mlp_cmd_find(const char *name, int *ambiguous);

/* The entry point: argv[0] is the program. */
int mlp_cmd_main(int argc, char **argv);

/* Prints the command's usage and help. */
void mlp_cmd_print_help(const struct mlp_cmd *c, FILE *f);

/* "mlpipe: message" on stderr; returns MLP_EXIT_USAGE for convenience. */
int mlp_cmd_usage_error(const struct mlp_cmd *c, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
/* "mlpipe: message" on stderr. */
void mlp_cmd_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

struct mlp_json;

/* Prints j (pretty) on stdout and frees it; returns MLP_EXIT_OK. */
int mlp_cmd_print_json(struct mlp_json *j);
/* A wall-clock time in ms as RFC 3339 UTC, or "-" when 0. */
void mlp_cmd_format_time(char *buf, size_t size, int64_t ms);
/* Adds a wall-clock time in ms as RFC 3339 UTC, or null when 0. */
void mlp_cmd_json_time(struct mlp_json *o, const char *key, int64_t ms);

/* The absolute path of the running mlpipe binary (caller frees). */
char *mlp_cmd_self_exe(void);

/* Who is running this: the login name of the real uid, else $USER, else
 * "uid N" (caller frees). */
char *mlp_cmd_current_user(void);

#endif
