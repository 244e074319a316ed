/*
 * dkim_canon - DKIM "relaxed" canonicalisation (RFC 6376 3.4.2, 3.4.4),
 * pure: bytes in, canonical bytes out (moat's own Ed25519 signer)
 *
 * SYNOPSIS
 *	void dkim_bcanon_init(struct dkim_bcanon *b);
 *	void dkim_bcanon_feed(struct dkim_bcanon *b, const void *in, size_t len,
 *	                      dkim_canon_out_fn out, void *arg);
 *	void dkim_bcanon_end(struct dkim_bcanon *b, dkim_canon_out_fn out, void *arg);
 *	size_t dkim_hcanon(const char *field, size_t len, char *out, size_t size);
 *
 * DESCRIPTION
 *	The body canonicaliser takes the body (CRLF line ends; cut
 *	anywhere) and gives out() its relaxed form: whitespace (SP, HTAB)
 *	runs inside a line become one SP, whitespace at a line's end goes,
 *	empty lines at the body's end go, and a last line without CRLF gets
 *	one. A body of nothing (or of empty lines only) gives nothing. The
 *	state is a few bytes: nothing is held but a count of empty lines.
 *	A CR not followed by LF is content, as a lone LF ends a line.
 *
 *	dkim_hcanon() puts one header field ("Name: value", folded, with or
 *	without its final CRLF) in relaxed form: the name lower-cased and
 *	without whitespace before the colon, line folds removed, whitespace
 *	runs made one SP, whitespace at the value's start and end removed,
 *	then CRLF. Returns the length written (out is not terminated), or 0
 *	when out is too small, the field has no colon, or its name is empty
 *	or holds a byte outside printable ASCII.
 */
#ifndef MOAT_DKIM_CANON_H
#define MOAT_DKIM_CANON_H

#include <stdbool.h>
#include <stddef.h>

typedef void (*dkim_canon_out_fn)(void *arg, const void *buf, size_t len);

struct dkim_bcanon {
	unsigned long empty;	/* empty lines held back (they may end the body) */
	bool wsp;		/* whitespace seen since the last content byte */
	bool content;		/* the current line has content */
	bool cr;		/* a CR waits for its LF */
};

void dkim_bcanon_init(struct dkim_bcanon *b);
void dkim_bcanon_feed(struct dkim_bcanon *b, const void *in, size_t len,
	dkim_canon_out_fn out, void *arg);
void dkim_bcanon_end(struct dkim_bcanon *b, dkim_canon_out_fn out, void *arg);
size_t dkim_hcanon(const char *field, size_t len, char *out, size_t size);

#endif
