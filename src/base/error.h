/*
 * error.h - how mlpipe functions report failure.
 *
 * A fallible function returns 0 on success or a negative MLP_E* code.  The
 * human message is set exactly once, where the failure happens, with
 * mlp_error_set(), and callers pass the code up unchanged.  The message is
 * per thread and lives until the next mlp_error_set() on that thread.
 */
#ifndef MLP_ERROR_H
#define MLP_ERROR_H

enum {
	MLP_OK = 0,
	MLP_ERROR = -1,  /* generic runtime failure */
	MLP_EINVAL = -2, /* invalid input from the user */
	MLP_ENOTFOUND = -3,
	MLP_EIO = -4, /* file system or OS failure */
	MLP_EDB = -5, /* database failure (locked, read-only, corrupt) */
	MLP_EEXISTS = -6,
	MLP_ECANCELLED = -7,
	MLP_ETIMEOUT = -8,
};

/* Records the message for the current thread; returns nothing. */
void mlp_error_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Like mlp_error_set() with ": strerror(errnum)" appended. */
void mlp_error_set_errno(int errnum, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The last message set on this thread, or "unknown error".  Owned by the
 * error module: valid until the next mlp_error_set() on this thread. */
const char *mlp_error_last(void);

/* Forgets the last message. */
void mlp_error_clear(void);

/*
 * Prints "mlpipe: " and the formatted message on stderr: for a failure a
 * library function reports and goes on past (a run whose end could not be
 * recorded still ended), where no caller gets a code to report it by.
 */
void mlp_error_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
