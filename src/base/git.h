/*
 * git.h - git repositories.  The only module that includes libgit2.
 */
#ifndef MLP_GIT_H
#define MLP_GIT_H

#include <stdbool.h>

/*
 * Finds the repository that holds path (a file or directory) and returns
 * its HEAD commit as 40 hex digits in *out (the caller frees).  When path
 * is in no repository, or the repository has no commit yet, returns 0 with
 * *out NULL: not being in git is not an error.
 */
int mlp_git_head_commit(char **out, const char *path);

/* ---- mirrors (serve): a bare repository per project ------------------- */

/*
 * Keeps libgit2 initialised between calls, for a process that uses it from
 * several threads (serve): its per-thread state is then released when each
 * thread exits.  Pair with mlp_git_release, after those threads are joined.
 */
void mlp_git_hold(void);
void mlp_git_release(void);

struct mlp_git_creds {
	const char *token_file;   /* HTTPS: the token, sent as the password */
	const char *ssh_key_file; /* SSH: a private key without a passphrase */
};

/*
 * Fetches refs (NULL-terminated refspec sources such as "refs/heads/main";
 * NULL: every branch and tag) from url into the bare mirror at dir,
 * creating it when missing.  Serialised with other processes by a lock
 * file beside the mirror.  MLP_EIO with a message naming the remote.
 */
int mlp_git_mirror_fetch(const char *dir, const char *url, const char *const *refs,
                         const struct mlp_git_creds *creds);

/*
 * Whether ref is a full reference name that git accepts for a branch or a
 * tag a run can start from: "refs/heads/NAME" or "refs/tags/NAME" where
 * the whole is valid by git's rules (git check-ref-format, as libgit2's
 * git_reference_name_is_valid applies them: no "..", no component that
 * starts with "." or ends with ".lock", no control characters, space, "~",
 * "^", ":", "?", "*", "[", "\", no "@{", no "//", no trailing "/" or ".").
 */
bool mlp_git_ref_name_valid(const char *ref);

/* The commit ref ("refs/heads/main") points at in the mirror, as 40 hex
 * digits (the caller frees); MLP_ENOTFOUND with a message. */
int mlp_git_resolve(char **out, const char *dir, const char *ref);

/* The branches of the mirror ("refs/heads/...") and their commits,
 * parallel arrays (free with mlp_git_refs_free). */
int mlp_git_branches(char ***out_refs, char ***out_commits, size_t *n, const char *dir);
void mlp_git_refs_free(char **refs, char **commits, size_t n);

/* Checks that commit (40 hex) is in the mirror and returns its author
 * ("Name <email>") and message (the caller frees both); MLP_ENOTFOUND
 * with a message when it is not there. */
int mlp_git_commit_info(char **out_author, char **out_message, const char *dir, const char *commit);

/* Reads path at commit without a work tree; MLP_ENOTFOUND with a message
 * when it is not there, MLP_EINVAL when it is larger than max. */
int mlp_git_read_file(char **out, size_t *out_len, const char *dir, const char *commit,
                      const char *path, size_t max);

/* Writes the tree of commit into the directory target (created). */
int mlp_git_checkout(const char *dir, const char *commit, const char *target);

#endif
