/*
 * test_reply - upstream reply parser and renderer (docs/SECURITY.md UPS-07,
 * LEN-07, F4): table of replies with the expected status, code, enhanced
 * code and line texts; EHLO keyword lookups; rendering with overrides.
 */
#include <stdlib.h>

#include "reply.h"
#include "t.h"

/* Feed the lines of s[0..len) (separated by '\n') and keep feeding after
 * an error, to check that it is sticky. Returns the last status. */
static enum reply_status
feed_all(struct reply *r, const char *s, size_t len)
{
	enum reply_status st = REPLY_MORE;
	size_t i = 0;

	reply_init(r);
	while (i <= len) {
		const char *nl = memchr(s + i, '\n', len - i);
		size_t n = nl ? (size_t)(nl - (s + i)) : len - i;

		st = reply_feed_line(r, s + i, n);
		i += n + 1;
	}
	return st;
}

/* Line texts joined with '|'. */
static size_t
joined(const struct reply *r, char *buf, size_t size)
{
	size_t pos = 0, len;
	int i;

	for (i = 0; i < r->nlines; i++) {
		const char *t = reply_line(r, i, &len);

		if (i > 0 && pos < size)
			buf[pos++] = '|';
		if (pos + len > size)
			len = size - pos;
		memcpy(buf + pos, t, len);
		pos += len;
	}
	return pos;
}

struct reply_case {
	const char *name;
	const char *in;
	size_t inlen;
	enum reply_status st;
	int code;		/* checked when st != REPLY_ERROR */
	const char *enh;
	const char *texts;	/* line texts joined by '|' */
};

#define SEQ(s) s, sizeof(s) - 1

static const struct reply_case reply_cases[] = {
	{ "simple", SEQ("250 ok"), REPLY_DONE, 250, "", "ok" },
	{ "code only", SEQ("250"), REPLY_DONE, 250, "", "" },
	{ "code and space", SEQ("250 "), REPLY_DONE, 250, "", "" },
	{ "two spaces", SEQ("250  x"), REPLY_DONE, 250, "", " x" },
	{ "multi-line", SEQ("250-a\n250-b\n250 c"), REPLY_DONE, 250, "", "a|b|c" },
	{ "unfinished", SEQ("250-a\n250-b"), REPLY_MORE, 250, "", "a|b" },
	{ "empty continuation", SEQ("250-\n250 b"), REPLY_DONE, 250, "", "|b" },
	{ "mismatch 250-/354", SEQ("250-a\n354 go"), REPLY_ERROR, 0, "", "" },
	{ "mismatch 250-/251", SEQ("250-a\n251 b"), REPLY_ERROR, 0, "", "" },
	{ "mismatch 550-/250", SEQ("550-no\n250 ok"), REPLY_ERROR, 0, "", "" },
	{ "2500 ok", SEQ("2500 ok"), REPLY_ERROR, 0, "", "" },
	{ "two digits", SEQ("25"), REPLY_ERROR, 0, "", "" },
	{ "empty line", SEQ(""), REPLY_ERROR, 0, "", "" },
	{ "empty line in multi", SEQ("250-a\n\n250 b"), REPLY_ERROR, 0, "", "" },
	{ "garbage", SEQ("hello world"), REPLY_ERROR, 0, "", "" },
	{ "letters", SEQ("abc"), REPLY_ERROR, 0, "", "" },
	{ "1xx", SEQ("150 x"), REPLY_ERROR, 0, "", "" },
	{ "6xx", SEQ("650 x"), REPLY_ERROR, 0, "", "" },
	{ "0xx", SEQ("050 x"), REPLY_ERROR, 0, "", "" },
	{ "second digit 6", SEQ("260 x"), REPLY_ERROR, 0, "", "" },
	{ "599", SEQ("599 x"), REPLY_ERROR, 0, "", "" },
	{ "559", SEQ("559 x"), REPLY_DONE, 559, "", "x" },
	{ "third not digit", SEQ("25a x"), REPLY_ERROR, 0, "", "" },
	{ "sign", SEQ("-25 x"), REPLY_ERROR, 0, "", "" },
	{ "tab separator", SEQ("250\tok"), REPLY_ERROR, 0, "", "" },
	{ "NUL in text", SEQ("250 ok\0x"), REPLY_ERROR, 0, "", "" },
	{ "NUL in code", SEQ("2\00050 ok"), REPLY_ERROR, 0, "", "" },
	{ "ESC in text", SEQ("250 o\x1b[2Jk"), REPLY_ERROR, 0, "", "" },
	{ "DEL in text", SEQ("250 o\x7fk"), REPLY_ERROR, 0, "", "" },
	{ "CR in text", SEQ("250 o\rk"), REPLY_ERROR, 0, "", "" },
	{ "CR at end", SEQ("250 ok\r"), REPLY_ERROR, 0, "", "" },
	{ "8-bit replaced", SEQ("250 caf\xc3\xa9"), REPLY_DONE, 250, "", "caf??" },
	{ "tab kept", SEQ("250 a\tb"), REPLY_DONE, 250, "", "a\tb" },
	{ "enh", SEQ("250 2.1.0 Ok"), REPLY_DONE, 250, "2.1.0", "Ok" },
	{ "enh alone", SEQ("250 2.1.0"), REPLY_DONE, 250, "2.1.0", "" },
	{ "enh 3-digit parts", SEQ("550 5.123.456 x"), REPLY_DONE, 550, "5.123.456", "x" },
	{ "enh 421", SEQ("421 4.3.2 shutting down"), REPLY_DONE, 421, "4.3.2",
	  "shutting down" },
	{ "enh class mismatch", SEQ("550 2.7.1 x"), REPLY_DONE, 550, "", "2.7.1 x" },
	{ "enh short", SEQ("250 2.1 x"), REPLY_DONE, 250, "", "2.1 x" },
	{ "enh 4-digit part", SEQ("250 2.1000.0 x"), REPLY_DONE, 250, "", "2.1000.0 x" },
	{ "enh glued", SEQ("250 2.1.0x"), REPLY_DONE, 250, "", "2.1.0x" },
	{ "enh empty part", SEQ("250 2..0 x"), REPLY_DONE, 250, "", "2..0 x" },
	{ "no class 3", SEQ("354 3.0.0 go"), REPLY_DONE, 354, "", "3.0.0 go" },
	{ "354", SEQ("354 End data with <CR><LF>.<CR><LF>"), REPLY_DONE, 354, "",
	  "End data with <CR><LF>.<CR><LF>" },
	{ "enh on every line", SEQ("550-5.7.1 a\n550-5.7.1 b\n550 5.7.1 c"),
	  REPLY_DONE, 550, "5.7.1", "a|b|c" },
	{ "enh on line 0 only", SEQ("550-5.7.1 a\n550 b"), REPLY_DONE, 550, "5.7.1", "a|b" },
	{ "enh later only", SEQ("550-a\n550 5.7.1 b"), REPLY_DONE, 550, "", "a|5.7.1 b" },
	{ "ehlo", SEQ("250-mx.example ESMTP\n250-PIPELINING\n250 8BITMIME"),
	  REPLY_DONE, 250, "", "mx.example ESMTP|PIPELINING|8BITMIME" },
	{ "ehlo lowercase", SEQ("250-mx\n250-pipelining\n250 auth=login plain"),
	  REPLY_DONE, 250, "", "mx|pipelining|auth=login plain" },
};

static size_t row;

static void
test_reply_row(void)
{
	const struct reply_case *c = &reply_cases[row];
	struct reply r;
	enum reply_status st = feed_all(&r, c->in, c->inlen);
	char buf[REPLY_TEXT_MAX + REPLY_LINES_MAX];
	size_t n;

	T_CHECKF(st == c->st, "%s: status %d", c->name, (int)st);
	if (c->st == REPLY_ERROR) {
		char out[1024];

		T_CHECKF(r.error, "%s: error flag", c->name);
		T_CHECKF(reply_render(&r, 0, true, out, sizeof out) == -1, "%s", c->name);
		T_CHECKF(reply_feed_line(&r, "250 ok", 6) == REPLY_ERROR,
		    "%s: sticky", c->name);
		return;
	}
	T_CHECKF(!r.error && r.done == (c->st == REPLY_DONE), "%s", c->name);
	T_CHECKF(r.code == c->code, "%s: code %d", c->name, r.code);
	T_CHECKF(strcmp(r.enh, c->enh) == 0, "%s: enh %s", c->name, r.enh);
	n = joined(&r, buf, sizeof buf);
	T_CHECKF(n == strlen(c->texts) && memcmp(buf, c->texts, n) == 0,
	    "%s: texts [%.*s]", c->name, (int)n, buf);
}

/* ------------------------------------------------------------------ */

static void
test_line_length(void)
{
	char line[600];
	struct reply r;
	size_t len;

	memset(line, 'x', sizeof line);
	memcpy(line, "250 ", 4);
	reply_init(&r);
	T_CHECK(reply_feed_line(&r, line, REPLY_LINE_MAX) == REPLY_DONE);
	T_CHECK(reply_line(&r, 0, &len) != NULL && len == REPLY_LINE_MAX - 4);
	reply_init(&r);
	T_CHECK(reply_feed_line(&r, line, REPLY_LINE_MAX + 1) == REPLY_ERROR);
	T_CHECK(r.error);
	/* LEN-07: > 512 in a continuation */
	reply_init(&r);
	T_CHECK(reply_feed_line(&r, "250-a", 5) == REPLY_MORE);
	T_CHECK(reply_feed_line(&r, line, sizeof line) == REPLY_ERROR);
}

static void
test_line_count(void)
{
	struct reply r;
	int i;

	reply_init(&r);
	for (i = 0; i < REPLY_LINES_MAX - 1; i++)
		T_CHECK(reply_feed_line(&r, "250-x", 5) == REPLY_MORE);
	T_CHECK(reply_feed_line(&r, "250 x", 5) == REPLY_DONE);
	T_CHECK(r.nlines == REPLY_LINES_MAX);

	/* 33 lines, and the 10,000-line reply of LEN-07 */
	reply_init(&r);
	for (i = 0; i < REPLY_LINES_MAX; i++)
		T_CHECK(reply_feed_line(&r, "250-x", 5) == REPLY_MORE);
	T_CHECK(reply_feed_line(&r, "250 x", 5) == REPLY_ERROR);
	for (i = 0; i < 10000; i++)
		if (reply_feed_line(&r, "250-x", 5) != REPLY_ERROR)
			break;
	T_CHECK(i == 10000 && r.nlines == REPLY_LINES_MAX);
}

static void
test_text_total(void)
{
	char line[REPLY_LINE_MAX];
	struct reply r;
	int i;

	memset(line, 'y', sizeof line);
	memcpy(line, "250-", 4);
	reply_init(&r);
	/* 4 lines of 506 = 2024 bytes of text fit, a fifth does not */
	for (i = 0; i < 4; i++)
		T_CHECK(reply_feed_line(&r, line, sizeof line) == REPLY_MORE);
	T_CHECK(r.textlen == 4 * (REPLY_LINE_MAX - 4));
	T_CHECK(reply_feed_line(&r, line, sizeof line) == REPLY_ERROR);
	/* exactly REPLY_TEXT_MAX fits */
	reply_init(&r);
	for (i = 0; i < 4; i++)
		T_CHECK(reply_feed_line(&r, line, sizeof line) == REPLY_MORE);
	line[3] = ' ';
	T_CHECK(reply_feed_line(&r, line, 4 + REPLY_TEXT_MAX - r.textlen) == REPLY_DONE);
	T_CHECK(r.textlen == REPLY_TEXT_MAX);
}

static void
test_after_done_and_init(void)
{
	struct reply r;

	reply_init(&r);
	T_CHECK(reply_feed_line(&r, "250 ok", 6) == REPLY_DONE);
	T_CHECK(reply_feed_line(&r, "250 again", 9) == REPLY_ERROR);
	T_CHECK(r.error);
	reply_init(&r);
	T_CHECK(!r.error && !r.done && r.code == 0 && r.nlines == 0);
	T_CHECK(reply_feed_line(&r, "221 2.0.0 bye", 13) == REPLY_DONE);
	T_CHECK(r.code == 221 && strcmp(r.enh, "2.0.0") == 0);
	T_CHECK(reply_line(&r, 1, NULL) == NULL && reply_line(&r, -1, NULL) == NULL);
	/* a LF inside the line given (the reader splits on CRLF only) */
	reply_init(&r);
	T_CHECK(reply_feed_line(&r, "250 a\nb", 7) == REPLY_ERROR);
}

/* ------------------------------------------------------------------ */

#define EHLO "250-mx.example Hello\n250-PIPELINING\n250-SIZE 10240000\n" \
	"250-AUTH PLAIN LOGIN\n250-AUTH=LOGIN PLAIN\n250-8BITMIME\n" \
	"250-STARTTLS\n250 SMTPUTF8"

struct ehlo_case {
	const char *name;
	const char *in;
	const char *kw;
	const char *params;	/* NULL: absent */
};

static const struct ehlo_case ehlo_cases[] = {
	{ "pipelining", EHLO, "PIPELINING", "" },
	{ "lower case keyword", EHLO, "pipelining", "" },
	{ "size", EHLO, "SIZE", "10240000" },
	{ "auth first form wins", EHLO, "AUTH", "PLAIN LOGIN" },
	{ "last line", EHLO, "SMTPUTF8", "" },
	{ "absent", EHLO, "CHUNKING", NULL },
	{ "prefix is not a match", EHLO, "PIPE", NULL },
	{ "longer is not a match", EHLO, "STARTTLSX", NULL },
	{ "greeting line skipped", EHLO, "mx.example", NULL },
	{ "auth= form", "250-mx\n250-AUTH=LOGIN PLAIN\n250 HELP", "auth", "LOGIN PLAIN" },
	{ "lower case reply", "250-mx\n250 starttls", "STARTTLS", "" },
	{ "not 2xx", "550-mx\n550 PIPELINING", "PIPELINING", NULL },
	{ "single line", "250 mx.example", "mx.example", NULL },
	{ "unfinished", "250-mx\n250-PIPELINING", "PIPELINING", NULL },
	{ "empty keyword", EHLO, "", NULL },
};

static void
test_ehlo_row(void)
{
	const struct ehlo_case *c = &ehlo_cases[row];
	struct reply r;
	size_t plen = 99;
	const char *p;

	feed_all(&r, c->in, strlen(c->in));
	p = reply_ehlo_has(&r, c->kw, &plen);
	if (c->params == NULL) {
		T_CHECKF(p == NULL, "%s", c->name);
		return;
	}
	T_CHECKF(p != NULL && plen == strlen(c->params) &&
	    memcmp(p, c->params, plen) == 0, "%s: [%.*s]", c->name,
	    p ? (int)plen : 0, p ? p : "");
}

/* ------------------------------------------------------------------ */

struct render_case {
	const char *name;
	const char *in;
	int override;
	bool add_enh;
	const char *out;	/* NULL: -1 */
};

static const struct render_case render_cases[] = {
	{ "plain", "250 2.1.0 Ok", 0, false, "250 2.1.0 Ok\r\n" },
	{ "override 451", "250 2.1.0 Ok", 451, false, "451 4.1.0 Ok\r\n" },
	{ "override 421", "220 2.0.0 ready", 421, true, "421 4.0.0 ready\r\n" },
	{ "add enh", "250 Ok", 0, true, "250 2.0.0 Ok\r\n" },
	{ "add enh, override", "250 Ok", 451, true, "451 4.0.0 Ok\r\n" },
	{ "no enh", "250 Ok", 0, false, "250 Ok\r\n" },
	{ "multi-line", "550-5.7.1 a\n550 5.7.1 b", 0, false,
	  "550-5.7.1 a\r\n550 5.7.1 b\r\n" },
	{ "multi-line override", "550-5.7.1 a\n550 b", 421, false,
	  "421-4.7.1 a\r\n421 4.7.1 b\r\n" },
	{ "code only", "250", 0, false, "250\r\n" },
	{ "code only, add enh", "250", 0, true, "250 2.0.0\r\n" },
	{ "empty continuation", "250-a\n250-\n250 b", 0, false, "250-a\r\n250-\r\n250 b\r\n" },
	{ "354 keeps no enh", "354 go ahead", 0, true, "354 go ahead\r\n" },
	{ "override to 354 drops enh", "250 2.0.0 x", 354, false, "354 x\r\n" },
	{ "8-bit rendered as ?", "250 caf\xc3\xa9", 0, false, "250 caf??\r\n" },
	{ "ehlo kept multi-line", "250-mx\n250-PIPELINING\n250 8BITMIME", 0, false,
	  "250-mx\r\n250-PIPELINING\r\n250 8BITMIME\r\n" },
	{ "bad override 600", "250 x", 600, false, NULL },
	{ "bad override 199", "250 x", 199, false, NULL },
	{ "bad override 260", "250 x", 260, false, NULL },
	{ "unfinished", "250-x", 0, false, NULL },
	{ "error", "250-x\n354 y", 451, true, NULL },
};

static void
test_render_row(void)
{
	const struct render_case *c = &render_cases[row];
	struct reply r;
	char out[4096];
	int n;

	feed_all(&r, c->in, strlen(c->in));
	memset(out, 'Z', sizeof out);
	n = reply_render(&r, c->override, c->add_enh, out, sizeof out);
	if (c->out == NULL) {
		T_CHECKF(n == -1, "%s: %d", c->name, n);
		return;
	}
	T_CHECKF(n >= 0 && (size_t)n == strlen(c->out) && memcmp(out, c->out, (size_t)n) == 0 &&
	    out[n] == '\0', "%s: [%.*s]", c->name, n > 0 ? n : 0, out);
}

static void
test_render_sizes(void)
{
	struct reply r;
	char out[64];
	int n;

	reply_init(&r);
	reply_feed_line(&r, "250 2.1.0 Ok", 12);
	n = reply_render(&r, 0, false, out, sizeof out);
	T_CHECK(n == 14);
	T_CHECK(reply_render(&r, 0, false, out, (size_t)n + 1) == n);	/* room for NUL */
	T_CHECK(reply_render(&r, 0, false, out, (size_t)n) == -1);
	T_CHECK(reply_render(&r, 0, false, out, 0) == -1);
	T_CHECK(reply_render(&r, 0, false, out, 3) == -1);
}

/* Every rendered line stays <= 512 bytes with CRLF, even when an enhanced
 * code is added to 510-byte lines. */
static void
test_render_long(void)
{
	static char out[REPLY_LINES_MAX * 520];
	char line[REPLY_LINE_MAX];
	struct reply r;
	int i, n, k;
	const char *p, *e;

	memset(line, 'q', sizeof line);
	memcpy(line, "250-", 4);
	reply_init(&r);
	for (i = 0; i < 3; i++)
		T_CHECK(reply_feed_line(&r, line, sizeof line) == REPLY_MORE);
	line[3] = ' ';
	T_CHECK(reply_feed_line(&r, line, sizeof line) == REPLY_DONE);
	for (k = 0; k < 2; k++) {
		n = reply_render(&r, k ? 451 : 0, true, out, sizeof out);
		T_CHECK(n > 0);
		for (p = out, i = 0; n > 0 && p < out + n; p = e + 2, i++) {
			e = strstr(p, "\r\n");
			T_CHECK(e != NULL);
			if (e == NULL)
				break;
			T_CHECK(e - p + 2 <= 512);
			T_CHECK(memcmp(p, k ? "451" : "250", 3) == 0);
			T_CHECK(memcmp(p + 4, k ? "4.0.0 " : "2.0.0 ", 6) == 0);
		}
		T_CHECK(i == 4);
	}
}

int
main(void)
{
	for (row = 0; row < sizeof reply_cases / sizeof reply_cases[0]; row++)
		T_RUN(test_reply_row);
	T_RUN(test_line_length);
	T_RUN(test_line_count);
	T_RUN(test_text_total);
	T_RUN(test_after_done_and_init);
	for (row = 0; row < sizeof ehlo_cases / sizeof ehlo_cases[0]; row++)
		T_RUN(test_ehlo_row);
	for (row = 0; row < sizeof render_cases / sizeof render_cases[0]; row++)
		T_RUN(test_render_row);
	T_RUN(test_render_sizes);
	T_RUN(test_render_long);
	return T_DONE("reply");
}
