/*
 * spf - the SPF check: libspf2 over moat's resolver, with moat's guard
 * (see spf.h for the contract and how the work is split, spf_guard.h for
 * what the guard refuses)
 *
 * One check is one struct spf_ctx on the caller's stack: the client, the
 * random marker token, the deadline, the counters and the first error
 * that stopped the evaluation. libspf2's DNS layer (an SPF_dns_server_t
 * of our own, also on the stack) carries a pointer to it in its hook, so
 * concurrent checks on several pool threads share nothing but the
 * resolver. libspf2's server object (settings only) is made once per
 * thread and lent to the thread's checks one at a time (thread_server).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include <spf2/spf.h>

#include "dns.h"
#include "idn.h"
#include "log.h"
#include "spf.h"
#include "spf_guard.h"

enum spf_stop { SPF_RUN = 0, SPF_STOP_TEMP, SPF_STOP_PERM };
enum spf_vres { SPF_V_NOMATCH = 0, SPF_V_MATCH, SPF_V_STOP };

struct spf_ctx {
	int family;
	unsigned char addr[16];
	char token[SPF_GUARD_TOKEN_LEN + 1];
	uint64_t deadline_ms;
	unsigned terms, voids, queries, plain;
	enum spf_stop stop;
	char why[SPF_REASON_MAX];
	SPF_dns_server_t dns;
	bool want_exp;			/* keep exp= in the rewrites */
	SPF_request_t *req;		/* for the explanation's macros */
	SPF_response_t *resp;
	char exp[SPF_EXP_MAX + 1];	/* the expanded explanation, or "" */
};

static struct spf_resolver resolver;		/* tests only; zero: dns.h */
static pthread_once_t spf_once = PTHREAD_ONCE_INIT;
static pthread_key_t spf_server_key;		/* each thread's libspf2 server */
/* a server's DNS layer between checks: nothing to call, nothing to free
 * (SPF_server_free() hands its layer to SPF_dns_free()) */
static SPF_dns_server_t spf_idle_dns;

/* spf_res_name - for logs, headers and moatctl */
const char *
spf_res_name(enum spf_res r)
{
	static const char *const names[] = {
		"none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"
	};

	return (unsigned)r < sizeof(names) / sizeof(names[0]) ? names[r] : "?";
}

/* spf_res_parse - the inverse of spf_res_name */
int
spf_res_parse(const char *name)
{
	for (int r = SPF_RES_NONE; r <= SPF_RES_PERMERROR; r++)
		if (strcmp(name, spf_res_name((enum spf_res)r)) == 0)
			return r;
	return -1;
}

/* spf_identity_name - "helo" or "mailfrom" */
const char *
spf_identity_name(enum spf_identity id)
{
	return id == SPF_ID_HELO ? "helo" : "mailfrom";
}

/* spf_set_resolver - see spf.h */
void
spf_set_resolver(const struct spf_resolver *r)
{
	if (r == NULL)
		memset(&resolver, 0, sizeof(resolver));
	else
		resolver = *r;
}

/* libspf2's message handlers: quiet, except for its own broken invariants */
static void
spf_lib_error(const char *file, int line, const char *msg)
	__attribute__((noreturn));

static void
spf_lib_error(const char *file, int line, const char *msg)
{
	panic("libspf2: %s:%d: %s", file ? file : "?", line, msg ? msg : "?");
}

static void
spf_lib_quiet(const char *file, int line, const char *msg)
{
	(void)file;
	(void)line;
	(void)msg;
}

/* server_end - a thread ends: its server goes */
static void
server_end(void *s)
{
	SPF_server_free(s);
}

static void
spf_init_once(void)
{
	SPF_error_handler = spf_lib_error;
	SPF_warning_handler = spf_lib_quiet;
	SPF_info_handler = spf_lib_quiet;
	SPF_debug_handler = spf_lib_quiet;
	if (pthread_key_create(&spf_server_key, server_end) != 0)
		panic("spf: pthread_key_create failed");
}

/* thread_server - this thread's libspf2 server, made at its first check
 * and kept: making one (the host name asked, the default local policy
 * and two explanations compiled) cost more than a check from the cache.
 * It holds no state of a check: only settings, the same for every check,
 * and the DNS layer, which is the check's own while it runs (server_done
 * puts the idle one back) */
static SPF_server_t *
thread_server(SPF_dns_server_t *dns)
{
	SPF_server_t *s = pthread_getspecific(spf_server_key);
	SPF_response_t *tmp = NULL;

	if (s == NULL) {
		s = SPF_server_new_dns(&spf_idle_dns, 0);
		if (s == NULL)
			panic("spf: out of memory");
		SPF_server_set_max_dns_mech(s, 4 * SPF_TERMS_MAX);	/* ours decides */
		SPF_server_set_explanation(s, "moat", &tmp);
		if (tmp != NULL)
			SPF_response_free(tmp);
		if (pthread_setspecific(spf_server_key, s) != 0)
			panic("spf: pthread_setspecific failed");
	}
	s->resolver = dns;
	return s;
}

static void
server_done(SPF_server_t *s)
{
	s->resolver = &spf_idle_dns;
}

/* esc - printable, bounded copy of peer text for reasons and domains */
static void
esc(char *out, size_t size, const char *in, size_t inmax)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0, i;

	if (size == 0)
		return;
	for (i = 0; in[i] != '\0' && i < inmax; i++) {
		unsigned char c = (unsigned char)in[i];

		if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
			if (o + 1 >= size)
				break;
			out[o++] = (char)c;
		} else {
			if (o + 4 >= size)
				break;
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	if (in[i] != '\0' && o + 3 < size) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
}

/* halt - the first error decides; later ones are not recorded */
static void
halt(struct spf_ctx *c, enum spf_stop st, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void
halt(struct spf_ctx *c, enum spf_stop st, const char *fmt, ...)
{
	va_list ap;

	if (c->stop != SPF_RUN)
		return;
	c->stop = st;
	va_start(ap, fmt);
	vsnprintf(c->why, sizeof(c->why), fmt, ap);
	va_end(ap);
}

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* query - one question through moat's resolver, within the deadline */
static enum dns_status
query(struct spf_ctx *c, const char *name, int rrtype, struct dns_answer **a)
{
	uint64_t now = now_ms();
	unsigned left;

	*a = NULL;
	if (now >= c->deadline_ms || c->queries >= SPF_QUERIES_MAX)
		return DNS_TEMPERROR;
	left = (unsigned)(c->deadline_ms - now);
	c->queries++;
	if (resolver.query != NULL)
		resolver.query(resolver.ctx, name, rrtype, left, a);
	else
		dns_query_sync(name, rrtype, left, a);
	return *a == NULL ? DNS_TEMPERROR : (*a)->status;
}

static void
answer_free(struct dns_answer *a)
{
	if (a == NULL)
		return;
	if (resolver.free != NULL)
		resolver.free(resolver.ctx, a);
	else
		dns_answer_free(a);
}

/* void_lookup - count one; the third is permerror */
static void
void_lookup(struct spf_ctx *c, const char *name)
{
	char e[80];

	if (++c->voids > SPF_VOIDS_MAX) {
		esc(e, sizeof(e), name, 60);
		halt(c, SPF_STOP_PERM, "more than %d void lookups (at %s)", SPF_VOIDS_MAX, e);
	}
}

/* temp - a DNS error stops the check with temperror */
static void
temp(struct spf_ctx *c, const char *what, const char *name, const struct dns_answer *a)
{
	char e[80];

	esc(e, sizeof(e), name, 60);
	halt(c, SPF_STOP_TEMP, "DNS error (%s) for %s %s",
	    a != NULL && a->why != NULL ? a->why : "timeout", what, e);
}

/* prefix_eq - the first bits of two addresses agree */
static bool
prefix_eq(const unsigned char *x, const unsigned char *y, int bits)
{
	int full = bits / 8, rest = bits % 8;

	if (memcmp(x, y, (size_t)full) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((x[full] ^ y[full]) & (0xff << (8 - rest)) & 0xff) == 0;
}

/*
 * addr_match - does name have an address of the client's family within
 * bits of the client? soft: a DNS error is no match (ptr), not temperror.
 */
static enum spf_vres
addr_match(struct spf_ctx *c, const char *name, int bits, bool count_void, bool soft)
{
	struct dns_answer *a;
	int v6 = c->family == AF_INET6;
	enum dns_status st = query(c, name, v6 ? DNS_T_AAAA : DNS_T_A, &a);
	enum spf_vres r = SPF_V_NOMATCH;

	if (st == DNS_TEMPERROR) {
		if (!soft)
			temp(c, v6 ? "AAAA" : "A", name, a);
		answer_free(a);
		return soft ? SPF_V_NOMATCH : SPF_V_STOP;
	}
	if (st != DNS_OK) {
		if (count_void)
			void_lookup(c, name);
	} else {
		for (int i = 0; i < a->n && r == SPF_V_NOMATCH; i++) {
			unsigned char x[16];

			if ((v6 ? dns_rr_aaaa(a, i, x) : dns_rr_a(a, i, x)) != 0)
				continue;
			if (prefix_eq(x, c->addr, bits))
				r = SPF_V_MATCH;
		}
	}
	answer_free(a);
	return c->stop != SPF_RUN ? SPF_V_STOP : r;
}

/* mech_mx - RFC 7208 5.4 */
static enum spf_vres
mech_mx(struct spf_ctx *c, const char *name, int bits)
{
	struct dns_answer *a;
	enum dns_status st = query(c, name, DNS_T_MX, &a);
	enum spf_vres r = SPF_V_NOMATCH;

	if (st == DNS_TEMPERROR) {
		temp(c, "MX", name, a);
		answer_free(a);
		return SPF_V_STOP;
	}
	if (st != DNS_OK) {
		void_lookup(c, name);
		answer_free(a);
		return c->stop != SPF_RUN ? SPF_V_STOP : SPF_V_NOMATCH;
	}
	if (a->n > 10) {
		char e[80];

		esc(e, sizeof(e), name, 60);
		halt(c, SPF_STOP_PERM, "more than 10 MX records for %s", e);
		answer_free(a);
		return SPF_V_STOP;
	}
	for (int i = 0; i < a->n && r == SPF_V_NOMATCH; i++) {
		char host[256];
		int hl = dns_rr_name(a, i, 2, host, sizeof(host));

		if (hl <= 0 || !spf_guard_name_ok(host, (size_t)hl))
			continue;	/* malformed, or the null MX "." */
		r = addr_match(c, host, bits, false, false);
	}
	answer_free(a);
	return r;
}

/* name_under - host is dom or a name below it, in any case */
static bool
name_under(const char *host, const char *dom)
{
	size_t hl = strlen(host), dl = strlen(dom);

	if (dl > 0 && dom[dl - 1] == '.')
		dl--;
	if (hl > 0 && host[hl - 1] == '.')
		hl--;
	if (dl == 0 || dl > hl)
		return false;
	if (strncasecmp(host + hl - dl, dom, dl) != 0)
		return false;
	return hl == dl || host[hl - dl - 1] == '.';
}

/* mech_ptr - RFC 7208 5.5: the first 10 names, validated, under target */
static enum spf_vres
mech_ptr(struct spf_ctx *c, const char *target)
{
	struct dns_answer *a;
	char rev[128];
	enum dns_status st;
	enum spf_vres r = SPF_V_NOMATCH;

	if (dns_reverse_name(c->family, c->addr, c->family == AF_INET6 ? "ip6.arpa" : "in-addr.arpa",
	    rev, sizeof(rev)) < 0)
		return SPF_V_NOMATCH;
	st = query(c, rev, DNS_T_PTR, &a);
	if (st == DNS_TEMPERROR) {
		answer_free(a);
		return SPF_V_NOMATCH;
	}
	if (st != DNS_OK) {
		void_lookup(c, rev);
		answer_free(a);
		return c->stop != SPF_RUN ? SPF_V_STOP : SPF_V_NOMATCH;
	}
	for (int i = 0; i < a->n && i < 10 && r == SPF_V_NOMATCH; i++) {
		char host[256];
		int hl = dns_rr_name(a, i, 0, host, sizeof(host));

		if (hl <= 0 || !spf_guard_name_ok(host, (size_t)hl) || !name_under(host, target))
			continue;
		r = addr_match(c, host, c->family == AF_INET6 ? 128 : 32, false, true);
	}
	answer_free(a);
	return c->stop != SPF_RUN ? SPF_V_STOP : r;
}

/* mech_exists - RFC 7208 5.7: any A record */
static enum spf_vres
mech_exists(struct spf_ctx *c, const char *name)
{
	struct dns_answer *a;
	enum dns_status st = query(c, name, DNS_T_A, &a);

	if (st == DNS_TEMPERROR)
		temp(c, "A", name, a);
	answer_free(a);
	if (st == DNS_TEMPERROR)
		return SPF_V_STOP;
	if (st != DNS_OK) {
		void_lookup(c, name);
		return c->stop != SPF_RUN ? SPF_V_STOP : SPF_V_NOMATCH;
	}
	return SPF_V_MATCH;
}

/* rr_new - an answer for libspf2 (which frees it) */
static SPF_dns_rr_t *
rr_new(SPF_dns_server_t *d, const char *domain, ns_type type, int herrno)
{
	SPF_dns_rr_t *rr = SPF_dns_rr_new_init(d, domain, type, 0, herrno);

	if (rr == NULL)
		panic("spf: out of memory");
	return rr;
}

/* rr_match - one A record, which is all libspf2's exists asks for */
static SPF_dns_rr_t *
rr_match(SPF_dns_server_t *d, const char *domain)
{
	SPF_dns_rr_t *rr = rr_new(d, domain, ns_t_a, NETDB_SUCCESS);

	if (SPF_dns_rr_buf_realloc(rr, 0, sizeof(struct in_addr)) != SPF_E_SUCCESS)
		panic("spf: out of memory");
	rr->rr[0]->a.s_addr = htonl(0x7f000002);
	rr->num_rr = 1;
	return rr;
}

/* plain_lookup - the queries libspf2 makes itself: those of %{p} only */
static SPF_dns_rr_t *
plain_lookup(struct spf_ctx *c, SPF_dns_server_t *d, const char *domain, ns_type type)
{
	struct dns_answer *a;
	SPF_dns_rr_t *rr;
	int n = 0;

	if ((type != ns_t_ptr && type != ns_t_a && type != ns_t_aaaa) || ++c->plain > 11 ||
	    !spf_guard_name_ok(domain, strlen(domain)))
		return rr_new(d, domain, type, HOST_NOT_FOUND);
	if (query(c, domain, (int)type, &a) != DNS_OK) {
		answer_free(a);
		return rr_new(d, domain, type, HOST_NOT_FOUND);
	}
	rr = rr_new(d, domain, type, NETDB_SUCCESS);
	for (int i = 0; i < a->n && i < 10; i++) {
		char host[256];
		unsigned char x[16];

		if (type == ns_t_ptr) {
			int hl = dns_rr_name(a, i, 0, host, sizeof(host));

			if (hl <= 0 || SPF_dns_rr_buf_realloc(rr, n, (size_t)hl + 1) != SPF_E_SUCCESS)
				continue;
			memcpy(rr->rr[n]->ptr, host, (size_t)hl + 1);
		} else if (type == ns_t_a) {
			if (dns_rr_a(a, i, x) != 0 ||
			    SPF_dns_rr_buf_realloc(rr, n, sizeof(struct in_addr)) != SPF_E_SUCCESS)
				continue;
			memcpy(&rr->rr[n]->a, x, 4);
		} else {
			if (dns_rr_aaaa(a, i, x) != 0 ||
			    SPF_dns_rr_buf_realloc(rr, n, sizeof(struct in6_addr)) != SPF_E_SUCCESS)
				continue;
			memcpy(&rr->rr[n]->aaaa, x, 16);
		}
		n++;
	}
	rr->num_rr = n;
	if (n == 0)
		rr->herrno = NO_DATA;
	answer_free(a);
	return rr;
}

/* layer_lookup - libspf2's DNS questions; marked names are mechanisms */
static SPF_dns_rr_t *
layer_lookup(SPF_dns_server_t *d, const char *domain, ns_type type, int should_cache)
{
	struct spf_ctx *c = d->hook;
	struct spf_marker m;
	char name[SPF_GUARD_REWRITE_MAX];
	enum spf_vres r = SPF_V_NOMATCH;

	(void)should_cache;
	if (c->stop != SPF_RUN)
		return rr_new(d, domain, type, TRY_AGAIN);
	if (type != ns_t_a || spf_guard_marker(domain, c->token, &m) != 1)
		return plain_lookup(c, d, domain, type);
	if (++c->terms > SPF_TERMS_MAX) {
		halt(c, SPF_STOP_PERM, "more than %d DNS-querying terms", SPF_TERMS_MAX);
		return rr_new(d, domain, type, TRY_AGAIN);
	}
	if (m.domlen >= sizeof(name))
		return rr_new(d, domain, type, HOST_NOT_FOUND);
	memcpy(name, domain, m.domlen);
	name[m.domlen] = '\0';
	if (m.domlen > 0 && name[m.domlen - 1] == '.')
		name[m.domlen - 1] = '\0';
	if (!spf_guard_name_ok(name, strlen(name)))
		return rr_new(d, domain, type, HOST_NOT_FOUND);
	switch (m.kind) {
	case 'a':
		r = addr_match(c, name, c->family == AF_INET6 ? m.c6 : m.c4, true, false);
		break;
	case 'm':
		r = mech_mx(c, name, c->family == AF_INET6 ? m.c6 : m.c4);
		break;
	case 'p':
		r = mech_ptr(c, name);
		break;
	case 'e':
		r = mech_exists(c, name);
		break;
	default:
		break;
	}
	if (r == SPF_V_STOP || c->stop != SPF_RUN)
		return rr_new(d, domain, type, TRY_AGAIN);
	return r == SPF_V_MATCH ? rr_match(d, domain) : rr_new(d, domain, type, HOST_NOT_FOUND);
}

enum spf_fetch { SPF_F_NONE = 0, SPF_F_OK, SPF_F_STOP };

/* txt_join - a TXT rdata's strings joined; returns the whole length */
static size_t
txt_join(const unsigned char *p, size_t n, char *out, size_t size)
{
	size_t pos = 0, o = 0, total = 0;

	while (pos < n) {
		size_t sl = p[pos++];

		if (pos + sl > n)
			sl = n - pos;	/* malformed: take what is there */
		for (size_t k = 0; k < sl; k++, total++)
			if (o + 1 < size)
				out[o++] = (char)p[pos + k];
		pos += sl;
	}
	out[o] = '\0';
	return total;
}

/*
 * fetch - the one SPF record of name into rec (NUL-terminated, *len
 * bytes, which may include NULs). count_void: NXDOMAIN or no data is a
 * void lookup (include and redirect targets).
 */
static enum spf_fetch
fetch(struct spf_ctx *c, const char *name, char *rec, size_t size, size_t *len, bool count_void)
{
	struct dns_answer *a;
	enum dns_status st = query(c, name, DNS_T_TXT, &a);
	char buf[SPF_GUARD_RECORD_MAX + 2], e[80];
	int found = 0;

	if (st == DNS_TEMPERROR) {
		temp(c, "TXT", name, a);
		answer_free(a);
		return SPF_F_STOP;
	}
	if (st != DNS_OK) {
		answer_free(a);
		if (count_void)
			void_lookup(c, name);
		return c->stop != SPF_RUN ? SPF_F_STOP : SPF_F_NONE;
	}
	esc(e, sizeof(e), name, 60);
	for (int i = 0; i < a->n; i++) {
		size_t total = txt_join((const unsigned char *)a->data[i], (size_t)a->len[i],
		    buf, sizeof(buf));

		if (!spf_guard_is_spf(buf, total < sizeof(buf) - 1 ? total : sizeof(buf) - 1))
			continue;
		if (++found > 1)
			break;
		if (total > SPF_GUARD_RECORD_MAX || total + 1 > size) {
			halt(c, SPF_STOP_PERM, "SPF record of %s too long (%zu bytes)", e, total);
			continue;
		}
		memcpy(rec, buf, total + 1);
		*len = total;
	}
	answer_free(a);
	if (found > 1)
		halt(c, SPF_STOP_PERM, "more than one SPF record for %s", e);
	if (c->stop != SPF_RUN)
		return SPF_F_STOP;
	return found == 0 ? SPF_F_NONE : SPF_F_OK;
}

/* compile - guard, rewrite, and let libspf2 compile */
static int
compile(struct spf_ctx *c, SPF_server_t *s, const char *name, const char *rec, size_t len,
    SPF_record_t **recp)
{
	struct spf_rec pr;
	char why[96], out[SPF_GUARD_REWRITE_MAX], e[80];
	SPF_response_t *tmp;
	SPF_errcode_t err;
	int olen;

	*recp = NULL;
	esc(e, sizeof(e), name, 60);
	if (spf_guard_parse(rec, len, &pr, why, sizeof(why)) != 0) {
		halt(c, SPF_STOP_PERM, "record of %s refused: %s", e, why);
		return -1;
	}
	if ((olen = spf_guard_rewrite(&pr, c->token, out, sizeof(out))) < 0) {
		halt(c, SPF_STOP_PERM, "record of %s refused: too long", e);
		return -1;
	}
	/* exp= (the guard checked its domain-spec), only when a rule wants
	 * the explanation; which record's counts is layer_get_exp's affair */
	if (c->want_exp && pr.exp != NULL && (size_t)olen + pr.explen + 6 <= sizeof(out))
		snprintf(out + olen, sizeof(out) - (size_t)olen, " exp=%.*s", (int)pr.explen, pr.exp);
	tmp = SPF_response_new(NULL);
	if (tmp == NULL)
		panic("spf: out of memory");
	err = SPF_record_compile(s, tmp, recp, out);
	SPF_response_free(tmp);
	if (err != SPF_E_SUCCESS || *recp == NULL) {
		if (*recp != NULL)
			SPF_record_free(*recp);
		*recp = NULL;
		halt(c, SPF_STOP_PERM, "record of %s not compiled: %s", e, SPF_strerror(err));
		return -1;
	}
	return 0;
}

/* layer_get_spf - the record of an include: or redirect= target */
static SPF_errcode_t
layer_get_spf(SPF_server_t *s, SPF_request_t *req, SPF_response_t *resp, SPF_record_t **recp)
{
	struct spf_ctx *c = s->resolver->hook;
	char name[SPF_GUARD_REWRITE_MAX], rec[SPF_GUARD_RECORD_MAX + 1], e[80];
	size_t len = 0, nl;
	enum spf_fetch f;

	(void)resp;
	*recp = NULL;
	if (c->stop != SPF_RUN)
		return SPF_E_DNS_ERROR;
	if (++c->terms > SPF_TERMS_MAX) {
		halt(c, SPF_STOP_PERM, "more than %d DNS-querying terms", SPF_TERMS_MAX);
		return SPF_E_DNS_ERROR;
	}
	nl = req->cur_dom != NULL ? strlen(req->cur_dom) : 0;
	esc(e, sizeof(e), req->cur_dom != NULL ? req->cur_dom : "", 60);
	if (nl == 0 || nl >= sizeof(name) || !spf_guard_name_ok(req->cur_dom, nl)) {
		halt(c, SPF_STOP_PERM, "include or redirect target %s is not a domain name", e);
		return SPF_E_DNS_ERROR;
	}
	memcpy(name, req->cur_dom, nl + 1);
	if (name[nl - 1] == '.')
		name[nl - 1] = '\0';
	f = fetch(c, name, rec, sizeof(rec), &len, true);
	if (f == SPF_F_NONE)
		halt(c, SPF_STOP_PERM, "include or redirect target %s has no SPF record", e);
	if (c->stop != SPF_RUN || compile(c, s, name, rec, len, recp) != 0)
		return SPF_E_DNS_ERROR;
	return SPF_E_SUCCESS;
}

/* exp_none - no explanation: libspf2 keeps none (its buffer stays) */
static SPF_errcode_t
exp_none(struct spf_ctx *c)
{
	c->exp[0] = '\0';
	return SPF_E_NOT_SPF;
}

/* layer_get_exp - the explanation of a fail (RFC 7208 6.2), see spf.h */
static SPF_errcode_t
layer_get_exp(SPF_server_t *s, const char *domain, char **buf, size_t *buflen)
{
	struct spf_ctx *c = s->resolver->hook;
	struct dns_answer *a = NULL;
	char txt[SPF_GUARD_EXP_MAX + 2], sp[2 * SPF_GUARD_EXP_MAX + 1], why[80];
	SPF_macro_t *mac = NULL;
	SPF_errcode_t err;
	size_t total = 0, o = 0;

	/* the check's own response, failed: the top record or a redirect=
	 * target (libspf2 evaluates it in the same response). An include:
	 * target fails in a response of its own while this one has no
	 * result yet, so its exp= is never fetched (RFC 7208 5.2). */
	if (!c->want_exp || c->stop != SPF_RUN || c->req == NULL || c->resp == NULL ||
	    SPF_response_result(c->resp) != SPF_RESULT_FAIL || domain == NULL)
		return exp_none(c);
	/* RFC 7208 7.3: an expanded name over 253 bytes loses labels on the
	 * left until it fits */
	while (strlen(domain) > 253 && strchr(domain, '.') != NULL)
		domain = strchr(domain, '.') + 1;
	if (!spf_guard_name_ok(domain, strlen(domain)))
		return exp_none(c);
	if (query(c, domain, DNS_T_TXT, &a) != DNS_OK || a->n != 1) {
		answer_free(a);
		return exp_none(c);
	}
	total = txt_join((const unsigned char *)a->data[0], (size_t)a->len[0], txt, sizeof(txt));
	answer_free(a);
	if (total >= sizeof(txt) - 1 || spf_guard_exp_text(txt, total, why, sizeof(why)) != 0)
		return exp_none(c);
	/* libspf2's macro compiler stops at a blank: write spaces as "%_",
	 * which RFC 7208 7.3 defines as the same space */
	for (size_t i = 0; i < total; i++) {
		if (txt[i] == ' ') {
			sp[o++] = '%';
			sp[o++] = '_';
		} else {
			sp[o++] = txt[i];
		}
	}
	sp[o] = '\0';
	o = 0;
	err = SPF_record_compile_macro(s, c->resp, &mac, sp);
	if (err != SPF_E_SUCCESS || mac == NULL) {
		if (mac != NULL)
			SPF_macro_free(mac);
		return exp_none(c);
	}
	err = SPF_record_expand_data(s, c->req, c->resp,
	    (SPF_data_t *)(void *)((char *)mac + sizeof(*mac)), mac->macro_len, buf, buflen);
	SPF_macro_free(mac);
	if (err != SPF_E_SUCCESS || *buf == NULL)
		return exp_none(c);
	/* printable ASCII only, bounded: %{l} may hold anything */
	for (const char *p = *buf; *p != '\0' && o < SPF_EXP_MAX; p++)
		c->exp[o++] = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
	c->exp[o] = '\0';
	return SPF_E_SUCCESS;
}

/* domain_ok - RFC 7208 4.3: a multi-label domain name we can ask for */
static bool
domain_ok(const char *d)
{
	size_t n = strlen(d), lab = 0, labels = 0;

	if (n > 0 && d[n - 1] == '.')
		n--;
	if (n == 0 || n > 253)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)d[i];

		if (ch == '.') {
			if (lab == 0)
				return false;
			lab = 0;
			continue;
		}
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
			return false;
		if (lab++ == 0)
			labels++;
		if (lab > 63)
			return false;
	}
	return lab > 0 && labels >= 2;
}

/* result - what libspf2 said, or what stopped it */
static enum spf_res
result(struct spf_ctx *c, SPF_response_t *resp, char *reason, size_t size)
{
	SPF_result_t r = SPF_response_result(resp);

	if (c->stop != SPF_RUN) {
		snprintf(reason, size, "%s", c->why);
		return c->stop == SPF_STOP_PERM ? SPF_RES_PERMERROR : SPF_RES_TEMPERROR;
	}
	switch (r) {
	case SPF_RESULT_PASS:
	case SPF_RESULT_FAIL:
	case SPF_RESULT_SOFTFAIL:
	case SPF_RESULT_NEUTRAL:
		snprintf(reason, size, "%s", SPF_response_reason(resp) == SPF_REASON_DEFAULT ?
		    "no mechanism matched" : "mechanism matched");
		return r == SPF_RESULT_PASS ? SPF_RES_PASS : r == SPF_RESULT_FAIL ? SPF_RES_FAIL :
		    r == SPF_RESULT_SOFTFAIL ? SPF_RES_SOFTFAIL : SPF_RES_NEUTRAL;
	case SPF_RESULT_TEMPERROR:
		snprintf(reason, size, "libspf2: %s", SPF_strerror(SPF_response_errcode(resp)));
		return SPF_RES_TEMPERROR;
	default:
		snprintf(reason, size, "libspf2: %s", SPF_strerror(SPF_response_errcode(resp)));
		return SPF_RES_PERMERROR;
	}
}

/* token - the per-check marker: SPF_GUARD_TOKEN_LEN random letters */
static int
token(char *t)
{
	unsigned char b[SPF_GUARD_TOKEN_LEN];

	if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
		return -1;
	for (size_t i = 0; i < sizeof(b); i++)
		t[i] = (char)('a' + b[i] % 26);
	t[sizeof(b)] = '\0';
	return 0;
}

/* evaluate - libspf2's interpreter over the top record */
static enum spf_res
evaluate(struct spf_ctx *c, const char *dom, const char *helo, const char *from,
    const char *rec, size_t len, char *reason, size_t size)
{
	SPF_server_t *s = thread_server(&c->dns);
	SPF_request_t *req;
	SPF_response_t *resp = NULL;
	SPF_record_t *r;
	enum spf_res res;

	if (compile(c, s, dom, rec, len, &r) != 0) {
		server_done(s);
		snprintf(reason, size, "%s", c->why);
		return SPF_RES_PERMERROR;
	}
	req = SPF_request_new(s);
	if (req == NULL)
		panic("spf: out of memory");
	if (c->family == AF_INET) {
		struct in_addr a4;

		memcpy(&a4, c->addr, 4);
		SPF_request_set_ipv4(req, a4);
	} else {
		struct in6_addr a6;

		memcpy(&a6, c->addr, 16);
		SPF_request_set_ipv6(req, a6);
	}
	if (SPF_request_set_helo_dom(req, helo[0] != '\0' ? helo : "unknown") != SPF_E_SUCCESS ||
	    SPF_request_set_env_from(req, from) != SPF_E_SUCCESS)
		panic("spf: out of memory");
	req->cur_dom = dom;
	resp = SPF_response_new(req);
	if (resp == NULL)
		panic("spf: out of memory");
	resp->spf_record_exp = r;
	c->req = req;
	c->resp = resp;
	SPF_record_interpret(r, req, resp, 0);
	res = result(c, resp, reason, size);
	c->req = NULL;
	c->resp = NULL;
	if (res != SPF_RES_FAIL)
		c->exp[0] = '\0';
	SPF_response_free(resp);
	SPF_record_free(r);
	SPF_request_free(req);
	server_done(s);
	return res;
}

/* spf_check - see spf.h */
void
spf_check(const struct spf_request *rq, enum spf_identity id, struct spf_outcome *out)
{
	struct spf_ctx c;
	const char *helo = rq->helo != NULL ? rq->helo : "";
	const char *sender = rq->sender != NULL ? rq->sender : "";
	const char *dom, *at;
	char from[600], dombuf[SPF_DOMAIN_MAX], rec[SPF_GUARD_RECORD_MAX + 1];
	char helo_a[SPF_DOMAIN_MAX], dom_a[SPF_DOMAIN_MAX];
	size_t len = 0, dl;
	enum spf_fetch f;

	pthread_once(&spf_once, spf_init_once);
	memset(out, 0, sizeof(*out));
	memset(&c, 0, sizeof(c));
	c.family = rq->family;
	if (rq->family == AF_INET)
		memcpy(c.addr, rq->addr, 4);
	else if (rq->family == AF_INET6 && IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)rq->addr)) {
		c.family = AF_INET;
		memcpy(c.addr, rq->addr + 12, 4);
	} else if (rq->family == AF_INET6)
		memcpy(c.addr, rq->addr, 16);
	else {
		out->res = SPF_RES_PERMERROR;
		snprintf(out->reason, sizeof(out->reason), "client address family unknown");
		return;
	}
	c.deadline_ms = now_ms() + (rq->timeout_ms ? rq->timeout_ms : SPF_TIMEOUT_DEFAULT_MS);
	c.dns.lookup = layer_lookup;
	c.dns.get_spf = layer_get_spf;
	c.dns.get_exp = layer_get_exp;
	c.dns.name = "moat";
	c.dns.hook = &c;
	c.want_exp = rq->want_exp;

	/* RFC 8616: a HELO name in U-labels is checked in A-labels (an
	 * invalid one stays as it is: it is never asked for, see the guard) */
	if (idn_needs(helo, strlen(helo)) &&
	    idn_alabel(helo, strlen(helo), helo_a, sizeof(helo_a)) > 0)
		helo = helo_a;
	/* the identity: RFC 7208 2.3, 2.4, 4.3 */
	if (id == SPF_ID_HELO || sender[0] == '\0') {
		dom = helo;
		if ((size_t)snprintf(from, sizeof(from), "postmaster@%s", helo) >= sizeof(from))
			dom = "";
	} else {
		at = strrchr(sender, '@');
		dom = at != NULL ? at + 1 : "";
		if (idn_needs(dom, strlen(dom))) {
			/* RFC 8616: the MAIL FROM domain in A-labels; an invalid
			 * IDN is a permerror, never a lookup of its raw bytes */
			if (idn_alabel(dom, strlen(dom), dom_a, sizeof(dom_a)) <= 0) {
				out->res = SPF_RES_PERMERROR;
				esc(out->domain, sizeof(out->domain), dom, SPF_DOMAIN_MAX);
				snprintf(out->reason, sizeof(out->reason),
				    "the domain is not a valid IDN");
				return;
			}
			dom = dom_a;
		}
		if ((size_t)snprintf(from, sizeof(from), "%.*s%s@%s", (int)(at != NULL ? at - sender :
		    0), sender, at == sender ? "postmaster" : "", dom) >= sizeof(from) || at == NULL)
			dom = "";
	}
	dl = strlen(dom);
	if (dl < sizeof(dombuf)) {
		for (size_t i = 0; i <= dl; i++)
			dombuf[i] = (char)((dom[i] >= 'A' && dom[i] <= 'Z') ? dom[i] - 'A' + 'a' : dom[i]);
	} else
		dombuf[0] = '\0';
	esc(out->domain, sizeof(out->domain), dombuf, SPF_DOMAIN_MAX);
	if (!domain_ok(dombuf)) {
		out->res = SPF_RES_NONE;
		snprintf(out->reason, sizeof(out->reason), "%s",
		    dombuf[0] == '\0' ? "no domain to check" : "not a multi-label domain name");
		return;
	}
	if (dombuf[dl - 1] == '.')
		dombuf[dl - 1] = '\0';
	if (token(c.token) != 0) {
		out->res = SPF_RES_TEMPERROR;
		snprintf(out->reason, sizeof(out->reason), "no randomness for the marker token");
		return;
	}

	f = fetch(&c, dombuf, rec, sizeof(rec), &len, false);
	if (f == SPF_F_NONE) {
		out->res = SPF_RES_NONE;
		snprintf(out->reason, sizeof(out->reason), "no SPF record");
	} else if (f == SPF_F_STOP) {
		out->res = c.stop == SPF_STOP_PERM ? SPF_RES_PERMERROR : SPF_RES_TEMPERROR;
		snprintf(out->reason, sizeof(out->reason), "%s", c.why);
	} else {
		out->res = evaluate(&c, dombuf, helo, from, rec, len, out->reason, sizeof(out->reason));
		if (out->res == SPF_RES_FAIL)
			snprintf(out->explanation, sizeof(out->explanation), "%s", c.exp);
	}
	out->dns_terms = c.terms > SPF_TERMS_MAX ? SPF_TERMS_MAX + 1 : c.terms;
	out->void_lookups = c.voids;
	out->queries = c.queries;
}
