// sources: proxy/smtp_data.c
/*
 * fuzz_data - libFuzzer harness for the DATA decoder (docs/SECURITY.md F3)
 *
 * Input: two settings bytes, then the client's bytes after 354.
 *	byte 0: bit 0 bare-LF mode (1 = reject), bits 1-3 max_line
 *	        (0 = unlimited, 1, 8, 998, 2, 16, 17, 64: around the
 *	        decoder's 16-byte scan steps too)
 *	byte 1: max_size / 4 (0 = unlimited)
 * The stream is fed whole, then byte by byte, then cut at pseudo-random
 * points derived from the input; every run must give the same output,
 * flags, size, lines, consumed count and done (chunking invariance).
 * The output must be canonical: CR only in CR LF, LF only in CR LF, and a
 * line starting with "." starts with ".." (so no line "."; in particular
 * no "\r\n.\r\n" and no leading ".\r\n"). An independent line-at-a-time
 * reference decoder over the whole input must agree on where the data
 * ends, the flags, the size, and the output (the decoder's output is a
 * prefix of the reference's, equal when nothing stopped it). abort() on
 * any difference.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fbuf {
	unsigned char *p;
	size_t len, cap;
};

static void
fbuf_put(struct fbuf *b, const unsigned char *s, size_t n)
{
	if (b->len + n > b->cap)
		abort();	/* sized by the caller: output is bounded */
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

static void
fuzz_out(void *arg, const unsigned char *buf, size_t len)
{
	if (len == 0)
		abort();	/* no empty calls */
	fbuf_put(arg, buf, len);
}

struct run {
	struct fbuf o;
	struct data_dec d;
	size_t consumed;
};

struct cfg {
	enum data_barelf mode;
	uint64_t max_size;
	size_t max_line;
};

static uint64_t
fnv1a(const uint8_t *p, size_t n)
{
	uint64_t h = 1469598103934665603ull;

	while (n-- > 0)
		h = (h ^ *p++) * 1099511628211ull;
	return h;
}

/* Feed in[0..len) in chunks; step 0: whole; 1: byte by byte; else random. */
static void
run_feed(const struct cfg *c, const uint8_t *in, size_t len, int step,
	uint64_t seed, struct run *r, size_t cap)
{
	size_t pos = 0;

	memset(r, 0, sizeof *r);
	r->o.p = malloc(cap ? cap : 1);
	if (r->o.p == NULL)
		abort();
	r->o.cap = cap;
	data_dec_init(&r->d, c->mode, c->max_size, c->max_line);
	while (!r->d.done) {
		size_t n = len - pos, got;

		if (step == 1 && n > 1)
			n = 1;
		else if (step > 1 && n > 0) {
			seed ^= seed << 13;
			seed ^= seed >> 7;
			seed ^= seed << 17;
			/* mostly short chunks, sometimes long, sometimes empty */
			n = (seed >> 8) % (seed & 0x100 ? 64 : 6);
			if (n > len - pos)
				n = len - pos;
		}
		got = data_dec_feed(&r->d, in + pos, n, fuzz_out, &r->o);
		r->consumed += got;
		if (!r->d.done && got != n)
			abort();	/* must take everything until done */
		if (r->d.done && got > n)
			abort();
		pos += got;
		if (pos >= len && !r->d.done)
			break;
	}
	/* feeding after done takes nothing */
	if (r->d.done && pos < len &&
	    data_dec_feed(&r->d, in + pos, len - pos, fuzz_out, &r->o) != 0)
		abort();
}

static void
run_same(const struct run *a, const struct run *b)
{
	if (a->o.len != b->o.len || memcmp(a->o.p, b->o.p, a->o.len) != 0 ||
	    a->d.flags != b->d.flags || a->d.size != b->d.size ||
	    a->d.raw != b->d.raw || a->d.lines != b->d.lines ||
	    a->d.done != b->d.done || a->consumed != b->consumed ||
	    a->d.st != b->d.st || a->d.line_len != b->d.line_len ||
	    a->d.bol_crlf != b->d.bol_crlf)
		abort();
}

static void
check_canonical(const struct fbuf *o)
{
	size_t i;
	bool bol = true;

	for (i = 0; i < o->len; i++) {
		unsigned char c = o->p[i];

		if (c == '\r' && (i + 1 >= o->len || o->p[i + 1] != '\n'))
			abort();	/* bare CR */
		if (c == '\n' && (i == 0 || o->p[i - 1] != '\r'))
			abort();	/* bare LF */
		if (bol && c == '.' && (i + 1 >= o->len || o->p[i + 1] != '.'))
			abort();	/* unstuffed dot line */
		bol = c == '\n';
	}
	if (o->len >= 3 && memcmp(o->p, ".\r\n", 3) == 0)
		abort();
	if (memmem(o->p, o->len, "\r\n.\r\n", 5) != NULL)
		abort();
}

/*
 * Reference: whole input, one complete line (up to a LF) at a time. Fills
 * ref output (canonical), flags, size, lines; returns the consumed length
 * when the terminator is found, else (size_t)-1 with *complete = bytes of
 * complete lines.
 */
static size_t
ref_decode(const struct cfg *c, const uint8_t *in, size_t len, struct fbuf *o,
	unsigned *flags, uint64_t *size, uint64_t *lines, size_t *complete)
{
	size_t pos = 0;
	bool bol_crlf = true;

	*flags = 0;
	*size = 0;
	*lines = 0;
	for (;;) {
		const uint8_t *lf = memchr(in + pos, '\n', len - pos);
		size_t end, clen, k;
		const uint8_t *content;
		bool crlf;

		if (lf == NULL) {
			*complete = pos;
			return (size_t)-1;
		}
		end = (size_t)(lf - in);
		crlf = end > pos && in[end - 1] == '\r';
		content = in + pos;
		clen = end - pos - (crlf ? 1 : 0);
		if (bol_crlf && crlf && clen == 1 && content[0] == '.')
			return end + 1;
		/* unstuff, except the line "." ended by a bare LF (kept as ".") */
		if (bol_crlf && clen > 0 && content[0] == '.' && !(clen == 1 && !crlf)) {
			content++;
			clen--;
		}
		for (k = 0; k < clen; k++) {
			if (content[k] == '\r')
				*flags |= DATA_F_BARE_CR;
			if (content[k] == '\0')
				*flags |= DATA_F_NUL;
		}
		if (!crlf)
			*flags |= DATA_F_BARE_LF;
		if (c->max_line != 0 && clen > c->max_line)
			*flags |= DATA_F_LONG_LINE;
		*size += clen + 2;
		if (c->max_size != 0 && *size > c->max_size)
			*flags |= DATA_F_TOO_BIG;
		(*lines)++;
		if (clen > 0 && content[0] == '.')
			fbuf_put(o, (const unsigned char *)".", 1);
		fbuf_put(o, content, clen);
		fbuf_put(o, (const unsigned char *)"\r\n", 2);
		bol_crlf = crlf;
		pos = end + 1;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t line_caps[8] = { 0, 1, 8, 998, 2, 16, 17, 64 };
	struct cfg c = { DATA_BARELF_NORMALISE, 0, 0 };
	const uint8_t *in = data;
	size_t len = size, cap, complete = 0, ref_end;
	struct run whole, r;
	struct fbuf ref = { 0 };
	unsigned ref_flags, stop;
	uint64_t ref_size, ref_lines, seed;
	int k;

	if (size >= 2) {
		c.mode = data[0] & 1 ? DATA_BARELF_REJECT : DATA_BARELF_NORMALISE;
		c.max_line = line_caps[(data[0] >> 1) & 7];
		c.max_size = (uint64_t)data[1] * 4;
		in += 2;
		len -= 2;
	}
	/* worst case: every byte a line ".\n" -> "..\r\n" */
	cap = 2 * len + 8;
	seed = fnv1a(data, size) | 1;

	run_feed(&c, in, len, 0, seed, &whole, cap);
	check_canonical(&whole.o);
	if (whole.consumed > len || whole.d.raw != whole.consumed)
		abort();
	for (k = 1; k < 5; k++) {
		run_feed(&c, in, len, k, seed + (uint64_t)k, &r, cap);
		run_same(&whole, &r);
		free(r.o.p);
	}

	stop = DATA_F_NUL | DATA_F_BARE_CR | DATA_F_TOO_BIG | DATA_F_LONG_LINE |
	    (c.mode == DATA_BARELF_REJECT ? DATA_F_BARE_LF : 0u);
	ref.p = malloc(cap);
	ref.cap = cap;
	if (ref.p == NULL)
		abort();
	ref_end = ref_decode(&c, in, len, &ref, &ref_flags, &ref_size, &ref_lines,
	    &complete);
	if (ref_end != (size_t)-1) {
		/* ended: everything must agree */
		if (!whole.d.done || whole.consumed != ref_end ||
		    whole.d.flags != ref_flags || whole.d.size != ref_size ||
		    whole.d.lines != ref_lines)
			abort();
		if (whole.o.len > ref.len ||
		    memcmp(whole.o.p, ref.p, whole.o.len) != 0)
			abort();
		if (!(ref_flags & stop) && whole.o.len != ref.len)
			abort();
		if ((data_dec_verdict(&whole.d) == NULL) != !(ref_flags & stop))
			abort();
	} else {
		/* not ended: the complete lines agree, the tail is pending */
		if (whole.d.done || whole.consumed != len)
			abort();
		if ((whole.d.flags & ref_flags) != ref_flags ||
		    whole.d.lines != ref_lines || whole.d.size < ref_size ||
		    whole.d.size > ref_size + (len - complete))
			abort();
		if (ref_flags & stop) {
			if (whole.o.len > ref.len ||
			    memcmp(whole.o.p, ref.p, whole.o.len) != 0)
				abort();
		} else if (whole.o.len < ref.len ||
		    memcmp(whole.o.p, ref.p, ref.len) != 0)
			abort();
	}
	free(ref.p);
	free(whole.o.p);
	return 0;
}
