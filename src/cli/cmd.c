/*
 * cmd.c - finding and running commands (see cmd.h).
 */
#include "config.h"

#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cmd.h"
#include "base/json.h"
#include "base/util.h"

const struct mlp_cmd *const mlp_cmd_table[] = {
        &mlp_cmd_run,       &mlp_cmd_validate,
        &mlp_cmd_runs,      &mlp_cmd_logs,
        &mlp_cmd_launch,    &mlp_cmd_models,
        &mlp_cmd_gate,      &mlp_cmd_serve,
        &mlp_cmd_project,   &mlp_cmd_token,
        &mlp_cmd_schedules, &mlp_cmd_rollout,
        &mlp_cmd_rollback,  &mlp_cmd_deployments,
        &mlp_cmd_gpu_check, &mlp_cmd_version,
        &mlp_cmd_help,      &mlp_cmd_stage_gate,
        &mlp_cmd_exec_run,  &mlp_cmd_stage_rollout,
        &mlp_cmd_stage_k8s, NULL,
};

bool mlp_cmd_internal(const struct mlp_cmd *c)
{
	return c->internal;
}

const struct mlp_cmd *mlp_cmd_find(const char *name, int *ambiguous)
{
	const struct mlp_cmd *found = NULL;
	size_t len = strlen(name);
	int matches = 0;

	*ambiguous = 0;
	for (size_t i = 0; mlp_cmd_table[i]; i++) {
		if (strcmp(mlp_cmd_table[i]->name, name) == 0)
			return mlp_cmd_table[i];
		/* Internal commands answer to their full name only. */
		if (mlp_cmd_internal(mlp_cmd_table[i]))
			continue;
		if (len > 0 && strncmp(mlp_cmd_table[i]->name, name, len) == 0) {
			found = mlp_cmd_table[i];
			matches++;
		}
	}
	if (matches > 1) {
		*ambiguous = 1;
		return NULL;
	}
	return found;
}

void mlp_cmd_print_help(const struct mlp_cmd *c, FILE *f)
{
	fprintf(f, "usage: mlpipe %s%s%s\n\n%s%s\n", c->name, c->args[0] ? " " : "", c->args,
	        c->internal ? "(internal) " : "", c->summary);
	if (c->help && c->help[0])
		fprintf(f, "\n%s", c->help);
}

void mlp_cmd_error(const char *fmt, ...)
{
	va_list ap;

	fputs("mlpipe: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int mlp_cmd_usage_error(const struct mlp_cmd *c, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "mlpipe %s: ", c->name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (see 'mlpipe help %s')\n", c->name);
	return MLP_EXIT_USAGE;
}

int mlp_cmd_print_json(struct mlp_json *j)
{
	char *s = mlp_json_print(j, true);

	puts(s);
	free(s);
	mlp_json_free(j);
	return MLP_EXIT_OK;
}

void mlp_cmd_format_time(char *buf, size_t size, int64_t ms)
{
	if (ms <= 0)
		snprintf(buf, size, "-");
	else
		mlp_format_time(buf, size, ms);
}

void mlp_cmd_json_time(struct mlp_json *o, const char *key, int64_t ms)
{
	char t[32];

	if (ms <= 0) {
		mlp_json_add_null(o, key);
		return;
	}
	mlp_format_time(t, sizeof(t), ms);
	mlp_json_add_string(o, key, t);
}

char *mlp_cmd_self_exe(void)
{
	char buf[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);

	if (n <= 0)
		return xstrdup("mlpipe");
	buf[n] = '\0';
	return xstrdup(buf);
}

char *mlp_cmd_current_user(void)
{
	struct passwd *pw = getpwuid(getuid());
	const char *env = getenv("USER");

	if (pw && pw->pw_name)
		return xstrdup(pw->pw_name);
	if (env && *env)
		return xstrdup(env);
	return xasprintf("uid %ld", (long)getuid());
}

int mlp_cmd_main(int argc, char **argv)
{
	const struct mlp_cmd *c;
	int ambiguous;

	if (argc < 2) {
		mlp_cmd_help.exec(1, (char *[]){"help", NULL});
		return MLP_EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
		return mlp_cmd_help.exec(1, (char *[]){"help", NULL});
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0)
		return mlp_cmd_version.exec(1, (char *[]){"version", NULL});
	c = mlp_cmd_find(argv[1], &ambiguous);
	if (c == NULL) {
		/* every public command: the table's size, not a guess (a fixed
		 * array of 16 once left the 17th, help, out of the suggestions) */
		size_t ncmds = 0, n = 0;
		const char **names;
		const char *near;

		while (mlp_cmd_table[ncmds])
			ncmds++;
		names = xcalloc(ncmds + 1, sizeof(*names));
		for (size_t i = 0; i < ncmds; i++)
			if (!mlp_cmd_internal(mlp_cmd_table[i]))
				names[n++] = mlp_cmd_table[i]->name;
		if (ambiguous) {
			mlp_cmd_error("'%s' is ambiguous: it starts more than one command "
			              "(see 'mlpipe help')",
			              argv[1]);
			free(names);
			return MLP_EXIT_USAGE;
		}
		near = mlp_suggest(argv[1], names, n);
		if (near)
			mlp_cmd_error("unknown command '%s' (did you mean '%s'?)", argv[1], near);
		else
			mlp_cmd_error("unknown command '%s' (see 'mlpipe help')", argv[1]);
		free(names);
		return MLP_EXIT_USAGE;
	}
	/* getopt in the command sees argv[0] = the command's name. */
	optind = 1;
	return c->exec(argc - 1, argv + 1);
}
