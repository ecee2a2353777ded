/*
 * main.c - the mlpipe-model-server command line: flags and their
 * environment variables (a flag wins), the order of start-up (listen
 * first, load in the background) and the graceful stop on SIGTERM or
 * SIGINT (docs/model-server.md).
 *
 * Bad input is one line on stderr and exit 2; a listener that cannot
 * start is exit 1; a stop by signal that drained in time is exit 0.
 */
#include "config.h"

#include <curl/curl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "base/crypto.h"
#include "base/error.h"
#include "base/util.h"
#include "model-server.h"

/* How long a stop may take, from the signal to the exit. */
#define STOP_BUDGET_US 9000000

static const char help[] =
        "usage: " MS_PROG " --model URI [OPTIONS]\n\n"
        "Serves an mlpipe model file over the Open Inference Protocol v2 REST API\n"
        "(KServe, Triton): /v2/health/{live,ready}, /v2/models/NAME[/ready|/infer],\n"
        "and Prometheus /metrics.  See docs/model-server.md.\n\n"
        "  --model URI           file:///abs/path, /abs/path, http:// or https://  [MODEL_URI]\n"
        "  --sha256 HEX          the model file's SHA-256; required for http(s)  [MODEL_SHA256]\n"
        "  --name NAME           the served model's name (default model)  [MODEL_NAME]\n"
        "  --version V           the served model's version (default 1)  [MODEL_VERSION]\n"
        "  --listen HOST:PORT    numeric address (default 0.0.0.0:8080; [::1]:8080)  [LISTEN]\n"
        "  --token-file PATH     bearer token sent when fetching http(s)  [MODEL_TOKEN_FILE]\n"
        "  --ca-file PATH        CA bundle for https (TLS is always verified)  [MODEL_CA_FILE]\n"
        "  --max-batch N         rows in one forward pass and per request (default 64)\n"
        "  --batch-delay-us N    how long to wait for more rows (default 500)\n"
        "  --max-body-bytes N    largest request body (default 67108864)\n"
        "  --threads N           HTTP threads (default: CPUs, at least 4; 0: one per\n"
        "                        connection)\n"
        "  --help                this text\n\n"
        "Exit: 0 stopped by SIGTERM/SIGINT; 1 cannot listen; 2 bad input.\n";

static int bad(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad(const char *fmt, ...)
{
	va_list ap;

	fputs(MS_PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 2;
}

static int parse_number(long long *out, const char *what, const char *v, long long min,
                        long long max)
{
	if (mlp_parse_int(out, v, min, max) != 0)
		return bad("%s wants a number from %lld to %lld, not '%s'", what, min, max, v);
	return 0;
}

/* HOST:PORT or [HOST]:PORT into o->host and o->port. */
static int parse_listen(struct ms_opts *o, const char *v)
{
	const char *colon = strrchr(v, ':'), *host = v;
	size_t hostlen = colon ? (size_t)(colon - v) : 0;
	long long port;

	if (colon == NULL || hostlen == 0)
		return bad(
		        "--listen wants HOST:PORT (such as 0.0.0.0:8080 or [::1]:8080), not '%s'",
		        v);
	if (host[0] == '[') {
		if (hostlen < 3 || host[hostlen - 1] != ']')
			return bad("--listen: '%s' is not [IPV6]:PORT", v);
		host++;
		hostlen -= 2;
	}
	if (hostlen >= sizeof(o->host))
		return bad("--listen: the host of '%s' is too long", v);
	memcpy(o->host, host, hostlen);
	o->host[hostlen] = '\0';
	if (mlp_parse_int(&port, colon + 1, 0, 65535) != 0)
		return bad("--listen: '%s' is not a port (0 to 65535)", colon + 1);
	o->port = (int)port;
	return 0;
}

/* A model given as a relative path is taken from the directory the server
 * starts in, as a user typing `--model model.bin` means (file:// URIs and
 * MODEL_URI in a pod are absolute anyway). */
static int absolute_path(struct ms_opts *o)
{
	static char path[PATH_MAX];
	char cwd[PATH_MAX];

	if (getcwd(cwd, sizeof(cwd)) == NULL ||
	    (size_t)snprintf(path, sizeof(path), "%s/%s", cwd, o->model_uri) >= sizeof(path))
		return bad("--model: cannot make '%s' an absolute path", o->model_uri);
	o->model_uri = path;
	return 0;
}

static bool is_http(const char *uri)
{
	return strncasecmp(uri, "http://", 7) == 0 || strncasecmp(uri, "https://", 8) == 0;
}

/* Checks what the flags and the environment say together. */
static int check_opts(const struct ms_opts *o)
{
	if (o->model_uri == NULL || *o->model_uri == '\0')
		return bad("--model URI (or MODEL_URI) is required");
	if (!is_http(o->model_uri) && strncmp(o->model_uri, "file:///", 8) != 0 &&
	    o->model_uri[0] != '/')
		return bad("--model: '%s' is not a path, file:///PATH, http:// or https://",
		           o->model_uri);
	if (o->sha256) {
		size_t n = strspn(o->sha256, "0123456789abcdefABCDEF");

		if (n != MLP_SHA256_HEX_LEN || o->sha256[n] != '\0')
			return bad("--sha256: '%s' is not 64 hex digits", o->sha256);
	} else if (is_http(o->model_uri)) {
		return bad(
		        "--sha256 (or MODEL_SHA256) is required for a model fetched over http(s)");
	}
	if (*o->name == '\0' || strchr(o->name, '/') || strlen(o->name) > 200)
		return bad("--name: '%s' is not a model name (1 to 200 characters, no '/')",
		           o->name);
	if (*o->version == '\0' || strchr(o->version, '/') || strlen(o->version) > 200)
		return bad("--version: '%s' is not a version (1 to 200 characters, no '/')",
		           o->version);
	if (o->token_file && access(o->token_file, R_OK) != 0)
		return bad("--token-file: cannot read %s", o->token_file);
	if (o->ca_file && access(o->ca_file, R_OK) != 0)
		return bad("--ca-file: cannot read %s", o->ca_file);
	return 0;
}

static const char *env(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

/* Reads the environment, then the flags over it, into o.  Returns 0, 1
 * for --help, or 2 (the message printed). */
static int parse_args(struct ms_opts *o, int argc, char **argv)
{
	enum {
		O_MODEL = 256,
		O_SHA,
		O_NAME,
		O_VERSION,
		O_LISTEN,
		O_TOKEN,
		O_CA,
		O_BATCH,
		O_DELAY,
		O_BODY,
		O_THREADS,
		O_HELP
	};
	static const struct option longopts[] = {
	        {"model", required_argument, NULL, O_MODEL},
	        {"sha256", required_argument, NULL, O_SHA},
	        {"name", required_argument, NULL, O_NAME},
	        {"version", required_argument, NULL, O_VERSION},
	        {"listen", required_argument, NULL, O_LISTEN},
	        {"token-file", required_argument, NULL, O_TOKEN},
	        {"ca-file", required_argument, NULL, O_CA},
	        {"max-batch", required_argument, NULL, O_BATCH},
	        {"batch-delay-us", required_argument, NULL, O_DELAY},
	        {"max-body-bytes", required_argument, NULL, O_BODY},
	        {"threads", required_argument, NULL, O_THREADS},
	        {"help", no_argument, NULL, O_HELP},
	        {NULL, 0, NULL, 0},
	};
	const char *listen = env("LISTEN") ? env("LISTEN") : "0.0.0.0:8080";
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	long long n;
	int c;

	o->model_uri = env("MODEL_URI");
	o->sha256 = env("MODEL_SHA256");
	o->name = env("MODEL_NAME") ? env("MODEL_NAME") : "model";
	o->version = env("MODEL_VERSION") ? env("MODEL_VERSION") : "1";
	o->token_file = env("MODEL_TOKEN_FILE");
	o->ca_file = env("MODEL_CA_FILE");
	o->max_batch = 64;
	o->batch_delay_us = 500;
	o->max_body = (size_t)64 << 20;
	o->threads = cpus > 4 ? (int)(cpus < 1024 ? cpus : 1024) : 4;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case O_MODEL:
			o->model_uri = optarg;
			break;
		case O_SHA:
			o->sha256 = optarg;
			break;
		case O_NAME:
			o->name = optarg;
			break;
		case O_VERSION:
			o->version = optarg;
			break;
		case O_LISTEN:
			listen = optarg;
			break;
		case O_TOKEN:
			o->token_file = optarg;
			break;
		case O_CA:
			o->ca_file = optarg;
			break;
		case O_BATCH:
			if (parse_number(&n, "--max-batch", optarg, 1, 65536) != 0)
				return 2;
			o->max_batch = (int)n;
			break;
		case O_DELAY:
			if (parse_number(&n, "--batch-delay-us", optarg, 0, 10000000) != 0)
				return 2;
			o->batch_delay_us = (long)n;
			break;
		case O_BODY:
			if (parse_number(&n, "--max-body-bytes", optarg, 1024, 1LL << 40) != 0)
				return 2;
			o->max_body = (size_t)n;
			break;
		case O_THREADS:
			if (parse_number(&n, "--threads", optarg, 0, 1024) != 0)
				return 2;
			o->threads = (int)n;
			break;
		case O_HELP:
			fputs(help, stdout);
			return 1;
		case ':':
			return bad("%s needs a value", argv[optind - 1]);
		default:
			return bad("unknown option '%s' (see --help)", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return bad("unexpected argument '%s' (see --help)", argv[optind]);
	if (parse_listen(o, listen) != 0)
		return 2;
	if (o->model_uri && *o->model_uri && o->model_uri[0] != '/' &&
	    !strstr(o->model_uri, "://") && absolute_path(o) != 0)
		return 2;
	return check_opts(o);
}

/* Waits for SIGTERM or SIGINT (blocked in every thread) and returns it. */
static int wait_for_stop(const sigset_t *set)
{
	int sig = 0;

	while (sigwait(set, &sig) != 0)
		;
	return sig;
}

int main(int argc, char **argv)
{
	struct ms_state st = {0};
	struct ms_server *server = NULL;
	struct ms_loader *loader = NULL;
	sigset_t set;
	int rc, sig;
	long long cut;

	if ((rc = parse_args(&st.opts, argc, argv)) != 0)
		return rc == 1 ? 0 : rc;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	st.metrics = ms_metrics_new(st.opts.name, st.opts.max_batch);
	if (ms_batcher_start(&st.batcher, st.opts.max_batch, st.opts.batch_delay_us, st.metrics) !=
	            0 ||
	    ms_server_start(&server, &st) != 0) {
		fprintf(stderr, MS_PROG ": %s\n", mlp_error_last());
		rc = 1;
		goto done;
	}
	fprintf(stderr, MS_PROG ": listening on %s%s%s:%d\n", strchr(st.opts.host, ':') ? "[" : "",
	        st.opts.host, strchr(st.opts.host, ':') ? "]" : "", ms_server_port(server));
	if (ms_loader_start(&loader, &st) != 0) {
		fprintf(stderr, MS_PROG ": %s\n", mlp_error_last());
		rc = 1;
		goto done;
	}
	sig = wait_for_stop(&set);
	atomic_store(&st.stopping, true);
	atomic_store(&st.ready, false);
	fprintf(stderr, MS_PROG ": %s: not ready; finishing the requests in flight\n",
	        sig == SIGTERM ? "SIGTERM" : "SIGINT");
	cut = ms_server_shutdown(server, mlp_mono_us() + STOP_BUDGET_US);
	server = NULL;
	if (cut == 0)
		fprintf(stderr, MS_PROG ": stopped: every request it read was answered\n");
	else
		fprintf(stderr, MS_PROG ": stopped: %lld requests it read were not answered\n",
		        cut);
done:
	ms_server_shutdown(server, mlp_mono_us());
	ms_loader_stop(loader);
	ms_batcher_stop(st.batcher);
	ms_model_free(atomic_load(&st.model));
	ms_metrics_free(st.metrics);
	curl_global_cleanup();
	return rc;
}
