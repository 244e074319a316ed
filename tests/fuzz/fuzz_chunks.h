/*
 * fuzz_chunks - what the streaming-parser fuzz targets share: a growing
 * output sink, and feeding an input cut into pieces
 *
 * SYNOPSIS
 *	#include "fuzz_chunks.h"
 *
 *	void fuzz_sink_put(void *sink, const void *p, size_t n);
 *	bool fuzz_sink_same(const struct fuzz_sink *a, const struct fuzz_sink *b);
 *	void fuzz_chunks(const unsigned char *d, size_t n, size_t chunk,
 *	                 void (*feed)(void *arg, const unsigned char *p, size_t n),
 *	                 void *arg);
 *
 * DESCRIPTION
 *	fuzz_sink_put() appends n bytes to a struct fuzz_sink (zeroed to
 *	start; the caller frees b), aborting when memory runs out.
 *	fuzz_sink_same() tells whether two sinks hold the same bytes.
 *	fuzz_chunks() calls feed once for each piece of chunk bytes of d in
 *	order (the last piece may be shorter); with n zero, never.
 */
#ifndef MOAT_FUZZ_CHUNKS_H
#define MOAT_FUZZ_CHUNKS_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct fuzz_sink {
	unsigned char *b;
	size_t n, cap;
};

static inline void
fuzz_sink_put(void *sink, const void *p, size_t n)
{
	struct fuzz_sink *s = sink;

	if (s->n + n > s->cap) {
		s->cap = (s->n + n) * 2 + 64;
		s->b = realloc(s->b, s->cap);
		if (s->b == NULL)
			abort();
	}
	memcpy(s->b + s->n, p, n);
	s->n += n;
}

static inline bool
fuzz_sink_same(const struct fuzz_sink *a, const struct fuzz_sink *b)
{
	return a->n == b->n && (a->n == 0 || memcmp(a->b, b->b, a->n) == 0);
}

static inline void
fuzz_chunks(const unsigned char *d, size_t n, size_t chunk,
	void (*feed)(void *arg, const unsigned char *p, size_t n), void *arg)
{
	for (size_t o = 0; o < n; o += chunk)
		feed(arg, d + o, n - o < chunk ? n - o : chunk);
}

#endif
