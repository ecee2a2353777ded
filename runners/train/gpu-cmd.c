/*
 * gpu-cmd.c - mlpipe-train's GPU commands (gpu.h), in every build:
 *
 *   gpu-check [--expect-gpus N] [--max-bytes B] [--iters N] [--timeout DUR]
 *       lists the devices and runs the NCCL all-reduce sweep (gpu-check.c);
 *       `mlpipe gpu-check` runs this;
 *   gpu-count
 *       prints how many GPUs this process can use (0 without CUDA): what
 *       scripts and tests ask before anything else;
 *   gemm-peak [--size N] [--iters N]
 *       cuBLAS FP32 sgemm throughput, the reference for bench/gpu.
 *
 * Exit status as for the rest of mlpipe-train: 0 done, 1 the check failed
 * (no GPU, no CUDA in this build, a collective that did not complete),
 * 2 bad options.
 */
#include "config.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "gpu.h"
#include "base/util.h"

enum { GPU_EXIT_OK = 0, GPU_EXIT_FAILED = 1, GPU_EXIT_USAGE = 2 };

static const char gpu_usage[] =
        "usage: mlpipe-train gpu-check [--expect-gpus N] [--max-bytes B] [--iters N]\n"
        "                              [--timeout DUR]\n"
        "       mlpipe-train gpu-count\n"
        "       mlpipe-train gemm-peak [--size N] [--iters N]\n"
        "\n"
        "gpu-check lists the visible GPUs (name, memory, driver and runtime versions)\n"
        "and all-reduces buffers of 8 bytes up to --max-bytes (default 64M) across all\n"
        "of them with NCCL, printing time, algbw and busbw per size as nccl-tests do.\n"
        "It fails when fewer than --expect-gpus GPUs (default 1) are visible or a\n"
        "collective does not complete within --timeout (default 30s).  --iters\n"
        "(default 20) timed all-reduces per size.\n"
        "\n"
        "gpu-count prints the number of usable GPUs (0 without CUDA).\n"
        "gemm-peak times cuBLAS sgemm in FP32 without TF32 (--size 8192, --iters 20).\n";

static int gpu_usage_error(const char *cmd, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

static int gpu_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "mlpipe-train %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (see 'mlpipe-train %s --help')\n", cmd);
	return GPU_EXIT_USAGE;
}

/* "4096", "64K", "64M", "1G" (powers of 1024). */
static int parse_bytes(long long *out, const char *s)
{
	size_t len = strlen(s);
	long long unit = 1, v;
	char *num;
	int rc;

	if (len > 0 && strchr("kKmMgG", s[len - 1]) != NULL) {
		unit = s[len - 1] == 'k' || s[len - 1] == 'K'   ? 1ll << 10
		       : s[len - 1] == 'm' || s[len - 1] == 'M' ? 1ll << 20
		                                                : 1ll << 30;
		len--;
	}
	num = xstrndup(s, len);
	rc = mlp_parse_int(&v, num, 1, (1ll << 40) / unit);
	free(num);
	if (rc != 0)
		return MLP_EINVAL;
	*out = v * unit;
	return 0;
}

static int parse_count(int *out, const char *cmd, const char *opt, const char *s, int min, int max)
{
	long long v;

	if (mlp_parse_int(&v, s, min, max) != 0) {
		gpu_usage_error(cmd, "%s wants a number from %d to %d, not '%s'", opt, min, max, s);
		return -1;
	}
	*out = (int)v;
	return 0;
}

#ifndef HAVE_CUDA
static int no_cuda(const char *cmd)
{
	fprintf(stderr,
	        "mlpipe-train: %s: mlpipe-train was built without CUDA "
	        "(configure --with-cuda)\n",
	        cmd);
	return GPU_EXIT_FAILED;
}
#endif

static int gpu_count_cmd(int argc, char **argv)
{
#ifdef HAVE_CUDA
	const char *why = NULL;
	int n;
#endif

	if (argc > 1)
		return strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0
		               ? (fputs(gpu_usage, stdout), GPU_EXIT_OK)
		               : gpu_usage_error("gpu-count", "unexpected argument '%s'", argv[1]);
#ifdef HAVE_CUDA
	n = mlp_gpu_count(&why);
	printf("%d\n", n);
	if (n == 0)
		fprintf(stderr, "mlpipe-train: gpu-count: %s\n", why ? why : "no GPU");
#else
	printf("0\n");
	fprintf(stderr, "mlpipe-train: gpu-count: mlpipe-train was built without CUDA\n");
#endif
	return GPU_EXIT_OK;
}

static int gpu_check_cmd(int argc, char **argv, bool gemm)
{
	enum { O_EXPECT = 256, O_MAX_BYTES, O_ITERS, O_TIMEOUT, O_SIZE, O_HELP };
	static const struct option check_opts[] = {
	        {"expect-gpus", required_argument, NULL, O_EXPECT},
	        {"max-bytes", required_argument, NULL, O_MAX_BYTES},
	        {"iters", required_argument, NULL, O_ITERS},
	        {"timeout", required_argument, NULL, O_TIMEOUT},
	        {"help", no_argument, NULL, O_HELP},
	        {NULL, 0, NULL, 0},
	};
	static const struct option gemm_opts[] = {
	        {"size", required_argument, NULL, O_SIZE},
	        {"iters", required_argument, NULL, O_ITERS},
	        {"help", no_argument, NULL, O_HELP},
	        {NULL, 0, NULL, 0},
	};
	const char *cmd = gemm ? "gemm-peak" : "gpu-check";
	struct mlp_gpu_check_opts o = {
	        .expect_gpus = 0,
	        .max_bytes = 64ll << 20,
	        .iters = 20,
	        .timeout_ms = 30000,
	};
	int size = 8192, c, rc;
	int64_t ms;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", gemm ? gemm_opts : check_opts, NULL)) != -1) {
		switch (c) {
		case O_EXPECT:
			if (parse_count(&o.expect_gpus, cmd, "--expect-gpus", optarg, 1, 4096) != 0)
				return GPU_EXIT_USAGE;
			break;
		case O_MAX_BYTES:
			if (parse_bytes(&o.max_bytes, optarg) != 0 || o.max_bytes < 8)
				return gpu_usage_error(
				        cmd,
				        "--max-bytes wants a size such as 4096, 64K, "
				        "64M or 1G (at least 8), not '%s'",
				        optarg);
			break;
		case O_ITERS:
			if (parse_count(&o.iters, cmd, "--iters", optarg, 1, 100000) != 0)
				return GPU_EXIT_USAGE;
			break;
		case O_TIMEOUT:
			if (mlp_parse_duration(&ms, optarg) != 0 || ms < 1 || ms > 86400000)
				return gpu_usage_error(
				        cmd,
				        "--timeout wants a duration such as 30s or 2m, "
				        "not '%s'",
				        optarg);
			o.timeout_ms = (int)ms;
			break;
		case O_SIZE:
			if (parse_count(&size, cmd, "--size", optarg, 16, 32768) != 0)
				return GPU_EXIT_USAGE;
			break;
		case 'h':
		case O_HELP:
			fputs(gpu_usage, stdout);
			return GPU_EXIT_OK;
		case ':':
			return gpu_usage_error(cmd, "%s needs a value", argv[optind - 1]);
		default:
			return gpu_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return gpu_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
#ifdef HAVE_CUDA
	if (gemm) {
		double tflops;

		rc = mlp_gpu_gemm_peak(&tflops, size, o.iters);
	} else {
		rc = mlp_gpu_check(&o);
	}
	if (rc != 0) {
		fflush(stdout);
		fprintf(stderr, "mlpipe-train: %s: %s\n", cmd, mlp_error_last());
		return GPU_EXIT_FAILED;
	}
	return GPU_EXIT_OK;
#else
	(void)rc;
	return no_cuda(cmd);
#endif
}

int mlp_train_gpu_main(int argc, char **argv)
{
	if (strcmp(argv[0], "gpu-count") == 0)
		return gpu_count_cmd(argc, argv);
	if (strcmp(argv[0], "gpu-check") == 0)
		return gpu_check_cmd(argc, argv, false);
	if (strcmp(argv[0], "gemm-peak") == 0)
		return gpu_check_cmd(argc, argv, true);
	return -1;
}
