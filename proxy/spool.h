/*
 * spool - a message held in memory up to a bound, then in a private file
 *
 * SYNOPSIS
 *	struct spool *spool_new(const char *dir, size_t mem_limit);
 *	int spool_write(struct spool *sp, const void *buf, size_t len);
 *	int spool_finish(struct spool *sp);
 *	int spool_send(struct spool *sp, struct evbuffer *out);
 *	void spool_set_prefix(struct spool *sp, const char *data, size_t len);
void spool_set_prefix(struct spool *sp, const char *data, size_t len);
 *	uint64_t spool_size(const struct spool *sp);
 *	void spool_free(struct spool *sp);
 *
 * DESCRIPTION
 *	Bytes are appended in order. Once more than mem_limit bytes are held,
 *	everything moves to an unlinked temporary file in dir (O_TMPFILE,
 *	mode 0600), written in 64 KiB blocks. Errors are sticky: after a
 *	failed write every call fails, and the caller answers 451 4.3.0.
 *	spool_set_prefix() gives bytes (moat's own header fields) that
 *	spool_send() puts before the content.
 *	spool_send() adds the whole content to an evbuffer (the memory
 *	blocks moved into it by reference, after which the spool holds no
 *	memory; or the file added as a file segment that libevent sends
 *	with sendfile/mmap), so the message is never copied twice.
 *	The file writes are plain write(2) on the event loop: local disk,
 *	64 KiB at a time.
 *
 *	Memory comes in blocks of 4 to 64 KiB that are reused: a block the
 *	output evbuffer is done with goes back to a small cache of the
 *	thread that releases it (bounded, about 2 MiB per thread, freed at
 *	thread exit). A spool is used by one thread at a time; the cache
 *	needs no lock.
 */
#ifndef MOAT_SPOOL_H
#define MOAT_SPOOL_H

#include <event2/buffer.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct spool;

struct spool *spool_new(const char *dir, size_t mem_limit);
int spool_write(struct spool *sp, const void *buf, size_t len);
int spool_finish(struct spool *sp);
int spool_send(struct spool *sp, struct evbuffer *out);
void spool_set_prefix(struct spool *sp, const char *data, size_t len);
uint64_t spool_size(const struct spool *sp);
bool spool_on_disk(const struct spool *sp);
void spool_free(struct spool *sp);

#endif
