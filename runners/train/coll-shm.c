/*
 * coll-shm.c - collectives between ranks on one node, through one shared
 * memory segment.
 *
 * Allreduce, per chunk, with the chunk cut into one share per rank: every
 * rank copies into its slot the shares the others own; barrier; rank r
 * sums share r (its own part read straight from its buffer, the others'
 * from their slots, in rank order) into its buffer and its slot; barrier;
 * every rank copies the others' reduced shares out of their slots.  Only
 * the owner computes a share and everyone copies its result, so all ranks
 * end bit-identical.  Per rank that moves about 2 bytes per byte of
 * buffer, where copying everything in and out would move 2.5.  Two sets
 * of slots alternate, so that a chunk's copy-in never waits for the
 * previous chunk's copy-out: two barriers per chunk, not three.
 *
 * A barrier is one sequence number per rank, each on its own cache line:
 * a rank stores its number and waits until everyone's has reached it,
 * spinning a little (a training step's ranks arrive within microseconds of
 * each other) and then sleeping on a futex, waking every 100 ms to check
 * that the peer it waits for is still alive and that the timeout has not
 * passed.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "coll-int.h"
#include "base/error.h"
#include "base/util.h"

#define SHM_MAGIC 0x4d4c5053u /* "MLPS" */
#define SHM_MAX_RANKS 64
#define SLOT_BYTES ((size_t)2 << 20)
#define SPIN_LIMIT 20000

struct seq_line {
	_Atomic uint32_t seq;
	char pad[60];
};

struct shm_hdr {
	_Atomic uint32_t magic; /* written last by rank 0 */
	uint32_t world;
	uint64_t token;
	uint64_t slot_bytes;
	_Atomic uint32_t sleepers;
	char pad[36];
	struct seq_line arrive[SHM_MAX_RANKS];
};

struct shm {
	struct shm_hdr *hdr;
	char *data; /* 2 sets x world slots */
	size_t map_bytes;
	char name[64];
	bool unlinked;
	uint32_t epoch; /* barriers passed; the same on every rank */
	int set;        /* which set of slots the next chunk uses */
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

static char *slot(struct mlp_coll *c, int set, int rank)
{
	struct shm *s = c->impl;

	return s->data + ((size_t)set * (size_t)c->world + (size_t)rank) * s->hdr->slot_bytes;
}

static long futex(_Atomic uint32_t *addr, int op, uint32_t val, const struct timespec *ts)
{
	return syscall(SYS_futex, (uint32_t *)addr, op, val, ts, NULL, 0);
}

/* Whether a peer's process has gone (a zombie counts as gone). */
static bool peer_dead(pid_t pid)
{
	char path[64], buf[256];
	int fd;
	ssize_t n;
	char *close_paren;

	if (kill(pid, 0) != 0 && errno == ESRCH)
		return true;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	close_paren = strrchr(buf, ')');
	return close_paren && (close_paren[2] == 'Z' || close_paren[2] == 'X');
}

static bool reached(uint32_t have, uint32_t want)
{
	return (int32_t)(have - want) >= 0;
}

static int wait_for(struct mlp_coll *c, int j, uint32_t want)
{
	struct shm *s = c->impl;
	_Atomic uint32_t *seq = &s->hdr->arrive[j].seq;
	int64_t deadline;

	for (int k = 0; k < SPIN_LIMIT; k++) {
		if (reached(atomic_load_explicit(seq, memory_order_acquire), want))
			return 0;
		cpu_relax();
	}
	deadline = mlp_mono_ms() + c->timeout_ms;
	for (;;) {
		struct timespec ts = {0, 100 * 1000 * 1000};
		uint32_t v;

		atomic_fetch_add(&s->hdr->sleepers, 1);
		v = atomic_load(seq);
		if (!reached(v, want))
			futex(seq, FUTEX_WAIT, v, &ts);
		atomic_fetch_sub(&s->hdr->sleepers, 1);
		if (reached(atomic_load_explicit(seq, memory_order_acquire), want))
			return 0;
		if (peer_dead(c->table.peers[j].pid)) {
			mlp_error_set("rank %d (pid %d) died during a collective", j,
			              c->table.peers[j].pid);
			return MLP_EIO;
		}
		if (mlp_mono_ms() > deadline) {
			mlp_error_set("timed out after %d s waiting for rank %d (pid %d) in a "
			              "collective",
			              c->timeout_ms / 1000, j, c->table.peers[j].pid);
			return MLP_ETIMEOUT;
		}
	}
}

static int barrier(struct mlp_coll *c)
{
	struct shm *s = c->impl;
	uint32_t want = ++s->epoch;
	_Atomic uint32_t *mine = &s->hdr->arrive[c->rank].seq;

	atomic_store(mine, want);
	if (atomic_load(&s->hdr->sleepers) > 0)
		futex(mine, FUTEX_WAKE, INT32_MAX, NULL);
	for (int j = 0; j < c->world; j++) {
		int rc;

		if (j != c->rank && (rc = wait_for(c, j, want)) != 0)
			return rc;
	}
	return 0;
}

static void reduce_f32(float *restrict out, float *restrict out2, const float *const *in, int world,
                       size_t lo, size_t hi, float scale)
{
	if (world == 2) {
		const float *restrict a = in[0], *restrict b = in[1];

		for (size_t i = lo; i < hi; i++) {
			float v = (a[i] + b[i]) * scale;

			out[i] = v;
			out2[i] = v;
		}
		return;
	}
	for (size_t i = lo; i < hi; i++) {
		float acc = in[0][i];

		for (int j = 1; j < world; j++)
			acc += in[j][i];
		acc *= scale;
		out[i] = acc;
		out2[i] = acc;
	}
}

static void reduce_f64(double *restrict out, double *restrict out2, const double *const *in,
                       int world, size_t lo, size_t hi)
{
	for (size_t i = lo; i < hi; i++) {
		double acc = in[0][i];

		for (int j = 1; j < world; j++)
			acc += in[j][i];
		out[i] = acc;
		out2[i] = acc;
	}
}

static int shm_allreduce(struct mlp_coll *c, void *buf, size_t n, enum coll_dtype t)
{
	struct shm *s = c->impl;
	size_t elem = coll_elem_size(t);
	size_t per_slot = s->hdr->slot_bytes / elem;
	size_t w = (size_t)c->world, me = (size_t)c->rank;
	const void *in[SHM_MAX_RANKS];
	int rc;

	for (size_t off = 0; off < n; off += per_slot) {
		size_t cnt = n - off < per_slot ? n - off : per_slot;
		size_t lo = cnt * me / w, hi = cnt * (me + 1) / w;
		char *mine = (char *)buf + off * elem;
		char *own_slot = slot(c, s->set, c->rank);

		/* Publish only the shares the others reduce. */
		for (size_t j = 0; j < w; j++) {
			size_t jl = cnt * j / w, jh = cnt * (j + 1) / w;

			if (j != me)
				memcpy(own_slot + jl * elem, mine + jl * elem, (jh - jl) * elem);
		}
		if ((rc = barrier(c)) != 0)
			return rc;
		/* Reduce my share, reading my own part from my buffer, and publish
		 * the result where my share sits in my slot. */
		for (size_t j = 0; j < w; j++)
			in[j] = j == me ? (const void *)mine
			                : (const void *)slot(c, s->set, (int)j);
		if (t == COLL_F32_AVG)
			reduce_f32((float *)own_slot, (float *)mine, (const float *const *)in,
			           c->world, lo, hi, 1.0f / (float)c->world);
		else
			reduce_f64((double *)own_slot, (double *)mine, (const double *const *)in,
			           c->world, lo, hi);
		if ((rc = barrier(c)) != 0)
			return rc;
		/* Gather the others' reduced shares from their slots. */
		for (size_t j = 0; j < w; j++) {
			size_t jl = cnt * j / w, jh = cnt * (j + 1) / w;

			if (j != me)
				memcpy(mine + jl * elem, slot(c, s->set, (int)j) + jl * elem,
				       (jh - jl) * elem);
		}
		s->set ^= 1;
	}
	return 0;
}

static int shm_broadcast(struct mlp_coll *c, void *buf, size_t bytes, int root)
{
	struct shm *s = c->impl;
	size_t per_slot = s->hdr->slot_bytes;
	int rc;

	for (size_t off = 0; off < bytes; off += per_slot) {
		size_t cnt = bytes - off < per_slot ? bytes - off : per_slot;

		if (c->rank == root)
			memcpy(slot(c, s->set, root), (char *)buf + off, cnt);
		if ((rc = barrier(c)) != 0)
			return rc;
		if (c->rank != root)
			memcpy((char *)buf + off, slot(c, s->set, root), cnt);
		s->set ^= 1;
	}
	/* The next operation may reuse these slots only once all have read. */
	return barrier(c);
}

static int shm_barrier(struct mlp_coll *c)
{
	return barrier(c);
}

static void shm_close(struct mlp_coll *c)
{
	struct shm *s = c->impl;

	if (s == NULL)
		return;
	if (!s->unlinked && c->rank == 0)
		shm_unlink(s->name);
	if (s->hdr)
		munmap(s->hdr, s->map_bytes);
	free(s);
	c->impl = NULL;
}

static const struct coll_ops shm_ops = {
        "shm", shm_allreduce, shm_broadcast, shm_barrier, shm_close,
};

int coll_shm_open(struct mlp_coll *c, const struct mlp_coll_opts *o)
{
	struct shm *s = xcalloc(1, sizeof(*s));
	size_t hdr_bytes = (sizeof(struct shm_hdr) + 4095) & ~(size_t)4095;
	int64_t deadline = mlp_mono_ms() + c->timeout_ms;
	int fd = -1, rc = MLP_EIO;

	c->impl = s;
	c->ops = &shm_ops;
	if (c->world > SHM_MAX_RANKS) {
		mlp_error_set("the shm backend takes at most %d ranks, not %d (use tcp)",
		              SHM_MAX_RANKS, c->world);
		rc = MLP_EINVAL;
		goto fail;
	}
	s->map_bytes = hdr_bytes + 2 * (size_t)c->world * SLOT_BYTES;
	snprintf(s->name, sizeof(s->name), "/mlpipe-coll-%016" PRIx64, c->table.token);
	if (c->rank == 0) {
		fd = shm_open(s->name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0 || ftruncate(fd, (off_t)s->map_bytes) != 0) {
			mlp_error_set_errno(errno, "cannot create shared memory %s (%zu bytes)",
			                    s->name, s->map_bytes);
			goto fail;
		}
	} else {
		/* Rank 0 creates the segment right after the rendezvous. */
		for (;;) {
			struct stat st;

			fd = shm_open(s->name, O_RDWR | O_CLOEXEC, 0600);
			if (fd >= 0 && fstat(fd, &st) == 0 && (size_t)st.st_size == s->map_bytes)
				break;
			if (fd >= 0)
				close(fd);
			fd = -1;
			if (mlp_mono_ms() > deadline) {
				mlp_error_set("timed out waiting for rank 0's shared memory %s",
				              s->name);
				rc = MLP_ETIMEOUT;
				goto fail;
			}
			{
				struct timespec ts = {0, 1000 * 1000};

				nanosleep(&ts, NULL);
			}
		}
	}
	s->hdr = mmap(NULL, s->map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	fd = -1;
	if (s->hdr == MAP_FAILED) {
		s->hdr = NULL;
		mlp_error_set_errno(errno, "cannot map shared memory %s", s->name);
		goto fail;
	}
	s->data = (char *)s->hdr + hdr_bytes;
	if (c->rank == 0) {
		s->hdr->world = (uint32_t)c->world;
		s->hdr->token = c->table.token;
		s->hdr->slot_bytes = SLOT_BYTES;
		atomic_store(&s->hdr->magic, SHM_MAGIC);
	} else {
		while (atomic_load(&s->hdr->magic) != SHM_MAGIC) {
			if (mlp_mono_ms() > deadline) {
				mlp_error_set("rank 0 never initialised shared memory %s", s->name);
				rc = MLP_ETIMEOUT;
				goto fail;
			}
			sched_yield();
		}
		if (s->hdr->world != (uint32_t)c->world || s->hdr->token != c->table.token) {
			mlp_error_set("shared memory %s belongs to another group", s->name);
			rc = MLP_EINVAL;
			goto fail;
		}
	}
	/* Everyone has mapped it: the name can go, the memory stays. */
	if ((rc = barrier(c)) != 0)
		goto fail;
	if (c->rank == 0) {
		shm_unlink(s->name);
		s->unlinked = true;
	}
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	shm_close(c);
	return rc;
}
