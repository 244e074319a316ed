/*
 * test_metrics - the Prometheus counters (core/metrics.c), the queue id
 * the verdict line takes from an upstream's 250 and the lines of
 * transactions the upstream loses (engine/engine_vlog.c)
 */
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "log.h"
#include "metrics.h"
#include "t.h"

static char *
render(void)
{
	size_t len;
	char *t = metrics_render(&len);

	T_CHECK(strlen(t) == len);
	return t;
}

static void
test_empty_families(void)
{
	char *t = render();

	T_CHECK(strstr(t, "# TYPE moat_sessions_opened_total counter\nmoat_sessions_opened_total 0\n"));
	T_CHECK(strstr(t, "# TYPE moat_sessions_active gauge\n"));
	T_CHECK(strstr(t, "# TYPE moat_redis_latency_seconds histogram\n"
	    "moat_redis_latency_seconds_bucket{le=\"+Inf\"} 0\n"));
	/* a labelled family with no series: only its HELP and TYPE */
	T_CHECK(strstr(t, "# TYPE moat_dnsbl_queries_total counter\n# HELP"));
	free(t);
}

static void
test_counters_and_labels(void)
{
	char *t;

	metrics_inc(MF_SESSIONS_OPENED, NULL, NULL);
	metrics_inc(MF_SESSIONS_OPENED, NULL, NULL);
	metrics_add(MF_SESSIONS_ACTIVE, NULL, NULL, 3);
	metrics_add(MF_SESSIONS_ACTIVE, NULL, NULL, -1);
	metrics_inc(MF_MESSAGES, "accepted", "moat");
	metrics_inc(MF_MESSAGES, "rejected", "upstream");
	metrics_inc(MF_MESSAGES, "accepted", "moat");
	metrics_inc(MF_RULE_HITS, "/etc/moat/a \"b\"\\c.conf:7", "reject");
	t = render();
	T_CHECK(strstr(t, "\nmoat_sessions_opened_total 2\n"));
	T_CHECK(strstr(t, "\nmoat_sessions_active 2\n"));
	T_CHECK(strstr(t, "\nmoat_messages_total{result=\"accepted\",by=\"moat\"} 2\n"));
	T_CHECK(strstr(t, "\nmoat_messages_total{result=\"rejected\",by=\"upstream\"} 1\n"));
	T_CHECKF(strstr(t, "\nmoat_rule_hits_total{rule=\"/etc/moat/a \\\"b\\\"\\\\c.conf:7\","
	    "verdict=\"reject\"} 1\n"), "%s", t);
	T_CHECK(metrics_get(MF_MESSAGES, "accepted", "moat") == 2);
	free(t);
}

static void
test_histogram(void)
{
	char *t;

	metrics_observe(MF_DNSBL_LATENCY, "bl.test", 500);		/* 0.5 ms */
	metrics_observe(MF_DNSBL_LATENCY, "bl.test", 30000);		/* 30 ms */
	metrics_observe(MF_DNSBL_LATENCY, "bl.test", 60000000);	/* 60 s */
	t = render();
	T_CHECK(strstr(t, "moat_dnsbl_latency_seconds_bucket{zone=\"bl.test\",le=\"0.001\"} 1\n"));
	T_CHECK(strstr(t, "moat_dnsbl_latency_seconds_bucket{zone=\"bl.test\",le=\"0.025\"} 1\n"));
	T_CHECK(strstr(t, "moat_dnsbl_latency_seconds_bucket{zone=\"bl.test\",le=\"0.05\"} 2\n"));
	T_CHECK(strstr(t, "moat_dnsbl_latency_seconds_bucket{zone=\"bl.test\",le=\"5\"} 2\n"));
	T_CHECK(strstr(t, "moat_dnsbl_latency_seconds_bucket{zone=\"bl.test\",le=\"+Inf\"} 3\n"));
	T_CHECK(strstr(t, "moat_dnsbl_latency_seconds_sum{zone=\"bl.test\"} 60.030500\n"));
	T_CHECK(strstr(t, "moat_dnsbl_latency_seconds_count{zone=\"bl.test\"} 3\n"));
	free(t);
}

static void
test_bounded(void)
{
	char id[64], *t;
	size_t lines = 0;

	for (int i = 0; i < METRICS_SERIES_MAX + 100; i++) {
		snprintf(id, sizeof(id), "r.conf:%d", i);
		metrics_inc(MF_RULE_HITS, id, "continue");
	}
	t = render();
	for (const char *p = t; (p = strstr(p, "\nmoat_rule_hits_total{")) != NULL; p++)
		lines++;
	T_CHECKF(lines < METRICS_SERIES_MAX, "%zu", lines);
	T_CHECK(strstr(t, "\nmoat_metrics_dropped_total ") != NULL &&
	    strstr(t, "\nmoat_metrics_dropped_total 0\n") == NULL);
	free(t);
}

static void
test_queue_id(void)
{
	static const struct { const char *name, *text, *want; } cases[] = {
		{ "postfix", "2.0.0 Ok: queued as 4QxYz12AbC", "4QxYz12AbC" },
		{ "postfix_long", "Ok: queued as 4QxYz12AbCdefGh; extra", "4QxYz12AbCdefGh" },
		{ "exim", "OK id=1tQ5aB-0001Xy-2C", "1tQ5aB-0001Xy-2C" },
		{ "sendmail", "2.0.0 0B6EaBcD012345 Message accepted for delivery", "0B6EaBcD012345" },
		{ "sendmail_plain", "0B6EaBcD012345 Message accepted", "0B6EaBcD012345" },
		{ "sendmail_alone", " Message accepted", "" },
		{ "none", "Ok", "" },
		{ "empty_after", "queued as ", "" },
		{ "ctl_bytes", "queued as AB\x01" "CD", "AB" },
	};
	char small[11];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[64];

		vl_queue_id(cases[i].text, strlen(cases[i].text), out, sizeof(out));
		T_CHECKF(strcmp(out, cases[i].want) == 0, "%s: got \"%s\"", cases[i].name, out);
	}
	vl_queue_id("queued as 0123456789012345", 26, small, sizeof(small));
	T_CHECK(strcmp(small, "0123456789") == 0);
}

static char vlines[4][2048];
static int nvlines;

static void
vsink(void *arg, enum log_level lvl, uint64_t sid, const char *msg)
{
	(void)arg;
	(void)lvl;
	(void)sid;
	if (strstr(msg, "verdict=") != NULL && nvlines < 4)
		snprintf(vlines[nvlines], sizeof(vlines[0]), "%s", msg);
	nvlines++;
}

static void
vin(struct vl_line_in *in, enum rules_stage st, int code, const char *enh, const char *text)
{
	memset(in, 0, sizeof(*in));
	in->stage = st;
	in->who = "client=unknown[192.0.2.1]:1 helo=<h>";
	in->code = code;
	in->enh = enh;
	in->text = text;
	in->len = strlen(text);
	in->upstream = true;
}

/* the upstream lost with MAIL and two RCPTs waiting: moat's 451 for the
 * first gives the transaction's one line (the others "lost"), the rest
 * nothing; a later connection's replies never go to the lost record, even
 * one whose error never came */
static void
test_vl_lost(void)
{
	struct vl_sess *v = vl_new();
	struct vl_line_in in;

	log_set_level(LOG_L_INFO);
	log_set_sink(vsink, NULL);
	vl_set_upstream(v);
	vl_begin(v, "a@x.test", 0);
	vl_mail_passed(v);
	vl_rcpt(v, "one@y.test", 0, NULL);
	vl_rcpt(v, "two@y.test", 0, NULL);
	vl_lost(v);
	vin(&in, RS_MAIL, 451, "4.4.2", "Error: upstream connection lost");
	vl_failed(v, &in, 5);
	vin(&in, RS_RCPT, 451, "4.4.2", "Error: upstream connection lost");
	vl_failed(v, &in, 5);
	vl_failed(v, &in, 5);
	vin(&in, RS_DATA, 451, "4.4.2", "Error: upstream connection lost");
	vl_failed(v, &in, 5);	/* DATA after the loss */
	T_CHECKF(nvlines == 1, "%d lines", nvlines);
	T_CHECKF(strstr(vlines[0], "verdict=tempfail by=upstream stage=mail ") &&
	    strstr(vlines[0], " from=<a@x.test> to=<one@y.test>:lost to=<two@y.test>:lost code=451 "
	    "enh=4.4.2 reply=\"Error: upstream connection lost\""), "%s", vlines[0]);
	vl_end(v);
	/* a record whose RCPT error never came keeps waiting, but is lost */
	vl_begin(v, "b@x.test", 10);
	vl_mail_passed(v);
	vl_rcpt(v, "three@y.test", 0, NULL);
	vl_lost(v);
	vl_end(v);
	vl_begin(v, "c@x.test", 20);
	vl_mail_passed(v);
	vin(&in, RS_MAIL, 250, "2.1.0", "Ok");
	vl_upstream(v, &in, 21);
	vl_rcpt(v, "four@y.test", 0, NULL);
	vin(&in, RS_RCPT, 550, "5.1.1", "no such user");
	vl_upstream(v, &in, 22);
	T_CHECKF(nvlines == 2 && strstr(vlines[1], " from=<c@x.test> to=<four@y.test>:550:5.1.1 ") &&
	    strstr(vlines[1], "stage=rcpt"), "%d: %s", nvlines, vlines[1]);
	/* moat's own limit (by=moat) on the transaction in progress */
	vin(&in, RS_RCPT, 421, "4.4.2", "mx Error: timeout exceeded");
	in.upstream = false;
	vl_failed(v, &in, 30);
	T_CHECKF(nvlines == 3 && strstr(vlines[2], "verdict=tempfail by=moat stage=rcpt ") &&
	    strstr(vlines[2], " from=<c@x.test> to=<four@y.test>:550:5.1.1 code=421 "),
	    "%d: %s", nvlines, vlines[2]);
	vl_failed(v, &in, 31);
	T_CHECK(nvlines == 3);
	log_set_sink(NULL, NULL);
	vl_free(v);
}

int
main(void)
{
	T_RUN(test_empty_families);
	T_RUN(test_counters_and_labels);
	T_RUN(test_histogram);
	T_RUN(test_bounded);
	T_RUN(test_queue_id);
	T_RUN(test_vl_lost);
	return T_DONE("metrics");
}
