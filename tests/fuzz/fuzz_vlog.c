// sources: engine/engine_vlog.c core/metrics.c core/log.c core/xalloc.c
/*
 * fuzz_vlog - libFuzzer harness for the verdict line's handling of an
 * upstream's reply text (docs/SECURITY.md LOG-*: peer text in logs)
 *
 * The input is split at the first NUL: before it the reply text of an
 * upstream's 250 after the data, after it a recipient address (both bytes
 * from peers). A one-recipient transaction is recorded and the upstream's
 * replies fed (RCPT 250, then the data's 250 with the text): exactly one
 * verdict line comes out, with no CR, LF or other control byte, at most
 * the log's line length, and its queue_id= is a run of printable bytes of
 * the text. vl_queue_id() alone: its output is a substring of the input,
 * printable, no blank, within the size given. abort() on any violation.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* the one symbol of the policy layer the verdict line needs */
const char *
rules_stage_name(enum rules_stage st)
{
	return st == RS_RCPT ? "rcpt" : st == RS_MAIL ? "mail" : "data";
}

static int nlines;
static char last[4096];

static void
sink(void *arg, enum log_level lvl, uint64_t sid, const char *line)
{
	(void)arg;
	(void)lvl;
	(void)sid;
	nlines++;
	if (strlen(line) >= sizeof(last))
		abort();
	strcpy(last, line);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data, *nul = memchr(data, 0, size);
	size_t tlen = nul ? (size_t)(nul - text) : size;
	char *rcpt = nul ? strndup(nul + 1, size - tlen - 1) : strdup("a@b.test");
	char qid[16];
	struct vl_sess *v;
	struct vl_line_in in;
	struct vl_summary sum = { .set = true, .spf = "none", .dmarc = "none", .dkim = "none",
	    .gl = "none" };
	const char *q;

	vl_queue_id(text, tlen, qid, sizeof(qid));
	if (strlen(qid) >= sizeof(qid))
		abort();
	for (const char *p = qid; *p; p++)
		if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
			abort();
	if (qid[0] && memmem(text, tlen, qid, strlen(qid)) == NULL)
		abort();

	log_set_sink(sink, NULL);
	nlines = 0;
	v = vl_new();
	vl_set_upstream(v);
	vl_begin(v, "s@x.test", 1);
	vl_mail_passed(v);
	vl_rcpt(v, rcpt, 0, NULL);
	vl_data(v, 123, &sum, NULL, 0);
	vl_end(v);
	memset(&in, 0, sizeof(in));
	in.sid = 1;
	in.who = "client=x[127.0.0.1]:1 helo=<h>";
	in.code = 250;
	in.enh = "2.1.0";
	in.text = "Ok";
	in.len = 2;
	in.upstream = true;
	in.stage = RS_MAIL;
	vl_upstream(v, &in, 2);
	in.stage = RS_RCPT;
	in.enh = "2.1.5";
	vl_upstream(v, &in, 2);
	in.stage = RS_DATA;
	in.enh = "2.0.0";
	in.text = text;
	in.len = tlen;
	in.summary = NULL;
	in.queue_id = NULL;
	vl_upstream(v, &in, 3);
	if (nlines != 1)
		abort();
	for (const char *p = last; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			abort();
	/* after the quoted reply (the peer's text may hold " queue_id=" itself) */
	q = strstr(last, "\" rule=");
	if (q == NULL)
		abort();
	if ((strstr(q, " queue_id=") != NULL) != (qid[0] != 0))
		abort();
	vl_free(v);
	free(rcpt);
	log_set_sink(NULL, NULL);
	return 0;
}
