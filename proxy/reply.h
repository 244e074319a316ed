/*
 * reply - strict parser for SMTP replies received from the upstream MTA
 *
 * SYNOPSIS
 *	#include "reply.h"
 *
 *	void reply_init(struct reply *r);
 *	enum reply_status reply_feed_line(struct reply *r,
 *	                                  const char *line, size_t len);
 *	int reply_render(const struct reply *r, int code_override,
 *	                 char *out, size_t size);
 *
 * DESCRIPTION
 *	Lines are given without their line end. A reply is one or more lines
 *	"DDD-text" ending with "DDD text" (or "DDD" alone); every line must
 *	carry the same code, the first digit 2..5, the others 0..9 (RFC 5321
 *	4.2). Lines longer than REPLY_LINE_MAX, more than REPLY_LINES_MAX
 *	lines, NUL or other control bytes, a code mismatch, anything
 *	non-numeric: REPLY_ERROR (sticky until reply_init()). Nothing is
 *	allocated: text is kept in the struct, sanitised to printable ASCII.
 *	The enhanced status code (RFC 3463) of the first line, if present and
 *	of the same class, is split out.
 */
#ifndef MOAT_REPLY_H
#define MOAT_REPLY_H

#include <stdbool.h>
#include <stddef.h>

#define REPLY_LINE_MAX  510	/* bytes per line, line end excluded (RFC 5321: 512 incl. CRLF) */
#define REPLY_LINES_MAX 32
#define REPLY_TEXT_MAX  2048	/* all text of one reply */

enum reply_status { REPLY_MORE = 0, REPLY_DONE, REPLY_ERROR };

struct reply {
	int code;		/* 0 until the first line */
	bool error;
	bool done;
	char enh[16];		/* "2.1.0" or "" */
	int nlines;
	size_t textlen;
	/* line i's text (after "DDD-"/"DDD " and, on line 0, after the
	 * enhanced code) is text[off[i] .. off[i+1]) ... */
	unsigned short off[REPLY_LINES_MAX + 1];
	char text[REPLY_TEXT_MAX];
};

void reply_init(struct reply *r);
enum reply_status reply_feed_line(struct reply *r, const char *line, size_t len);

/* Text of line i (borrowed), its length in *len. */
const char *reply_line(const struct reply *r, int i, size_t *len);

/* EHLO: find keyword on lines 1..n (the greeting line 0 is skipped);
 * returns the parameter string of that line (borrowed) and its length, or
 * NULL when absent. */
const char *reply_ehlo_has(const struct reply *r, const char *keyword, size_t *paramlen);

/*
 * Render the reply for the client, CRLF line ends, multi-line form kept:
 * code (or code_override if non-zero, with the enhanced code class
 * adjusted), the enhanced code when present (or "X.0.0" when absent and
 * add_enh is set), then the text. Returns the length or -1 if it does not
 * fit.
 */
int reply_render(const struct reply *r, int code_override, bool add_enh,
	char *out, size_t size);

#endif
