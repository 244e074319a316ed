/*
 * textbuf - a line of text built by appending pieces, without printf
 *
 * SYNOPSIS
 *	struct textbuf tb = TEXTBUF(buf, sizeof(buf));
 *	void tb_put(struct textbuf *b, const char *s, size_t len);
 *	void tb_str(struct textbuf *b, const char *s);
 *	void tb_u64(struct textbuf *b, uint64_t v);
 *	void tb_ll(struct textbuf *b, long long v);
 *	void tb_secs(struct textbuf *b, uint64_t ms);
 *
 * DESCRIPTION
 *	For the lines written for every message at log-level info (the
 *	verdict line, the disconnect line), where snprintf's parsing of a
 *	format costs more than the text. A piece that does not fit within
 *	cap bytes is left out whole and nothing after it is appended
 *	(full); the text is not terminated: n bytes of buf are the line.
 *	A caller that wants a group of pieces whole or not at all keeps n
 *	before it and puts it back when full. tb_secs() writes a count of
 *	milliseconds as seconds with three decimals (1234: "1.234").
 */
#ifndef MOAT_TEXTBUF_H
#define MOAT_TEXTBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "decimal.h"

struct textbuf {
	char *buf;
	size_t n, cap;
	bool full;
};

#define TEXTBUF(buf, cap) { (buf), 0, (cap), false }

static inline void
tb_put(struct textbuf *b, const char *s, size_t len)
{
	if (b->full || len > b->cap - b->n) {
		b->full = true;
		return;
	}
	memcpy(b->buf + b->n, s, len);
	b->n += len;
}

static inline void
tb_str(struct textbuf *b, const char *s)
{
	tb_put(b, s, strlen(s));
}

static inline void
tb_u64(struct textbuf *b, uint64_t v)
{
	char t[20];

	tb_put(b, t, dec_u64(t, v));
}

static inline void
tb_ll(struct textbuf *b, long long v)
{
	if (v < 0) {
		tb_put(b, "-", 1);
		tb_u64(b, -(uint64_t)v);
	} else {
		tb_u64(b, (uint64_t)v);
	}
}

static inline void
tb_secs(struct textbuf *b, uint64_t ms)
{
	char d[4] = { '.', (char)('0' + ms % 1000 / 100), (char)('0' + ms % 100 / 10),
		      (char)('0' + ms % 10) };

	tb_u64(b, ms / 1000);
	tb_put(b, d, 4);
}

#endif
