/*
 * coll.c - opening a communicator and dispatching to its backend (coll.h).
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "coll-int.h"
#include "base/error.h"
#include "base/util.h"

#define DEFAULT_TIMEOUT_MS 60000

/* Defined in mlpipe-train when built with NCCL (coll-nccl.c); NULL in
 * programs without it, which then need no NCCL library. */
extern int coll_nccl_open(struct mlp_coll *c, const struct mlp_coll_opts *o) __attribute__((weak));

static int env_int(int *out, const char *name, int dflt, int min, int max)
{
	const char *v = getenv(name);
	long long n;

	if (v == NULL || *v == '\0') {
		*out = dflt;
		return 0;
	}
	if (mlp_parse_int(&n, v, min, max) != 0) {
		mlp_error_set("%s='%s' is not a number from %d to %d", name, v, min, max);
		return MLP_EINVAL;
	}
	*out = (int)n;
	return 0;
}

int mlp_coll_opts_from_env(struct mlp_coll_opts *o)
{
	int rc, timeout_s;

	memset(o, 0, sizeof(*o));
	if ((rc = env_int(&o->world_size, "WORLD_SIZE", 1, 1, RDZV_MAX_RANKS)) != 0 ||
	    (rc = env_int(&o->rank, "RANK", 0, 0, o->world_size - 1)) != 0 ||
	    (rc = env_int(&o->local_world_size, "LOCAL_WORLD_SIZE", o->world_size, 1,
	                  o->world_size)) != 0 ||
	    (rc = env_int(&o->local_rank, "LOCAL_RANK", o->rank, 0, o->local_world_size - 1)) !=
	            0 ||
	    (rc = env_int(&o->group_rank, "GROUP_RANK", 0, 0, RDZV_MAX_RANKS)) != 0 ||
	    (rc = env_int(&o->master_port, "MASTER_PORT", 0, 0, 65535)) != 0 ||
	    (rc = env_int(&timeout_s, "MLPIPE_COLL_TIMEOUT", DEFAULT_TIMEOUT_MS / 1000, 1,
	                  86400)) != 0)
		return rc;
	o->timeout_ms = timeout_s * 1000;
	o->master_addr = getenv("MASTER_ADDR");
	if (o->master_addr == NULL || *o->master_addr == '\0')
		o->master_addr = "127.0.0.1";
	o->run_id = getenv("TORCHELASTIC_RUN_ID");
	o->backend = getenv("MLPIPE_COLL_BACKEND");
	if (o->world_size > 1 && o->master_port == 0) {
		mlp_error_set("WORLD_SIZE is %d but MASTER_PORT is not set", o->world_size);
		return MLP_EINVAL;
	}
	return 0;
}

/* World size 1: nothing to exchange. */
static int local_allreduce(struct mlp_coll *c, void *buf, size_t n, enum coll_dtype t)
{
	return 0;
}

static int local_broadcast(struct mlp_coll *c, void *buf, size_t bytes, int root)
{
	return 0;
}

static int local_barrier(struct mlp_coll *c)
{
	return 0;
}

static void local_close(struct mlp_coll *c)
{
}

static const struct coll_ops local_ops = {
        "local", local_allreduce, local_broadcast, local_barrier, local_close,
};

/* A listener for the TCP ring on an ephemeral port, before the rendezvous
 * so that its port can be announced. */
static int listen_any(uint16_t *port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr = {htonl(INADDR_ANY)}};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 16) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
		mlp_error_set_errno(errno, "cannot open a listener for the TCP ring");
		if (fd >= 0)
			close(fd);
		return MLP_EIO;
	}
	*port = ntohs(sa.sin_port);
	return fd;
}

/*
 * A listener for the TCP ring on an ephemeral port, before the rendezvous
 * so that its port can be announced.  The kernel may hand out the port
 * just chosen as MASTER_PORT, which rank 0 has not bound yet: keep that
 * one while asking for another, then let it go.
 */
static int open_listener(uint16_t *port, int master_port)
{
	int avoided[8], navoided = 0, fd;

	for (;;) {
		fd = listen_any(port);
		if (fd < 0 || (int)*port != master_port || navoided == (int)MLP_ARRAY_SIZE(avoided))
			break;
		avoided[navoided++] = fd;
	}
	while (navoided > 0)
		close(avoided[--navoided]);
	return fd;
}

int mlp_coll_open(struct mlp_coll **out, const struct mlp_coll_opts *o)
{
	struct mlp_coll *c = xcalloc(1, sizeof(*c));
	const char *backend = o->backend && *o->backend ? o->backend : "auto";
	bool one_node = o->local_world_size == o->world_size;
	bool want_tcp;
	uint16_t port = 0;
	int lfd = -1, rc;

	*out = NULL;
	c->rank = o->rank;
	c->world = o->world_size;
	c->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : DEFAULT_TIMEOUT_MS;
	if (strcmp(backend, "auto") != 0 && strcmp(backend, "shm") != 0 &&
	    strcmp(backend, "tcp") != 0 && strcmp(backend, "local") != 0 &&
	    strcmp(backend, "nccl") != 0) {
		mlp_error_set("unknown collective backend '%s' (auto, shm, tcp, nccl)", backend);
		free(c);
		return MLP_EINVAL;
	}
	/* NCCL even at world size 1 when asked for: it then runs for real. */
	if (strcmp(backend, "nccl") == 0) {
		if (coll_nccl_open == NULL) {
			mlp_error_set("the nccl collective backend is not in this program "
			              "(mlpipe-train built with CUDA and NCCL has it)");
			free(c);
			return MLP_EINVAL;
		}
		if ((rc = coll_nccl_open(c, o)) != 0) {
			rdzv_table_free(&c->table);
			free(c);
			return rc;
		}
		*out = c;
		return 0;
	}
	if (c->world == 1) {
		c->ops = &local_ops;
		*out = c;
		return 0;
	}
	if (strcmp(backend, "local") == 0) {
		mlp_error_set("the local backend is for one rank, not %d", c->world);
		free(c);
		return MLP_EINVAL;
	}
	if (strcmp(backend, "shm") == 0 && !one_node) {
		mlp_error_set("the shm backend needs every rank on one node "
		              "(LOCAL_WORLD_SIZE %d, WORLD_SIZE %d)",
		              o->local_world_size, o->world_size);
		free(c);
		return MLP_EINVAL;
	}
	want_tcp = strcmp(backend, "tcp") == 0 || (strcmp(backend, "auto") == 0 && !one_node);
	if (want_tcp && (lfd = open_listener(&port, o->master_port)) < 0) {
		free(c);
		return lfd;
	}
	rc = rdzv_join(&c->table, o->master_addr, o->master_port, o->rank, o->world_size,
	               o->group_rank, port, NULL, c->timeout_ms);
	if (rc == 0)
		rc = want_tcp ? coll_tcp_open(c, o, lfd) : coll_shm_open(c, o);
	if (lfd >= 0)
		close(lfd);
	if (rc != 0) {
		rdzv_table_free(&c->table);
		free(c);
		return rc;
	}
	*out = c;
	return 0;
}

int mlp_coll_rank(const struct mlp_coll *c)
{
	return c->rank;
}

int mlp_coll_world_size(const struct mlp_coll *c)
{
	return c->world;
}

const char *mlp_coll_backend(const struct mlp_coll *c)
{
	return c->ops->name;
}

static int guard(struct mlp_coll *c, int rc)
{
	if (rc != 0)
		c->failed = true;
	return rc;
}

static int check_usable(struct mlp_coll *c)
{
	if (c->failed) {
		mlp_error_set("the communicator failed earlier and cannot be used");
		return MLP_EIO;
	}
	return 0;
}

bool mlp_coll_on_device(const struct mlp_coll *c)
{
	return strcmp(c->ops->name, "nccl") == 0;
}

int mlp_coll_allreduce_avg_f32(struct mlp_coll *c, float *buf, size_t n)
{
	int rc = check_usable(c);

	return rc ? rc : guard(c, c->ops->allreduce(c, buf, n, COLL_F32_AVG));
}

int mlp_coll_allreduce_sum_f64(struct mlp_coll *c, double *buf, size_t n)
{
	int rc = check_usable(c);

	return rc ? rc : guard(c, c->ops->allreduce(c, buf, n, COLL_F64_SUM));
}

int mlp_coll_broadcast(struct mlp_coll *c, void *buf, size_t bytes, int root)
{
	int rc = check_usable(c);

	if (rc == 0 && (root < 0 || root >= c->world)) {
		mlp_error_set("broadcast root %d is not a rank", root);
		return MLP_EINVAL;
	}
	return rc ? rc : guard(c, c->ops->broadcast(c, buf, bytes, root));
}

int mlp_coll_barrier(struct mlp_coll *c)
{
	int rc = check_usable(c);

	return rc ? rc : guard(c, c->ops->barrier(c));
}

void mlp_coll_close(struct mlp_coll *c)
{
	if (c == NULL)
		return;
	c->ops->close(c);
	rdzv_table_free(&c->table);
	free(c);
}
