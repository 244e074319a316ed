/*
 * moatctl query - ask moat's resolver (core/dns.c), as moatd would
 *
 * SYNOPSIS
 *	moatctl query [--resolver system|recursive|ADDR[@PORT]] [--timeout MS]
 *	              [--sync] [--type T] NAME ...
 *
 * DESCRIPTION
 *	Sends every NAME at once through the same resolver, cache and
 *	deadline moatd uses, from an event loop (or, with --sync, one after
 *	the other from a blocking thread, the path the checks on the work
 *	pool take), and prints each answer as it arrives:
 *
 *	NAME TYPE status=ok|nodata|nxdomain|temperror [why=W] ms=N
 *	  TYPE VALUE            (one line per record)
 *
 *	T is A (default), AAAA, TXT, MX, PTR, NS or CNAME. Exit 0 when every
 *	name got an answer that is not temperror, 1 otherwise, 2 on usage.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/event.h>

#include "dns.h"
#include "dkim.h"
#include "dmarc.h"
#include "dnsbl.h"
#include "filter.h"
#include "hdrscan.h"
#include "spf.h"
#include "moatctl.h"

#define QUERY_MAX 256

struct qstate {
	const char *names[QUERY_MAX];
	int n, left, bad, type;
	struct timespec t0;
	struct event_base *base;
};

static const struct { const char *name; int type; } qtypes[] = {
	{ "A", DNS_T_A }, { "AAAA", DNS_T_AAAA }, { "TXT", DNS_T_TXT }, { "MX", DNS_T_MX },
	{ "PTR", DNS_T_PTR }, { "NS", DNS_T_NS }, { "CNAME", DNS_T_CNAME },
};

static const char *
qtype_name(int t)
{
	for (size_t i = 0; i < sizeof(qtypes) / sizeof(qtypes[0]); i++)
		if (qtypes[i].type == t)
			return qtypes[i].name;
	return "?";
}

static long
elapsed_ms(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

/* put_txt - a TXT value, printable, quoted */
static void
put_txt(const char *s, int n)
{
	putchar('"');
	for (int i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
			printf("\\%03u", c);
		else
			putchar(c);
	}
	putchar('"');
}

/* print_answer - the stable output format */
static void
print_answer(const char *name, const struct dns_answer *a, long ms)
{
	static const char *const st[] = { "ok", "nodata", "nxdomain", "temperror" };
	char buf[4096];

	printf("%s %s status=%s", name, qtype_name(a->rrtype), st[a->status]);
	if (a->status == DNS_TEMPERROR && a->why)
		printf(" why=%s", a->why);
	printf(" ms=%ld\n", ms);
	for (int i = 0; i < a->n; i++) {
		unsigned char b[16];
		int r;

		printf("  %s ", qtype_name(a->rrtype));
		switch (a->rrtype) {
		case DNS_T_A:
			if (dns_rr_a(a, i, b) == 0 && inet_ntop(AF_INET, b, buf, sizeof(buf)))
				fputs(buf, stdout);
			else
				fputs("malformed", stdout);
			break;
		case DNS_T_AAAA:
			if (dns_rr_aaaa(a, i, b) == 0 && inet_ntop(AF_INET6, b, buf, sizeof(buf)))
				fputs(buf, stdout);
			else
				fputs("malformed", stdout);
			break;
		case DNS_T_TXT:
			r = dns_rr_txt(a, i, buf, sizeof(buf));
			if (r >= 0)
				put_txt(buf, r);
			else
				fputs("malformed", stdout);
			break;
		case DNS_T_MX:
			if (a->len[i] >= 2 && dns_rr_name(a, i, 2, buf, sizeof(buf)) >= 0)
				printf("%u %s", ((unsigned char)a->data[i][0] << 8) |
				    (unsigned char)a->data[i][1], buf);
			else
				fputs("malformed", stdout);
			break;
		default:
			if (dns_rr_name(a, i, 0, buf, sizeof(buf)) >= 0)
				fputs(buf, stdout);
			else
				fputs("malformed", stdout);
			break;
		}
		putchar('\n');
	}
	fflush(stdout);
}

static void
query_done(void *ctx, uint64_t tag, const struct dns_answer *a)
{
	struct qstate *s = ctx;

	print_answer(s->names[tag], a, elapsed_ms(&s->t0));
	if (a->status == DNS_TEMPERROR)
		s->bad++;
	if (--s->left == 0)
		event_base_loopbreak(s->base);
}

/* moatctl_query - see the synopsis */
int
moatctl_query(int argc, char **argv)
{
	struct dns_conf dc;
	struct qstate s;
	unsigned timeout = 5000;
	int sync = 0;
	char *err = NULL;
	struct dns_loop *l;

	memset(&dc, 0, sizeof(dc));
	memset(&s, 0, sizeof(s));
	s.type = DNS_T_A;
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--resolver") == 0 && i + 1 < argc) {
			const char *v = argv[++i];

			if (strcmp(v, "system") == 0)
				dc.mode = DNS_MODE_SYSTEM;
			else if (strcmp(v, "recursive") == 0)
				dc.mode = DNS_MODE_RECURSIVE;
			else if (dc.nforward < DNS_FORWARD_MAX && strlen(v) < sizeof(dc.forward[0])) {
				dc.mode = DNS_MODE_FORWARD;
				strcpy(dc.forward[dc.nforward++], v);
			} else
				goto usage;
		} else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
			timeout = (unsigned)strtoul(argv[++i], NULL, 10);
			if (timeout == 0 || timeout > 120000)
				goto usage;
		} else if (strcmp(argv[i], "--sync") == 0) {
			sync = 1;
		} else if (strcmp(argv[i], "--type") == 0 && i + 1 < argc) {
			size_t k;

			i++;
			for (k = 0; k < sizeof(qtypes) / sizeof(qtypes[0]); k++)
				if (strcasecmp(qtypes[k].name, argv[i]) == 0)
					break;
			if (k == sizeof(qtypes) / sizeof(qtypes[0]))
				goto usage;
			s.type = qtypes[k].type;
		} else if (argv[i][0] == '-') {
			goto usage;
		} else if (s.n < QUERY_MAX) {
			s.names[s.n++] = argv[i];
		} else
			goto usage;
	}
	if (s.n == 0)
		goto usage;
	if (dns_init(&dc, &err) != 0) {
		fprintf(stderr, "moatctl: %s\n", err);
		free(err);
		return 2;
	}
	clock_gettime(CLOCK_MONOTONIC, &s.t0);
	if (sync) {
		for (int i = 0; i < s.n; i++) {
			struct dns_answer *a;

			dns_query_sync(s.names[i], s.type, timeout, &a);
			print_answer(s.names[i], a, elapsed_ms(&s.t0));
			if (a->status == DNS_TEMPERROR)
				s.bad++;
			dns_answer_free(a);
		}
		dns_shutdown();
		return s.bad ? 1 : 0;
	}
	s.base = event_base_new();
	l = dns_loop_new(s.base);
	for (int i = 0; i < s.n; i++) {
		if (dns_query(l, s.names[i], s.type, timeout, query_done, &s, (uint64_t)i) != 0) {
			printf("%s %s status=temperror why=refused-local ms=0\n", s.names[i],
			    qtype_name(s.type));
			s.bad++;
		} else
			s.left++;
	}
	if (s.left > 0)
		event_base_dispatch(s.base);
	dns_shutdown();
	dns_loop_free(l);
	event_base_free(s.base);
	return s.bad ? 1 : 0;
usage:
	fprintf(stderr, "usage: moatctl query [--resolver system|recursive|ADDR[@PORT]] "
	    "[--timeout MS] [--sync] [--type A|AAAA|TXT|MX|PTR|NS|CNAME] NAME ...\n");
	return 2;
}

/* ---------------------------------------------------------------------
 * the checks for moatctl explain, one query at a time
 */

struct ctl_pending {
	char name[300];
	int rrtype, index;
};

struct ctl_queue {
	struct ctl_pending q[FCRDNS_NAMES_MAX + 2];
	int n;
};

static int
ctl_send(void *arg, const char *name, int rrtype, int index)
{
	struct ctl_queue *cq = arg;

	if (cq->n == (int)(sizeof(cq->q) / sizeof(cq->q[0])) || strlen(name) >= sizeof(cq->q[0].name))
		return -1;
	snprintf(cq->q[cq->n].name, sizeof(cq->q[0].name), "%s", name);
	cq->q[cq->n].rrtype = rrtype;
	cq->q[cq->n].index = index;
	cq->n++;
	return 0;
}

/* ctl_fcrdns - the fcrdns check as moatd runs it, synchronously */
void
ctl_fcrdns(const struct sockaddr *client, unsigned timeout_ms, struct fcrdns *f)
{
	struct ctl_queue cq;

	memset(&cq, 0, sizeof(cq));
	if (fcrdns_begin(f, client, ctl_send, &cq) != 0)
		return;
	while (!f->done && cq.n > 0) {
		struct ctl_pending p = cq.q[0];
		struct dns_answer *a;

		memmove(cq.q, cq.q + 1, sizeof(cq.q[0]) * (size_t)(cq.n - 1));
		cq.n--;
		dns_query_sync(p.name, p.rrtype, timeout_ms, &a);
		fcrdns_answer(f, p.index, a, ctl_send, &cq);
		dns_answer_free(a);
	}
}

/* ctl_dnsbl - query the zones of one type, print and keep each result */
void
ctl_dnsbl(const struct dnsbl_set *set, int type, const struct sockaddr *client,
	const char *domain, unsigned timeout_ms, struct dnsbl_sess *ds)
{
	unsigned char addr[16];
	int family = AF_INET;

	if (set == NULL)
		return;
	if (client->sa_family == AF_INET) {
		memcpy(addr, &((const struct sockaddr_in *)client)->sin_addr, 4);
	} else {
		const struct in6_addr *a6 = &((const struct sockaddr_in6 *)client)->sin6_addr;

		if (IN6_IS_ADDR_V4MAPPED(a6))
			memcpy(addr, a6->s6_addr + 12, 4);
		else {
			family = AF_INET6;
			memcpy(addr, a6->s6_addr, 16);
		}
	}
	for (int i = 0; i < set->n; i++) {
		const struct dnsbl_zone *z = &set->z[i];
		struct dnsbl_zres *r = &ds->r[i];
		struct dnsbl_eval e;
		struct dns_answer *a;
		char name[320];
		uint32_t v[16];
		int n = 0;

		if (z->type != type)
			continue;
		memset(r, 0, sizeof(*r));
		memset(&e, 0, sizeof(e));
		if (dnsbl_query_name(z, family, addr, domain, name, sizeof(name)) < 0) {
			r->state = DZ_SKIPPED;
			continue;
		}
		dns_query_sync(name, DNS_T_A, timeout_ms, &a);
		if (a->status == DNS_TEMPERROR) {
			e.v = DNSBL_V_ERROR;
			r->temp = true;
		} else if (a->status == DNS_OK) {
			for (int k = 0; k < a->n && n < 16; k++) {
				unsigned char b[4];

				if (dns_rr_a(a, k, b) == 0)
					v[n++] = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
					    (uint32_t)b[2] << 8 | b[3];
			}
			dnsbl_eval_answer(z, v, n, &e);
		}
		dns_answer_free(a);
		r->state = DZ_DONE;
		r->verdict = (unsigned char)e.v;
		r->weight = e.v == DNSBL_V_LISTED ? e.weight : 0;
		r->reply = e.reply;
		r->code = e.code;
		printf("check dnsbl zone=%s type=%s result=%s", z->name, dnsbl_type_name(type),
		    r->temp ? "temperror" : e.v == DNSBL_V_LISTED ? "listed" :
		    e.v == DNSBL_V_ERROR ? "error" : "clear");
		if (e.v == DNSBL_V_LISTED || (e.v == DNSBL_V_ERROR && !r->temp))
			printf(" answer=%u.%u.%u.%u", e.code >> 24, (e.code >> 16) & 255,
			    (e.code >> 8) & 255, e.code & 255);
		if (e.v == DNSBL_V_LISTED)
			printf(" weight=%lld", (long long)r->weight);
		putchar('\n');
	}
}

/* ctl_spf - moatd's SPF check of one identity, synchronously; the result
 * word, and the domain checked in domain */
const char *
ctl_spf(const struct sockaddr *client, const char *helo, const char *sender, unsigned timeout_ms,
	bool helo_identity, char *domain, size_t dsize)
{
	struct spf_request rq;
	struct spf_outcome out;

	memset(&rq, 0, sizeof(rq));
	if (client->sa_family == AF_INET) {
		rq.family = AF_INET;
		memcpy(rq.addr, &((const struct sockaddr_in *)client)->sin_addr, 4);
	} else {
		rq.family = AF_INET6;
		memcpy(rq.addr, &((const struct sockaddr_in6 *)client)->sin6_addr, 16);
	}
	rq.helo = helo ? helo : "";
	rq.sender = sender ? sender : "";
	rq.timeout_ms = timeout_ms;
	spf_check(&rq, helo_identity ? SPF_ID_HELO : SPF_ID_MAILFROM, &out);
	snprintf(domain, dsize, "%s", out.domain);
	printf("check spf %s=%s domain=%s reason=\"%s\"\n", helo_identity ? "helo" : "mailfrom",
	    spf_res_name(out.res), out.domain, out.reason);
	return spf_res_name(out.res);
}

static void
ctl_sink(void *arg, const unsigned char *buf, size_t len)
{
	(void)arg;
	(void)buf;
	(void)len;
}

/* ctl_auth - DKIM and DMARC of a message file, as moatd runs them at the
 * end of the data; the facts' words in *dkim, *dmarc, *policy, *from */
void
ctl_auth(bool dkim_on, int dmarc_mode, const char *psl_path, unsigned dkim_min_bits,
	unsigned max_sigs, bool sha1, unsigned timeout_ms, const char *path, bool spf_pass,
	const char *spf_domain, const char **dkim_w, const char **dmarc_w, const char **policy_w,
	char *from, size_t fsize)
{
	static struct hdrscan hs;
	static struct dkimv_outcome dko;
	static struct dmarc_outcome dmo;
	struct dkimv *dv = NULL;
	struct dkimv_msg *msg = NULL;
	FILE *fp = fopen(path, "rb");
	char buf[65536], err[256];
	size_t n;
	bool cr = false;

	*dkim_w = "none";
	*dmarc_w = "none";
	*policy_w = "none";
	from[0] = 0;
	if (fp == NULL)
		return;
	hdrscan_init(&hs, "", ctl_sink, NULL);
	if (dkim_on) {
		struct dkimv_conf dc;

		memset(&dc, 0, sizeof(dc));
		dc.min_key_bits = dkim_min_bits;
		dc.max_signatures = max_sigs;
		dc.allow_rsa_sha1 = sha1;
		dc.timeout_ms = timeout_ms;
		dv = dkimv_new(&dc, err, sizeof(err));
		if (dv != NULL)
			msg = dkimv_msg_new(dv);
	}
	/* as moatd decodes it: bare LF becomes CRLF */
	while ((n = fread(buf, 1, sizeof(buf) / 2, fp)) > 0) {
		char out[sizeof(buf) + 2];
		size_t o = 0;

		for (size_t i = 0; i < n; i++) {
			if (buf[i] == '\n' && !cr)
				out[o++] = '\r';
			cr = buf[i] == '\r';
			out[o++] = buf[i];
		}
		if (msg != NULL)
			(void)dkimv_msg_feed(msg, out, o);
		hdrscan_feed(&hs, (const unsigned char *)out, o);
	}
	fclose(fp);
	hdrscan_finish(&hs);
	if (msg != NULL) {
		dkimv_msg_finish(msg, &dko);
		for (int i = 0; i < dko.nsigs; i++)
			printf("check dkim=%s d=%s s=%s%s\n", dkimv_result_name(dko.sigs[i].result),
			    dko.sigs[i].domain, dko.sigs[i].selector, dko.sigs[i].partial ?
			    " partial=yes" : "");
		*dkim_w = "none";
		for (int i = 0; i < dko.nsigs; i++)
			if (dko.sigs[i].result == DKIMV_PASS && !dko.sigs[i].partial) {
				*dkim_w = "pass";
				break;
			} else if (strcmp(*dkim_w, "none") == 0)
				*dkim_w = dkimv_result_name(dko.sigs[i].result);
		dkimv_msg_free(msg);
	}
	if (dv != NULL)
		dkimv_free(dv);
	if (dmarc_mode != 0) {
		struct dmarc_psl *psl = dmarc_psl_load(psl_path, err, sizeof(err));
		struct dmarc_input in;
		struct dmarc_dkim_in dk[DKIMV_MAX_SIGS];
		const char *fv[HDRSCAN_FROM_MAX];
		size_t fl[HDRSCAN_FROM_MAX];
		struct dmarc_conf dc;

		if (psl == NULL) {
			fprintf(stderr, "moatctl: public-suffix-list %s: %s\n", psl_path, err);
			return;
		}
		memset(&in, 0, sizeof(in));
		for (int i = 0; i < hs.nfrom && i < HDRSCAN_FROM_MAX; i++) {
			fv[i] = hs.from[i];
			fl[i] = hs.from_len[i];
		}
		in.from = fv;
		in.from_len = fl;
		in.nfrom = hs.nfrom < HDRSCAN_FROM_MAX ? hs.nfrom : HDRSCAN_FROM_MAX;
		in.spf_pass = spf_pass;
		in.spf_domain = spf_domain && spf_domain[0] ? spf_domain : NULL;
		for (int i = 0; msg != NULL && i < dko.nsigs; i++) {
			dk[in.ndkim].domain = dko.sigs[i].domain;
			dk[in.ndkim++].pass = dko.sigs[i].result == DKIMV_PASS && !dko.sigs[i].partial;
		}
		in.dkim = dk;
		memset(&dc, 0, sizeof(dc));
		dc.mode = dmarc_mode == 2 ? DMARC_MODE_BIS : DMARC_MODE_RFC7489;
		dc.psl = psl;
		dc.timeout_ms = timeout_ms;
		dmarc_check(&dc, &in, &dmo);
		dmarc_psl_free(psl);
		*dmarc_w = dmarc_result_name(dmo.result);
		*policy_w = dmarc_policy_name(dmo.policy);
		snprintf(from, fsize, "%s", dmo.from_domain);
		printf("check dmarc=%s policy=%s from-domain=%s\n", *dmarc_w, *policy_w,
		    from[0] ? from : "-");
	}
	hdrscan_free(&hs);
}
