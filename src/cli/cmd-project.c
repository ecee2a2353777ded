/*
 * cmd-project.c - `mlpipe project add|list|remove`: the repositories
 * `mlpipe serve` watches.
 *
 * A project's webhook secret is never stored: only the file or the
 * environment variable the server reads it from when a delivery arrives.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cmd.h"
#include "base/error.h"
#include "store/store.h"
#include "store/store-queue.h"
#include "base/util.h"

static int project_add(struct mlp_store **store, const char *db, int argc, char **argv)
{
	static const struct option opts[] = {
	        {"remote", required_argument, NULL, 'r'},
	        {"branch", required_argument, NULL, 'b'},
	        {"pipeline", required_argument, NULL, 'p'},
	        {"secret-file", required_argument, NULL, 's'},
	        {"secret-env", required_argument, NULL, 'e'},
	        {"token-file", required_argument, NULL, 't'},
	        {"ssh-key", required_argument, NULL, 'k'},
	        {NULL, 0, NULL, 0},
	};
	struct mlp_project p = {0};
	struct mlp_buf branches = {0};
	int c, status = MLP_EXIT_USAGE;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'r':
			p.remote = optarg;
			break;
		case 'b':
			if (branches.len)
				mlp_buf_putc(&branches, ',');
			mlp_buf_puts(&branches, optarg);
			break;
		case 'p':
			p.pipeline_path = optarg;
			break;
		case 's':
			p.secret_file = optarg;
			break;
		case 'e':
			p.secret_env = optarg;
			break;
		case 't':
			p.token_file = optarg;
			break;
		case 'k':
			p.ssh_key_file = optarg;
			break;
		default:
			status = mlp_cmd_usage_error(&mlp_cmd_project, "unknown option");
			goto done;
		}
	}
	if (optind + 1 != argc) {
		status = mlp_cmd_usage_error(&mlp_cmd_project, "project add wants one NAME");
		goto done;
	}
	p.name = argv[optind];
	if (strspn(p.name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") !=
	            strlen(p.name) ||
	    p.name[0] == '.' || p.name[0] == '\0') {
		status = mlp_cmd_usage_error(&mlp_cmd_project,
		                             "a project name is letters, digits, "
		                             "'-', '_' and '.', not '%s'",
		                             p.name);
		goto done;
	}
	if (p.remote == NULL) {
		status = mlp_cmd_usage_error(&mlp_cmd_project, "--remote URL is required");
		goto done;
	}
	if ((p.secret_file == NULL) == (p.secret_env == NULL)) {
		status = mlp_cmd_usage_error(&mlp_cmd_project,
		                             "give one of --secret-file FILE or --secret-env VAR");
		goto done;
	}
	if (p.pipeline_path == NULL)
		p.pipeline_path = "pipeline.yml";
	p.branches = branches.len ? branches.data : "main";
	status = MLP_EXIT_FAILED;
	if (mlp_store_open(store, db, 0) != 0 || mlp_store_project_add(*store, &p) != 0) {
		mlp_cmd_error("%s", mlp_error_last());
		goto done;
	}
	printf("project %s: %s, branches %s, pipeline %s\n", p.name, p.remote, p.branches,
	       p.pipeline_path);
	status = MLP_EXIT_OK;
done:
	mlp_buf_free(&branches);
	return status;
}

static int project_exec(int argc, char **argv)
{
	struct mlp_store *store = NULL;
	const char *db = NULL;
	int status = MLP_EXIT_USAGE, first = 1;

	if (argc > 2 && strncmp(argv[1], "--db", 4) == 0) {
		if (argv[1][4] == '=') {
			db = argv[1] + 5;
			first = 2;
		} else {
			db = argv[2];
			first = 3;
		}
	}
	if (first >= argc) {
		return mlp_cmd_usage_error(&mlp_cmd_project, "add, list or remove?");
	}
	if (strcmp(argv[first], "--help") == 0 || strcmp(argv[first], "-h") == 0) {
		mlp_cmd_print_help(&mlp_cmd_project, stdout);
		return MLP_EXIT_OK;
	}
	if (strcmp(argv[first], "add") == 0) {
		status = project_add(&store, db, argc - first, argv + first);
	} else if (strcmp(argv[first], "list") == 0) {
		struct mlp_project *p = NULL;
		size_t n = 0;

		status = MLP_EXIT_FAILED;
		if (mlp_store_open(&store, db, 0) != 0 ||
		    mlp_store_projects_list(&p, &n, store) != 0) {
			mlp_cmd_error("%s", mlp_error_last());
		} else {
			printf("%-16s %-40s %-20s %-20s %s\n", "NAME", "REMOTE", "BRANCHES",
			       "PIPELINE", "SECRET");
			for (size_t i = 0; i < n; i++)
				printf("%-16s %-40s %-20s %-20s %s%s\n", p[i].name, p[i].remote,
				       p[i].branches, p[i].pipeline_path,
				       p[i].secret_env ? "$" : "",
				       p[i].secret_env ? p[i].secret_env : p[i].secret_file);
			status = MLP_EXIT_OK;
		}
		mlp_project_free_all(p, n);
	} else if (strcmp(argv[first], "remove") == 0 && first + 2 == argc) {
		status = MLP_EXIT_FAILED;
		if (mlp_store_open(&store, db, 0) != 0 ||
		    mlp_store_project_remove(store, argv[first + 1]) != 0)
			mlp_cmd_error("%s", mlp_error_last());
		else
			status = MLP_EXIT_OK;
	} else {
		status = mlp_cmd_usage_error(&mlp_cmd_project, "add NAME ..., list or remove NAME");
	}
	mlp_store_close(store);
	return status;
}

const struct mlp_cmd mlp_cmd_project = {
        .name = "project",
        .args = "[--db PATH] add NAME --remote URL [--branch GLOB]... [--pipeline PATH]\n"
                "       (--secret-file FILE | --secret-env VAR) [--token-file FILE | --ssh-key "
                "FILE]\n"
                "       | list | remove NAME",
        .summary = "Configure the repositories `mlpipe serve` watches.",
        .help = "--branch (repeatable; default main) filters pushes by branch name; '*'\n"
                "stops at '/', '**' does not.  --pipeline is the pipeline file's path in\n"
                "the repository (default pipeline.yml).  The webhook secret is read from\n"
                "the file or variable at each delivery and is never stored; --token-file\n"
                "(HTTPS) or --ssh-key (SSH) authenticate fetches.\n",
        .exec = project_exec,
};
