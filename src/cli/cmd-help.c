/*
 * cmd-help.c - `mlpipe help [COMMAND]`.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "cli/cmd.h"

static int help_exec(int argc, char **argv)
{
	const struct mlp_cmd *c;
	int ambiguous;

	if (argc > 2)
		return mlp_cmd_usage_error(&mlp_cmd_help, "too many arguments");
	if (argc == 2 && strcmp(argv[1], "--help") != 0 && strcmp(argv[1], "-h") != 0) {
		c = mlp_cmd_find(argv[1], &ambiguous);
		if (c == NULL) {
			mlp_cmd_error("no command '%s' (see 'mlpipe help')", argv[1]);
			return MLP_EXIT_USAGE;
		}
		mlp_cmd_print_help(c, stdout);
		return MLP_EXIT_OK;
	}
	if (argc == 2) {
		mlp_cmd_print_help(&mlp_cmd_help, stdout);
		return MLP_EXIT_OK;
	}
	printf("usage: mlpipe COMMAND [ARGS]\n\n"
	       "Continuous training and rollout: run a pipeline file that trains,\n"
	       "measures, gates and ships a model, with its history in SQLite.\n\n"
	       "Commands:\n");
	{
		int width = 0;

		for (size_t i = 0; mlp_cmd_table[i]; i++) {
			int len = (int)strlen(mlp_cmd_table[i]->name);

			if (len > width)
				width = len;
		}
		for (size_t i = 0; mlp_cmd_table[i]; i++)
			printf("  %-*s  %s%s\n", width, mlp_cmd_table[i]->name,
			       mlp_cmd_table[i]->internal ? "(internal) " : "",
			       mlp_cmd_table[i]->summary);
	}
	printf("\nRun 'mlpipe help COMMAND' or 'mlpipe COMMAND --help' for a command's "
	       "options.\n"
	       "Exit codes: 0 success, 1 the run failed, 2 usage or invalid input,\n"
	       "130/143 cancelled by SIGINT/SIGTERM.\n");
	return MLP_EXIT_OK;
}

const struct mlp_cmd mlp_cmd_help = {
        .name = "help",
        .args = "[COMMAND]",
        .summary = "Show the commands, or one command's usage.",
        .help = "",
        .exec = help_exec,
};
