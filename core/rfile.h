/*
 * rfile - a small regular file read whole through one descriptor
 *
 * SYNOPSIS
 *	enum rfile_fail rfile_read(struct rfile *rf, const char *path,
 *	                           int oflags, mode_t deny, off_t max);
 *
 * DESCRIPTION
 *	rfile_read() opens path (O_RDONLY | O_CLOEXEC | oflags), fstat()s the
 *	open descriptor, so that the checks and the read see the same file,
 *	and reads it whole into rf->buf (NUL-terminated, owned by the
 *	caller), its length in rf->len. In order, it fails with
 *	RFILE_OPEN (open failed, errno in rf->err), RFILE_NOT_REGULAR
 *	(fstat failed, or not a regular file), RFILE_MODE (the file's mode
 *	has one of the bits in deny), RFILE_SIZE (larger than max bytes) or
 *	RFILE_READ (a read failed, errno in rf->err, or the file ended
 *	before its size: rf->err 0). rf->sb is the descriptor's stat from
 *	RFILE_MODE on. rf->buf is NULL on every failure but RFILE_READ,
 *	where it holds the bytes read (the caller frees it, or uses them).
 *	Nothing here logs: each caller words its own messages.
 */
#ifndef MOAT_RFILE_H
#define MOAT_RFILE_H

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

enum rfile_fail { RFILE_OK = 0, RFILE_OPEN, RFILE_NOT_REGULAR, RFILE_MODE, RFILE_SIZE,
	RFILE_READ };

struct rfile {
	char *buf;		/* owned by the caller */
	size_t len;
	struct stat sb;		/* the open descriptor's */
	int err;		/* errno of RFILE_OPEN and RFILE_READ */
};

enum rfile_fail rfile_read(struct rfile *rf, const char *path, int oflags, mode_t deny, off_t max);

#endif
