/*
 * test_smtp_data - DATA decoder: smuggling sequences, unstuffing and
 * re-stuffing, limits, and chunking invariance (docs/SECURITY.md: SMG,
 * LEN-02, LEN-05, D1, D2).
 *
 * Every table row is fed whole, byte by byte, cut once at every offset
 * and cut twice at every pair of offsets; all results must be identical
 * and equal to the row's expectation.
 */
#include <stdint.h>
#include <stdlib.h>

#include "smtp_data.h"
#include "t.h"

struct obuf {
	unsigned char *p;
	size_t len, cap;
	size_t calls;
	int empty_calls;
};

static void
ob_out(void *arg, const unsigned char *b, size_t n)
{
	struct obuf *o = arg;

	o->calls++;
	if (n == 0)
		o->empty_calls++;
	if (o->len + n > o->cap) {
		size_t cap = o->cap ? o->cap : 256;

		while (cap < o->len + n)
			cap *= 2;
		o->p = realloc(o->p, cap);
		if (o->p == NULL)
			abort();
		o->cap = cap;
	}
	memcpy(o->p + o->len, b, n);
	o->len += n;
}

struct res {
	struct obuf o;
	struct data_dec d;
	size_t consumed;
};

static void
res_free(struct res *r)
{
	free(r->o.p);
	memset(r, 0, sizeof *r);
}

/* Feed in[0..len) cut at cuts[0..ncuts) (ascending), as the server would:
 * stop at done, leaving the rest. */
static void
feed_cuts(const unsigned char *in, size_t len, const size_t *cuts, size_t ncuts,
	enum data_barelf mode, uint64_t max_size, size_t max_line, struct res *r)
{
	size_t pos = 0, k;

	memset(r, 0, sizeof *r);
	data_dec_init(&r->d, mode, max_size, max_line);
	for (k = 0; k <= ncuts && !r->d.done; k++) {
		size_t end = k < ncuts ? cuts[k] : len;
		size_t n = data_dec_feed(&r->d, in + pos, end - pos, ob_out, &r->o);

		r->consumed += n;
		if (r->d.done)
			break;
		if (n != end - pos)
			r->consumed = (size_t)-1;	/* must consume all before done */
		pos = end;
	}
}

static bool
res_same(const struct res *a, const struct res *b)
{
	return a->o.len == b->o.len &&
	    (a->o.len == 0 || memcmp(a->o.p, b->o.p, a->o.len) == 0) &&
	    a->d.flags == b->d.flags && a->d.size == b->d.size &&
	    a->d.raw == b->d.raw && a->d.lines == b->d.lines &&
	    a->d.done == b->d.done && a->consumed == b->consumed &&
	    a->d.st == b->d.st && a->d.line_len == b->d.line_len &&
	    a->d.bol_crlf == b->d.bol_crlf;
}

/* Output is canonical: CR only before LF, LF only after CR, a line that
 * starts with "." starts with "..", so never a line "."; a finished,
 * unrejected message ends at a line end. */
static bool
out_canonical(const unsigned char *p, size_t n, bool complete)
{
	size_t i;
	bool bol = true;

	for (i = 0; i < n; i++) {
		if (p[i] == '\r' && (i + 1 >= n || p[i + 1] != '\n'))
			return false;
		if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
			return false;
		if (bol && p[i] == '.' && (i + 1 >= n || p[i + 1] != '.'))
			return false;
		bol = p[i] == '\n';
	}
	return !complete || n == 0 || bol;
}

static unsigned
stop_mask(enum data_barelf mode)
{
	return DATA_F_NUL | DATA_F_BARE_CR | DATA_F_TOO_BIG | DATA_F_LONG_LINE |
	    (mode == DATA_BARELF_REJECT ? DATA_F_BARE_LF : 0u);
}

/*
 * Check chunking invariance for one input; the whole-feed result is left
 * in *whole for the caller's expectations. Returns the number of splits
 * that differed (0 is good).
 */
static int
check_all_splits(const unsigned char *in, size_t len, enum data_barelf mode,
	uint64_t max_size, size_t max_line, struct res *whole)
{
	struct res r;
	size_t cuts[2], i, j, *bytes;
	int bad = 0;

	feed_cuts(in, len, NULL, 0, mode, max_size, max_line, whole);
	if (whole->o.empty_calls)
		bad++;
	if (!out_canonical(whole->o.p, whole->o.len,
	    whole->d.done && !(whole->d.flags & stop_mask(mode))))
		bad++;
	/* byte by byte */
	bytes = malloc((len + 1) * sizeof *bytes);
	if (bytes == NULL)
		abort();
	for (i = 0; i < len; i++)
		bytes[i] = i;
	feed_cuts(in, len, bytes, len, mode, max_size, max_line, &r);
	bad += !res_same(whole, &r);
	res_free(&r);
	free(bytes);
	/* one cut, then two cuts (short inputs only) */
	for (i = 0; i <= len; i++) {
		cuts[0] = i;
		feed_cuts(in, len, cuts, 1, mode, max_size, max_line, &r);
		bad += !res_same(whole, &r);
		res_free(&r);
		if (len > 200)
			continue;
		for (j = i; j <= len; j++) {
			cuts[1] = j;
			feed_cuts(in, len, cuts, 2, mode, max_size, max_line, &r);
			bad += !res_same(whole, &r);
			res_free(&r);
		}
	}
	return bad;
}

/* ------------------------------------------------------------------ */
/* The smuggling sequences of conformance/smtp/smtp-smuggling-eod-sequences.tsv,
 * sent after a header and a body line, followed by a smuggled command, the
 * real end of data, and a pipelined command that must be left unconsumed. */

#define SMG_PRE  "Subject: t\r\n\r\nhello"
#define SMG_POST "MAIL FROM:<ceo@victim.test>\r\n.\r\n"
#define SMG_NEXT "RSET\r\n"

struct smg_case {
	const char *name;
	const char *seq;
	size_t seqlen;
	unsigned flags;
	const char *out_norm;	/* output, bare LF normalised */
	const char *out_rej;	/* output, bare LF rejected */
};

#define SEQ(s) s, sizeof(s) - 1

static const struct smg_case smg_cases[] = {
	{ "lflf", SEQ("\n.\n"), DATA_F_BARE_LF,
	  SMG_PRE "\r\n..\r\nMAIL FROM:<ceo@victim.test>\r\n", SMG_PRE },
	{ "crcr", SEQ("\r.\r"), DATA_F_BARE_CR, SMG_PRE, SMG_PRE },
	{ "crlf", SEQ("\r.\n"), DATA_F_BARE_CR | DATA_F_BARE_LF, SMG_PRE, SMG_PRE },
	{ "lfcr", SEQ("\n.\r"), DATA_F_BARE_LF | DATA_F_BARE_CR,
	  SMG_PRE "\r\n..", SMG_PRE },
	{ "lfcrlf", SEQ("\n.\r\n"), DATA_F_BARE_LF,
	  SMG_PRE "\r\n..\r\nMAIL FROM:<ceo@victim.test>\r\n", SMG_PRE },
	{ "crlflf", SEQ("\r\n.\n"), DATA_F_BARE_LF,
	  SMG_PRE "\r\n..\r\nMAIL FROM:<ceo@victim.test>\r\n", SMG_PRE "\r\n.." },
	{ "crcrlf", SEQ("\r.\r\n"), DATA_F_BARE_CR, SMG_PRE, SMG_PRE },
	{ "crlfcr", SEQ("\r\n.\r"), DATA_F_BARE_CR, SMG_PRE "\r\n", SMG_PRE "\r\n" },
	{ "nullbefore", SEQ("\r\n\0.\r\n"), DATA_F_NUL, SMG_PRE "\r\n", SMG_PRE "\r\n" },
	{ "nullafter", SEQ("\r\n.\0\r\n"), DATA_F_NUL, SMG_PRE "\r\n", SMG_PRE "\r\n" },
	{ "crlf-dot-crcrlf", SEQ("\r\n.\r\r\n"), DATA_F_BARE_CR,
	  SMG_PRE "\r\n", SMG_PRE "\r\n" },
	{ "crcrlf-dot-crcrlf", SEQ("\r\r\n.\r\r\n"), DATA_F_BARE_CR, SMG_PRE, SMG_PRE },
};

static size_t row;	/* the table row test_*_row() checks */

static void
test_smuggling_row(void)
{
	unsigned char in[256];

	{
		const struct smg_case *c = &smg_cases[row];
		size_t len = 0, total, next = sizeof(SMG_NEXT) - 1;
		int m;

		memcpy(in, SMG_PRE, sizeof(SMG_PRE) - 1);
		len = sizeof(SMG_PRE) - 1;
		memcpy(in + len, c->seq, c->seqlen);
		len += c->seqlen;
		memcpy(in + len, SMG_POST SMG_NEXT, sizeof(SMG_POST SMG_NEXT) - 1);
		total = len + sizeof(SMG_POST SMG_NEXT) - 1;
		for (m = 0; m < 2; m++) {
			enum data_barelf mode = m ? DATA_BARELF_REJECT : DATA_BARELF_NORMALISE;
			const char *want = m ? c->out_rej : c->out_norm;
			const struct data_verdict *v;
			struct res w;
			int bad = check_all_splits(in, total, mode, 0, 0, &w);

			T_CHECKF(bad == 0, "%s mode %d: %d splits differ", c->name, m, bad);
			/* ends only at the real terminator, leaves RSET */
			T_CHECKF(w.d.done && w.consumed == total - next,
			    "%s: done %d consumed %zu of %zu", c->name, w.d.done,
			    w.consumed, total);
			T_CHECKF(w.d.flags == c->flags, "%s: flags %#x", c->name, w.d.flags);
			T_CHECKF(w.o.len == strlen(want) && memcmp(w.o.p, want, w.o.len) == 0,
			    "%s mode %d: output %.*s", c->name, m, (int)w.o.len,
			    (const char *)w.o.p);
			v = data_dec_verdict(&w.d);
			if (c->flags == DATA_F_BARE_LF && !m)
				T_CHECKF(v == NULL, "%s: bare LF normalised, no verdict", c->name);
			else
				T_CHECKF(v != NULL && v->code == 550, "%s: rejected", c->name);
			res_free(&w);
		}
	}
}

/* The TSV's last row: a correct terminator with the next transaction
 * pipelined in the same write (D2): stop right after the terminator. */
static void
test_smuggling_pipelining(void)
{
	static const char in[] = SMG_PRE "\r\n.\r\n"
	    "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n.\r\n";
	struct res w;
	int bad = check_all_splits((const unsigned char *)in, sizeof in - 1,
	    DATA_BARELF_NORMALISE, 0, 0, &w);

	T_CHECK(bad == 0);
	T_CHECK(w.d.done);
	T_CHECK(w.consumed == sizeof(SMG_PRE "\r\n.\r\n") - 1);
	T_CHECK(w.d.raw == w.consumed);
	T_CHECK(w.o.len == sizeof(SMG_PRE "\r\n") - 1 &&
	    memcmp(w.o.p, SMG_PRE "\r\n", w.o.len) == 0);
	T_CHECK(w.d.flags == 0 && data_dec_verdict(&w.d) == NULL);
	res_free(&w);
}

/* ------------------------------------------------------------------ */
/* General table. consumed -1: everything. */

struct data_case {
	const char *name;
	const char *in;
	size_t inlen;
	enum data_barelf mode;
	uint64_t max_size;
	size_t max_line;
	const char *out;
	unsigned flags;
	bool done;
	long consumed;
	uint64_t size;
	uint64_t lines;
};

#define N DATA_BARELF_NORMALISE
#define R DATA_BARELF_REJECT

static const struct data_case data_cases[] = {
	{ "empty message", SEQ(".\r\n"), N, 0, 0, "", 0, true, 3, 0, 0 },
	{ "only crlf", SEQ("\r\n.\r\n"), N, 0, 0, "\r\n", 0, true, 5, 2, 1 },
	{ "two empty lines", SEQ("\r\n\r\n.\r\n"), N, 0, 0, "\r\n\r\n", 0, true, 7, 4, 2 },
	{ "one line", SEQ("hi\r\n.\r\n"), N, 0, 0, "hi\r\n", 0, true, 7, 4, 1 },
	{ "body line .", SEQ("..\r\n.\r\n"), N, 0, 0, "..\r\n", 0, true, 7, 3, 1 },
	{ "body line ..", SEQ("...\r\n.\r\n"), N, 0, 0, "...\r\n", 0, true, 8, 4, 1 },
	{ "body line ...x", SEQ("....x\r\n.\r\n"), N, 0, 0, "....x\r\n", 0, true, 10, 6, 1 },
	{ "stuffed .x", SEQ("..x\r\n.\r\n"), N, 0, 0, "..x\r\n", 0, true, 8, 4, 1 },
	{ "unneeded stuffing", SEQ(".x\r\n.\r\n"), N, 0, 0, "x\r\n", 0, true, 7, 3, 1 },
	{ "dot space", SEQ(". \r\n.\r\n"), N, 0, 0, " \r\n", 0, true, 7, 3, 1 },
	{ "dot mid line", SEQ("a.\r\n.\r\n"), N, 0, 0, "a.\r\n", 0, true, 7, 4, 1 },
	{ "dots in body", SEQ("a\r\n..\r\nb\r\n...\r\n.\r\n"), N, 0, 0,
	  "a\r\n..\r\nb\r\n...\r\n", 0, true, 18, 13, 4 },
	{ "no terminator", SEQ("abc\r\n"), N, 0, 0, "abc\r\n", 0, false, -1, 5, 1 },
	{ "pending cr", SEQ("abc\r"), N, 0, 0, "abc", 0, false, -1, 3, 0 },
	{ "pending dot", SEQ("\r\n."), N, 0, 0, "\r\n", 0, false, -1, 2, 1 },
	{ "pending dot cr", SEQ("\r\n.\r"), N, 0, 0, "\r\n", 0, false, -1, 2, 1 },
	{ "pipelined after", SEQ("a\r\n.\r\nMAIL FROM:<x>\r\n"), N, 0, 0,
	  "a\r\n", 0, true, 6, 3, 1 },
	{ "two terminators", SEQ("a\r\n.\r\nb\r\n.\r\n"), N, 0, 0, "a\r\n", 0, true, 6, 3, 1 },
	{ "bare lf line", SEQ("a\nb\r\n.\r\n"), N, 0, 0, "a\r\nb\r\n", DATA_F_BARE_LF,
	  true, 8, 6, 2 },
	{ "bare lf then dot crlf", SEQ("a\n.\r\nb\r\n.\r\n"), N, 0, 0,
	  "a\r\n..\r\nb\r\n", DATA_F_BARE_LF, true, 11, 9, 3 },
	{ "bare lf then ..", SEQ("a\n..\r\n.\r\n"), N, 0, 0, "a\r\n...\r\n",
	  DATA_F_BARE_LF, true, 9, 7, 2 },
	{ "lf only, never ends", SEQ("a\n.\n"), N, 0, 0, "a\r\n..\r\n", DATA_F_BARE_LF,
	  false, -1, 6, 2 },
	{ "bare lf at start", SEQ("\n.\r\n.\r\n"), N, 0, 0, "\r\n..\r\n", DATA_F_BARE_LF,
	  true, 7, 5, 2 },
	{ "dot lf at start", SEQ(".\n.\r\n.\r\n"), N, 0, 0, "..\r\n..\r\n", DATA_F_BARE_LF,
	  true, 8, 6, 2 },
	{ "lf after crlf line", SEQ("a\r\n\nb\r\n.\r\n"), N, 0, 0, "a\r\n\r\nb\r\n",
	  DATA_F_BARE_LF, true, 10, 8, 3 },
	{ "nul", SEQ("a\0b\r\n.\r\n"), N, 0, 0, "a", DATA_F_NUL, true, 8, 5, 1 },
	{ "bare cr", SEQ("a\rb\r\n.\r\n"), N, 0, 0, "a", DATA_F_BARE_CR, true, 8, 5, 1 },
	{ "cr cr lf", SEQ("a\r\r\n.\r\n"), N, 0, 0, "a", DATA_F_BARE_CR, true, 7, 4, 1 },
	{ "dot cr x at start", SEQ(".\rx\r\n.\r\n"), N, 0, 0, "", DATA_F_BARE_CR,
	  true, 8, 4, 1 },
	{ "dot cr cr lf dot", SEQ(".\r\r\n.\r\n"), N, 0, 0, "", DATA_F_BARE_CR,
	  true, 7, 3, 1 },
	{ "dot cr nul", SEQ("a\r\n.\r\0\r\n.\r\n"), N, 0, 0, "a\r\n",
	  DATA_F_BARE_CR | DATA_F_NUL, true, 11, 7, 2 },
	{ "dot cr dot", SEQ("a\r\n.\r.\r\n.\r\n"), N, 0, 0, "a\r\n",
	  DATA_F_BARE_CR, true, 11, 7, 2 },
	{ "body line .\\r", SEQ("..\r\n.\r\r\n.\r\n"), N, 0, 0, "..\r\n",
	  DATA_F_BARE_CR, true, 11, 6, 2 },
	{ "8-bit passes", SEQ("\xff\xfe\x80\r\n.\r\n"), N, 0, 0, "\xff\xfe\x80\r\n",
	  0, true, 8, 5, 1 },
	{ "tab and del pass", SEQ("\t\x7f\x01\r\n.\r\n"), N, 0, 0, "\t\x7f\x01\r\n",
	  0, true, 8, 5, 1 },
	{ "line = max", SEQ("abc\r\n.\r\n"), N, 0, 3, "abc\r\n", 0, true, 8, 5, 1 },
	{ "line = max+1", SEQ("abcd\r\nx\r\n.\r\n"), N, 0, 3, "abc", DATA_F_LONG_LINE,
	  true, 12, 9, 2 },
	{ "stuffing dot not counted", SEQ("..bc\r\n.\r\n"), N, 0, 3, "..bc\r\n", 0,
	  true, 9, 5, 1 },
	{ "bare cr counts in line", SEQ("ab\rc\r\n.\r\n"), N, 0, 3, "ab",
	  DATA_F_BARE_CR | DATA_F_LONG_LINE, true, 9, 6, 1 },
	{ "size = max", SEQ("ab\r\n.\r\n"), N, 4, 0, "ab\r\n", 0, true, 7, 4, 1 },
	{ "size = max+1 at eol", SEQ("abc\r\n.\r\n"), N, 4, 0, "abc", DATA_F_TOO_BIG,
	  true, 8, 5, 1 },
	{ "size = max+1 in text", SEQ("ab\r\nc\r\n.\r\n"), N, 4, 0, "ab\r\n",
	  DATA_F_TOO_BIG, true, 10, 7, 2 },
	{ "size of stuffed line", SEQ("..\r\n.\r\n"), N, 3, 0, "..\r\n", 0, true, 7, 3, 1 },
	{ "size 10x max", SEQ("0123456789\r\n0123456789\r\n.\r\n"), N, 2, 0, "01",
	  DATA_F_TOO_BIG, true, 27, 24, 2 },
	{ "crlf after bare lf, then text", SEQ("a\nb\r\ncd"), N, 0, 0, "a\r\nb\r\ncd",
	  DATA_F_BARE_LF, false, -1, 8, 2 },
	{ "long run, line = max", SEQ("0123456789abcdef0123\r\n0123456789abcdef0123\r\n.\r\n"),
	  N, 0, 20, "0123456789abcdef0123\r\n0123456789abcdef0123\r\n", 0, true, 47, 44, 2 },
	{ "long run, line = max+1", SEQ("0123456789abcdef0123\r\n0123456789abcdef01234\r\n.\r\n"),
	  N, 0, 20, "0123456789abcdef0123\r\n0123456789abcdef0123", DATA_F_LONG_LINE,
	  true, 48, 45, 2 },
	{ "long run, size cap at cr", SEQ("0123456789abcdef0123\r\n0123456789abcdef0123\r\n.\r\n"),
	  N, 43, 0, "0123456789abcdef0123\r\n0123456789abcdef0123", DATA_F_TOO_BIG,
	  true, 47, 44, 2 },
	{ "long run, nul late", SEQ("0123456789abcdef0123\r\n0123456789abcdef\0x\r\n.\r\n"),
	  N, 0, 0, "0123456789abcdef0123\r\n0123456789abcdef", DATA_F_NUL, true, 45, 42, 2 },
	{ "long run, bare cr late", SEQ("0123456789abcdef0123\r\n0123456789abcdef\rx\r\n.\r\n"),
	  N, 0, 0, "0123456789abcdef0123\r\n0123456789abcdef", DATA_F_BARE_CR, true, 45, 42, 2 },
	{ "stopped, then long line", SEQ("\0\r\n0123456789abcdef0123456789\r\n.\r\n"), N, 0, 20,
	  "", DATA_F_NUL | DATA_F_LONG_LINE, true, 34, 31, 2 },
	{ "stopped, then too big", SEQ("\0\r\n0123456789abcdef0123456789\r\n.\r\n"), N, 20, 0,
	  "", DATA_F_NUL | DATA_F_TOO_BIG, true, 34, 31, 2 },
	{ "reject mode, clean", SEQ("a\r\n.\r\n"), R, 0, 0, "a\r\n", 0, true, 6, 3, 1 },
	{ "reject mode, bare lf", SEQ("a\nb\r\n.\r\n"), R, 0, 0, "a", DATA_F_BARE_LF,
	  true, 8, 6, 2 },
	{ "reject mode, lf dot lf", SEQ("a\r\n\n.\n\r\n.\r\n"), R, 0, 0, "a\r\n",
	  DATA_F_BARE_LF, true, 11, 10, 4 },
};

static void
test_data_row(void)
{
	{
		const struct data_case *c = &data_cases[row];
		struct res w;
		size_t want_consumed = c->consumed < 0 ? c->inlen : (size_t)c->consumed;
		int bad = check_all_splits((const unsigned char *)c->in, c->inlen,
		    c->mode, c->max_size, c->max_line, &w);

		T_CHECKF(bad == 0, "%s: %d splits differ", c->name, bad);
		T_CHECKF(w.o.len == strlen(c->out) &&
		    (w.o.len == 0 || memcmp(w.o.p, c->out, w.o.len) == 0),
		    "%s: output [%.*s]", c->name, (int)w.o.len, (const char *)w.o.p);
		T_CHECKF(w.d.flags == c->flags, "%s: flags %#x", c->name, w.d.flags);
		T_CHECKF(w.d.done == c->done, "%s: done %d", c->name, w.d.done);
		T_CHECKF(w.consumed == want_consumed && w.d.raw == want_consumed,
		    "%s: consumed %zu", c->name, w.consumed);
		T_CHECKF(w.d.size == c->size, "%s: size %llu", c->name,
		    (unsigned long long)w.d.size);
		T_CHECKF(w.d.lines == c->lines, "%s: lines %llu", c->name,
		    (unsigned long long)w.d.lines);
		res_free(&w);
	}
}

/* ------------------------------------------------------------------ */

static void
test_verdicts(void)
{
	struct data_dec d;
	const struct data_verdict *v;

	data_dec_init(&d, N, 0, 0);
	T_CHECK(data_dec_verdict(&d) == NULL);
	d.flags = DATA_F_NUL | DATA_F_BARE_CR | DATA_F_BARE_LF | DATA_F_TOO_BIG |
	    DATA_F_LONG_LINE;
	v = data_dec_verdict(&d);
	T_CHECK(v && v->code == 550 && strcmp(v->enh, "5.6.0") == 0 &&
	    strcmp(v->text, "Message contains NUL") == 0);
	d.flags &= ~DATA_F_NUL;
	v = data_dec_verdict(&d);
	T_CHECK(v && v->code == 550 && strcmp(v->text, "Message contains bare CR") == 0);
	d.flags &= ~DATA_F_BARE_CR;
	v = data_dec_verdict(&d);	/* normalise mode: bare LF is no reason */
	T_CHECK(v && v->code == 552 && strcmp(v->enh, "5.3.4") == 0 &&
	    strcmp(v->text, "Message size exceeds fixed limit") == 0);
	d.mode = R;
	v = data_dec_verdict(&d);
	T_CHECK(v && v->code == 550 && strcmp(v->enh, "5.6.11") == 0);
	d.flags &= ~(DATA_F_BARE_LF | DATA_F_TOO_BIG);
	v = data_dec_verdict(&d);
	T_CHECK(v && v->code == 550 && strcmp(v->enh, "5.5.2") == 0 &&
	    strcmp(v->text, "Message line too long") == 0);
	d.flags = DATA_F_BARE_LF;
	d.mode = N;
	T_CHECK(data_dec_verdict(&d) == NULL);
}

static void
test_feed_after_done(void)
{
	static const unsigned char in[] = "a\r\n.\r\nb\r\n";
	struct obuf o = { 0 };
	struct data_dec d;
	size_t n;

	data_dec_init(&d, N, 0, 0);
	n = data_dec_feed(&d, in, sizeof in - 1, ob_out, &o);
	T_CHECK(n == 6 && d.done);
	T_CHECK(data_dec_feed(&d, in + n, sizeof in - 1 - n, ob_out, &o) == 0);
	T_CHECK(data_dec_feed(&d, in, sizeof in - 1, ob_out, &o) == 0);
	T_CHECK(o.len == 3 && d.raw == 6);
	T_CHECK(data_dec_feed(&d, NULL, 0, ob_out, &o) == 0);
	free(o.p);
}

static void
test_cr_at_chunk_end(void)
{
	struct obuf o = { 0 };
	struct data_dec d;

	/* CR ends the chunk, LF starts the next: one CRLF, not bare */
	data_dec_init(&d, N, 0, 0);
	T_CHECK(data_dec_feed(&d, (const unsigned char *)"ab\r", 3, ob_out, &o) == 3);
	T_CHECK(o.len == 2 && d.flags == 0);
	T_CHECK(data_dec_feed(&d, (const unsigned char *)"\n.\r", 3, ob_out, &o) == 3);
	T_CHECK(o.len == 4 && memcmp(o.p, "ab\r\n", 4) == 0 && !d.done);
	T_CHECK(data_dec_feed(&d, (const unsigned char *)"\nX", 2, ob_out, &o) == 1);
	T_CHECK(d.done && d.flags == 0 && o.len == 4 && d.raw == 7);
	free(o.p);

	/* CR ends the chunk, X starts the next: bare CR */
	memset(&o, 0, sizeof o);
	data_dec_init(&d, N, 0, 0);
	T_CHECK(data_dec_feed(&d, (const unsigned char *)"ab\r", 3, ob_out, &o) == 3);
	T_CHECK(d.flags == 0);
	T_CHECK(data_dec_feed(&d, (const unsigned char *)"X", 1, ob_out, &o) == 1);
	T_CHECK(d.flags == DATA_F_BARE_CR && o.len == 2);
	free(o.p);
}

/* LEN-02: text lines of 998, 999, 1000, 1001 bytes incl. CRLF, 10 KB, 1 MB
 * against max_line 998 (RFC 5322 2.1.1). */
static void
test_long_lines(void)
{
	static const size_t lens[] = { 996, 997, 998, 999, 10240, 1048576 };
	size_t k;

	for (k = 0; k < sizeof lens / sizeof lens[0]; k++) {
		size_t n = lens[k], total = n + 2 + 3;
		unsigned char *in = malloc(total);
		struct res w, r;
		size_t cuts[3] = { 1, n / 2, n + 1 };	/* one inside the CRLF */

		if (in == NULL)
			abort();
		memset(in, 'x', n);
		memcpy(in + n, "\r\n.\r\n", 5);
		feed_cuts(in, total, NULL, 0, N, 0, 998, &w);
		feed_cuts(in, total, cuts, 3, N, 0, 998, &r);
		T_CHECK(res_same(&w, &r));
		T_CHECKF(w.d.done && w.consumed == total, "len %zu", n);
		if (n <= 998) {
			T_CHECKF(w.d.flags == 0 && w.o.len == n + 2, "len %zu", n);
		} else {
			T_CHECKF(w.d.flags == DATA_F_LONG_LINE && w.o.len == 998,
			    "len %zu: flags %#x out %zu", n, w.d.flags, w.o.len);
			T_CHECK(data_dec_verdict(&w.d)->code == 550);
		}
		T_CHECK(w.d.size == n + 2);
		/* unlimited line length */
		res_free(&w);
		feed_cuts(in, total, NULL, 0, N, 0, 0, &w);
		T_CHECK(w.d.flags == 0 && w.o.len == n + 2 && w.o.calls == 1);
		res_free(&w);
		res_free(&r);
		free(in);
	}
}

/* LEN-05: max+1 and 10 x max; the decoder reads to the real end marker
 * and stops output exactly at the limit. */
static void
test_max_size(void)
{
	enum { LINE = 100, LINES = 100 };
	size_t total = LINES * (LINE + 2) + 3, i;
	unsigned char *in = malloc(total);
	uint64_t size = LINES * (LINE + 2);
	struct res w;

	if (in == NULL)
		abort();
	for (i = 0; i < LINES; i++) {
		memset(in + i * (LINE + 2), 'a' + i % 26, LINE);
		memcpy(in + i * (LINE + 2) + LINE, "\r\n", 2);
	}
	memcpy(in + total - 3, ".\r\n", 3);

	feed_cuts(in, total, NULL, 0, N, size, 0, &w);
	T_CHECK(w.d.flags == 0 && w.d.done && w.o.len == size && w.d.size == size);
	res_free(&w);

	feed_cuts(in, total, NULL, 0, N, size - 1, 0, &w);
	T_CHECK(w.d.flags == DATA_F_TOO_BIG && w.d.done && w.consumed == total);
	T_CHECK(w.o.len == size - 2 && w.d.size == size);
	T_CHECK(data_dec_verdict(&w.d)->code == 552);
	res_free(&w);

	feed_cuts(in, total, NULL, 0, N, size / 10, 0, &w);
	T_CHECK(w.d.flags == DATA_F_TOO_BIG && w.d.done && w.consumed == total);
	T_CHECK(w.o.len == size / 10 && w.d.size == size);
	res_free(&w);
	free(in);
}

/* The common case reaches out() in big runs, not byte per byte. */
static void
test_output_runs(void)
{
	static const char msg[] = "From: a@b\r\nSubject: x\r\n\r\nline one\r\n"
	    "line two\r\n..dotted\r\nend\r\n.\r\n";
	struct res w;

	feed_cuts((const unsigned char *)msg, sizeof msg - 1, NULL, 0, N, 0, 0, &w);
	T_CHECK(w.d.done && w.d.flags == 0);
	T_CHECKF(w.o.calls == 1, "calls %zu", w.o.calls);
	res_free(&w);
	/* a bare LF costs one extra constant and splits the run */
	feed_cuts((const unsigned char *)"ab\ncd\r\n.\r\n", 10, NULL, 0, N, 0, 0, &w);
	T_CHECK(w.o.calls == 3 && w.o.len == 8);
	res_free(&w);
}

/* ------------------------------------------------------------------ */
/* Long runs: the fast path over whole lines (SSE2 or memchr). */

/* Feed in[0..len) in chunks of `step` bytes (0: whole). */
static void
feed_step(const unsigned char *in, size_t len, size_t step, enum data_barelf mode,
	uint64_t max_size, size_t max_line, struct res *r)
{
	size_t ncuts = step == 0 || len == 0 ? 0 : (len - 1) / step, k;
	size_t *cuts = malloc((ncuts + 1) * sizeof *cuts);

	if (cuts == NULL)
		abort();
	for (k = 0; k < ncuts; k++)
		cuts[k] = (k + 1) * step;
	feed_cuts(in, len, cuts, ncuts, mode, max_size, max_line, r);
	free(cuts);
}

/* A clean body of about `want` bytes: lines of 0..len_mod-1 bytes of
 * text (never starting with "."), CR LF, then ".\r\n". Returns the
 * buffer; *body is the length before the terminator. */
static unsigned char *
make_body(size_t want, size_t len_mod, size_t *body, size_t *total)
{
	static const unsigned char text[] = " abcdefghijklmnopqrstuvwxyz.,:=\xe9\t";
	unsigned char *in = malloc(want + len_mod + 8);
	size_t n = 0, line = 0, k;

	if (in == NULL)
		abort();
	while (n < want) {
		size_t l = (line * 37 + 11) % len_mod;

		for (k = 0; k < l; k++)
			in[n + k] = k == 0 ? (unsigned char)('A' + line % 26) :
			    text[(line + k * 7) % (sizeof text - 1)];
		memcpy(in + n + l, "\r\n", 2);
		n += l + 2;
		line++;
	}
	*body = n;
	memcpy(in + n, ".\r\n", 3);
	*total = n + 3;
	return in;
}

/* Many lines in one chunk reach out() as one call; in 64 KiB chunks, at
 * most two calls per chunk (a CR LF cut by a chunk end costs a constant
 * "\r"). */
static void
test_long_runs(void)
{
	static const size_t mods[] = { 79, 1, 3, 17, 200 };
	size_t body, total, k, m;
	unsigned char *in;
	struct res w, r;

	for (m = 0; m < sizeof mods / sizeof mods[0]; m++) {
		in = make_body(65536, mods[m], &body, &total);
		for (k = 0; k < 2; k++) {
			feed_cuts(in, total, NULL, 0, N, k ? 10u << 20 : 0, k ? 998 : 0, &w);
			T_CHECKF(w.d.done && w.d.flags == 0 && w.consumed == total &&
			    w.d.size == body, "mod %zu", mods[m]);
			T_CHECKF(w.o.len == body && memcmp(w.o.p, in, body) == 0,
			    "mod %zu", mods[m]);
			T_CHECKF(w.o.calls == 1, "mod %zu limits %zu: %zu calls",
			    mods[m], k, w.o.calls);
			res_free(&w);
		}
		free(in);
	}

	/* 1 MiB in 64 KiB chunks */
	in = make_body(1u << 20, 79, &body, &total);
	feed_step(in, total, 65536, N, 10u << 20, 998, &w);
	T_CHECK(w.d.done && w.d.flags == 0 && w.o.len == body &&
	    memcmp(w.o.p, in, body) == 0);
	T_CHECKF(w.o.calls <= 2 * (total / 65536 + 1), "calls %zu", w.o.calls);
	feed_step(in, total, 0, N, 10u << 20, 998, &r);
	T_CHECK(res_same(&w, &r) && r.o.calls == 1);
	res_free(&r);
	res_free(&w);

	free(in);

	/* re-stuffed lines ("..x") stay in the run, unneeded stuffing
	 * (".x") costs one cut each */
	{
		static const char msg[] = "abc\r\n..dot\r\ndef\r\n.x\r\nghi\r\n"
		    ".y\r\nend\r\n.\r\n";

		feed_cuts((const unsigned char *)msg, sizeof msg - 1, NULL, 0, N, 0, 0, &w);
		T_CHECK(w.d.done && w.d.flags == 0);
		T_CHECK(w.o.len == sizeof msg - 1 - 5 &&
		    memcmp(w.o.p, "abc\r\n..dot\r\ndef\r\nx\r\nghi\r\ny\r\nend\r\n",
		    w.o.len) == 0);
		T_CHECKF(w.o.calls == 3, "calls %zu", w.o.calls);
		res_free(&w);
	}
}

/* LEN-05 at 1 MiB: max_size at, around and inside line ends, at chunk
 * boundaries; output is exactly the longest prefix of whole units
 * (content bytes, CR LF pairs) within max_size, for any chunking. */
static void
test_max_size_1mb(void)
{
	static const size_t steps[] = { 65536, 4093, 77 };
	size_t body, total, k, s, nm = 0;
	unsigned char *in = make_body(1u << 20, 101, &body, &total);
	uint64_t ms[32];
	struct res w, r;

	ms[nm++] = body;
	ms[nm++] = body + 1;
	ms[nm++] = body - 1;	/* inside the last CR LF */
	ms[nm++] = body - 2;
	ms[nm++] = body - 3;
	ms[nm++] = 1;
	ms[nm++] = 65536;
	ms[nm++] = 65535;
	ms[nm++] = 65537;
	ms[nm++] = 500000;
	for (k = 300000; nm < 16; k++)
		if (in[k] == '\r') {	/* right before, at, after a CR LF */
			ms[nm++] = k;
			ms[nm++] = k + 1;
			ms[nm++] = k + 2;
			k += 1000;
		}
	for (k = 0; k < nm; k++) {
		uint64_t m = ms[k];
		size_t want = m >= body ? body : in[m - 1] == '\r' ? (size_t)m - 1 : (size_t)m;

		feed_cuts(in, total, NULL, 0, N, m, 998, &w);
		T_CHECKF(w.d.done && w.consumed == total && w.d.size == body,
		    "max %llu", (unsigned long long)m);
		T_CHECKF(w.d.flags == (m < body ? DATA_F_TOO_BIG : 0u), "max %llu: flags %#x",
		    (unsigned long long)m, w.d.flags);
		T_CHECKF(w.o.len == want && memcmp(w.o.p, in, want) == 0,
		    "max %llu: out %zu, want %zu", (unsigned long long)m, w.o.len, want);
		for (s = 0; s < sizeof steps / sizeof steps[0]; s++) {
			feed_step(in, total, steps[s], N, m, 998, &r);
			T_CHECKF(res_same(&w, &r), "max %llu step %zu",
			    (unsigned long long)m, steps[s]);
			res_free(&r);
		}
		res_free(&w);
	}
	free(in);
}

/* Chunking invariance on large, messy input: random lines with dots,
 * bare LF, and (in the second half of the cases) bare CR and NUL, so
 * both the emitting and the counting-only fast path run long. */
static void
test_large_invariance(void)
{
	static const size_t steps[] = { 1, 7, 64, 4093, 65536 };
	static const struct { unsigned dirt; enum data_barelf mode; uint64_t ms; size_t ml; } cfg[] = {
		{ 0, N, 0, 0 }, { 0, R, 0, 998 }, { 0, N, 150000, 40 },
		{ 1, N, 0, 0 }, { 1, R, 200000, 998 }, { 1, N, 0, 17 },
	};
	size_t len = 300000, i, s, c;
	unsigned char *in = malloc(len);
	uint32_t x = 12345;
	struct res w, r;

	if (in == NULL)
		abort();
	for (c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
		for (i = 0; i < len; i++) {
			unsigned v;

			x = x * 1103515245u + 12345u;
			v = (x >> 8) % 1000;
			in[i] = v < 30 ? '\r' : v < 60 ? '\n' : v < 90 ? '.' :
			    (unsigned char)('a' + v % 26);
			if (in[i] == '\r' && i + 1 < len && !cfg[c].dirt)
				in[++i] = '\n';	/* no bare CR */
			if (cfg[c].dirt && v == 999)
				in[i] = '\0';
		}
		/* no terminator before the end */
		for (i = 0; i + 5 <= len; i++)
			if (memcmp(in + i, "\r\n.\r\n", 5) == 0)
				in[i + 2] = ',';
		feed_cuts(in, len, NULL, 0, cfg[c].mode, cfg[c].ms, cfg[c].ml, &w);
		T_CHECKF(!w.d.done && w.consumed == len, "cfg %zu", c);
		T_CHECKF(out_canonical(w.o.p, w.o.len, false), "cfg %zu", c);
		if (!cfg[c].dirt && cfg[c].ms == 0 && cfg[c].mode == N)
			T_CHECKF(w.o.len > len / 2, "cfg %zu: out %zu", c, w.o.len);
		for (s = 0; s < sizeof steps / sizeof steps[0]; s++) {
			feed_step(in, len, steps[s], cfg[c].mode, cfg[c].ms, cfg[c].ml, &r);
			T_CHECKF(res_same(&w, &r), "cfg %zu step %zu", c, steps[s]);
			res_free(&r);
		}
		res_free(&w);
	}
	free(in);
}

static void
test_null_out_and_names(void)
{
	struct data_dec d;

	data_dec_init(&d, N, 0, 0);
	T_CHECK(strcmp(data_dec_state_name(d.st), "bol") == 0);
	T_CHECK(data_dec_feed(&d, (const unsigned char *)"x\n..\r\n.\r\n", 9, NULL, NULL) == 9);
	T_CHECK(d.done && d.size == 7 && d.flags == DATA_F_BARE_LF);
	T_CHECK(strcmp(data_dec_state_name(d.st), "done") == 0);
	T_CHECK(strcmp(data_dec_state_name(-1), "?") == 0);
	T_CHECK(strcmp(data_dec_state_name(99), "?") == 0);
}

int
main(void)
{
	for (row = 0; row < sizeof smg_cases / sizeof smg_cases[0]; row++)
		T_RUN(test_smuggling_row);
	T_RUN(test_smuggling_pipelining);
	for (row = 0; row < sizeof data_cases / sizeof data_cases[0]; row++)
		T_RUN(test_data_row);
	T_RUN(test_verdicts);
	T_RUN(test_feed_after_done);
	T_RUN(test_cr_at_chunk_end);
	T_RUN(test_long_lines);
	T_RUN(test_max_size);
	T_RUN(test_output_runs);
	T_RUN(test_long_runs);
	T_RUN(test_max_size_1mb);
	T_RUN(test_large_invariance);
	T_RUN(test_null_out_and_names);
	return T_DONE("smtp_data");
}
