/*
 * git.h - git repositories.  The only module that includes libgit2.
 */
#ifndef MLP_GIT_H
#define MLP_GIT_H

/*
 * Finds the repository that holds path (a file or directory) and returns
 * its HEAD commit as 40 hex digits in *out (the caller frees).  When path
 * is in no repository, or the repository has no commit yet, returns 0 with
 * *out NULL: not being in git is not an error.
 */
int mlp_git_head_commit(char **out, const char *path);

#endif
