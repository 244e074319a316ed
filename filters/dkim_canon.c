/*
 * dkim_canon - relaxed canonicalisation (see dkim_canon.h)
 *
 * The body canonicaliser emits runs of content straight from the input
 * (one out() call per run, not per byte); only its separators (SP, CRLF)
 * are constants.
 */
#include <string.h>

#include "dkim_canon.h"

static const char crlf[2] = { '\r', '\n' };
static const char sp[1] = { ' ' };

void
dkim_bcanon_init(struct dkim_bcanon *b)
{
	memset(b, 0, sizeof(*b));
}

/* content_start - before a line's content: the empty lines held back */
static void
content_start(struct dkim_bcanon *b, dkim_canon_out_fn out, void *arg)
{
	for (; b->empty > 0; b->empty--)
		out(arg, crlf, 2);
}

/* held_cr - a CR that no LF followed is content */
static void
held_cr(struct dkim_bcanon *b, dkim_canon_out_fn out, void *arg)
{
	if (!b->content)
		content_start(b, out, arg);
	if (b->wsp)
		out(arg, sp, 1);
	out(arg, "\r", 1);
	b->content = true;
	b->wsp = false;
	b->cr = false;
}

/* dkim_bcanon_feed - body bytes */
void
dkim_bcanon_feed(struct dkim_bcanon *b, const void *in, size_t len,
	dkim_canon_out_fn out, void *arg)
{
	const unsigned char *p = in;
	size_t run = 0, i;	/* content bytes p[run..i) not yet out */

	for (i = 0; i < len; i++) {
		unsigned char c = p[i];

		if (b->cr && c != '\n') {
			held_cr(b, out, arg);	/* run == i: nothing pending */
			run = i;
		}
		if (c == '\r') {
			if (i > run)
				out(arg, p + run, i - run);
			b->cr = true;
			run = i + 1;
			continue;
		}
		if (c == '\n') {
			if (i > run)
				out(arg, p + run, i - run);
			if (b->content)
				out(arg, crlf, 2);
			else
				b->empty++;
			b->content = b->wsp = b->cr = false;
			run = i + 1;
			continue;
		}
		if (c == ' ' || c == '\t') {
			if (i > run)
				out(arg, p + run, i - run);
			b->wsp = true;
			run = i + 1;
			continue;
		}
		if (run == i) {
			/* a run of content starts here */
			if (!b->content)
				content_start(b, out, arg);
			if (b->wsp)
				out(arg, sp, 1);
			b->wsp = false;
			b->content = true;
		}
		/* the rest of the run: a byte above SP is content and changes
		 * no state, so the loop has nothing to do for it */
		while (i + 1 < len && p[i + 1] > ' ')
			i++;
	}
	if (i > run)
		out(arg, p + run, i - run);
}

/* dkim_bcanon_end - the body ended */
void
dkim_bcanon_end(struct dkim_bcanon *b, dkim_canon_out_fn out, void *arg)
{
	if (b->cr)
		held_cr(b, out, arg);	/* a CR at the very end is content too */
	if (b->content)
		out(arg, crlf, 2);
	dkim_bcanon_init(b);
}

/* dkim_hcanon - one field, relaxed */
size_t
dkim_hcanon(const char *f, size_t len, char *out, size_t size)
{
	const char *colon = memchr(f, ':', len);
	size_t o = 0, nl, i;
	bool wsp = false, started = false;

	if (colon == NULL)
		return 0;
	nl = (size_t)(colon - f);
	while (nl > 0 && (f[nl - 1] == ' ' || f[nl - 1] == '\t'))
		nl--;
	if (nl == 0 || nl + 3 > size)
		return 0;
	for (i = 0; i < nl; i++) {
		if ((unsigned char)f[i] < 33 || (unsigned char)f[i] > 126)
			return 0;	/* not a field name (RFC 5322 ftext) */
		out[o++] = (f[i] >= 'A' && f[i] <= 'Z') ? (char)(f[i] - 'A' + 'a') : f[i];
	}
	out[o++] = ':';
	for (i = (size_t)(colon - f) + 1; i < len; i++) {
		char c = f[i];

		if (c == '\r' || c == '\n')
			continue;	/* unfold; the final CRLF goes too */
		if (c == ' ' || c == '\t') {
			wsp = true;
			continue;
		}
		if (o + 2 + 2 > size)
			return 0;
		if (wsp && started)
			out[o++] = ' ';
		wsp = false;
		started = true;
		out[o++] = c;
	}
	out[o++] = '\r';
	out[o++] = '\n';
	return o;
}
