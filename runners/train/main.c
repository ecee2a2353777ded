/*
 * main.c - the mlpipe-train command line: `train` (the default),
 * `evaluate MODEL` and `export --onnx MODEL OUT`, --help and --version.
 * Parses and checks options into the structs of train.h; the work happens
 * in train.c, evaluate.c and onnx.c.
 *
 * Errors are one line on stderr, "mlpipe-train: ...", with exit 2 for bad
 * input (options, files, sizes, labels) and 1 for a runtime failure (a
 * collective, a write), so that a launcher restarts only what may pass.
 */
#include "config.h"

#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "base/crypto.h"
#include "base/error.h"
#include "gpu.h"
#include "onnx.h"
#include "train.h"
#include "base/util.h"

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

/* OpenBLAS's own: which kernels it chose (absent from other BLAS, hence weak). */
extern char *openblas_get_corename(void) __attribute__((weak));

/*
 * OpenBLAS built for many CPUs (DYNAMIC_ARCH, as Debian ships it) picks its
 * kernels by CPU model number, and on a model it does not know -- such as
 * the virtual "Intel Xeon Processor" of cloud machines, AVX-512 and all --
 * it falls back to the SSE3 "Prescott" kernels, which make sgemm 2.5-3x
 * slower.  The choice is made when the library loads, before main(), and
 * can only be changed through OPENBLAS_CORETYPE.  So when the user has not
 * set it, OpenBLAS settled for an SSE-era core and this CPU has AVX2 or
 * AVX-512, run this program again (same pid, same arguments) with the
 * matching core type.  Setting OPENBLAS_CORETYPE to anything opts out.
 */
static void openblas_fix_core(char **argv)
{
	static const char *const sse_cores[] = {"Prescott",  "Core2", "Penryn", "Dunnington",
	                                        "Nehalem",   "Atom",  "Katmai", "Coppermine",
	                                        "Northwood", "Banias"};
	const char *core, *want = NULL;
	bool sse_only = false;

	if (openblas_get_corename == NULL || getenv("OPENBLAS_CORETYPE") != NULL)
		return;
	core = openblas_get_corename();
	for (size_t i = 0; core && i < MLP_ARRAY_SIZE(sse_cores); i++)
		sse_only |= strcasecmp(core, sse_cores[i]) == 0;
	if (!sse_only)
		return;
#if defined(__x86_64__) && defined(__GNUC__)
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
	    __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
	    __builtin_cpu_supports("avx512cd"))
		want = "SkylakeX";
	else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		want = "Haswell";
#endif
	if (want == NULL || setenv("OPENBLAS_CORETYPE", want, 1) != 0)
		return;
	execv("/proc/self/exe", argv);
	/* Could not: carry on with the slow kernels. */
	unsetenv("OPENBLAS_CORETYPE");
}

static const char usage_text[] =
        "usage: mlpipe-train [train] --data PATH [OPTIONS]\n"
        "       mlpipe-train evaluate MODEL --data PATH [OPTIONS]\n"
        "       mlpipe-train export --onnx MODEL OUT.onnx\n"
        "       mlpipe-train gpu-check | gpu-count | gemm-peak [OPTIONS]  (see docs/gpu.md)\n"
        "       mlpipe-train --help | --version\n"
        "\n"
        "Trains an MLP classifier (ReLU hidden layers, softmax cross-entropy, SGD\n"
        "with momentum and weight decay) on one process or as one rank of a\n"
        "data-parallel group, or evaluates a saved model.\n"
        "\n"
        "Data (train and evaluate):\n"
        "  --data PATH            a directory with train-images-idx3-ubyte[.gz] and\n"
        "                         train-labels-idx1-ubyte[.gz] (and t10k-* as the test\n"
        "                         set; evaluate uses t10k-* when present), a CSV file\n"
        "                         (*.csv or *.csv.gz), or an IDX images file with --labels\n"
        "  --labels FILE          the IDX labels file for an IDX images file\n"
        "  --label-column N       which CSV column holds the label (0-based, default 0);\n"
        "                         the other columns are features; a non-numeric first\n"
        "                         line is a header and skipped\n"
        "  --device DEV           cpu, cuda or auto (default auto: a GPU when this build\n"
        "                         has its backend and the machine has one, else cpu)\n"
        "  --metrics FILE         write metrics as a JSON object here (default:\n"
        "                         $MLPIPE_METRICS when set)\n"
        "\n"
        "Training:\n"
        "  --layers N,N,...       layer sizes, input first, classes last (default\n"
        "                         784,256,10)\n"
        "  --epochs N             passes over the training data (default 5)\n"
        "  --steps N              stop after N optimizer steps (default: no limit)\n"
        "  --batch N              global batch size, divisible by the world size; each\n"
        "                         rank takes N / WORLD_SIZE per step (default 64)\n"
        "  --lr X                 learning rate (default 0.05)\n"
        "  --momentum X           SGD momentum, 0 to <1 (default 0)\n"
        "  --weight-decay X       L2 weight decay (default 0)\n"
        "  --seed N               seed for initialisation, shuffling and splits\n"
        "                         (default 1)\n"
        "  --test-data PATH       the test set, same forms as --data (default: the\n"
        "                         t10k-* files of a --data directory)\n"
        "  --test-labels FILE     the IDX labels file for an IDX --test-data\n"
        "  --validation-split F   hold out this fraction (0 < F < 1) of the training\n"
        "                         data, chosen by --seed, and report accuracy on it\n"
        "  --out FILE             the model file (default model.bin), written atomically\n"
        "                         by rank 0\n"
        "  --dump-params FILE     also write the raw parameters (little-endian float32)\n"
        "\n"
        "Evaluation:\n"
        "  --batch N              samples per forward pass (default 512)\n"
        "\n"
        "Export: writes the model as ONNX (IR 8, opset 13: input \"input\" FP32\n"
        "[batch, features], outputs \"logits\" FP32 [batch, classes] and \"class\"\n"
        "INT64 [batch]) for ONNX Runtime or Triton, atomically (docs/onnx.md).\n"
        "\n"
        "Data-parallel runs take the torchrun environment (RANK, WORLD_SIZE,\n"
        "LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR, MASTER_PORT,\n"
        "TORCHELASTIC_RUN_ID); without WORLD_SIZE it is one process.  Rank 0's\n"
        "initial parameters are broadcast, each epoch's shuffled samples are sharded\n"
        "over the ranks, and gradients are averaged every step, so W ranks with\n"
        "--batch B train like one process with --batch B.\n"
        "\n"
        "Outputs: progress lines per epoch (loss, accuracy, test_accuracy,\n"
        "samples/s); the model file (docs/model-format.md); metrics accuracy, loss,\n"
        "samples_per_sec, epochs, world_size (evaluate: accuracy, loss, samples,\n"
        "accuracy_class_K); and model_sha256= and model_path= lines appended to\n"
        "$MLPIPE_OUTPUT when set.  BLAS threads follow OMP_NUM_THREADS.\n"
        "\n"
        "Exit status: 0 done, 1 runtime failure (a collective or a write), 2 bad\n"
        "options or input.\n";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("mlpipe-train: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs(" (see 'mlpipe-train --help')\n", stderr);
	return EXIT_USAGE;
}

static int fail(int rc)
{
	fprintf(stderr, "mlpipe-train: %s\n", mlp_error_last());
	return rc == MLP_EINVAL || rc == MLP_ENOTFOUND ? EXIT_USAGE : EXIT_RUNTIME;
}

static bool parse_int_opt(int *out, const char *name, const char *s, long long min, long long max)
{
	long long v;

	if (mlp_parse_int(&v, s, min, max) != 0) {
		usage_error("--%s wants a whole number from %lld to %lld, not '%s'", name, min, max,
		            s);
		return false;
	}
	*out = (int)v;
	return true;
}

static bool parse_real_opt(double *out, const char *name, const char *s, double min, double max,
                           bool max_open)
{
	double v;

	if (mlp_parse_double(&v, s) != 0 || v < min || v > max || (max_open && v == max)) {
		usage_error("--%s wants a number from %g to %g%s, not '%s'", name, min, max,
		            max_open ? " (exclusive)" : "", s);
		return false;
	}
	*out = v;
	return true;
}

enum {
	OPT_DATA = 256,
	OPT_LABELS,
	OPT_LABEL_COLUMN,
	OPT_TEST_DATA,
	OPT_TEST_LABELS,
	OPT_LAYERS,
	OPT_EPOCHS,
	OPT_STEPS,
	OPT_BATCH,
	OPT_LR,
	OPT_MOMENTUM,
	OPT_WD,
	OPT_SEED,
	OPT_SPLIT,
	OPT_DEVICE,
	OPT_OUT,
	OPT_DUMP,
	OPT_METRICS,
	OPT_HELP,
	OPT_VERSION,
};

static const struct option long_opts[] = {
        {"data", required_argument, NULL, OPT_DATA},
        {"labels", required_argument, NULL, OPT_LABELS},
        {"label-column", required_argument, NULL, OPT_LABEL_COLUMN},
        {"test-data", required_argument, NULL, OPT_TEST_DATA},
        {"test-labels", required_argument, NULL, OPT_TEST_LABELS},
        {"layers", required_argument, NULL, OPT_LAYERS},
        {"epochs", required_argument, NULL, OPT_EPOCHS},
        {"steps", required_argument, NULL, OPT_STEPS},
        {"batch", required_argument, NULL, OPT_BATCH},
        {"lr", required_argument, NULL, OPT_LR},
        {"momentum", required_argument, NULL, OPT_MOMENTUM},
        {"weight-decay", required_argument, NULL, OPT_WD},
        {"seed", required_argument, NULL, OPT_SEED},
        {"validation-split", required_argument, NULL, OPT_SPLIT},
        {"device", required_argument, NULL, OPT_DEVICE},
        {"out", required_argument, NULL, OPT_OUT},
        {"dump-params", required_argument, NULL, OPT_DUMP},
        {"metrics", required_argument, NULL, OPT_METRICS},
        {"help", no_argument, NULL, OPT_HELP},
        {"version", no_argument, NULL, OPT_VERSION},
        {NULL, 0, NULL, 0},
};

/* Options that only one of the two commands takes. */
static bool train_only(int c)
{
	return c == OPT_TEST_DATA || c == OPT_TEST_LABELS || c == OPT_LAYERS || c == OPT_EPOCHS ||
	       c == OPT_STEPS || c == OPT_LR || c == OPT_MOMENTUM || c == OPT_WD || c == OPT_SEED ||
	       c == OPT_SPLIT || c == OPT_OUT || c == OPT_DUMP;
}

static const char *opt_name(int c)
{
	for (size_t i = 0; long_opts[i].name; i++)
		if (long_opts[i].val == c)
			return long_opts[i].name;
	return "?";
}

/* The options' defaults (usage_text names them). */
static const struct mlp_train_opts train_defaults = {
        .epochs = 5,
        .batch = 64,
        .lr = 0.05,
        .seed = 1,
        .device = "auto",
        .out = "model.bin",
};
static const struct mlp_eval_opts eval_defaults = {.batch = 512, .device = "auto"};

/* What the command line asks for: both commands' options (main runs
 * one of them). */
struct cmdline {
	struct mlp_train_opts t;
	struct mlp_eval_opts e;
	bool evaluate;
	const char *layers;
	int label_column;
};

/* Takes option c (with optarg) into cl.  -1 to carry on, else the exit
 * status main returns (after a message, or --help and --version). */
static int take_option(struct cmdline *cl, int c, char **argv)
{
	struct mlp_train_opts *t = &cl->t;
	struct mlp_eval_opts *e = &cl->e;

	switch (c) {
	case OPT_DATA:
		t->data.path = e->data.path = optarg;
		break;
	case OPT_LABELS:
		t->data.labels = e->data.labels = optarg;
		break;
	case OPT_LABEL_COLUMN:
		if (!parse_int_opt(&cl->label_column, "label-column", optarg, 0, 1 << 20))
			return EXIT_USAGE;
		break;
	case OPT_TEST_DATA:
		t->test.path = optarg;
		break;
	case OPT_TEST_LABELS:
		t->test.labels = optarg;
		break;
	case OPT_LAYERS:
		cl->layers = optarg;
		break;
	case OPT_EPOCHS:
		if (!parse_int_opt(&t->epochs, "epochs", optarg, 1, 1000000))
			return EXIT_USAGE;
		break;
	case OPT_STEPS: {
		long long v;

		if (mlp_parse_int(&v, optarg, 1, (long long)1 << 50) != 0)
			return usage_error("--steps wants a positive whole number, not '%s'",
			                   optarg);
		t->max_steps = v;
		break;
	}
	case OPT_BATCH:
		if (!parse_int_opt(cl->evaluate ? &e->batch : &t->batch, "batch", optarg, 1,
		                   1 << 20))
			return EXIT_USAGE;
		break;
	case OPT_LR:
		if (!parse_real_opt(&t->lr, "lr", optarg, 0, 1e6, false))
			return EXIT_USAGE;
		if (t->lr == 0)
			return usage_error("--lr must be above 0");
		break;
	case OPT_MOMENTUM:
		if (!parse_real_opt(&t->momentum, "momentum", optarg, 0, 1, true))
			return EXIT_USAGE;
		break;
	case OPT_WD:
		if (!parse_real_opt(&t->weight_decay, "weight-decay", optarg, 0, 1e6, false))
			return EXIT_USAGE;
		break;
	case OPT_SEED: {
		long long v;

		if (mlp_parse_int(&v, optarg, 0, INT64_MAX) != 0)
			return usage_error("--seed wants a whole number from 0, not '%s'", optarg);
		t->seed = (uint64_t)v;
		break;
	}
	case OPT_SPLIT:
		if (!parse_real_opt(&t->validation_split, "validation-split", optarg, 0, 1, true))
			return EXIT_USAGE;
		break;
	case OPT_DEVICE:
		t->device = e->device = optarg;
		break;
	case OPT_OUT:
		t->out = optarg;
		break;
	case OPT_DUMP:
		t->dump_params = optarg;
		break;
	case OPT_METRICS:
		t->metrics = e->metrics = optarg;
		break;
	case 'h':
	case OPT_HELP:
		fputs(usage_text, stdout);
		return EXIT_OK;
	case OPT_VERSION:
		printf("mlpipe-train %s\n", PACKAGE_VERSION);
		return EXIT_OK;
	case ':':
		return usage_error("%s needs a value", argv[optind - 1]);
	default:
		return usage_error("unknown option '%s'", argv[optind - 1]);
	}
	return -1;
}

/* `export --onnx MODEL OUT`: the model file as ONNX (onnx.c). */
static int export_main(int argc, char **argv)
{
	static const struct option export_opts[] = {
	        {"onnx", no_argument, NULL, 'o'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	char sha256[MLP_SHA256_HEX_LEN + 1];
	bool onnx = false;
	int c, rc;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", export_opts, NULL)) != -1) {
		if (c == 'o')
			onnx = true;
		else if (c == 'h')
			return fputs(usage_text, stdout) < 0 ? EXIT_RUNTIME : EXIT_OK;
		else
			return usage_error("export: unknown option '%s'", argv[optind - 1]);
	}
	if (!onnx)
		return usage_error("export needs a format: --onnx (the only one)");
	if (argc - optind != 2)
		return usage_error("export --onnx takes a model file and an output file");
	rc = mlp_onnx_export(argv[optind + 1], argv[optind], sha256);
	if (rc != 0)
		return fail(rc);
	printf("wrote %s (ONNX IR %d, opset %d, sha256 %s)\n", argv[optind + 1],
	       MLP_ONNX_IR_VERSION, MLP_ONNX_OPSET, sha256);
	return EXIT_OK;
}

int main(int argc, char **argv)
{
	struct cmdline cl = {.t = train_defaults, .e = eval_defaults, .layers = "784,256,10"};
	struct mlp_train_opts *t = &cl.t;
	struct mlp_eval_opts *e = &cl.e;
	int c, rc;

	openblas_fix_core(argv);
	signal(SIGPIPE, SIG_IGN);
	/* gpu-check, gpu-count, gemm-peak (gpu-cmd.c) */
	if (argc > 1 && (rc = mlp_train_gpu_main(argc - 1, argv + 1)) >= 0)
		return rc;
	if (argc > 1 && strcmp(argv[1], "export") == 0)
		return export_main(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "evaluate") == 0) {
		cl.evaluate = true;
		argv++;
		argc--;
	} else if (argc > 1 && strcmp(argv[1], "train") == 0) {
		argv++;
		argc--;
	} else if (argc > 1 && argv[1][0] != '-') {
		return usage_error("unknown command '%s' (train, evaluate, export, gpu-check, "
		                   "gpu-count or gemm-peak)",
		                   argv[1]);
	}
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", long_opts, NULL)) != -1) {
		if (cl.evaluate && train_only(c))
			return usage_error("evaluate does not take --%s", opt_name(c));
		if ((rc = take_option(&cl, c, argv)) >= 0)
			return rc;
	}
	t->data.label_column = e->data.label_column = t->test.label_column = cl.label_column;

	if (cl.evaluate) {
		if (optind >= argc)
			return usage_error("evaluate needs a model file");
		if (optind + 1 < argc)
			return usage_error("evaluate takes one model file, not '%s' too",
			                   argv[optind + 1]);
		e->model = argv[optind];
		if (e->data.path == NULL)
			return usage_error("evaluate needs --data");
		rc = mlp_train_evaluate(e);
		return rc == 0 ? EXIT_OK : fail(rc);
	}
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	if (t->data.path == NULL)
		return usage_error("no training data (--data PATH)");
	if (t->test.labels && t->test.path == NULL)
		return usage_error("--test-labels without --test-data");
	if (mlp_shape_parse(&t->shape, cl.layers) != 0)
		return fail(MLP_EINVAL);
	rc = mlp_train_run(t);
	return rc == 0 ? EXIT_OK : fail(rc);
}
