/*
 * spool - a message held in memory up to a bound, then in a private file
 * (see spool.h)
 *
 * MEMORY
 *	The content is kept in blocks of our own, not in an evbuffer: the
 *	n-th block of a message holds 4 KiB << n bytes, up to 64 KiB
 *	(SPOOL_BLOCK), so a small message takes little and a large one is
 *	written in few pieces. spool_send() hands each block to the output
 *	evbuffer by reference (evbuffer_add_reference, no copy); when
 *	libevent has sent it, the cleanup callback gives the block back.
 *
 *	Blocks that are given back go to a per-thread cache, one free list
 *	per size, at most SPOOL_CACHE_PER_CLASS blocks each (at most
 *	16 x (4 + 8 + 16 + 32 + 64) KiB = 1984 KiB per thread); beyond that
 *	they are freed. Each worker thread thus reuses the same memory
 *	message after message, instead of malloc and free of every piece
 *	(and glibc trimming and faulting its heap back in each time). The
 *	cache is _Thread_local, so it takes no lock; a block given back on
 *	another thread than the one that took it (an evbuffer freed
 *	elsewhere) simply joins that thread's cache. A pthread key
 *	destructor frees a thread's cache when the thread exits; after that,
 *	blocks given back on that thread are freed at once.
 *
 * FILE
 *	Past mem_limit bytes, the blocks held so far are written to an
 *	unlinked O_TMPFILE file and given back; further bytes go through one
 *	64 KiB block, written with write(2) each time it is full and at
 *	spool_finish().
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "log.h"
#include "spool.h"
#include "xalloc.h"

#define SPOOL_BLOCK_MIN       4096u	/* first block of a message */
#define SPOOL_NCLASS          5		/* 4, 8, 16, 32, 64 KiB */
#define SPOOL_BLOCK           (SPOOL_BLOCK_MIN << (SPOOL_NCLASS - 1))
#define SPOOL_CACHE_PER_CLASS 16u

/* A block of content; data[] holds cap bytes, len of them used. */
struct spool_blk {
	struct spool_blk *next;
	size_t len;
	unsigned cls;		/* cap = SPOOL_BLOCK_MIN << cls */
	unsigned char data[];
};

struct spool {
	struct spool_blk *head, *tail;	/* memory content, or the write block on disk */
	unsigned nblk;		/* blocks taken while in memory: picks the next size */
	int fd;			/* -1 while in memory */
	bool failed;
	uint64_t size;
	size_t mem_limit;
	char *dir;
	char *prefix;		/* header fields sent before the content */
	size_t prefix_len;
};

/* Per-thread cache of free blocks, by size class. */
struct spool_cache {
	struct spool_blk *free[SPOOL_NCLASS];
	unsigned count[SPOOL_NCLASS];
	bool armed;		/* the exit destructor is registered */
	bool closed;		/* the thread is exiting: cache nothing more */
};

static _Thread_local struct spool_cache spool_cache;
static pthread_key_t spool_cache_key;
static pthread_once_t spool_cache_once = PTHREAD_ONCE_INIT;
static bool spool_cache_key_ok;

/* spool_blk_cap - data bytes of a block of this class */
static size_t
spool_blk_cap(unsigned cls)
{
	return (size_t)SPOOL_BLOCK_MIN << cls;
}

/* spool_cache_drop - thread exit: free the thread's cached blocks */
static void
spool_cache_drop(void *arg)
{
	struct spool_cache *c = arg;
	unsigned k;

	for (k = 0; k < SPOOL_NCLASS; k++) {
		while (c->free[k] != NULL) {
			struct spool_blk *b = c->free[k];

			c->free[k] = b->next;
			free(b);
		}
		c->count[k] = 0;
	}
	c->armed = false;
	c->closed = true;
}

/* spool_cache_key_init - once per process: the key whose destructor drops a cache */
static void
spool_cache_key_init(void)
{
	spool_cache_key_ok = pthread_key_create(&spool_cache_key, spool_cache_drop) == 0;
}

/* spool_cache_arm - make sure this thread's cache is freed when it exits */
static bool
spool_cache_arm(struct spool_cache *c)
{
	if (c->armed)
		return true;
	if (c->closed || pthread_once(&spool_cache_once, spool_cache_key_init) != 0 ||
	    !spool_cache_key_ok || pthread_setspecific(spool_cache_key, c) != 0)
		return false;
	c->armed = true;
	return true;
}

/* spool_blk_get - an empty block of class cls, from the cache if it has one */
static struct spool_blk *
spool_blk_get(unsigned cls)
{
	struct spool_cache *c = &spool_cache;
	struct spool_blk *b = c->free[cls];

	if (b != NULL) {
		c->free[cls] = b->next;
		c->count[cls]--;
	} else {
		b = xmalloc(sizeof(*b) + spool_blk_cap(cls));
		b->cls = cls;
	}
	b->next = NULL;
	b->len = 0;
	return b;
}

/* spool_blk_put - give a block back: to this thread's cache, or free it */
static void
spool_blk_put(struct spool_blk *b)
{
	struct spool_cache *c = &spool_cache;

	if (c->count[b->cls] < SPOOL_CACHE_PER_CLASS && spool_cache_arm(c)) {
		b->next = c->free[b->cls];
		c->free[b->cls] = b;
		c->count[b->cls]++;
	} else
		free(b);
}

/* spool_blk_sent - libevent is done with a block added by reference */
static void
spool_blk_sent(const void *data, size_t len, void *arg)
{
	(void)data;
	(void)len;
	spool_blk_put(arg);
}

/* spool_release - give back every block the spool holds */
static void
spool_release(struct spool *sp)
{
	while (sp->head != NULL) {
		struct spool_blk *b = sp->head;

		sp->head = b->next;
		spool_blk_put(b);
	}
	sp->tail = NULL;
}

/* spool_new - an empty spool; blocks are taken when bytes arrive */
struct spool *
spool_new(const char *dir, size_t mem_limit)
{
	struct spool *sp = xcalloc(1, sizeof(*sp));

	sp->fd = -1;
	sp->mem_limit = mem_limit;
	sp->dir = xstrdup(dir);
	return sp;
}

/* spool_open_file - create the unlinked private file */
static int
spool_open_file(struct spool *sp)
{
	int fd = open(sp->dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

	if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
		char path[4096];
		int n = snprintf(path, sizeof(path), "%s/moat.XXXXXX", sp->dir);

		if (n > 0 && (size_t)n < sizeof(path)) {
			fd = mkostemp(path, O_CLOEXEC);
			if (fd >= 0)
				unlink(path);
		} else
			errno = ENAMETOOLONG;
	}
	if (fd < 0) {
		log_errno(LOG_L_ERROR, 0, "spool error=open dir=%s", sp->dir);
		return -1;
	}
	sp->fd = fd;
	return 0;
}

/* spool_write_fd - write all of buf to the file; a failure is sticky */
static int
spool_write_fd(struct spool *sp, const unsigned char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(sp->fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			log_errno(LOG_L_ERROR, 0, "spool error=write dir=%s", sp->dir);
			sp->failed = true;
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* spool_spill - past the memory limit: everything so far to the file */
static int
spool_spill(struct spool *sp)
{
	struct spool_blk *b;

	if (spool_open_file(sp) != 0) {
		sp->failed = true;
		return -1;
	}
	for (b = sp->head; b != NULL; b = b->next)
		if (spool_write_fd(sp, b->data, b->len) != 0)
			return -1;
	spool_release(sp);
	return 0;
}

/* spool_write - append bytes */
int
spool_write(struct spool *sp, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	if (sp->failed)
		return -1;
	if (len == 0)
		return 0;
	sp->size += len;
	if (sp->fd < 0 && sp->size > sp->mem_limit && spool_spill(sp) != 0)
		return -1;
	while (len > 0) {
		struct spool_blk *b = sp->tail;
		size_t room = b != NULL ? spool_blk_cap(b->cls) - b->len : 0, n;

		if (room == 0) {
			if (b != NULL && sp->fd >= 0) {
				/* the write block is full */
				if (spool_write_fd(sp, b->data, b->len) != 0)
					return -1;
				b->len = 0;
				continue;
			}
			b = spool_blk_get(sp->fd >= 0 ? SPOOL_NCLASS - 1 :
			    sp->nblk < SPOOL_NCLASS - 1 ? sp->nblk : SPOOL_NCLASS - 1);
			if (sp->fd < 0)
				sp->nblk++;
			if (sp->tail != NULL)
				sp->tail->next = b;
			else
				sp->head = b;
			sp->tail = b;
			room = spool_blk_cap(b->cls);
		}
		n = len < room ? len : room;
		memcpy(b->data + b->len, p, n);
		b->len += n;
		p += n;
		len -= n;
	}
	return 0;
}

/* spool_finish - everything written: flush the last block to the file */
int
spool_finish(struct spool *sp)
{
	if (sp->failed)
		return -1;
	if (sp->fd < 0 || sp->head == NULL)
		return 0;
	if (spool_write_fd(sp, sp->head->data, sp->head->len) != 0)
		return -1;
	spool_release(sp);
	return 0;
}

/* spool_send - add the content to out (memory blocks by reference, file as a segment) */
int
spool_send(struct spool *sp, struct evbuffer *out)
{
	if (sp->failed)
		return -1;
	if (sp->prefix_len > 0 && evbuffer_add(out, sp->prefix, sp->prefix_len) != 0)
		return -1;
	if (sp->fd < 0) {
		/* each block belongs to out once added: spool_blk_sent gives it back */
		while (sp->head != NULL) {
			struct spool_blk *b = sp->head;

			if (b->len > 0 && evbuffer_add_reference(out, b->data, b->len,
			    spool_blk_sent, b) != 0)
				return -1;
			sp->head = b->next;
			if (b->len == 0)
				spool_blk_put(b);
		}
		sp->tail = NULL;
		return 0;
	}
	int fd = dup(sp->fd);
	if (fd < 0) {
		log_errno(LOG_L_ERROR, 0, "spool error=dup");
		return -1;
	}
	/* evbuffer_add_file takes fd and closes it when done */
	if (evbuffer_add_file(out, fd, 0, (ev_off_t)sp->size) != 0) {
		close(fd);
		return -1;
	}
	return 0;
}

/* spool_set_prefix - header fields to send before the content (copied) */
void
spool_set_prefix(struct spool *sp, const char *data, size_t len)
{
	free(sp->prefix);
	sp->prefix = len ? xmemdup(data, len) : NULL;
	sp->prefix_len = len;
}

/* spool_size - bytes held */
uint64_t
spool_size(const struct spool *sp)
{
	return sp->size;
}

/* spool_on_disk - was it spilled to a file? */
bool
spool_on_disk(const struct spool *sp)
{
	return sp->fd >= 0;
}

/* spool_free - give back the blocks, close the file */
void
spool_free(struct spool *sp)
{
	if (sp == NULL)
		return;
	spool_release(sp);
	if (sp->fd >= 0)
		close(sp->fd);
	free(sp->prefix);
	free(sp->dir);
	free(sp);
}
