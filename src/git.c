/*
 * git.c - the libgit2 wrapper (see git.h).
 */
#include "config.h"

#include <git2.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "git.h"
#include "util.h"

/*
 * Whether some directory from path up to / holds a .git.  libgit2's
 * initialisation parses the system's CA bundle (about 9 ms here), so a
 * pipeline outside any repository should not pay for it.
 */
static bool inside_work_tree(const char *path)
{
	char *dir = xstrdup(path);
	bool found = false;

	for (;;) {
		char *probe = xasprintf("%s/.git", dir[0] ? dir : "");
		struct stat st;
		char *slash;

		found = stat(probe, &st) == 0;
		free(probe);
		slash = strrchr(dir, '/');
		if (found || slash == NULL)
			break;
		*slash = '\0';
	}
	free(dir);
	return found;
}

int mlp_git_head_commit(char **out, const char *path)
{
	git_buf root = {0};
	git_repository *repo = NULL;
	git_oid oid;
	char hex[GIT_OID_HEXSZ + 1];

	*out = NULL;
	if (path[0] != '/' || !inside_work_tree(path))
		return 0;
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
