/*
 * test_dnsbl - zones in the policy file (through conf_load_buffer() and
 * policy/conf_dnsbl.c's parser directly), query names, what answers mean,
 * the summary rules see; the FCrDNS state machine with made-up answers
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "conf_dnsbl.h"
#include "dns.h"
#include "dnsbl.h"
#include "fcrdns.h"
#include "filter.h"
#include "log.h"
#include "rules.h"
#include "t.h"

static const char base[] = "listen 127.0.0.1:2525\nupstream 127.0.0.1:2526\n";

static struct conf *
load(const char *text, char **errs)
{
	char buf[8192];

	snprintf(buf, sizeof(buf), "%s%s", base, text);
	return conf_load_buffer("t.conf", buf, strlen(buf), errs);
}

static uint32_t
ip(const char *s)
{
	struct in_addr a;

	inet_pton(AF_INET, s, &a);
	return ntohl(a.s_addr);
}

static void
test_parse_good(void)
{
	char *errs = NULL;
	struct conf *c = load(
	    "resolver forward 127.0.0.1@5353 ::1@53\n"
	    "dnsbl zen.spamhaus.org weight 3 codes 127.0.0.2-127.0.0.11\n"
	    "dnsbl zen.dq.spamhaus.net name dqs key abcdef123 {\n"
	    "  code 127.0.0.2 127.0.0.3 weight 5 reply \"listed in SBL\"\n"
	    "  code 127.0.0.10-127.0.0.11 weight 1\n"
	    "}\n"
	    "dnswl list.dnswl.org weight -2 codes 127.0.0.0/16\n"
	    "dnsbl dbl.example type sender-domain probe no reply \"bad domain\"\n"
	    "on connect dnsbl-score >= 3 reject 554 5.7.1 \"[$ip] listed: $dnsbl ($dnsbl-reply)\"\n"
	    "on connect dnsbl-hit is dqs tag dqs\n"
	    "on mail dnsbl-error tag dnsbl-error\n", &errs);

	T_CHECKF(c != NULL, "%s", errs ? errs : "");
	free(errs);
	if (c == NULL)
		return;
	T_CHECK(c->resolver.mode == DNS_MODE_FORWARD && c->resolver.nforward == 2);
	T_CHECK(strcmp(c->resolver.forward[1], "::1@53") == 0);
	T_CHECK(c->dnsbl != NULL && c->dnsbl->n == 4);
	T_CHECK(strcmp(c->dnsbl->z[0].name, "zen.spamhaus.org") == 0 && c->dnsbl->z[0].weight == 3);
	T_CHECK(strcmp(c->dnsbl->z[1].name, "dqs") == 0);
	T_CHECK(strcmp(c->dnsbl->z[1].zone, "abcdef123.zen.dq.spamhaus.net") == 0);
	T_CHECK(c->dnsbl->z[1].ncodes == 2 && c->dnsbl->z[1].codes[0].weight == 5);
	T_CHECK(c->dnsbl->z[2].allow && c->dnsbl->z[2].weight == -2);
	T_CHECK(c->dnsbl->z[3].type == DNSBL_T_SENDER && !c->dnsbl->z[3].probe);
	T_CHECK(rules_stage_needs(c->rules, RS_CONNECT, CHECK_DNSBL));
	T_CHECK(!rules_stage_needs(c->rules, RS_HELO, CHECK_DNSBL));
	T_CHECK(rules_stage_needs(c->rules, RS_MAIL, CHECK_DNSBL));
	T_CHECK(!rules_stage_needs(c->rules, RS_CONNECT, CHECK_FCRDNS));
	conf_unref(c);
}

/* every bad statement names its line and column */
static void
test_parse_errors(void)
{
	static const struct { const char *text, *want; } cases[] = {
		{ "dnsbl\n", "3:6: error: expected a zone" },
		{ "dnsbl -bad-\n", "3:7: error: expected a zone" },
		{ "dnsbl a.example weight x\n", "3:24: error: expected a weight" },
		{ "dnsbl a.example weight 5000\n", "3:24: error: expected a weight" },
		{ "dnswl a.example weight 2\n", "3:24: error: a dnswl weight is zero or negative" },
		{ "dnsbl a.example codes 10.0.0.1\n", "3:23: error: \"10.0.0.1\" is not an answer range" },
		{ "dnsbl a.example codes 127.0.0.9-127.0.0.2\n", "3:23: error:" },
		{ "dnsbl a.example codes 127.0.0.1/24\n", "3:23: error:" },
		{ "dnsbl a.example type mx\n", "3:22: error: expected ip, helo" },
		{ "dnsbl a.example color red\n", "3:17: error: unknown dnsbl option \"color\"" },
		{ "dnsbl a.example reply \"a\x01b\"\n", "3:25: error: control character in string" },
		{ "dnsbl a.example key \"a.b\"\n", "3:21: error: expected a key" },
		{ "dnsbl a.example { code 127.0.0.2 weight 2 color 3 }\n", "3:43: error: unknown code option" },
		{ "dnsbl a.example { weight 2 }\n", "3:19: error: expected \"code RANGE" },
		{ "dnsbl a.example\ndnsbl a.example\n", "4:1: error: a zone named \"a.example\" is already defined (line 3)" },
		{ "resolver\n", "3:9: error: expected system, recursive or forward" },
		{ "resolver forward\n", "3:1: error: resolver forward needs at least one" },
		{ "resolver forward dns.example\n", "3:18: error: resolver forward: \"dns.example\" is not an IP" },
		{ "resolver forward 127.0.0.1@99999\n", "3:18: error: resolver forward: expected a port" },
		{ "resolver system extra\n", "3:17: error: unexpected extra after resolver system" },
		{ "resolver system\nresolver recursive\n", "4:1: error: \"resolver\" given twice" },
		{ "dns-timeout 10ms\n", "3:13: error: dns-timeout: value out of range" },
		{ "on connect dnsbl-hit > 3 reject 554 5.7.1 \"x\"\n", "3:" },
		{ "on connect dnsbl-score is x reject 554 5.7.1 \"x\"\n", "3:" },
		{ "on connect true reject 554 5.7.1 \"$dnsbl-nope\"\n", "3:" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *errs = NULL;
		struct conf *c = load(cases[i].text, &errs);

		T_CHECKF(c == NULL && errs != NULL && strstr(errs, cases[i].want) != NULL,
		    "case %zu: %s -> %s", i, cases[i].text, errs ? errs : "(loaded)");
		conf_unref(c);
		free(errs);
	}
}

static void
count_err(void *arg, int line, int col, const char *msg)
{
	(void)line;
	(void)col;
	(void)msg;
	(*(int *)arg)++;
}

/* conf_dnsbl_parse() alone: a bad statement adds nothing and leaves the
 * lexer at its end, so the next statement still parses */
static void
test_parse_direct(void)
{
	static const struct { const char *text; int rc, errs, zones; } cases[] = {
		{ "dnsbl a.example weight 2\ndnsbl b.example\n", 0, 0, 2 },
		{ "dnswl a.example weight 2\ndnsbl b.example\n", -1, 1, 1 },
		{ "dnsbl a.example { code 1.2.3.4 }\ndnsbl b.example\n", -1, 1, 1 },
		{ "dnsbl a.example color red blue\ndnsbl b.example\n", -1, 1, 1 },
		{ "dnsbl a.example\ndnsbl a.example\n", 0, 1, 1 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct dnsbl_set *set = calloc(1, sizeof(*set));
		struct lexer lx;
		struct lex_token kw;
		int errs = 0, rc;

		lex_init(&lx, "t.conf", cases[i].text, strlen(cases[i].text));
		lex_next(&lx, &kw);
		rc = conf_dnsbl_parse(set, &lx, &kw, count_err, &errs);
		lex_next(&lx, &kw);
		if (kw.type == LEX_WORD)
			conf_dnsbl_parse(set, &lx, &kw, count_err, &errs);
		T_CHECKF(rc == cases[i].rc && errs == cases[i].errs && set->n == cases[i].zones,
		    "case %zu: rc %d errors %d zones %d", i, rc, errs, set->n);
		lex_free(&lx);
		dnsbl_set_free(set);
	}
}

static void
test_query_names(void)
{
	char *errs = NULL;
	struct conf *c = load("dnsbl bl.test\ndnsbl rhs.test type helo\n"
	    "dnsbl zone.test key K3y\n", &errs);
	unsigned char v4[4] = { 192, 0, 2, 99 }, v6[16];
	char out[320];

	T_CHECK(c != NULL);
	free(errs);
	if (c == NULL)
		return;
	T_CHECK(dnsbl_query_name(&c->dnsbl->z[0], AF_INET, v4, NULL, out, sizeof(out)) > 0 &&
	    strcmp(out, "99.2.0.192.bl.test") == 0);
	inet_pton(AF_INET6, "2001:db8::1", v6);
	T_CHECK(dnsbl_query_name(&c->dnsbl->z[0], AF_INET6, v6, NULL, out, sizeof(out)) > 0 &&
	    strcmp(out, "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test") == 0);
	T_CHECK(dnsbl_query_name(&c->dnsbl->z[1], AF_INET, v4, "Mail.Example.COM.", out,
	    sizeof(out)) > 0 && strcmp(out, "mail.example.com.rhs.test") == 0);
	T_CHECK(dnsbl_query_name(&c->dnsbl->z[1], AF_INET, v4, "bad name", out, sizeof(out)) < 0);
	T_CHECK(dnsbl_query_name(&c->dnsbl->z[1], AF_INET, v4, "", out, sizeof(out)) < 0);
	T_CHECK(dnsbl_query_name(&c->dnsbl->z[1], AF_INET, v4, NULL, out, sizeof(out)) < 0);
	T_CHECK(dnsbl_query_name(&c->dnsbl->z[2], AF_INET, v4, NULL, out, sizeof(out)) > 0 &&
	    strcmp(out, "99.2.0.192.K3y.zone.test") == 0);
	/* the key never names the zone */
	T_CHECK(strcmp(c->dnsbl->z[2].name, "zone.test") == 0);
	conf_unref(c);
}

/* the answer table: answers -> verdict and weight */
static void
test_answers(void)
{
	char *errs = NULL;
	struct conf *c = load(
	    "dnsbl plain.test\n"
	    "dnsbl codes.test weight 3 codes 127.0.0.2-127.0.0.11\n"
	    "dnsbl block.test {\n code 127.0.0.2 weight 4 reply \"SBL\"\n"
	    " code 127.0.0.10-127.0.0.11 weight 1 reply \"PBL\"\n}\n"
	    "dnswl wl.test weight -5 codes 127.0.0.0/16\n", &errs);
	static const struct {
		int zone;
		const char *a[3];
		enum dnsbl_verdict v;
		int64_t weight;
		const char *reply;
	} rows[] = {
		{ 0, { "127.0.0.2" }, DNSBL_V_LISTED, 1, NULL },
		{ 0, { "127.0.0.1" }, DNSBL_V_LISTED, 1, NULL },
		{ 0, { NULL }, DNSBL_V_CLEAR, 0, NULL },
		{ 0, { "127.255.255.254" }, DNSBL_V_ERROR, 0, NULL },
		{ 0, { "127.255.255.252" }, DNSBL_V_ERROR, 0, NULL },
		{ 0, { "127.255.255.255" }, DNSBL_V_ERROR, 0, NULL },
		{ 0, { "10.0.0.2" }, DNSBL_V_ERROR, 0, NULL },
		{ 0, { "127.0.0.2", "192.0.2.1" }, DNSBL_V_ERROR, 0, NULL },
		{ 1, { "127.0.0.4" }, DNSBL_V_LISTED, 3, NULL },
		{ 1, { "127.0.0.12" }, DNSBL_V_CLEAR, 0, NULL },
		{ 1, { "127.0.0.1" }, DNSBL_V_CLEAR, 0, NULL },
		{ 1, { "127.255.255.254" }, DNSBL_V_ERROR, 0, NULL },
		{ 2, { "127.0.0.2" }, DNSBL_V_LISTED, 4, "SBL" },
		{ 2, { "127.0.0.11" }, DNSBL_V_LISTED, 1, "PBL" },
		{ 2, { "127.0.0.2", "127.0.0.10" }, DNSBL_V_LISTED, 5, "SBL" },
		{ 2, { "127.0.0.10", "127.0.0.11" }, DNSBL_V_LISTED, 1, "PBL" },
		{ 2, { "127.0.0.3" }, DNSBL_V_CLEAR, 0, NULL },
		{ 3, { "127.0.10.3" }, DNSBL_V_LISTED, -5, NULL },
		{ 3, { "127.1.0.3" }, DNSBL_V_CLEAR, 0, NULL },
	};

	T_CHECK(c != NULL);
	free(errs);
	if (c == NULL)
		return;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		uint32_t a[3];
		int n = 0;
		struct dnsbl_eval e;

		while (n < 3 && rows[i].a[n])
			a[n] = ip(rows[i].a[n]), n++;
		dnsbl_eval_answer(&c->dnsbl->z[rows[i].zone], a, n, &e);
		T_CHECKF(e.v == rows[i].v && e.weight == rows[i].weight &&
		    ((rows[i].reply == NULL && e.reply == NULL) ||
		    (rows[i].reply && e.reply && strcmp(e.reply, rows[i].reply) == 0)),
		    "row %zu: verdict %d weight %lld reply %s", i, e.v, (long long)e.weight,
		    e.reply ? e.reply : "-");
	}
	conf_unref(c);
}

/* the facts rules see: score, hits, error, the heaviest reply */
static void
test_summary(void)
{
	char *errs = NULL;
	struct conf *c = load("dnsbl a.test weight 2 reply \"A\"\ndnsbl b.test weight 5 "
	    "reply \"B\"\ndnswl w.test weight -4\ndnsbl e.test\n", &errs);
	struct dnsbl_sess s;
	struct dnsbl_summary sum;

	T_CHECK(c != NULL);
	free(errs);
	if (c == NULL)
		return;
	memset(&s, 0, sizeof(s));
	s.r[0] = (struct dnsbl_zres){ DZ_DONE, DNSBL_V_LISTED, false, 2, "A", 0 };
	s.r[1] = (struct dnsbl_zres){ DZ_DONE, DNSBL_V_LISTED, false, 5, "B", 0 };
	s.r[2] = (struct dnsbl_zres){ DZ_DONE, DNSBL_V_LISTED, false, -4, NULL, 0 };
	s.r[3] = (struct dnsbl_zres){ DZ_DONE, DNSBL_V_ERROR, true, 0, NULL, 0 };
	dnsbl_summarise(c->dnsbl, &s, &sum);
	T_CHECK(sum.score == 3);
	T_CHECK(sum.error);
	T_CHECKF(strcmp(sum.hits, "a.test,b.test,w.test") == 0, "%s", sum.hits);
	T_CHECK(sum.reply != NULL && strcmp(sum.reply, "B") == 0);
	T_CHECK(dnsbl_hits_has(sum.hits, "b.test", 6) && !dnsbl_hits_has(sum.hits, "b.tes", 5));
	T_CHECK(!dnsbl_hits_has(sum.hits, "e.test", 6));
	conf_unref(c);
}

/* ---- fcrdns with answers made up here ---- */

struct sent {
	char name[300];
	int type, index;
} sent[16];
static int nsent;

static int
fake_send(void *arg, const char *name, int rrtype, int index)
{
	(void)arg;
	if (nsent == 16)
		return -1;
	snprintf(sent[nsent].name, sizeof(sent[0].name), "%s", name);
	sent[nsent].type = rrtype;
	sent[nsent].index = index;
	nsent++;
	return 0;
}

/* wire form of a name */
static int
wire(const char *name, char *out)
{
	int o = 0;

	while (*name) {
		const char *dot = strchr(name, '.');
		int l = dot ? (int)(dot - name) : (int)strlen(name);

		out[o++] = (char)l;
		memcpy(out + o, name, (size_t)l);
		o += l;
		name += l + (dot ? 1 : 0);
	}
	out[o++] = 0;
	return o;
}

static void
answer(struct dns_answer *a, enum dns_status st, int type, char **data, int *len, int n)
{
	memset(a, 0, sizeof(*a));
	a->status = st;
	a->rrtype = type;
	a->data = data;
	a->len = len;
	a->n = n;
}

static void
test_fcrdns(void)
{
	struct sockaddr_in sin;
	struct fcrdns f;
	struct dns_answer a;
	char w1[300], w2[300], w3[300], ad[4] = { (char)192, 0, 2, 7 }, other[4] = { 10, 0, 0, 1 };
	char *data[4];
	int len[4];

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	inet_pton(AF_INET, "192.0.2.7", &sin.sin_addr);

	/* two PTR names, one bad; the second good name confirms */
	nsent = 0;
	T_CHECK(fcrdns_begin(&f, (struct sockaddr *)&sin, fake_send, NULL) == 0);
	T_CHECK(nsent == 1 && strcmp(sent[0].name, "7.2.0.192.in-addr.arpa") == 0 &&
	    sent[0].type == DNS_T_PTR);
	len[0] = wire("Host-A.Example.org", w1);
	len[1] = wire("bad name.example", w2);
	len[2] = wire("mx.example.org", w3);
	data[0] = w1, data[1] = w2, data[2] = w3;
	answer(&a, DNS_OK, DNS_T_PTR, data, len, 3);
	fcrdns_answer(&f, 0, &a, fake_send, NULL);
	T_CHECKF(nsent == 3 && strcmp(sent[1].name, "host-a.example.org") == 0 &&
	    sent[1].type == DNS_T_A && strcmp(sent[2].name, "mx.example.org") == 0, "%d", nsent);
	data[0] = other, len[0] = 4;
	answer(&a, DNS_OK, DNS_T_A, data, len, 1);
	fcrdns_answer(&f, 1, &a, fake_send, NULL);
	T_CHECK(!f.done);
	data[0] = other, data[1] = ad, len[1] = 4;
	answer(&a, DNS_OK, DNS_T_A, data, len, 2);
	fcrdns_answer(&f, 2, &a, fake_send, NULL);
	T_CHECK(f.done && f.status == CHECK_PASS && strcmp(f.name, "mx.example.org") == 0);

	/* no PTR: fail; PTR temperror: temperror */
	nsent = 0;
	fcrdns_begin(&f, (struct sockaddr *)&sin, fake_send, NULL);
	answer(&a, DNS_NXDOMAIN, DNS_T_PTR, NULL, NULL, 0);
	fcrdns_answer(&f, 0, &a, fake_send, NULL);
	T_CHECK(f.done && f.status == CHECK_FAIL);
	fcrdns_begin(&f, (struct sockaddr *)&sin, fake_send, NULL);
	answer(&a, DNS_TEMPERROR, DNS_T_PTR, NULL, NULL, 0);
	fcrdns_answer(&f, 0, &a, fake_send, NULL);
	T_CHECK(f.done && f.status == CHECK_TEMPERROR);

	/* the forward lookup fails and nothing confirms: temperror; the
	 * name does not confirm: fail */
	nsent = 0;
	fcrdns_begin(&f, (struct sockaddr *)&sin, fake_send, NULL);
	len[0] = wire("a.example", w1);
	data[0] = w1;
	answer(&a, DNS_OK, DNS_T_PTR, data, len, 1);
	fcrdns_answer(&f, 0, &a, fake_send, NULL);
	answer(&a, DNS_TEMPERROR, DNS_T_A, NULL, NULL, 0);
	fcrdns_answer(&f, 1, &a, fake_send, NULL);
	T_CHECK(f.done && f.status == CHECK_TEMPERROR);
	fcrdns_begin(&f, (struct sockaddr *)&sin, fake_send, NULL);
	answer(&a, DNS_OK, DNS_T_PTR, data, len, 1);
	fcrdns_answer(&f, 0, &a, fake_send, NULL);
	data[0] = other, len[0] = 4;
	answer(&a, DNS_OK, DNS_T_A, data, len, 1);
	fcrdns_answer(&f, 1, &a, fake_send, NULL);
	T_CHECK(f.done && f.status == CHECK_FAIL && f.name[0] == 0);

	/* many PTR names: at most FCRDNS_NAMES_MAX are looked up */
	nsent = 0;
	fcrdns_begin(&f, (struct sockaddr *)&sin, fake_send, NULL);
	{
		char *many[10];
		int ml[10];

		for (int i = 0; i < 10; i++)
			many[i] = w1, ml[i] = wire("a.example", w1);
		answer(&a, DNS_OK, DNS_T_PTR, many, ml, 10);
		fcrdns_answer(&f, 0, &a, fake_send, NULL);
	}
	T_CHECK(nsent == 1 + FCRDNS_NAMES_MAX);
}

static void
test_reverse(void)
{
	unsigned char v4[4] = { 1, 2, 3, 4 }, v6[16];
	char out[128];

	T_CHECK(dns_reverse_name(AF_INET, v4, "in-addr.arpa", out, sizeof(out)) > 0 &&
	    strcmp(out, "4.3.2.1.in-addr.arpa") == 0);
	inet_pton(AF_INET6, "::1", v6);
	T_CHECK(dns_reverse_name(AF_INET6, v6, NULL, out, sizeof(out)) == 63 &&
	    strncmp(out, "1.0.0.0", 7) == 0);
	T_CHECK(dns_reverse_name(AF_INET, v4, "in-addr.arpa", out, 10) < 0);
}

/* rules that decide first, or conditions false before a DNS fact, do
 * not make the stage wait */
static void
test_stage_wants(void)
{
	char *errs = NULL;
	struct conf *c = load("list trusted net { 127.0.0.0/8 }\n"
	    "on connect client-ip in trusted accept\n"
	    "on connect dnsbl-score >= 5 reject 554 5.7.1 \"listed\"\n"
	    "on helo helo is friend and not fcrdns score +1\n"
	    "on helo monitor fcrdns reject 550 5.7.1 \"x\"\n", &errs);
	struct sockaddr_in in, out;
	struct rules_facts f;

	T_CHECKF(c != NULL, "%s", errs ? errs : "");
	free(errs);
	if (c == NULL)
		return;
	memset(&in, 0, sizeof(in));
	in.sin_family = AF_INET;
	inet_pton(AF_INET, "127.0.0.9", &in.sin_addr);
	out = in;
	inet_pton(AF_INET, "192.0.2.1", &out.sin_addr);
	memset(&f, 0, sizeof(f));
	f.client = (struct sockaddr *)&in;
	T_CHECK(!rules_stage_wants(c->rules, RS_CONNECT, &f, CHECK_DNSBL));
	f.client = (struct sockaddr *)&out;
	T_CHECK(rules_stage_wants(c->rules, RS_CONNECT, &f, CHECK_DNSBL));
	T_CHECK(!rules_stage_wants(c->rules, RS_CONNECT, &f, CHECK_FCRDNS));
	f.dnsbl_known = true;
	/* helo: "friend" reaches fcrdns; another name does not, but the
	 * monitor rule reads it whatever the name */
	f.helo = "friend";
	f.helolen = 6;
	T_CHECK(rules_stage_wants(c->rules, RS_HELO, &f, CHECK_FCRDNS));
	f.helo = "other";
	f.helolen = 5;
	T_CHECK(rules_stage_wants(c->rules, RS_HELO, &f, CHECK_FCRDNS));
	conf_unref(c);
	c = load("on helo helo is friend and not fcrdns score +1\n", &errs);
	free(errs);
	T_CHECK(c != NULL);
	if (c == NULL)
		return;
	T_CHECK(!rules_stage_wants(c->rules, RS_HELO, &f, CHECK_FCRDNS));
	f.helo = "friend";
	f.helolen = 6;
	T_CHECK(rules_stage_wants(c->rules, RS_HELO, &f, CHECK_FCRDNS));
	conf_unref(c);
}

/* the greylist action: waits for the decision, 451 while greylisted,
 * the next rules otherwise; only at rcpt */
static void
test_greylist_action(void)
{
	char *errs = NULL;
	struct conf *c = load("on rcpt rcpt-domain is example.org greylist\n"
	    "on rcpt true reject 550 5.7.1 \"after\"\n", &errs);
	struct rules_result res;
	struct rules_facts f;
	char text[200];

	T_CHECKF(c != NULL, "%s", errs ? errs : "");
	free(errs);
	if (c == NULL)
		return;
	memset(&f, 0, sizeof(f));
	f.fcrdns_known = f.dnsbl_known = true;
	f.rcpt_domain = "example.org";
	f.rcpt_dlen = 11;
	T_CHECK(rules_stage_needs(c->rules, RS_RCPT, CHECK_GREYLIST));
	T_CHECK(rules_stage_first_need(c->rules, RS_RCPT, &f) == CHECK_GREYLIST);
	rules_eval(c->rules, RS_RCPT, &f, &res, 0);
	T_CHECK(res.verdict == RV_WAIT && res.need == CHECK_GREYLIST);
	f.greylist_known = true;
	f.greylist_tempfail = true;
	f.greylist_text = "greylisted, please retry in 5 minutes";
	rules_eval(c->rules, RS_RCPT, &f, &res, 0);
	rules_expand(res.text, &f, text, sizeof(text));
	T_CHECKF(res.verdict == RV_TEMPFAIL && res.code == 451 && strcmp(res.enh, "4.7.1") == 0 &&
	    strcmp(text, "greylisted, please retry in 5 minutes") == 0, "%d %d %s", res.verdict,
	    res.code, text);
	f.greylist_tempfail = false;
	rules_eval(c->rules, RS_RCPT, &f, &res, 0);
	T_CHECK(res.verdict == RV_REJECT && res.code == 550);
	/* another domain: the rule is not reached, no decision is asked */
	f.greylist_known = false;
	f.rcpt_domain = "other.org";
	f.rcpt_dlen = 9;
	T_CHECK(rules_stage_first_need(c->rules, RS_RCPT, &f) == -1);
	conf_unref(c);
	c = load("on mail true greylist\n", &errs);
	T_CHECK(c == NULL && errs && strstr(errs, "3:14: error: greylist works per recipient"));
	free(errs);
	conf_unref(c);
}

int
main(void)
{
	log_init("test_dnsbl", false, LOG_L_ERROR);
	T_RUN(test_parse_good);
	T_RUN(test_parse_errors);
	T_RUN(test_parse_direct);
	T_RUN(test_query_names);
	T_RUN(test_answers);
	T_RUN(test_summary);
	T_RUN(test_fcrdns);
	T_RUN(test_reverse);
	T_RUN(test_stage_wants);
	T_RUN(test_greylist_action);
	return T_DONE("dnsbl");
}
