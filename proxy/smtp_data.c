/*
 * smtp_data - DATA stream decoder and re-encoder (no I/O, no clock)
 *
 * FUNCTIONS
 *	data_dec_init()       - reset a decoder with its limits
 *	data_dec_feed()       - consume client bytes, emit canonical bytes
 *	data_dec_verdict()    - the reply a finished message deserves, or NULL
 *	data_dec_state_name() - name of a decoder state, for trace logs
 *
 * CONTRACT
 *	Pure: nothing is allocated, nothing logged, no clock. The caller owns
 *	struct data_dec; out() receives borrowed bytes, valid only during the
 *	call (either a slice of the caller's input or a static constant). out()
 *	must not free or re-initialise the decoder; out may be NULL (discard).
 *
 * WIRE MODEL (SMTP smuggling defence, docs/SECURITY.md SMG and D1)
 *	The input is cut into lines. A line ends at a real CR LF, or at a bare
 *	LF (a LF with no CR right before it), which sets DATA_F_BARE_LF and is
 *	re-encoded as CR LF. A CR that is not followed by LF is a bare CR: it
 *	sets DATA_F_BARE_CR and counts as one content byte of the line (it
 *	never ends one). Whether a CR is bare is only known from the next byte,
 *	so a CR at the end of a chunk stays pending until the next call.
 *
 *	End of data is exactly: a line that began after a real CR LF (or at
 *	the very start of the data), consisting of "." followed by a real
 *	CR LF. Nothing else ends the data: not LF "." LF, CR "." CR, a "." line
 *	after a bare LF, ".\r\r\n", "\0.\r\n", ".\0\r\n", ...
 *
 *	Unstuffing: a line that began after a real CR LF (or at the start) and
 *	starts with "." loses that dot (RFC 5321 4.5.2), whatever follows it,
 *	so "\r\n.\n" is an empty line ended by a bare LF. A line that began
 *	after a bare LF is content as it stands: no unstuffing, and it can
 *	never be the terminator; "\n.\n" is the one-byte line ".".
 *
 *	Output: the decoded content (unstuffed, CR LF line ends), with every
 *	line whose first decoded byte is "." stuffed again, so the output
 *	never holds a bare CR, a bare LF or a line ".". The terminator is
 *	never output (the caller appends ".\r\n"). out() gets maximal runs:
 *	verbatim stretches of the input are passed as one slice; constants
 *	("\r\n" for a bare LF, "." for a stuffing dot or a CR left pending
 *	from an earlier chunk) are passed separately.
 *
 * ACCOUNTING AND LIMITS
 *	d->size counts decoded bytes: content bytes (bare CR and NUL
 *	included, stuffing dots not) plus 2 per line end; it keeps counting
 *	after any limit. d->raw counts consumed input, terminator included.
 *	d->lines counts line ends before the terminator. A line's length is
 *	its decoded length without the line end (RFC 5321 4.5.3.1.6 does not
 *	count the transparency dot); DATA_F_LONG_LINE is set as soon as it
 *	exceeds max_line. DATA_F_TOO_BIG is set as soon as size exceeds
 *	max_size. max_size 0 and max_line 0 mean unlimited.
 *
 *	Output stops for good at the first byte (or line end, taken as one
 *	unit) that sets a reject flag: NUL, bare CR, too big, long line, and
 *	bare LF in DATA_BARELF_REJECT mode. That byte is not output. The
 *	search for the terminator and the counting go on unchanged.
 *
 * CHUNKING INVARIANCE
 *	Every decision is a function of the byte stream alone; the only
 *	memory carried across calls is the state below (pending "." and/or
 *	pending CR, line start kind, line length). Hence concatenated output,
 *	flags, size, raw, lines and done are identical for every split.
 *
 * SPEED
 *	Ordinary lines (no CR, LF or NUL inside, a CR LF at the end, not
 *	starting with ".") are taken by a fast path many lines at a time,
 *	found with a vector scan for CR/LF/NUL (SSE2; memchr where there is
 *	none, or with -DMOAT_NO_SIMD), and passed on as one slice per chunk.
 *	Everything else goes byte by byte through the states below. Both
 *	paths cost linear time on any input.
 *
 * VERDICTS (data_dec_verdict, checked in this order)
 *	NUL                     550 5.6.0  Message contains NUL
 *	bare CR                 550 5.6.0  Message contains bare CR
 *	bare LF (reject mode)   550 5.6.11 Message contains bare LF
 *	too big                 552 5.3.4  Message size exceeds fixed limit
 *	long line               550 5.5.2  Message line too long
 */
#include <string.h>

#include "smtp_data.h"

#if defined(__SSE2__) && !defined(MOAT_NO_SIMD)
#include <emmintrin.h>
#define DATA_SCAN_SSE2 1
#endif

/* Decoder states, kept in d->st (an int in the public struct). */
enum data_state {
	DATA_ST_BOL = 0,	/* at a line start; d->bol_crlf says what kind */
	DATA_ST_DOT,		/* "." at a CRLF line start, pending */
	DATA_ST_DOT_CR,		/* ".\r" at a CRLF line start, pending */
	DATA_ST_TEXT,		/* inside a line, nothing pending */
	DATA_ST_CR,		/* a CR inside (or at the start of) a line, pending */
	DATA_ST_DONE		/* terminator seen */
};

static const char *const data_state_names[] = {
	[DATA_ST_BOL] = "bol",
	[DATA_ST_DOT] = "dot",
	[DATA_ST_DOT_CR] = "dot-cr",
	[DATA_ST_TEXT] = "text",
	[DATA_ST_CR] = "cr",
	[DATA_ST_DONE] = "done",
};

/* Output run collector: consecutive input bytes are passed as one slice. */
struct data_emit {
	const unsigned char *in;
	size_t start;
	size_t len;
	data_out_fn out;
	void *arg;
};

/*
 * Per-call scan state: the chunk and, for the portable scanner, where
 * its next LF, CR and NUL are (SIZE_MAX: not looked up yet; len: none).
 */
struct data_scan {
	const unsigned char *in;
	size_t len;
	size_t lf_at, cr_at, nul_at;
};

static const unsigned char data_crlf[2] = { '\r', '\n' };
static const unsigned char data_dot[1] = { '.' };
static const unsigned char data_cr[1] = { '\r' };

/* data_emit_flush - hand the collected input slice to out() */
static void
data_emit_flush(struct data_emit *e)
{
	if (e->len > 0 && e->out != NULL)
		e->out(e->arg, e->in + e->start, e->len);
	e->len = 0;
}

/* data_emit_in - output in[i .. i+n) verbatim, joining the current run */
static void
data_emit_in(struct data_emit *e, size_t i, size_t n)
{
	if (e->len > 0 && e->start + e->len == i) {
		e->len += n;
		return;
	}
	data_emit_flush(e);
	e->start = i;
	e->len = n;
}

/* data_emit_const - output bytes that are not a slice of the input */
static void
data_emit_const(struct data_emit *e, const unsigned char *s, size_t n)
{
	data_emit_flush(e);
	if (e->out != NULL)
		e->out(e->arg, s, n);
}

/* data_reject_flags - the flags that stop output in this mode */
static unsigned
data_reject_flags(const struct data_dec *d)
{
	unsigned m = DATA_F_NUL | DATA_F_BARE_CR | DATA_F_TOO_BIG | DATA_F_LONG_LINE;

	if (d->mode == DATA_BARELF_REJECT)
		m |= DATA_F_BARE_LF;
	return d->flags & m;
}

/* data_add_size - count n decoded bytes, flag DATA_F_TOO_BIG past the cap */
static void
data_add_size(struct data_dec *d, uint64_t n)
{
	d->size += n;
	if (d->max_size != 0 && d->size > d->max_size)
		d->flags |= DATA_F_TOO_BIG;
}

/*
 * data_content - one decoded content byte (not CR/LF), at input index i.
 * dot_here: the unstuffed dot of this line is in[i-1] (same chunk), so a
 * stuffing dot can be emitted from the input rather than as a constant.
 */
static void
data_content(struct data_dec *d, struct data_emit *e, size_t i,
	unsigned char c, bool dot_here)
{
	bool first = d->line_len == 0;
	bool was_ok = data_reject_flags(d) == 0;

	data_add_size(d, 1);
	if (d->line_len < SIZE_MAX)
		d->line_len++;
	if (d->max_line != 0 && d->line_len > d->max_line)
		d->flags |= DATA_F_LONG_LINE;
	if (c == 0)
		d->flags |= DATA_F_NUL;
	d->st = DATA_ST_TEXT;
	if (!was_ok || data_reject_flags(d) != 0)
		return;
	if (first && c == '.') {
		if (dot_here)
			data_emit_in(e, i - 1, 1);
		else
			data_emit_const(e, data_dot, 1);
	}
	data_emit_in(e, i, 1);
}

/*
 * data_lone_dot - "." then a bare LF, at a CRLF line start: not the end of
 * data, and not a stuffed line either. Kept as the content line "." so
 * that, as with LF "." LF, the upstream gets ".." (docs/SECURITY.md D1,
 * SMG-03): whatever the sender meant, the upstream sees a lone dot's line
 * as content, never as an end.
 */
static void
data_lone_dot(struct data_dec *d, struct data_emit *e)
{
	static const unsigned char dotdot[2] = { '.', '.' };
	bool was_ok = data_reject_flags(d) == 0;

	data_add_size(d, 1);
	d->line_len = 1;
	if (d->max_line != 0 && d->line_len > d->max_line)
		d->flags |= DATA_F_LONG_LINE;
	if (was_ok && data_reject_flags(d) == 0)
		data_emit_const(e, dotdot, 2);
}

/* data_bare_cr - the pending CR turned out to be bare: one content byte */
static void
data_bare_cr(struct data_dec *d)
{
	data_add_size(d, 1);
	if (d->line_len < SIZE_MAX)
		d->line_len++;
	if (d->max_line != 0 && d->line_len > d->max_line)
		d->flags |= DATA_F_LONG_LINE;
	d->flags |= DATA_F_BARE_CR;
	d->st = DATA_ST_TEXT;
}

/*
 * data_eol - a line end at input index i (the LF). crlf: a real CR LF,
 * whose CR is in[i-1] when cr_here; else a bare LF, emitted as CR LF.
 */
static void
data_eol(struct data_dec *d, struct data_emit *e, size_t i, bool crlf,
	bool cr_here)
{
	bool was_ok = data_reject_flags(d) == 0;

	if (!crlf)
		d->flags |= DATA_F_BARE_LF;
	data_add_size(d, 2);
	d->lines++;
	d->line_len = 0;
	d->bol_crlf = crlf;
	d->st = DATA_ST_BOL;
	if (!was_ok || data_reject_flags(d) != 0)
		return;
	if (!crlf)
		data_emit_const(e, data_crlf, 2);
	else if (cr_here)
		data_emit_in(e, i - 1, 2);
	else {
		data_emit_const(e, data_cr, 1);
		data_emit_in(e, i, 1);
	}
}

#ifndef DATA_SCAN_SSE2
/* data_scan_next - first c at or after i in the chunk (or len), cached in *at */
static size_t
data_scan_next(const struct data_scan *sc, size_t *at, unsigned char c, size_t i)
{
	if (*at == SIZE_MAX || *at < i) {
		const unsigned char *p = memchr(sc->in + i, c, sc->len - i);

		*at = p != NULL ? (size_t)(p - sc->in) : sc->len;
	}
	return *at;
}
#endif

/*
 * data_find_special - index of the first CR, LF or NUL in in[i..end), or
 * end. With SSE2 (every x86-64) 16 bytes per step, all three at once,
 * never past the first hit. Elsewhere (or built with -DMOAT_NO_SIMD),
 * one memchr per byte value, each result kept until i passes it: every
 * byte of the chunk is looked at at most once per value, however the
 * caller steps (a memchr for LF bounded by end, redone on each call,
 * would make "\rx\rx..." quadratic).
 */
static size_t
data_find_special(struct data_scan *sc, size_t i, size_t end)
{
#ifdef DATA_SCAN_SSE2
	const unsigned char *in = sc->in;
	const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');
	const __m128i nul = _mm_setzero_si128();

	for (; end - i >= 16; i += 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)(in + i));
		__m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, cr),
		    _mm_cmpeq_epi8(v, lf)), _mm_cmpeq_epi8(v, nul));
		unsigned m = (unsigned)_mm_movemask_epi8(hit);

		if (m != 0)
			return i + (size_t)__builtin_ctz(m);
	}
	for (; i < end; i++)
		if (in[i] == '\r' || in[i] == '\n' || in[i] == '\0')
			return i;
	return end;
#else
	size_t k = data_scan_next(sc, &sc->lf_at, '\n', i);

	if (k < end)
		end = k;
	k = data_scan_next(sc, &sc->cr_at, '\r', i);
	if (k < end)
		end = k;
	k = data_scan_next(sc, &sc->nul_at, '\0', i);
	return k < end ? k : end;
#endif
}

/*
 * data_text_run - fast path over whole lines. At in[i], inside a line or
 * at a line start whose first byte is not "." (a dot is the byte path's
 * business: unstuffing, the terminator, re-stuffing), take every byte up
 * to the next CR, LF or NUL; if that is a CR LF in this chunk, take it as
 * the line end and go on with the next line, as long as it does not
 * start with ".". All it takes is input passed on verbatim, one decoded
 * byte per input byte, so it is one piece of the current output run: a
 * chunk of ordinary lines reaches out() as one slice.
 *
 * While output is on, nothing is taken that would set a flag: at most
 * max_size - size bytes in all (which also keeps a line end within the
 * limit, as it is two of them), and at most max_line - line_len content
 * bytes per line; the byte that would cross is left to the byte path,
 * which flags it. Once output has stopped there are no caps, and the
 * flags are set here as the byte path would set them.
 *
 * A scan stops at most 2 bytes past what is taken (the portable
 * scanner's look-ahead is cached, see above), so a long line over a
 * limit, or any other input, costs linear time. Returns the number of
 * bytes taken; 0 sends the caller to the byte path.
 */
static size_t
data_text_run(struct data_dec *d, struct data_emit *e, struct data_scan *sc,
	size_t i)
{
	const unsigned char *in = sc->in;
	size_t end = sc->len, start = i, line_len = d->line_len, taken;
	size_t max_line = d->max_line;
	uint64_t lines = d->lines;
	bool stopped = data_reject_flags(d) != 0, eol = false;
	unsigned flags = 0;

	/* not stopped: size <= max_size and line_len <= max_line hold */
	if (!stopped && d->max_size != 0 && d->max_size - d->size < end - i)
		end = i + (size_t)(d->max_size - d->size);
	while (i < end) {
		size_t lim = end, stop, room = SIZE_MAX;

		if (max_line != 0 && !stopped) {
			room = max_line - line_len;
			if (end - i > 2 && room < end - i - 2)
				lim = i + room + 2;	/* room bytes, then CR LF */
		}
		stop = data_find_special(sc, i, lim);
		if (stop - i > room) {
			/* byte room + 1 would make the line too long */
			if (room > 0) {
				line_len += room;
				i += room;
				eol = false;
			}
			break;
		}
		if (stop > i) {
			line_len = stop - i > SIZE_MAX - line_len ? SIZE_MAX :
			    line_len + (stop - i);
			if (max_line != 0 && line_len > max_line)
				flags |= DATA_F_LONG_LINE;	/* stopped only */
			i = stop;
			eol = false;
		}
		/* a real CR LF, whole in range */
		if (stop + 1 >= end || in[stop] != '\r' || in[stop + 1] != '\n')
			break;
		lines++;
		line_len = 0;
		i += 2;
		eol = true;
		if (i < end && in[i] == '.')
			break;
	}
	taken = i - start;
	if (taken == 0)
		return 0;
	/* one decoded byte per byte taken */
	data_add_size(d, taken);
	d->flags |= flags;
	if (lines != d->lines)
		d->bol_crlf = true;	/* the last line end taken was a CR LF */
	d->lines = lines;
	d->line_len = line_len;
	d->st = eol ? DATA_ST_BOL : DATA_ST_TEXT;
	if (!stopped)
		data_emit_in(e, start, taken);
	return taken;
}

/* data_dec_state_name - name of a decoder state (d->st), for trace logs */
const char *
data_dec_state_name(int st)
{
	if (st < 0 || (size_t)st >= sizeof data_state_names / sizeof data_state_names[0])
		return "?";
	return data_state_names[st];
}

/* data_dec_init - reset the decoder: start of data is a CRLF line start */
void
data_dec_init(struct data_dec *d, enum data_barelf mode, uint64_t max_size,
	size_t max_line)
{
	d->mode = mode;
	d->max_size = max_size;
	d->max_line = max_line;
	d->done = false;
	d->flags = 0;
	d->size = 0;
	d->raw = 0;
	d->lines = 0;
	d->st = DATA_ST_BOL;
	d->line_len = 0;
	d->bol_crlf = true;
}

/* data_dec_feed - consume in[0..len) up to and including the terminator */
size_t
data_dec_feed(struct data_dec *d, const unsigned char *in, size_t len,
	data_out_fn out, void *arg)
{
	struct data_emit e = { in, 0, 0, out, arg };
	struct data_scan sc = { in, len, SIZE_MAX, SIZE_MAX, SIZE_MAX };
	size_t i = 0, n;

	if (d->done)
		return 0;
	while (i < len && !d->done) {
		unsigned char c = in[i];

		/* the fast path, unless this byte is surely the byte path's */
		if ((d->st == DATA_ST_TEXT || (d->st == DATA_ST_BOL && c != '.')) &&
		    ((c != '\r' && c != '\n' && c != '\0') ||
		    (c == '\r' && i + 1 < len && in[i + 1] == '\n'))) {
			n = data_text_run(d, &e, &sc, i);
			if (n > 0) {
				i += n;
				continue;
			}
		}
		switch ((enum data_state)d->st) {
		case DATA_ST_BOL:
			if (c == '\n')
				data_eol(d, &e, i, false, false);
			else if (c == '\r')
				d->st = DATA_ST_CR;
			else if (c == '.' && d->bol_crlf)
				d->st = DATA_ST_DOT;	/* unstuff, or terminator */
			else
				data_content(d, &e, i, c, false);
			break;
		case DATA_ST_DOT:
			/* the dot is removed, except in "." bare-LF (below) */
			if (c == '\r')
				d->st = DATA_ST_DOT_CR;
			else if (c == '\n') {
				data_lone_dot(d, &e);
				data_eol(d, &e, i, false, false);
			}
			else
				data_content(d, &e, i, c, i > 0);
			break;
		case DATA_ST_DOT_CR:
			if (c == '\n') {
				d->st = DATA_ST_DONE;
				d->done = true;
			} else {
				data_bare_cr(d);
				if (c == '\r')
					d->st = DATA_ST_CR;
				else
					data_content(d, &e, i, c, false);
			}
			break;
		case DATA_ST_CR:
			if (c == '\n')
				data_eol(d, &e, i, true, i > 0);
			else {
				data_bare_cr(d);
				if (c == '\r')
					d->st = DATA_ST_CR;
				else
					data_content(d, &e, i, c, false);
			}
			break;
		case DATA_ST_TEXT:
			if (c == '\n')
				data_eol(d, &e, i, false, false);
			else if (c == '\r')
				d->st = DATA_ST_CR;
			else
				data_content(d, &e, i, c, false);
			break;
		case DATA_ST_DONE:
		default:
			d->done = true;
			continue;
		}
		i++;
	}
	data_emit_flush(&e);
	d->raw += i;
	return i;
}

static const struct data_verdict data_v_nul = { 550, "5.6.0", "Message contains NUL" };
static const struct data_verdict data_v_bare_cr = { 550, "5.6.0", "Message contains bare CR" };
static const struct data_verdict data_v_bare_lf = { 550, "5.6.11", "Message contains bare LF" };
static const struct data_verdict data_v_too_big = { 552, "5.3.4", "Message size exceeds fixed limit" };
static const struct data_verdict data_v_long_line = { 550, "5.5.2", "Message line too long" };

/* data_dec_verdict - reply for a rejected message (static), NULL if none */
const struct data_verdict *
data_dec_verdict(const struct data_dec *d)
{
	if (d->flags & DATA_F_NUL)
		return &data_v_nul;
	if (d->flags & DATA_F_BARE_CR)
		return &data_v_bare_cr;
	if ((d->flags & DATA_F_BARE_LF) && d->mode == DATA_BARELF_REJECT)
		return &data_v_bare_lf;
	if (d->flags & DATA_F_TOO_BIG)
		return &data_v_too_big;
	if (d->flags & DATA_F_LONG_LINE)
		return &data_v_long_line;
	return NULL;
}
