/*
 * cmd-gate.c - `mlpipe gate`: the thresholds gates judge by.
 *
 *   mlpipe gate set GATE METRIC OP VALUE [--reason TEXT]
 *   mlpipe gate unset GATE METRIC --reason TEXT
 *   mlpipe gate list [GATE] [--json]
 *   mlpipe gate history GATE [--json]
 *
 * The database is the truth for thresholds: a pipeline's require: only
 * seeds those it never had, so an operator tightens a gate here, without a
 * commit, and the next run's gate uses the new value.  Every change is
 * kept with who made it, when and why.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cmd.h"
#include "base/error.h"
#include "deploy/gate.h"
#include "base/json.h"
#include "store/store.h"
#include "store/store-models.h"
#include "base/util.h"

/* "OP VALUE", or "(none)" when op is NULL. */
static void fmt_rule(char *buf, size_t size, const char *op, double value)
{
	char v[32];

	if (op == NULL) {
		snprintf(buf, size, "(none)");
		return;
	}
	mlp_gate_format_number(v, sizeof(v), value);
	snprintf(buf, size, "%s %s", op, v);
}

/* OP as typed: the symbols, or ge/gt/le/lt, which need no shell quoting. */
static int parse_op(enum mlp_gate_op *out, const char *text)
{
	static const struct {
		const char *word;
		enum mlp_gate_op op;
	} words[] = {
	        {"ge", MLP_OP_GE},
	        {"gt", MLP_OP_GT},
	        {"le", MLP_OP_LE},
	        {"lt", MLP_OP_LT},
	};

	if (mlp_gate_op_parse(out, text) == 0)
		return 0;
	for (size_t i = 0; i < MLP_ARRAY_SIZE(words); i++) {
		if (strcmp(words[i].word, text) == 0) {
			*out = words[i].op;
			return 0;
		}
	}
	return MLP_EINVAL;
}

static int gate_set(struct mlp_store *s, char **args, const char *reason)
{
	enum mlp_gate_op op;
	double value;
	char *user, *old_op = NULL, was[64], now[64];
	struct mlp_gate_threshold *t = NULL;
	size_t n = 0;
	bool changed;
	double old_value = 0;
	int status = MLP_EXIT_USAGE;

	if (args[0][0] == '\0' || args[1][0] == '\0')
		return mlp_cmd_usage_error(&mlp_cmd_gate, "GATE and METRIC cannot be empty");
	if (parse_op(&op, args[2]) != 0)
		return mlp_cmd_usage_error(&mlp_cmd_gate,
		                           "OP must be one of >= > <= < (or ge gt "
		                           "le lt), not '%s'",
		                           args[2]);
	if (mlp_parse_double(&value, args[3]) != 0)
		return mlp_cmd_usage_error(&mlp_cmd_gate,
		                           "VALUE must be a finite number, not "
		                           "'%s'",
		                           args[3]);
	user = mlp_cmd_current_user();
	/* The value before, for the message (the history has it too). */
	if (mlp_store_gate_thresholds_list(&t, &n, s, args[0]) != 0)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(t[i].metric, args[1]) == 0) {
			old_op = xstrdup(t[i].op);
			old_value = t[i].value;
		}
	}
	if (mlp_store_gate_threshold_set(&changed, s, args[0], args[1], mlp_gate_op_text(op), value,
	                                 user, reason) != 0)
		goto fail;
	fmt_rule(was, sizeof(was), old_op, old_value);
	fmt_rule(now, sizeof(now), mlp_gate_op_text(op), value);
	if (!changed)
		printf("gate %s: %s %s (unchanged)\n", args[0], args[1], now);
	else if (old_op)
		printf("gate %s: %s %s (was %s)\n", args[0], args[1], now, was);
	else
		printf("gate %s: %s %s (new)\n", args[0], args[1], now);
	/* A new metric next to one with a near name is most likely a typo:
	 * the threshold stands (the gate will fail on the missing metric, which
	 * is safe), but say so now rather than at the next run. */
	if (old_op == NULL && n > 0) {
		const char **names = xcalloc(n, sizeof(*names));
		const char *near;

		for (size_t i = 0; i < n; i++)
			names[i] = t[i].metric;
		near = mlp_suggest(args[1], names, n);
		if (near)
			fprintf(stderr,
			        "mlpipe: warning: gate %s already has a threshold on '%s'; "
			        "'%s' is a new metric (a typo? undo with: mlpipe gate unset %s %s "
			        "--reason ...)\n",
			        args[0], near, args[1], args[0], args[1]);
		free(names);
	}
	status = MLP_EXIT_OK;
	goto done;
fail:
	mlp_cmd_error("%s", mlp_error_last());
done:
	mlp_gate_threshold_free_all(t, n);
	free(old_op);
	free(user);
	return status;
}

static int gate_unset(struct mlp_store *s, char **args, const char *reason)
{
	char *user = mlp_cmd_current_user();
	int status = MLP_EXIT_OK;

	if (mlp_store_gate_threshold_unset(s, args[0], args[1], user, reason) != 0) {
		mlp_cmd_error("%s", mlp_error_last());
		status = MLP_EXIT_USAGE;
	} else {
		printf("gate %s: %s removed (a pipeline's require: will not bring it back)\n",
		       args[0], args[1]);
	}
	free(user);
	return status;
}

static int gate_list(struct mlp_store *s, const char *gate, bool json)
{
	struct mlp_gate_threshold *t = NULL;
	size_t n = 0;

	if (mlp_store_gate_thresholds_list(&t, &n, s, gate) != 0) {
		mlp_cmd_error("%s", mlp_error_last());
		return MLP_EXIT_USAGE;
	}
	if (json) {
		struct mlp_json *arr = mlp_json_array();

		for (size_t i = 0; i < n; i++) {
			struct mlp_json *o = mlp_json_object();

			mlp_json_add_string(o, "gate", t[i].gate);
			mlp_json_add_string(o, "metric", t[i].metric);
			mlp_json_add_string(o, "op", t[i].op);
			mlp_json_add_number(o, "value", t[i].value);
			mlp_cmd_json_time(o, "updated_at", t[i].updated_at);
			mlp_json_add_string(o, "updated_by", t[i].updated_by);
			mlp_json_append(arr, o);
		}
		mlp_gate_threshold_free_all(t, n);
		return mlp_cmd_print_json(arr);
	}
	if (n == 0) {
		if (gate)
			printf("gate %s has no thresholds\n", gate);
		else
			printf("no thresholds yet (mlpipe gate set GATE METRIC OP VALUE, or a "
			       "gate's require:)\n");
	} else {
		printf("%-20s %-20s %-16s %-20s  %s\n", "GATE", "METRIC", "THRESHOLD", "UPDATED",
		       "BY");
		for (size_t i = 0; i < n; i++) {
			char rule[64], at[32];

			fmt_rule(rule, sizeof(rule), t[i].op, t[i].value);
			mlp_format_time(at, sizeof(at), t[i].updated_at);
			printf("%-20s %-20s %-16s %-20s  %s\n", t[i].gate, t[i].metric, rule, at,
			       t[i].updated_by ? t[i].updated_by : "-");
		}
	}
	mlp_gate_threshold_free_all(t, n);
	return MLP_EXIT_OK;
}

static int gate_history(struct mlp_store *s, const char *gate, bool json)
{
	struct mlp_gate_threshold_change *c = NULL;
	size_t n = 0;

	if (mlp_store_gate_history(&c, &n, s, gate) != 0) {
		mlp_cmd_error("%s", mlp_error_last());
		return MLP_EXIT_USAGE;
	}
	if (n == 0) {
		mlp_gate_threshold_change_free_all(c, n);
		mlp_cmd_error("no gate '%s': it never had a threshold", gate);
		return MLP_EXIT_USAGE;
	}
	if (json) {
		struct mlp_json *arr = mlp_json_array();

		for (size_t i = 0; i < n; i++) {
			struct mlp_json *o = mlp_json_object();

			mlp_json_add_string(o, "metric", c[i].metric);
			mlp_json_add_string(o, "old_op", c[i].old_op);
			if (c[i].old_op)
				mlp_json_add_number(o, "old_value", c[i].old_value);
			else
				mlp_json_add_null(o, "old_value");
			mlp_json_add_string(o, "new_op", c[i].new_op);
			if (c[i].new_op)
				mlp_json_add_number(o, "new_value", c[i].new_value);
			else
				mlp_json_add_null(o, "new_value");
			mlp_json_add_string(o, "user", c[i].user);
			mlp_cmd_json_time(o, "at", c[i].at);
			mlp_json_add_string(o, "reason", c[i].reason);
			mlp_json_add_string(o, "source", c[i].source);
			mlp_json_append(arr, o);
		}
		mlp_gate_threshold_change_free_all(c, n);
		return mlp_cmd_print_json(arr);
	}
	printf("%-20s %-12s %-13s %-16s %-29s %s\n", "AT", "USER", "SOURCE", "METRIC", "CHANGE",
	       "REASON");
	for (size_t i = 0; i < n; i++) {
		char at[32], from[64], to[64], change[160];

		mlp_format_time(at, sizeof(at), c[i].at);
		fmt_rule(from, sizeof(from), c[i].old_op, c[i].old_value);
		fmt_rule(to, sizeof(to), c[i].new_op, c[i].new_value);
		if (c[i].new_op == NULL)
			snprintf(to, sizeof(to), "(removed)");
		snprintf(change, sizeof(change), "%s -> %s", from, to);
		printf("%-20s %-12s %-13s %-16s %-29s %s\n", at, c[i].user ? c[i].user : "-",
		       c[i].source, c[i].metric, change, c[i].reason ? c[i].reason : "");
	}
	mlp_gate_threshold_change_free_all(c, n);
	return MLP_EXIT_OK;
}

static int gate_exec(int argc, char **argv)
{
	static const struct option opts[] = {
	        {"json", no_argument, NULL, 'J'},
	        {"reason", required_argument, NULL, 'm'},
	        {"db", required_argument, NULL, 'd'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	static const struct {
		const char *name;
		int min, max; /* arguments after the subcommand */
		bool writes;
		const char *usage;
	} subs[] = {
	        {"set", 4, 4, true, "set GATE METRIC OP VALUE [--reason TEXT]"},
	        {"unset", 2, 2, true, "unset GATE METRIC --reason TEXT"},
	        {"list", 0, 1, false, "list [GATE] [--json]"},
	        {"history", 1, 1, false, "history GATE [--json]"},
	};
	struct mlp_store *s = NULL;
	const char *db = NULL, *reason = NULL;
	bool json = false;
	size_t which = 0;
	int c, status, nargs;

	/* Options may come anywhere (getopt permutes), so a negative VALUE
	 * goes after "--", as the help says. */
	while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
		switch (c) {
		case 'J':
			json = true;
			break;
		case 'm':
			reason = optarg;
			break;
		case 'd':
			db = optarg;
			break;
		case 'h':
			mlp_cmd_print_help(&mlp_cmd_gate, stdout);
			return MLP_EXIT_OK;
		default:
			return mlp_cmd_usage_error(&mlp_cmd_gate, "unknown option");
		}
	}
	nargs = argc - optind;
	if (nargs == 0)
		return mlp_cmd_usage_error(&mlp_cmd_gate, "which: set, unset, list or history?");
	for (which = 0; which < MLP_ARRAY_SIZE(subs); which++)
		if (strcmp(subs[which].name, argv[optind]) == 0)
			break;
	if (which == MLP_ARRAY_SIZE(subs))
		return mlp_cmd_usage_error(&mlp_cmd_gate,
		                           "unknown subcommand '%s' (set, unset, "
		                           "list, history)",
		                           argv[optind]);
	if (nargs - 1 < subs[which].min || nargs - 1 > subs[which].max)
		return mlp_cmd_usage_error(&mlp_cmd_gate, "usage: mlpipe gate %s",
		                           subs[which].usage);
	if (strcmp(subs[which].name, "unset") == 0 && (reason == NULL || reason[0] == '\0'))
		return mlp_cmd_usage_error(&mlp_cmd_gate, "unset needs --reason TEXT (it is "
		                                          "recorded with your name)");
	if (!subs[which].writes && reason)
		return mlp_cmd_usage_error(&mlp_cmd_gate, "--reason is for set and unset");
	if (subs[which].writes && json)
		return mlp_cmd_usage_error(&mlp_cmd_gate, "--json is for list and history");
	if (mlp_store_open(&s, db, subs[which].writes ? 0 : MLP_STORE_READONLY) != 0) {
		mlp_cmd_error("%s", mlp_error_last());
		return MLP_EXIT_USAGE;
	}
	switch (which) {
	case 0:
		status = gate_set(s, argv + optind + 1, reason);
		break;
	case 1:
		status = gate_unset(s, argv + optind + 1, reason);
		break;
	case 2:
		status = gate_list(s, nargs > 1 ? argv[optind + 1] : NULL, json);
		break;
	default:
		status = gate_history(s, argv[optind + 1], json);
		break;
	}
	mlp_store_close(s);
	return status;
}

const struct mlp_cmd mlp_cmd_gate = {
        .name = "gate",
        .args = "set GATE METRIC OP VALUE [--reason TEXT] | unset GATE METRIC --reason TEXT"
                " | list [GATE] [--json] | history GATE [--json]",
        .summary = "Set, list and audit the thresholds gates judge models by.",
        .help = "Thresholds live in the database, which is the truth: a gate stage's\n"
                "require: only seeds a threshold the database never had, so changing\n"
                "one here takes effect on the next run with no change to the pipeline.\n"
                "GATE is the name of the model the gate guards, unless the gate stage\n"
                "gives itself a name:.\n\n"
                "  mlpipe gate set fashion accuracy '>=' 0.9 --reason \"raise the bar\"\n"
                "  mlpipe gate set fashion loss le 0.35       (ge gt le lt need no quotes)\n"
                "  mlpipe gate unset fashion loss --reason \"loss is not comparable\"\n"
                "  mlpipe gate list                           every gate's thresholds\n"
                "  mlpipe gate history fashion                every change: old and new\n"
                "                                             value, user, time, reason\n\n"
                "OP is one of >= > <= < (quote them: the shell reads > as a redirection)\n"
                "or ge gt le lt.  A negative VALUE goes after --:\n"
                "  mlpipe gate set fashion margin ge -- -0.5\n\n"
                "Options:\n"
                "  -m, --reason TEXT     why (recorded; required for unset)\n"
                "  --json                machine-readable output (list and history)\n"
                "  --db PATH             the database\n\n"
                "Exit code: 0 done, 2 bad usage or no such gate or threshold.\n",
        .exec = gate_exec,
};
