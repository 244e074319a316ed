/*
 * test_pdel_req - the policy delegation request parser (proxy/pdel_req.c)
 */
#include <stdlib.h>
#include <string.h>

#include "pdel_req.h"
#include "t.h"

static struct pdel_req r;

/* feed - all of s; the last result, bytes taken into *used */
static enum pdel_rc
feed(const char *s, size_t len, size_t *used)
{
	enum pdel_rc rc = PDEL_MORE;

	pdel_req_init(&r);
	*used = pdel_req_feed(&r, s, len, &rc);
	return rc;
}

static void
test_request(void)
{
	const char *s = "request=smtpd_access_policy\nprotocol_state=RCPT\n"
	    "sender=a@b.test\nrecipient=u@example.org\nunknown_thing=x=y\n"
	    "instance=12.ab\nsasl_username=\n\nrequest=next\n";
	size_t used;

	T_CHECK(feed(s, strlen(s), &used) == PDEL_DONE);
	T_CHECK(used == (size_t)(strstr(s, "\n\n") - s) + 2);	/* stops after the empty line */
	T_CHECK(strcmp(pdel_req_get(&r, PDEL_A_SENDER), "a@b.test") == 0);
	T_CHECK(strcmp(pdel_req_get(&r, PDEL_A_RECIPIENT), "u@example.org") == 0);
	T_CHECK(strcmp(pdel_req_get(&r, PDEL_A_INSTANCE), "12.ab") == 0);
	T_CHECK(strcmp(pdel_req_get(&r, PDEL_A_SASL_USERNAME), "") == 0);
	T_CHECK(pdel_req_get(&r, PDEL_A_CLIENT_ADDRESS) == NULL);
	T_CHECK(pdel_req_state(&r) == PDEL_ST_RCPT);
}

static void
test_crlf_and_bytewise(void)
{
	const char *s = "request=smtpd_access_policy\r\nprotocol_state=END-OF-MESSAGE\r\n"
	    "size=42\r\n\r\n";
	enum pdel_rc rc = PDEL_MORE;
	size_t total = 0;

	pdel_req_init(&r);
	for (size_t i = 0; i < strlen(s) && rc == PDEL_MORE; i++)
		total += pdel_req_feed(&r, s + i, 1, &rc);
	T_CHECK(rc == PDEL_DONE);
	T_CHECK(total == strlen(s));
	T_CHECK(strcmp(pdel_req_get(&r, PDEL_A_SIZE), "42") == 0);
	T_CHECK(pdel_req_state(&r) == PDEL_ST_EOM);
}

static void
test_bad(void)
{
	static const struct { const char *name, *in; const char *err; } cases[] = {
		{ "no_equals", "request=x\nnonsense\n\n", "a line without '='" },
		{ "no_name", "=value\n\n", "an attribute without a name" },
		{ "nul", "a=b\0c\n\n", "control byte in a line" },
		{ "escape", "a=\x1b[31m\n\n", "control byte in a line" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t used, len = strlen(cases[i].in);

		if (strcmp(cases[i].name, "nul") == 0)
			len = 9;
		T_CHECKF(feed(cases[i].in, len, &used) == PDEL_BAD, "%s", cases[i].name);
		T_CHECKF(r.err != NULL && strcmp(r.err, cases[i].err) == 0, "%s: %s", cases[i].name,
		    r.err ? r.err : "(none)");
	}
}

static void
test_limits(void)
{
	char *big = malloc(PDEL_REQ_MAX * 2);
	size_t used, n = 0;

	/* a line of exactly PDEL_LINE_MAX bytes with its LF is taken */
	memset(big, 'v', PDEL_LINE_MAX);
	memcpy(big, "a=", 2);
	big[PDEL_LINE_MAX - 1] = '\n';
	big[PDEL_LINE_MAX] = '\n';
	T_CHECK(feed(big, PDEL_LINE_MAX + 1, &used) == PDEL_DONE);
	/* one more byte is not, whether or not the LF ever comes */
	memset(big, 'v', PDEL_LINE_MAX + 1);
	memcpy(big, "a=", 2);
	T_CHECK(feed(big, PDEL_LINE_MAX + 1, &used) == PDEL_BAD);
	T_CHECK(strcmp(r.err, "line too long") == 0 && used == PDEL_LINE_MAX);
	/* 10,000 attributes: refused after PDEL_ATTR_MAX */
	for (int i = 0; i < 10000 && n + 8 < PDEL_REQ_MAX * 2; i++)
		n += (size_t)snprintf(big + n, 8, "a%d=1\n", i % 100);
	T_CHECK(feed(big, n, &used) == PDEL_BAD);
	T_CHECK(strcmp(r.err, "too many attributes") == 0);
	/* many long lines: the request's cap */
	n = 0;
	for (int i = 0; i < 10; i++) {
		memset(big + n, 'w', 2000);
		memcpy(big + n, "x=", 2);
		big[n + 1999] = '\n';
		n += 2000;
	}
	T_CHECK(feed(big, n, &used) == PDEL_BAD);
	T_CHECK(strcmp(r.err, "request too long") == 0 && used == PDEL_REQ_MAX);
	free(big);
}

static void
test_states(void)
{
	static const struct { const char *v; enum pdel_state st; } cases[] = {
		{ "CONNECT", PDEL_ST_CONNECT }, { "EHLO", PDEL_ST_HELO }, { "HELO", PDEL_ST_HELO },
		{ "MAIL", PDEL_ST_MAIL }, { "RCPT", PDEL_ST_RCPT }, { "DATA", PDEL_ST_DATA },
		{ "END-OF-MESSAGE", PDEL_ST_EOM }, { "VRFY", PDEL_ST_OTHER }, { "", PDEL_ST_NONE },
		{ "rcpt", PDEL_ST_OTHER },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char buf[64];
		size_t used;
		int n = snprintf(buf, sizeof(buf), "protocol_state=%s\n\n", cases[i].v);

		T_CHECK(feed(buf, (size_t)n, &used) == PDEL_DONE);
		T_CHECKF(pdel_req_state(&r) == cases[i].st, "%s", cases[i].v);
	}
}

int
main(void)
{
	T_RUN(test_request);
	T_RUN(test_crlf_and_bytewise);
	T_RUN(test_bad);
	T_RUN(test_limits);
	T_RUN(test_states);
	return T_DONE("pdel_req");
}
