/*
 * spool - a message held in memory up to a bound, then in a private file
 * (see spool.h)
 */
#include <errno.h>
#include <fcntl.h>
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

#define SPOOL_BLOCK (64 * 1024)

struct spool {
	struct evbuffer *mem;	/* memory content, or the write block when on disk */
	int fd;			/* -1 while in memory */
	bool failed;
	uint64_t size;
	size_t mem_limit;
	char *dir;
};

/* spool_new - an empty spool */
struct spool *
spool_new(const char *dir, size_t mem_limit)
{
	struct spool *sp = xcalloc(1, sizeof(*sp));

	sp->mem = evbuffer_new();
	if (sp->mem == NULL)
		panic("evbuffer_new failed");
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
		snprintf(path, sizeof(path), "%s/moat.XXXXXX", sp->dir);
		fd = mkostemp(path, O_CLOEXEC);
		if (fd >= 0)
			unlink(path);
	}
	if (fd < 0) {
		log_errno(LOG_L_ERROR, 0, "spool error=open dir=%s", sp->dir);
		return -1;
	}
	sp->fd = fd;
	return 0;
}

/* spool_flush_block - write the memory block to the file */
static int
spool_flush_block(struct spool *sp)
{
	while (evbuffer_get_length(sp->mem) > 0) {
		int n = evbuffer_write(sp->mem, sp->fd);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			log_errno(LOG_L_ERROR, 0, "spool error=write dir=%s", sp->dir);
			sp->failed = true;
			return -1;
		}
	}
	return 0;
}

/* spool_write - append bytes */
int
spool_write(struct spool *sp, const void *buf, size_t len)
{
	if (sp->failed)
		return -1;
	if (evbuffer_add(sp->mem, buf, len) != 0) {
		sp->failed = true;
		return -1;
	}
	sp->size += len;
	if (sp->fd < 0) {
		if (sp->size <= sp->mem_limit)
			return 0;
		if (spool_open_file(sp) != 0) {
			sp->failed = true;
			return -1;
		}
	}
	if (evbuffer_get_length(sp->mem) >= SPOOL_BLOCK)
		return spool_flush_block(sp);
	return 0;
}

/* spool_finish - everything written: flush the last block */
int
spool_finish(struct spool *sp)
{
	if (sp->failed)
		return -1;
	if (sp->fd >= 0)
		return spool_flush_block(sp);
	return 0;
}

/* spool_send - add the content to out (memory moved, file as a segment) */
int
spool_send(struct spool *sp, struct evbuffer *out)
{
	if (sp->failed)
		return -1;
	if (sp->fd < 0)
		return evbuffer_add_buffer(out, sp->mem);
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

/* spool_free - release memory and the file */
void
spool_free(struct spool *sp)
{
	if (sp == NULL)
		return;
	evbuffer_free(sp->mem);
	if (sp->fd >= 0)
		close(sp->fd);
	free(sp->dir);
	free(sp);
}
