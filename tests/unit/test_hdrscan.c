/*
 * test_hdrscan - forged Authentication-Results removed as the header
 * section streams by, others kept, From values kept, body untouched
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hdrscan.h"
#include "log.h"
#include "t.h"

static char out[200000];
static size_t olen;

static void
put(void *arg, const unsigned char *p, size_t n)
{
	(void)arg;
	if (olen + n < sizeof(out)) {
		memcpy(out + olen, p, n);
		olen += n;
	}
}

/* run - the scanner over msg, in chunks of the given size */
static unsigned
run(const char *msg, size_t len, size_t chunk, struct hdrscan *h)
{
	olen = 0;
	hdrscan_init(h, "mx.moat.test", put, NULL);
	for (size_t i = 0; i < len; i += chunk)
		hdrscan_feed(h, (const unsigned char *)msg + i, len - i < chunk ? len - i : chunk);
	hdrscan_finish(h);
	out[olen] = 0;
	hdrscan_free(h);
	return h->removed;
}

static void
test_table(void)
{
	static const struct { const char *in, *want; unsigned removed; } rows[] = {
		{ "Authentication-Results: mx.moat.test; spf=pass\r\nSubject: a\r\n\r\nb\r\n",
		  "Subject: a\r\n\r\nb\r\n", 1 },
		{ "authentication-results :MX.Moat.Test;dkim=pass\r\nSubject: a\r\n\r\n",
		  "Subject: a\r\n\r\n", 1 },
		{ "Authentication-Results: (c) \"mx.moat.test\" 1; none\r\n\r\n", "\r\n", 1 },
		{ "Authentication-Results:\r\n mx.moat.test;\r\n\tspf=fail\r\nX: y\r\n\r\n", "X: y\r\n\r\n", 1 },
		{ "Authentication-Results: other.test; spf=pass\r\n\r\n",
		  "Authentication-Results: other.test; spf=pass\r\n\r\n", 0 },
		{ "Authentication-Results: mx.moat.test.evil; spf=pass\r\n\r\n",
		  "Authentication-Results: mx.moat.test.evil; spf=pass\r\n\r\n", 0 },
		{ "X-Authentication-Results: mx.moat.test; spf=pass\r\n\r\n",
		  "X-Authentication-Results: mx.moat.test; spf=pass\r\n\r\n", 0 },
		{ "Subject: a\r\n\r\nAuthentication-Results: mx.moat.test; x\r\n",
		  "Subject: a\r\n\r\nAuthentication-Results: mx.moat.test; x\r\n", 0 },
		{ "\r\nAuthentication-Results: mx.moat.test; x\r\n",
		  "\r\nAuthentication-Results: mx.moat.test; x\r\n", 0 },
		{ "Subject: a\r\nAuthentication-Results: mx.moat.test; x\r\n",
		  "Subject: a\r\n", 1 },
	};

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		for (size_t chunk = 1; chunk <= 7; chunk += 3) {
			struct hdrscan h;
			unsigned r = run(rows[i].in, strlen(rows[i].in), chunk, &h);

			T_CHECKF(r == rows[i].removed && strcmp(out, rows[i].want) == 0,
			    "row %zu chunk %zu: removed %u out [%s]", i, chunk, r, out);
		}
}

static void
test_from(void)
{
	static struct hdrscan h;
	const char *m = "From: \"A B\" <a@b.test>,\r\n c@d.test\r\nTo: x\r\nfrom: e@f.test\r\n\r\n";

	run(m, strlen(m), 5, &h);
	T_CHECK(h.nfrom == 2 && !h.from_cut);
	T_CHECKF(strcmp(h.from[0], " \"A B\" <a@b.test>, c@d.test") == 0, "[%s]", h.from[0]);
	T_CHECK(strcmp(h.from[1], " e@f.test") == 0);
	T_CHECK(strcmp(out, m) == 0);
}

/* an over-long forged field goes, a long honest one stays whole */
static void
test_long_fields(void)
{
	static struct hdrscan h;
	size_t n = HDRSCAN_FIELD_MAX * 2;
	char *m = malloc(n + 200), *want = malloc(n + 200);
	size_t o = 0;

	o += (size_t)sprintf(m, "Authentication-Results: mx.moat.test; x=");
	while (o < n)
		m[o++] = 'a';
	o += (size_t)sprintf(m + o, "\r\nSubject: s\r\n\r\nbody");
	T_CHECK(run(m, o, 4096, &h) == 1 && strcmp(out, "Subject: s\r\n\r\nbody") == 0);
	memcpy(m, "X-Long-Field-Here-Abcdefghij: mx", 32);
	memcpy(want, m, o);
	want[o] = 0;
	T_CHECK(run(m, o, 4096, &h) == 0 && olen == o && memcmp(out, want, o) == 0);
	free(m);
	free(want);
}

int
main(void)
{
	log_init("test_hdrscan", false, LOG_L_ERROR);
	T_RUN(test_table);
	T_RUN(test_from);
	T_RUN(test_long_fields);
	return T_DONE("hdrscan");
}
