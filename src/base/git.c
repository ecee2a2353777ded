/*
 * git.c - the libgit2 wrapper (see git.h).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <git2.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "base/git.h"
#include "base/util.h"

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

bool mlp_git_ref_name_valid(const char *ref)
{
	int valid = 0;

	if (ref == NULL ||
	    (strncmp(ref, "refs/heads/", 11) != 0 && strncmp(ref, "refs/tags/", 10) != 0))
		return false;
	git_libgit2_init();
	return git_reference_name_is_valid(&valid, ref) == 0 && valid;
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

/* ---- mirrors ------------------------------------------------------------- */

static int git_fail(int code, const char *doing)
{
	const git_error *e = git_error_last();

	mlp_error_set("%s: %s", doing, e && e->message ? e->message : "libgit2 error");
	return code;
}

struct creds_payload {
	const struct mlp_git_creds *creds;
	int calls;
	bool offered_key; /* the last offer was the SSH key, not the token */
	char *why;        /* why the fetch failed, when libgit2 has no message for it */
};

static void creds_fail(struct creds_payload *cp, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

static void creds_fail(struct creds_payload *cp, const char *fmt, ...)
{
	va_list ap;

	if (cp->why)
		return;
	va_start(ap, fmt);
	cp->why = xvasprintf(fmt, ap);
	va_end(ap);
}

/*
 * libgit2 calls this again after each refusal: bounded, or it loops.  When
 * it gives up it returns GIT_EUSER, for which libgit2 sets no message: the
 * reason is kept in the payload for mlp_git_mirror_fetch to report.
 */
static int credentials(git_credential **out, const char *url, const char *user,
                       unsigned int allowed, void *payload)
{
	struct creds_payload *cp = payload;
	int rc = GIT_PASSTHROUGH;

	(void)url;
	if (cp->creds == NULL ||
	    (cp->creds->ssh_key_file == NULL && cp->creds->token_file == NULL)) {
		creds_fail(cp, "the remote asks for credentials; give the project "
		               "--token-file or --ssh-key");
		return GIT_EUSER;
	}
	if (++cp->calls > 2) {
		if (cp->offered_key)
			creds_fail(cp,
			           "authentication failed: the server refused the SSH key %s "
			           "for user %s (2 attempts)",
			           cp->creds->ssh_key_file, user ? user : "git");
		else
			creds_fail(cp,
			           "authentication failed: the server refused the token in %s "
			           "(2 attempts; sent as the password of user x-access-token)",
			           cp->creds->token_file);
		return GIT_EUSER;
	}
	cp->offered_key = (allowed & GIT_CREDENTIAL_SSH_KEY) && cp->creds->ssh_key_file;
	if (cp->offered_key)
		rc = git_credential_ssh_key_new(out, user ? user : "git", NULL,
		                                cp->creds->ssh_key_file, NULL);
	else if ((allowed & GIT_CREDENTIAL_USERPASS_PLAINTEXT) && cp->creds->token_file) {
		char *token = NULL;
		size_t len;

		if (mlp_read_file(&token, &len, cp->creds->token_file, 4096) != 0) {
			creds_fail(cp, "%s", mlp_error_last());
			return GIT_EUSER;
		}
		while (len > 0 && (token[len - 1] == '\n' || token[len - 1] == '\r'))
			token[--len] = '\0';
		rc = git_credential_userpass_plaintext_new(out, "x-access-token", token);
		explicit_bzero(token, len);
		free(token);
	} else {
		creds_fail(cp, "the remote does not take the project's credentials (%s)",
		           cp->creds->ssh_key_file ? "an SSH key" : "a token");
		return GIT_EUSER;
	}
	return rc;
}

/* base64 without padding, as OpenSSH prints SHA256 fingerprints. */
static void base64_nopad(char *out, const unsigned char *in, size_t n)
{
	static const char digits[] =
	        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 0;

	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16;

		if (i + 1 < n)
			v |= (uint32_t)in[i + 1] << 8;
		if (i + 2 < n)
			v |= in[i + 2];
		out[o++] = digits[(v >> 18) & 63];
		out[o++] = digits[(v >> 12) & 63];
		if (i + 1 < n)
			out[o++] = digits[(v >> 6) & 63];
		if (i + 2 < n)
			out[o++] = digits[v & 63];
	}
	out[o] = '\0';
}

/*
 * libgit2 1.5 checks an SSH server's host key against ~/.ssh/known_hosts
 * (of the user running mlpipe) before calling this, and refuses a host
 * that is not there or whose key differs, with a message that names
 * neither the host nor the key.  This only words that refusal so that an
 * operator can check the fingerprint and add the key; it never accepts a
 * key libgit2 did not.  TLS certificates are left to libgit2 as they are.
 */
static int certificate_check(git_cert *cert, int valid, const char *host, void *payload)
{
	struct creds_payload *cp = payload;

	if (valid || cert->cert_type != GIT_CERT_HOSTKEY_LIBSSH2)
		return GIT_PASSTHROUGH;
	{
		const git_cert_hostkey *hk = (const git_cert_hostkey *)cert;
		const char *home = getenv("HOME");
		char fp[64] = "unknown fingerprint";

		if (hk->type & GIT_CERT_SSH_SHA256) {
			memcpy(fp, "SHA256:", 7);
			base64_nopad(fp + 7, hk->hash_sha256, sizeof(hk->hash_sha256));
		}
		creds_fail(cp,
		           "the SSH host key of %s (%s) is unknown or has changed: it is not "
		           "in %s/.ssh/known_hosts; check the fingerprint and add the key "
		           "(ssh-keyscan) if it is the server's",
		           host ? host : "the server", fp, home && *home ? home : "~");
	}
	return GIT_ECERTIFICATE;
}

int mlp_git_mirror_fetch(const char *dir, const char *url, const char *const *refs,
                         const struct mlp_git_creds *creds)
{
	static char *all[] = {"+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"};
	git_repository *repo = NULL;
	git_remote *remote = NULL;
	git_fetch_options fo;
	git_remote_create_options ro;
	git_strarray specs = {all, 2};
	struct creds_payload cp = {creds, 0, false, NULL};
	char **owned = NULL;
	size_t nrefs = 0;
	char *lock = xasprintf("%s.lock", dir);
	int fd, rc = MLP_EIO;

	git_libgit2_init();
	git_fetch_options_init(&fo, GIT_FETCH_OPTIONS_VERSION);
	{
		char *parent = mlp_dirname(dir);

		mlp_mkdirs(parent, 0755);
		free(parent);
	}
	fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		mlp_error_set_errno(errno, "cannot create %s", lock);
		goto done;
	}
	while (flock(fd, LOCK_EX) != 0 && errno == EINTR)
		;
	if (git_repository_open_bare(&repo, dir) != 0 && git_repository_init(&repo, dir, 1) != 0) {
		rc = git_fail(MLP_EIO, "cannot create the mirror");
		goto done;
	}
	if (refs && refs[0]) {
		while (refs[nrefs])
			nrefs++;
		owned = xcalloc(nrefs, sizeof(*owned));
		for (size_t i = 0; i < nrefs; i++)
			owned[i] = xasprintf("+%s:%s", refs[i], refs[i]);
		specs.strings = owned;
		specs.count = nrefs;
	}
	/* The URL as given: no insteadOf rewriting from the user's config
	 * (whose regex matching also leaks in libgit2 1.5 off the main
	 * thread). */
	git_remote_create_options_init(&ro, GIT_REMOTE_CREATE_OPTIONS_VERSION);
	ro.repository = repo;
	ro.flags = GIT_REMOTE_CREATE_SKIP_INSTEADOF | GIT_REMOTE_CREATE_SKIP_DEFAULT_FETCHSPEC;
	if (git_remote_create_with_opts(&remote, url, &ro) != 0) {
		rc = git_fail(MLP_EIO, "bad remote");
		goto done;
	}
	fo.callbacks.credentials = credentials;
	fo.callbacks.certificate_check = certificate_check;
	fo.callbacks.payload = &cp;
	fo.prune = GIT_FETCH_NO_PRUNE;
	fo.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_NONE;
	if (git_remote_fetch(remote, &specs, &fo, NULL) != 0) {
		char *doing = xasprintf("fetching from %s", url);

		if (cp.why)
			mlp_error_set("%s: %s", doing, cp.why);
		else
			rc = git_fail(MLP_EIO, doing);
		free(doing);
		goto done;
	}
	rc = 0;
done:
	for (size_t i = 0; i < nrefs; i++)
		free(owned[i]);
	free(owned);
	free(cp.why);
	git_remote_free(remote);
	git_repository_free(repo);
	if (fd >= 0)
		close(fd);
	free(lock);
	git_libgit2_shutdown();
	return rc;
}

static int open_mirror(git_repository **repo, const char *dir)
{
	git_libgit2_init();
	if (git_repository_open_bare(repo, dir) != 0) {
		char *doing = xasprintf("cannot open the mirror %s", dir);
		int rc = git_fail(MLP_ENOTFOUND, doing);

		free(doing);
		git_libgit2_shutdown();
		return rc;
	}
	return 0;
}

static void close_mirror(git_repository *repo)
{
	git_repository_free(repo);
	git_libgit2_shutdown();
}

int mlp_git_resolve(char **out, const char *dir, const char *ref)
{
	git_repository *repo;
	git_oid oid;
	char hex[GIT_OID_HEXSZ + 1];
	int rc;

	*out = NULL;
	if ((rc = open_mirror(&repo, dir)) != 0)
		return rc;
	if (git_reference_name_to_id(&oid, repo, ref) != 0) {
		mlp_error_set("%s is not in the mirror", ref);
		rc = MLP_ENOTFOUND;
	} else {
		git_oid_tostr(hex, sizeof(hex), &oid);
		*out = xstrdup(hex);
	}
	close_mirror(repo);
	return rc;
}

int mlp_git_branches(char ***out_refs, char ***out_commits, size_t *n, const char *dir)
{
	git_repository *repo;
	git_reference_iterator *it = NULL;
	git_reference *ref;
	size_t len = 0, cap = 0, cap2 = 0;
	int rc;

	*out_refs = *out_commits = NULL;
	*n = 0;
	if ((rc = open_mirror(&repo, dir)) != 0)
		return rc;
	if (git_reference_iterator_glob_new(&it, repo, "refs/heads/*") != 0) {
		rc = git_fail(MLP_EIO, "listing branches");
		goto done;
	}
	while (git_reference_next(&ref, it) == 0) {
		const git_oid *oid = git_reference_target(ref);

		if (oid) {
			char hex[GIT_OID_HEXSZ + 1];

			git_oid_tostr(hex, sizeof(hex), oid);
			xgrow((void **)out_refs, &cap, len + 1, sizeof(char *));
			xgrow((void **)out_commits, &cap2, len + 1, sizeof(char *));
			(*out_refs)[len] = xstrdup(git_reference_name(ref));
			(*out_commits)[len++] = xstrdup(hex);
		}
		git_reference_free(ref);
	}
	*n = len;
done:
	git_reference_iterator_free(it);
	close_mirror(repo);
	return rc;
}

void mlp_git_refs_free(char **refs, char **commits, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(refs[i]);
		free(commits[i]);
	}
	free(refs);
	free(commits);
}

static int lookup_commit(git_commit **out, git_repository *repo, const char *hex)
{
	git_oid oid;

	if (strlen(hex) != GIT_OID_HEXSZ || git_oid_fromstr(&oid, hex) != 0 ||
	    git_commit_lookup(out, repo, &oid) != 0) {
		mlp_error_set("commit %.64s is not in the mirror", hex);
		return MLP_ENOTFOUND;
	}
	return 0;
}

int mlp_git_commit_info(char **out_author, char **out_message, const char *dir, const char *commit)
{
	git_repository *repo;
	git_commit *c = NULL;
	int rc;

	*out_author = *out_message = NULL;
	if ((rc = open_mirror(&repo, dir)) != 0)
		return rc;
	if ((rc = lookup_commit(&c, repo, commit)) == 0) {
		const git_signature *a = git_commit_author(c);
		const char *msg = git_commit_message(c);

		*out_author = xasprintf("%s <%s>", a && a->name ? a->name : "",
		                        a && a->email ? a->email : "");
		*out_message = xstrdup(msg ? msg : "");
	}
	git_commit_free(c);
	close_mirror(repo);
	return rc;
}

int mlp_git_read_file(char **out, size_t *out_len, const char *dir, const char *commit,
                      const char *path, size_t max)
{
	git_repository *repo;
	git_commit *c = NULL;
	git_tree *tree = NULL;
	git_tree_entry *entry = NULL;
	git_blob *blob = NULL;
	int rc;

	*out = NULL;
	*out_len = 0;
	if ((rc = open_mirror(&repo, dir)) != 0)
		return rc;
	if ((rc = lookup_commit(&c, repo, commit)) != 0)
		goto done;
	if (git_commit_tree(&tree, c) != 0 || git_tree_entry_bypath(&entry, tree, path) != 0 ||
	    git_tree_entry_type(entry) != GIT_OBJECT_BLOB ||
	    git_blob_lookup(&blob, repo, git_tree_entry_id(entry)) != 0) {
		mlp_error_set("%s is not in commit %.12s", path, commit);
		rc = MLP_ENOTFOUND;
		goto done;
	}
	if ((size_t)git_blob_rawsize(blob) > max) {
		mlp_error_set("%s at %.12s is larger than %zu bytes", path, commit, max);
		rc = MLP_EINVAL;
		goto done;
	}
	*out_len = (size_t)git_blob_rawsize(blob);
	*out = xmalloc(*out_len + 1);
	memcpy(*out, git_blob_rawcontent(blob), *out_len);
	(*out)[*out_len] = '\0';
done:
	git_blob_free(blob);
	git_tree_entry_free(entry);
	git_tree_free(tree);
	git_commit_free(c);
	close_mirror(repo);
	return rc;
}

int mlp_git_checkout(const char *dir, const char *commit, const char *target)
{
	git_repository *repo;
	git_commit *c = NULL;
	git_checkout_options co;
	int rc;

	if (mlp_mkdirs(target, 0755) != 0)
		return MLP_EIO;
	if ((rc = open_mirror(&repo, dir)) != 0)
		return rc;
	if ((rc = lookup_commit(&c, repo, commit)) != 0)
		goto done;
	git_checkout_options_init(&co, GIT_CHECKOUT_OPTIONS_VERSION);
	co.checkout_strategy = GIT_CHECKOUT_FORCE;
	co.target_directory = target;
	if (git_checkout_tree(repo, (const git_object *)c, &co) != 0)
		rc = git_fail(MLP_EIO, "checking out the workspace");
done:
	git_commit_free(c);
	close_mirror(repo);
	return rc;
}

void mlp_git_hold(void)
{
	git_libgit2_init();
}

void mlp_git_release(void)
{
	git_libgit2_shutdown();
}
