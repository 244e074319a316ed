// sources: proxy/reply.c
/*
 * fuzz_reply - libFuzzer harness for the upstream reply parser
 * (docs/SECURITY.md F4, UPS-07, LEN-07)
 *
 * The input is split on '\n' (one trailing '\r' removed, as a CRLF line
 * reader would) and fed line by line; after REPLY_DONE or REPLY_ERROR the
 * reply is re-initialised and parsing goes on with the next line.
 *
 * For every REPLY_DONE reply: the code is 200..559 with a valid second
 * digit; the text is printable ASCII or TAB; it renders (as is, with
 * add_enh, and with the overrides 451 and 421) to lines that each start
 * with the code, a '-' or ' ', are at most 512 bytes with CR LF, and hold
 * no other CR, LF or control byte; the rendering parses back to a reply
 * with the same code, enhanced code (class adjusted) and line count, and,
 * without override or cut lines, the same texts. A line fed after the
 * last must be an error. EHLO look-ups return pointers inside the text.
 * abort() on any violation.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define OUT_MAX (REPLY_LINES_MAX * 512 + 1)

/* check_text - kept text is printable ASCII or TAB */
static void
check_text(const struct reply *r)
{
	size_t i;

	if (r->textlen > REPLY_TEXT_MAX || r->nlines < 1 ||
	    r->nlines > REPLY_LINES_MAX || r->off[r->nlines] != r->textlen)
		abort();
	for (i = 0; i < r->textlen; i++) {
		unsigned char c = (unsigned char)r->text[i];

		if (c != '\t' && (c < 0x20 || c > 0x7e))
			abort();
	}
}

/* check_render - render, check the wire form, parse it back */
static void
check_render(const struct reply *r, int override, bool add_enh)
{
	static char out[OUT_MAX];
	struct reply back;
	int code = override ? override : r->code;
	int n = reply_render(r, override, add_enh, out, sizeof out);
	size_t pos = 0, i;
	int lines = 0;
	bool cut = false;

	if (n < 0 || (size_t)n >= sizeof out || out[n] != '\0')
		abort();
	reply_init(&back);
	while (pos < (size_t)n) {
		char *e = memchr(out + pos, '\n', (size_t)n - pos);
		size_t len;
		enum reply_status st;

		if (e == NULL)
			abort();
		len = (size_t)(e - (out + pos)) + 1;
		if (len > 512 || len < 5 || out[pos + len - 2] != '\r')
			abort();
		if (out[pos] != '0' + code / 100 ||
		    out[pos + 1] != '0' + code / 10 % 10 ||
		    out[pos + 2] != '0' + code % 10)
			abort();
		if (len > 5 && out[pos + 3] != '-' && out[pos + 3] != ' ')
			abort();
		for (i = 3; i < len - 2; i++) {
			unsigned char c = (unsigned char)out[pos + i];

			if (c != '\t' && (c < 0x20 || c > 0x7e))
				abort();
		}
		if (len == 512)
			cut = true;	/* may have been shortened */
		st = reply_feed_line(&back, out + pos, len - 2);
		lines++;
		if (st == REPLY_ERROR || (st == REPLY_DONE) != (lines == r->nlines))
			abort();
		pos += len;
	}
	if (lines != r->nlines || !back.done || back.code != code)
		abort();
	if (code / 100 == 3) {
		if (back.enh[0] != '\0')
			abort();
	} else if (r->enh[0] != '\0') {
		if (strcmp(back.enh + 1, r->enh + 1) != 0 || back.enh[0] != '0' + code / 100)
			abort();
	} else if (add_enh) {
		if (back.enh[0] != '0' + code / 100 || strcmp(back.enh + 1, ".0.0") != 0)
			abort();
	}
	if (override == 0 && !cut) {
		if (back.textlen != r->textlen ||
		    memcmp(back.text, r->text, r->textlen) != 0 ||
		    memcmp(back.off, r->off, sizeof r->off[0] * (size_t)(r->nlines + 1)) != 0)
			abort();
	}
}

/* check_ehlo - look-ups stay inside the text */
static void
check_ehlo(const struct reply *r, const char *kw)
{
	size_t plen = 0;
	const char *p = reply_ehlo_has(r, kw, &plen);

	if (p == NULL)
		return;
	if (r->code / 100 != 2 || p < r->text || p + plen > r->text + r->textlen)
		abort();
}

/* check_done - everything a finished reply must satisfy */
static void
check_done(struct reply *r)
{
	if (r->error || !r->done || r->code < 200 || r->code > 559 ||
	    r->code / 10 % 10 > 5)
		abort();
	check_text(r);
	if (r->enh[0] != '\0' && r->enh[0] != '0' + r->code / 100)
		abort();
	check_render(r, 0, false);
	check_render(r, 0, true);
	check_render(r, 451, false);
	check_render(r, 421, true);
	check_ehlo(r, "PIPELINING");
	check_ehlo(r, "AUTH");
	check_ehlo(r, "size");
	if (reply_feed_line(r, "250 x", 5) != REPLY_ERROR || !r->error)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct reply r;
	const char *s = (const char *)data;
	size_t pos = 0;

	reply_init(&r);
	while (pos < size) {
		const char *nl = memchr(s + pos, '\n', size - pos);
		size_t n = nl ? (size_t)(nl - (s + pos)) : size - pos;
		size_t len = n;
		enum reply_status st;

		if (len > 0 && s[pos + len - 1] == '\r')
			len--;
		st = reply_feed_line(&r, s + pos, len);
		if (st == REPLY_DONE) {
			check_done(&r);
			reply_init(&r);
		} else if (st == REPLY_ERROR) {
			char out[64];

			if (!r.error || reply_render(&r, 451, true, out, sizeof out) != -1 ||
			    reply_ehlo_has(&r, "PIPELINING", NULL) != NULL)
				abort();
			reply_init(&r);
		} else if (r.error || r.done || r.nlines < 1) {
			abort();
		}
		pos += n + 1;
	}
	return 0;
}
