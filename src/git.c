/*
 * git.c - the libgit2 wrapper (see git.h).
 */
#include "config.h"

#include <git2.h>
#include <stdlib.h>

#include "git.h"
#include "util.h"

int mlp_git_head_commit(char **out, const char *path)
{
	git_buf root = {0};
	git_repository *repo = NULL;
	git_oid oid;
	char hex[GIT_OID_HEXSZ + 1];

	*out = NULL;
	git_libgit2_init();
	if (git_repository_discover(&root, path, 0, NULL) != 0)
		goto done;
	if (git_repository_open(&repo, root.ptr) != 0)
		goto done;
	if (git_reference_name_to_id(&oid, repo, "HEAD") != 0)
		goto done;
	git_oid_tostr(hex, sizeof(hex), &oid);
	*out = xstrdup(hex);
done:
	git_repository_free(repo);
	git_buf_dispose(&root);
	git_libgit2_shutdown();
	return 0;
}
