/*
 * test-exec.c - spawning stage processes: exit codes, signals, output
 * capture, process-group kills that reach grandchildren, bad directories,
 * and stopping a recorded group (TERM, KILL after the grace, pid reuse).
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "base/exec.h"
#include "base/util.h"

extern char **environ;

static int spawn_sh(struct mlp_proc *p, const char *script, const char *cwd)
{
	char *argv[] = {"/bin/sh", "-c", (char *)script, NULL};
	struct mlp_spawn spec = {.argv = argv, .envp = environ, .cwd = cwd, .capture = true};

	return mlp_proc_spawn(p, &spec);
}

/* Reads the process's output until EOF (bounded by 10 s). */
static char *read_all(struct mlp_proc *p)
{
	struct mlp_buf b = {0};
	int64_t end = mlp_mono_ms() + 10000;

	while (mlp_mono_ms() < end) {
		struct pollfd pfd = {.fd = p->out_fd, .events = POLLIN};
		char buf[256];
		ssize_t n;

		if (poll(&pfd, 1, 1000) <= 0)
			continue;
		n = read(p->out_fd, buf, sizeof(buf));
		if (n == 0)
			break;
		if (n > 0)
			mlp_buf_add(&b, buf, (size_t)n);
	}
	return mlp_buf_detach(&b);
}

static void test_exec__captures_stdout_and_stderr(void **state)
{
	struct mlp_proc p;
	struct mlp_exit ex;
	char *out;

	assert_int_equal(spawn_sh(&p, "echo out; echo err >&2; pwd", "/tmp"), 0);
	out = read_all(&p);
	assert_string_equal(out, "out\nerr\n/tmp\n");
	assert_int_equal(mlp_proc_reap(&ex, &p, true), 0);
	assert_int_equal(ex.code, 0);
	assert_int_equal(ex.signal, 0);
	mlp_proc_close(&p);
	free(out);
}

static void test_exec__reports_exit_code_and_signal(void **state)
{
	struct mlp_proc p;
	struct mlp_exit ex;
	char d[64];

	assert_int_equal(spawn_sh(&p, "exit 3", NULL), 0);
	assert_int_equal(mlp_proc_reap(&ex, &p, true), 0);
	assert_int_equal(ex.code, 3);
	mlp_exit_describe(d, sizeof(d), &ex);
	assert_string_equal(d, "exit code 3");
	mlp_proc_close(&p);

	assert_int_equal(spawn_sh(&p, "kill -KILL $$", NULL), 0);
	assert_int_equal(mlp_proc_reap(&ex, &p, true), 0);
	assert_int_equal(ex.code, -1);
	assert_int_equal(ex.signal, SIGKILL);
	mlp_exit_describe(d, sizeof(d), &ex);
	assert_string_equal(d, "killed by SIGKILL");
	mlp_proc_close(&p);
}

static void test_exec__pidfd_is_readable_only_after_exit(void **state)
{
	struct mlp_proc p;
	struct mlp_exit ex;
	struct pollfd pfd;

	assert_int_equal(spawn_sh(&p, "read x; exit 0", NULL), 0);
	/* stdin is /dev/null, so `read` returns at once; wait for it. */
	pfd = (struct pollfd){.fd = p.pidfd, .events = POLLIN};
	assert_int_equal(poll(&pfd, 1, 10000), 1);
	assert_int_equal(mlp_proc_reap(&ex, &p, false), 0);
	assert_int_equal(ex.code, 0);
	mlp_proc_close(&p);

	assert_int_equal(spawn_sh(&p, "sleep 5", NULL), 0);
	pfd = (struct pollfd){.fd = p.pidfd, .events = POLLIN};
	assert_int_equal(poll(&pfd, 1, 50), 0);
	assert_int_equal(mlp_proc_reap(&ex, &p, false), MLP_ETIMEOUT);
	mlp_proc_kill_group(&p, SIGKILL);
	assert_int_equal(mlp_proc_reap(&ex, &p, true), 0);
	assert_int_equal(ex.signal, SIGKILL);
	mlp_proc_close(&p);
}

static bool process_gone(pid_t pid)
{
	char path[64], state = '?';
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (f == NULL)
		return true;
	/* A zombie waiting for an init that does not reap counts as gone. */
	if (fscanf(f, "%*d %*s %c", &state) != 1)
		state = '?';
	fclose(f);
	return state == 'Z' || state == 'X';
}

static void test_exec__group_kill_reaches_grandchildren(void **state)
{
	struct mlp_proc p;
	struct mlp_exit ex;
	char buf[64] = "";
	ssize_t n = 0;
	pid_t grandchild;
	int64_t end;

	/* The shell starts a grandchild that ignores nothing, prints its pid
	 * and waits. */
	assert_int_equal(spawn_sh(&p, "sleep 300 & echo $!; wait", NULL), 0);
	end = mlp_mono_ms() + 10000;
	while (n <= 0 && mlp_mono_ms() < end) {
		struct pollfd pfd = {.fd = p.out_fd, .events = POLLIN};

		if (poll(&pfd, 1, 1000) > 0)
			n = read(p.out_fd, buf, sizeof(buf) - 1);
	}
	assert_true(n > 0);
	buf[n] = '\0';
	grandchild = (pid_t)strtol(buf, NULL, 10);
	assert_true(grandchild > 0);
	assert_true(mlp_proc_group_alive(&p));
	mlp_proc_kill_group(&p, SIGTERM);
	assert_int_equal(mlp_proc_reap(&ex, &p, true), 0);
	end = mlp_mono_ms() + 5000;
	while (!process_gone(grandchild) && mlp_mono_ms() < end)
		usleep(10000);
	assert_true(process_gone(grandchild));
	mlp_proc_close(&p);
}

/* The first output of p (10 s at most): a pid the script printed. */
static pid_t read_pid(struct mlp_proc *p)
{
	char buf[64] = "";
	ssize_t n = 0;
	int64_t end = mlp_mono_ms() + 10000;

	while (n <= 0 && mlp_mono_ms() < end) {
		struct pollfd pfd = {.fd = p->out_fd, .events = POLLIN};

		if (poll(&pfd, 1, 1000) > 0)
			n = read(p->out_fd, buf, sizeof(buf) - 1);
	}
	assert_true(n > 0);
	buf[n] = '\0';
	return (pid_t)strtol(buf, NULL, 10);
}

static void test_exec__identity_names_group_session_and_start(void **state)
{
	struct mlp_proc p;
	struct mlp_proc_identity id, again;
	struct mlp_exit ex;

	assert_int_equal(spawn_sh(&p, "sleep 300", NULL), 0);
	assert_int_equal(mlp_proc_identity(&id, p.pid), 0);
	assert_int_equal(id.pgid, p.pid);
	assert_int_equal(id.session, getsid(0));
	assert_true(id.start_time > 0);
	assert_int_equal(mlp_proc_identity(&again, p.pid), 0);
	assert_true(again.start_time == id.start_time);
	mlp_proc_kill_group(&p, SIGKILL);
	assert_int_equal(mlp_proc_reap(&ex, &p, true), 0);
	mlp_proc_close(&p);
	assert_int_equal(mlp_proc_identity(&id, p.pid), MLP_ENOTFOUND);
}

static void test_exec__group_stop_terms_then_kills_what_ignores_it(void **state)
{
	struct mlp_proc p;
	struct mlp_proc_identity id;
	enum mlp_group_stop how;
	struct mlp_exit ex;
	pid_t grandchild;

	/* A group that shrugs off SIGTERM, grandchild included. */
	assert_int_equal(spawn_sh(&p, "trap '' TERM; sleep 300 & echo $!; wait", NULL), 0);
	grandchild = read_pid(&p);
	assert_true(grandchild > 0);
	assert_int_equal(mlp_proc_identity(&id, p.pid), 0);
	assert_int_equal(mlp_proc_group_stop(&how, &id, 100), 0);
	assert_int_equal(how, MLP_GROUP_KILLED);
	assert_true(process_gone(grandchild));
	/* Stopped once: nothing is left to signal the second time. */
	assert_int_equal(mlp_proc_group_stop(&how, &id, 100), 0);
	assert_int_equal(how, MLP_GROUP_GONE);
	assert_int_equal(mlp_proc_reap(&ex, &p, true), 0);
	assert_int_equal(ex.signal, SIGKILL);
	mlp_proc_close(&p);

	/* One that obeys SIGTERM ends within the grace. */
	assert_int_equal(spawn_sh(&p, "sleep 300 & echo $!; wait", NULL), 0);
	grandchild = read_pid(&p);
	assert_int_equal(mlp_proc_identity(&id, p.pid), 0);
	assert_int_equal(mlp_proc_group_stop(&how, &id, 10000), 0);
	assert_int_equal(how, MLP_GROUP_TERMED);
	assert_true(process_gone(grandchild));
	assert_int_equal(mlp_proc_reap(&ex, &p, true), 0);
	assert_int_equal(ex.signal, SIGTERM);
	mlp_proc_close(&p);
}

static void test_exec__group_stop_spares_a_reused_pid(void **state)
{
	struct mlp_proc p;
	struct mlp_proc_identity id;
	enum mlp_group_stop how;
	struct mlp_exit ex;

	/* The recorded leader started at another time: this live group with
	 * its pid is someone else's and gets no signal. */
	assert_int_equal(spawn_sh(&p, "sleep 300", NULL), 0);
	assert_int_equal(mlp_proc_identity(&id, p.pid), 0);
	id.start_time--;
	assert_int_equal(mlp_proc_group_stop(&how, &id, 100), 0);
	assert_int_equal(how, MLP_GROUP_GONE);
	assert_int_equal(mlp_proc_reap(&ex, &p, false), MLP_ETIMEOUT);
	/* Nor does a group of another session. */
	assert_int_equal(mlp_proc_identity(&id, p.pid), 0);
	id.session++;
	assert_int_equal(mlp_proc_group_stop(&how, &id, 100), 0);
	assert_int_equal(how, MLP_GROUP_GONE);
	assert_int_equal(mlp_proc_reap(&ex, &p, false), MLP_ETIMEOUT);
	mlp_proc_kill_group(&p, SIGKILL);
	assert_int_equal(mlp_proc_reap(&ex, &p, true), 0);
	mlp_proc_close(&p);
}

static void test_exec__missing_directory_is_a_clear_error(void **state)
{
	struct mlp_proc p;

	assert_int_equal(spawn_sh(&p, "true", "/nonexistent/dir"), MLP_EIO);
	assert_string_equal(mlp_error_last(),
	                    "working directory /nonexistent/dir: No such file or directory");
	assert_int_equal(p.pid, -1);
}

static void test_exec__missing_program_is_a_clear_error(void **state)
{
	char *argv[] = {"/nonexistent/program", NULL};
	struct mlp_spawn spec = {.argv = argv, .envp = environ};
	struct mlp_proc p;

	assert_int_equal(mlp_proc_spawn(&p, &spec), MLP_EIO);
	assert_non_null(strstr(mlp_error_last(), "cannot start /nonexistent/program"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_exec__captures_stdout_and_stderr),
	        cmocka_unit_test(test_exec__reports_exit_code_and_signal),
	        cmocka_unit_test(test_exec__pidfd_is_readable_only_after_exit),
	        cmocka_unit_test(test_exec__group_kill_reaches_grandchildren),
	        cmocka_unit_test(test_exec__identity_names_group_session_and_start),
	        cmocka_unit_test(test_exec__group_stop_terms_then_kills_what_ignores_it),
	        cmocka_unit_test(test_exec__group_stop_spares_a_reused_pid),
	        cmocka_unit_test(test_exec__missing_directory_is_a_clear_error),
	        cmocka_unit_test(test_exec__missing_program_is_a_clear_error),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
