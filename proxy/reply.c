/*
 * reply - strict parser and renderer for SMTP replies from the upstream MTA
 *
 * FUNCTIONS
 *	reply_init()      - empty the reply, clear the error
 *	reply_feed_line() - add one line (line end already removed)
 *	reply_line()      - text of line i (borrowed)
 *	reply_ehlo_has()  - look up an EHLO keyword, return its parameters
 *	reply_render()    - the reply as the client gets it, CRLF line ends
 *
 * CONTRACT
 *	Pure: no allocation, no I/O. The caller owns struct reply; pointers
 *	returned by reply_line() and reply_ehlo_has() borrow from it and stay
 *	valid until the next reply_init() or reply_feed_line() on it. The
 *	input line is bytes plus a length and may hold anything, NUL included.
 *
 * GRAMMAR ACCEPTED (RFC 5321 4.2, 4.2.1; docs/SECURITY.md UPS-07, LEN-07, F4)
 *	line  = code ( "-" text / " " text / "" )      ; "" and " " end the reply
 *	code  = %x32-35 %x30-35 DIGIT                   ; 200..559
 *	All lines of one reply carry the same code. Text bytes: 0x20-0x7e and
 *	TAB are kept, bytes 0x80-0xff are replaced by '?' (the text is relayed,
 *	and must stay 7-bit printable), any other control byte (NUL, CR, LF,
 *	ESC, DEL ...) is an error. Errors: an empty or short line, a bad digit,
 *	a fourth character other than '-' or ' ' ("2500 ok"), a code mismatch
 *	("250-..." then "354 ..."), a line over REPLY_LINE_MAX bytes, more than
 *	REPLY_LINES_MAX lines, more than REPLY_TEXT_MAX bytes of kept text, and
 *	any line fed after the last one. Errors are sticky until reply_init();
 *	the caller maps them to a generic 451 and drops the upstream.
 *
 *	Enhanced status code (RFC 3463, RFC 2034): when line 0's text starts
 *	with "c.sss.ddd" (1-3 digit subject and detail) followed by a space or
 *	the end, and c is 2, 4 or 5 and equals the reply's first digit, it is
 *	moved to r->enh and removed from the text together with one space.
 *	Servers repeat it on every line of a multi-line reply; when line 0 had
 *	one, a leading code of the same class on a later line is removed too,
 *	so rendering (which puts r->enh on every line) does not repeat it or
 *	relay a stale class under a code override.
 *
 * RENDERING
 *	Each line becomes code, "-" or " ", the enhanced code and a space if
 *	there is one, the text, CR LF. With code_override the class digit of
 *	the enhanced code follows the new code ("2.1.0" under 451 becomes
 *	"4.1.0"); for a 3xx code no enhanced code is written (RFC 3463 has no
 *	class 3). add_enh writes "c.0.0" when the reply had none. A line that
 *	would pass 512 bytes with its CR LF has its text cut to fit. The output
 *	is NUL-terminated; the return value is its length without the NUL, or
 *	-1 when it does not fit, the reply is not complete, or has an error.
 */
#include <stdio.h>
#include <string.h>

#include "reply.h"

#define REPLY_WIRE_MAX 512	/* a rendered line, CR LF included */

/* reply_fail - set the sticky error */
static enum reply_status
reply_fail(struct reply *r)
{
	r->error = true;
	return REPLY_ERROR;
}

/* reply_is_digit - ASCII digit, no locale */
static bool
reply_is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* reply_lower - ASCII lower case, no locale */
static char
reply_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/*
 * reply_enh_len - length of an enhanced status code of class cls at the
 * start of s[0..len) (without the separator), or 0 when there is none.
 * It must be followed by the end or a space.
 */
static size_t
reply_enh_len(const char *s, size_t len, char cls)
{
	size_t i = 0, part, n;

	if (cls != '2' && cls != '4' && cls != '5')
		return 0;
	if (len < 5 || s[0] != cls || s[1] != '.')
		return 0;
	i = 2;
	for (part = 0; part < 2; part++) {
		for (n = 0; i < len && n < 4 && reply_is_digit(s[i]); i++)
			n++;
		if (n < 1 || n > 3)
			return 0;
		if (part == 0) {
			if (i >= len || s[i] != '.')
				return 0;
			i++;
		}
	}
	if (i < len && s[i] != ' ')
		return 0;
	return i;
}

/* reply_init - empty the reply and clear the error */
void
reply_init(struct reply *r)
{
	r->code = 0;
	r->error = false;
	r->done = false;
	r->enh[0] = '\0';
	r->nlines = 0;
	r->textlen = 0;
	r->off[0] = 0;
}

/* reply_feed_line - parse one line; REPLY_MORE until the last one */
enum reply_status
reply_feed_line(struct reply *r, const char *line, size_t len)
{
	int code;
	bool last;
	const char *t;
	size_t tlen, i, skip;

	if (r->error)
		return REPLY_ERROR;
	if (r->done || len < 3 || len > REPLY_LINE_MAX ||
	    r->nlines >= REPLY_LINES_MAX)
		return reply_fail(r);
	if (line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '5' ||
	    !reply_is_digit(line[2]))
		return reply_fail(r);
	code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	if (r->nlines > 0 && code != r->code)
		return reply_fail(r);
	if (len == 3)
		last = true;
	else if (line[3] == ' ')
		last = true;
	else if (line[3] == '-')
		last = false;
	else
		return reply_fail(r);
	t = len > 4 ? line + 4 : line + len;
	tlen = len > 4 ? len - 4 : 0;

	/* enhanced status code: split out on line 0, dropped when repeated */
	skip = reply_enh_len(t, tlen, line[0]);
	if (skip > 0 && r->nlines == 0) {
		memcpy(r->enh, t, skip);
		r->enh[skip] = '\0';
	} else if (r->enh[0] == '\0')
		skip = 0;
	if (skip > 0 && skip < tlen)
		skip++;		/* the space after it */
	t += skip;
	tlen -= skip;

	if (tlen > REPLY_TEXT_MAX - r->textlen)
		return reply_fail(r);
	for (i = 0; i < tlen; i++) {
		unsigned char c = (unsigned char)t[i];

		if (c >= 0x80)
			c = '?';
		else if ((c < 0x20 && c != '\t') || c == 0x7f)
			return reply_fail(r);
		r->text[r->textlen + i] = (char)c;
	}
	r->code = code;
	r->textlen += tlen;
	r->nlines++;
	r->off[r->nlines] = (unsigned short)r->textlen;
	if (!last)
		return REPLY_MORE;
	r->done = true;
	return REPLY_DONE;
}

/* reply_line - text of line i (borrowed), NULL when out of range */
const char *
reply_line(const struct reply *r, int i, size_t *len)
{
	if (i < 0 || i >= r->nlines) {
		if (len != NULL)
			*len = 0;
		return NULL;
	}
	if (len != NULL)
		*len = (size_t)(r->off[i + 1] - r->off[i]);
	return r->text + r->off[i];
}

/*
 * reply_ehlo_has - keyword on lines 1.. of a complete 2xx reply, compared
 * without case; it must be followed by the end, a space or '=' (the old
 * "AUTH=LOGIN" form). Returns what follows that separator (borrowed, may be
 * empty, never NULL when found) and its length in *paramlen.
 */
const char *
reply_ehlo_has(const struct reply *r, const char *keyword, size_t *paramlen)
{
	size_t klen = strlen(keyword), len, j;
	int i;

	if (paramlen != NULL)
		*paramlen = 0;
	if (r->error || !r->done || r->code / 100 != 2 || klen == 0)
		return NULL;
	for (i = 1; i < r->nlines; i++) {
		const char *t = reply_line(r, i, &len);

		if (len < klen)
			continue;
		for (j = 0; j < klen; j++)
			if (reply_lower(t[j]) != reply_lower(keyword[j]))
				break;
		if (j < klen)
			continue;
		if (len == klen) {
			return t + len;
		}
		if (t[klen] != ' ' && t[klen] != '=')
			continue;
		if (paramlen != NULL)
			*paramlen = len - klen - 1;
		return t + klen + 1;
	}
	return NULL;
}

/* reply_render - the reply for the client; length, or -1 */
int
reply_render(const struct reply *r, int code_override, bool add_enh,
	char *out, size_t size)
{
	char enh[16];
	size_t pos = 0, enhlen = 0;
	int code = code_override ? code_override : r->code;
	int i;

	if (r->error || !r->done || r->nlines < 1 || size == 0)
		return -1;
	if (code < 200 || code > 599 || (code / 10) % 10 > 5)
		return -1;
	if (r->enh[0] != '\0') {
		enhlen = strlen(r->enh);
		memcpy(enh, r->enh, enhlen + 1);
		enh[0] = (char)('0' + code / 100);
	} else if (add_enh) {
		enh[0] = (char)('0' + code / 100);
		memcpy(enh + 1, ".0.0", 5);
		enhlen = 5;
	}
	if (code / 100 == 3)
		enhlen = 0;

	for (i = 0; i < r->nlines; i++) {
		size_t tlen, room;
		const char *t = reply_line(r, i, &tlen);
		char head[4 + sizeof enh + 1];
		int hl;
		bool more = i < r->nlines - 1;

		hl = snprintf(head, sizeof head, "%03d%c%.*s%s", code,
		    more ? '-' : ' ', (int)enhlen, enh,
		    enhlen > 0 && tlen > 0 ? " " : "");
		if (hl < 0 || (size_t)hl >= sizeof head)
			return -1;
		/* "250" alone, not "250 ", for a last line with nothing after */
		if (!more && enhlen == 0 && tlen == 0)
			hl = 3;
		room = REPLY_WIRE_MAX - 2 - (size_t)hl;
		if (tlen > room)
			tlen = room;
		if ((size_t)hl + tlen + 2 >= size - pos)
			return -1;
		memcpy(out + pos, head, (size_t)hl);
		pos += (size_t)hl;
		memcpy(out + pos, t, tlen);
		pos += tlen;
		out[pos++] = '\r';
		out[pos++] = '\n';
	}
	out[pos] = '\0';
	return (int)pos;
}
