/*
 * main.c - the mlpipe-pod command line: `install DIR` and `run [OPTIONS]
 * -- COMMAND`, with the PET_* environment the executor sets in the pod
 * spec.  Reads and checks everything into struct pod_opts; the work
 * happens in pod.c.
 *
 * Bad input (an option, the environment, a missing program) is one line
 * on stderr and in the termination log, and exit 2: the executor must not
 * retry what cannot pass.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/crypto.h"
#include "base/error.h"
#include "base/util.h"
#include "pod.h"

#define DEFAULT_TERMINATION_LOG "/mlpipe/termination-log"

static const char usage[] = "usage: mlpipe-pod install DIR\n"
                            "       mlpipe-pod run [OPTIONS] -- COMMAND [ARG...]\n";

static const char help[] =
        "Runs one node of a data-parallel training Job inside its Kubernetes pod:\n"
        "waits until PET_MASTER_ADDR resolves, runs the node's ranks with torchrun's\n"
        "environment (output prefixed [rankN]), writes the root cause of a failure to\n"
        "the termination log and exits with the failed rank's code.  On node 0,\n"
        "--results-port serves the result files over HTTP (docs/mlpipe-pod.md).\n\n"
        "install DIR               copy this program to DIR/mlpipe-pod\n\n"
        "run options:\n"
        "  --nproc-per-node N      ranks in this pod (default: $PET_NPROC_PER_NODE, or 1)\n"
        "  --gpus-per-node N       one GPU per rank through CUDA_VISIBLE_DEVICES\n"
        "  --stall-timeout DUR     stop ranks silent for DUR (default: never)\n"
        "  --kill-grace DUR        SIGTERM to SIGKILL for the ranks (default 10s)\n"
        "  --rdzv-timeout DUR      how long to wait for MASTER_ADDR to resolve (default 5m)\n"
        "  --once                  run COMMAND once per pod (a torchrun command that\n"
        "                          starts its own ranks from PET_*), output [nodeN]\n"
        "  --results-port PORT     on node 0: serve /status, /files/NAME, POST /done\n"
        "  --serve-timeout DUR     after a success, serve at most DUR (default 10m)\n"
        "  --result NAME=PATH      a file to serve as /files/NAME (repeatable)\n"
        "  --termination-log PATH  where the failure goes (default " DEFAULT_TERMINATION_LOG ")\n\n"
        "Environment: PET_NNODES, PET_NODE_RANK, PET_NPROC_PER_NODE, PET_MASTER_ADDR,\n"
        "PET_MASTER_PORT, TORCHELASTIC_RUN_ID (or MLPIPE_RUN_ID).\n\n"
        "Exit: 0 success; a failed rank's own code (128+N for signal N); 1 another\n"
        "failure; 2 bad input; 128+N stopped by signal N.\n";

/* Parsing state: the first error wins, and parsing goes on so that the
 * termination log's path is known when the error is reported. */
struct parse {
	struct pod_opts *o;
	char *error;
	bool node_known;
};

static void bad(struct parse *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void bad(struct parse *p, const char *fmt, ...)
{
	va_list ap;

	if (p->error)
		return;
	va_start(ap, fmt);
	p->error = xvasprintf(fmt, ap);
	va_end(ap);
}

static void parse_count(struct parse *p, int *out, const char *what, const char *v, int min,
                        int max)
{
	long long n;

	if (mlp_parse_int(&n, v, min, max) != 0)
		bad(p, "%s wants a number from %d to %d, not '%s'", what, min, max, v);
	else
		*out = (int)n;
}

static void parse_duration(struct parse *p, int64_t *out, const char *what, const char *v)
{
	if (mlp_parse_duration(out, v) != 0)
		bad(p, "%s: %s", what, mlp_error_last());
}

static bool name_ok(const char *name, size_t len)
{
	if (len == 0 || len > 100)
		return false;
	for (size_t i = 0; i < len; i++)
		if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-",
		           name[i]) == NULL)
			return false;
	return true;
}

static void add_result(struct parse *p, char *arg)
{
	struct pod_opts *o = p->o;
	char *eq = strchr(arg, '=');

	if (eq == NULL || !name_ok(arg, (size_t)(eq - arg)) || eq[1] == '\0') {
		bad(p,
		    "--result wants NAME=PATH, NAME of letters, digits, '.', '_' and '-', not '%s'",
		    arg);
		return;
	}
	*eq = '\0';
	for (size_t i = 0; i < o->nresults; i++)
		if (strcmp(o->results[i].name, arg) == 0)
			bad(p, "--result %s is given twice", arg);
	o->results = xrealloc(o->results, (o->nresults + 1) * sizeof(*o->results));
	o->results[o->nresults++] = (struct pod_result){arg, eq + 1};
}

static void parse_options(struct parse *p, int argc, char **argv)
{
	enum {
		O_NPROC = 256,
		O_GPUS,
		O_STALL,
		O_GRACE,
		O_RDZV,
		O_ONCE,
		O_PORT,
		O_SERVE,
		O_RESULT,
		O_TLOG,
	};
	static const struct option opts[] = {
	        {"nproc-per-node", required_argument, NULL, O_NPROC},
	        {"gpus-per-node", required_argument, NULL, O_GPUS},
	        {"stall-timeout", required_argument, NULL, O_STALL},
	        {"kill-grace", required_argument, NULL, O_GRACE},
	        {"rdzv-timeout", required_argument, NULL, O_RDZV},
	        {"once", no_argument, NULL, O_ONCE},
	        {"results-port", required_argument, NULL, O_PORT},
	        {"serve-timeout", required_argument, NULL, O_SERVE},
	        {"result", required_argument, NULL, O_RESULT},
	        {"termination-log", required_argument, NULL, O_TLOG},
	        {NULL, 0, NULL, 0},
	};
	struct pod_opts *o = p->o;
	int c;

	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
		switch (c) {
		case O_NPROC:
			parse_count(p, &o->nproc, "--nproc-per-node", optarg, 1, 1024);
			break;
		case O_GPUS:
			parse_count(p, &o->gpus_per_node, "--gpus-per-node", optarg, 0, 1024);
			break;
		case O_STALL:
			parse_duration(p, &o->stall_timeout_ms, "--stall-timeout", optarg);
			break;
		case O_GRACE:
			parse_duration(p, &o->kill_grace_ms, "--kill-grace", optarg);
			break;
		case O_RDZV:
			parse_duration(p, &o->rdzv_timeout_ms, "--rdzv-timeout", optarg);
			break;
		case O_ONCE:
			o->once = true;
			break;
		case O_PORT:
			parse_count(p, &o->results_port, "--results-port", optarg, 1, 65535);
			break;
		case O_SERVE:
			parse_duration(p, &o->serve_timeout_ms, "--serve-timeout", optarg);
			break;
		case O_RESULT:
			add_result(p, optarg);
			break;
		case O_TLOG:
			o->termination_log = optarg;
			break;
		default:
			bad(p, "unknown option or missing value: '%s'", argv[optind - 1]);
			break;
		}
	}
	if (optind >= argc)
		bad(p, "no command given (mlpipe-pod run [OPTIONS] -- COMMAND [ARG...])");
	else
		o->command = argv + optind;
}

/* An integer from the environment: 0 and *out set, 1 when unset (left
 * alone), -1 when set but not a number in range (error recorded). */
static int env_count(struct parse *p, int *out, const char *name, int min, int max)
{
	const char *v = getenv(name);
	long long n;

	if (v == NULL || *v == '\0')
		return 1;
	if (mlp_parse_int(&n, v, min, max) != 0) {
		bad(p, "%s='%s' is not a number from %d to %d", name, v, min, max);
		return -1;
	}
	*out = (int)n;
	return 0;
}

static void parse_env(struct parse *p)
{
	struct pod_opts *o = p->o;
	const char *addr = getenv("PET_MASTER_ADDR");
	int rc;

	if (env_count(p, &o->nnodes, "PET_NNODES", 1, 1024) < 0)
		return; /* an elastic range "MIN:MAX" too: not supported */
	rc = env_count(p, &o->node_rank, "PET_NODE_RANK", 0, 1023);
	if (rc < 0)
		return;
	if (rc == 1 && o->nnodes > 1) {
		bad(p, "PET_NODE_RANK is not set (PET_NNODES is %d)", o->nnodes);
		return;
	}
	if (o->node_rank >= o->nnodes) {
		bad(p, "PET_NODE_RANK %d is not below PET_NNODES %d", o->node_rank, o->nnodes);
		return;
	}
	p->node_known = true;
	/* torchrun reads PET_NPROC_PER_NODE itself under --once ("gpu", "auto"). */
	if (o->nproc == 0 && !o->once && env_count(p, &o->nproc, "PET_NPROC_PER_NODE", 1, 1024) < 0)
		return;
	if (o->nproc == 0)
		o->nproc = 1;
	if (addr && *addr)
		o->master_addr = addr;
	else if (o->nnodes > 1)
		bad(p, "PET_MASTER_ADDR is not set (PET_NNODES is %d)", o->nnodes);
	if (env_count(p, &o->master_port, "PET_MASTER_PORT", 1, 65535) == 1 && o->nnodes > 1)
		bad(p, "PET_MASTER_PORT is not set (PET_NNODES is %d)", o->nnodes);
	o->run_id = getenv("TORCHELASTIC_RUN_ID");
	if (o->run_id == NULL || *o->run_id == '\0')
		o->run_id = getenv("MLPIPE_RUN_ID");
}

static int run_main(int argc, char **argv)
{
	struct pod_opts o = {
	        .nnodes = 1,
	        .master_addr = "127.0.0.1",
	        .kill_grace_ms = 10000,
	        .rdzv_timeout_ms = 5 * 60 * 1000,
	        .serve_timeout_ms = 10 * 60 * 1000,
	        .termination_log = DEFAULT_TERMINATION_LOG,
	};
	struct parse p = {.o = &o};
	int rc;

	parse_options(&p, argc, argv);
	parse_env(&p);
	if (p.error) {
		char *text = p.node_known ? xasprintf("node %d: %s", o.node_rank, p.error)
		                          : xstrdup(p.error);

		pod_report(o.termination_log, text);
		free(text);
		free(p.error);
		free(o.results);
		return POD_EXIT_USAGE;
	}
	rc = pod_run(&o);
	free(o.results);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		printf("%s\n%s", usage, help);
		return POD_EXIT_OK;
	}
	if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
		printf("mlpipe-pod %s\n", PACKAGE_VERSION);
		return POD_EXIT_OK;
	}
	if (argc == 3 && strcmp(argv[1], "install") == 0)
		return pod_install(argv[2]);
	if (argc >= 2 && strcmp(argv[1], "run") == 0) {
		mlp_crypto_no_config(); /* the image's openssl.cnf is not ours */
		return run_main(argc - 1, argv + 1);
	}
	fprintf(stderr, "mlpipe-pod: %s", usage);
	return POD_EXIT_USAGE;
}
