/*
 * cmd-serve.c - `mlpipe serve`: the command's options into struct
 * mlp_serve_opts, then mlp_serve_run() (src/serve/serve.h) does the rest.
 *
 * Every option but --config and --db is a setting of the --config file by
 * another name; they are handed over as settings, so a bad value reads
 * the same from either.  Nothing else here: webhooks, schedules, the API
 * and the dispatcher are src/serve/'s.
 */
#include "config.h"

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/error.h"
#include "base/kvlist.h"
#include "cli/cmd.h"
#include "serve/serve.h"

static int serve_exec(int argc, char **argv)
{
	static const struct option opts[] = {
	        {"listen", required_argument, NULL, 'l'},
	        {"config", required_argument, NULL, 'c'},
	        {"db", required_argument, NULL, 'd'},
	        {"jobs", required_argument, NULL, 'j'},
	        {"poll-interval", required_argument, NULL, 'P'},
	        {"grace", required_argument, NULL, 'g'},
	        {"tls-cert", required_argument, NULL, 'C'},
	        {"tls-key", required_argument, NULL, 'K'},
	        {"port-file", required_argument, NULL, 'f'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	struct mlp_kvlist settings = {0};
	struct mlp_serve_opts so = {.settings = &settings};
	char *self = NULL;
	bool bad_settings;
	int c, status = MLP_EXIT_USAGE;

	while ((c = getopt_long(argc, argv, "j:h", opts, NULL)) != -1) {
		const char *key = NULL;

		switch (c) {
		case 'l':
			key = "listen";
			break;
		case 'c':
			so.config_file = optarg;
			break;
		case 'd':
			so.db_path = optarg;
			break;
		case 'j':
			key = "jobs";
			break;
		case 'P':
			key = "poll_interval";
			break;
		case 'g':
			key = "grace";
			break;
		case 'C':
			key = "tls_cert";
			break;
		case 'K':
			key = "tls_key";
			break;
		case 'f':
			key = "port_file";
			break;
		case 'h':
			mlp_cmd_print_help(&mlp_cmd_serve, stdout);
			status = MLP_EXIT_OK;
			goto done;
		default:
			status = mlp_cmd_usage_error(&mlp_cmd_serve, "unknown option");
			goto done;
		}
		if (key)
			mlp_kvlist_set(&settings, key, optarg);
	}
	if (optind < argc) {
		status = mlp_cmd_usage_error(&mlp_cmd_serve, "unexpected '%s'", argv[optind]);
		goto done;
	}
	so.self_exe = self = mlp_cmd_self_exe();
	if (mlp_serve_run(&bad_settings, &so) == 0)
		status = MLP_EXIT_OK;
	else if (bad_settings)
		status = mlp_cmd_usage_error(&mlp_cmd_serve, "%s", mlp_error_last());
	else {
		mlp_cmd_error("%s", mlp_error_last());
		status = MLP_EXIT_FAILED;
	}
done:
	mlp_kvlist_free(&settings);
	free(self);
	return status;
}

const struct mlp_cmd mlp_cmd_serve = {
        .name = "serve",
        .args = "[--listen HOST:PORT] [--config FILE] [--db PATH] [-j N] [--poll-interval DUR]\n"
                "       [--grace DUR] [--tls-cert PEM --tls-key PEM] [--port-file FILE]",
        .summary = "Serve webhooks, schedules, the HTTP API and /metrics; run what they queue.",
        .help = "Projects come from `mlpipe project add`.  Each push a project's webhook\n"
                "reports (POST /hooks/github, /hooks/gitlab, /hooks/gitea) and each\n"
                "schedule in its pipeline file queues a run in the database; up to -j runs\n"
                "execute at once, each in a process of its own.  See docs/serve.md and\n"
                "docs/api.md.\n\n"
                "Options (each also a KEY = VALUE line of the --config file):\n"
                "  --listen HOST:PORT     listen (listen; default 127.0.0.1:8080; port 0:\n"
                "                         any free port)\n"
                "  -j, --jobs N           runs at once (jobs; default 2); per_project\n"
                "                         (default 1) bounds the runs of one project\n"
                "  --poll-interval DUR    fetch watched branches this often (poll_interval;\n"
                "                         default 60s; 0: once at start)\n"
                "  --grace DUR            on SIGTERM, let runs finish this long before\n"
                "                         cancelling them (grace; default 30s)\n"
                "  --tls-cert, --tls-key  serve HTTPS (tls_cert, tls_key)\n"
                "  --port-file FILE       write the port listened on to FILE (port_file)\n"
                "  --db PATH              the database\n"
                "Settings only in the file: body_max (bytes, default 1048576),\n"
                "resume_limit (default 3), dispatch (true; false queues without running),\n"
                "http_threads (4), max_connections (2048), max_connections_per_ip (128;\n"
                "0: no limit), request_timeout (30s: a request must arrive whole by then).\n",
        .exec = serve_exec,
};
