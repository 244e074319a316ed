/*
 * test_dnspkt - reading the answer out of a DNS response packet
 * (core/dnspkt.c): records of the type, the CNAME chain, TTLs, negative
 * answers, rcodes, names expanded in rdata, and packets that must fail.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dns.h"
#include "dnspkt.h"
#include "t.h"

struct pkt {
	unsigned char b[4096];
	size_t n;
};

static void
u8(struct pkt *p, unsigned v)
{
	p->b[p->n++] = (unsigned char)v;
}

static void
u16(struct pkt *p, unsigned v)
{
	u8(p, v >> 8);
	u8(p, v & 0xff);
}

static void
u32(struct pkt *p, uint32_t v)
{
	u16(p, v >> 16);
	u16(p, v & 0xffff);
}

/* name - "a.b.c" in wire form, ending with a pointer to ptr when ptr >= 0 */
static void
name(struct pkt *p, const char *s, int ptr)
{
	while (*s) {
		const char *dot = strchr(s, '.');
		size_t l = dot ? (size_t)(dot - s) : strlen(s);

		u8(p, (unsigned)l);
		memcpy(p->b + p->n, s, l);
		p->n += l;
		s += l;
		if (*s == '.')
			s++;
	}
	if (ptr >= 0)
		u16(p, 0xc000 | (unsigned)ptr);
	else
		u8(p, 0);
}

static void
hdr(struct pkt *p, unsigned flags, unsigned qd, unsigned an, unsigned ns, unsigned ar)
{
	p->n = 0;
	u16(p, 0x1234);
	u16(p, flags);
	u16(p, qd);
	u16(p, an);
	u16(p, ns);
	u16(p, ar);
}

/* question at offset 12 */
static void
question(struct pkt *p, const char *qname, unsigned qtype)
{
	name(p, qname, -1);
	u16(p, qtype);
	u16(p, 1);
}

/* rr_head - owner as a pointer, type, class, TTL; returns where rdlength goes */
static size_t
rr_head(struct pkt *p, int owner_ptr, unsigned type, unsigned class, uint32_t ttl)
{
	size_t at;

	u16(p, 0xc000 | (unsigned)owner_ptr);
	u16(p, type);
	u16(p, class);
	u32(p, ttl);
	at = p->n;
	u16(p, 0);
	return at;
}

static void
rr_end(struct pkt *p, size_t at)
{
	size_t l = p->n - at - 2;

	p->b[at] = (unsigned char)(l >> 8);
	p->b[at + 1] = (unsigned char)(l & 0xff);
}

static void
rr_a(struct pkt *p, int owner_ptr, uint32_t ttl, unsigned a, unsigned b, unsigned c, unsigned d)
{
	size_t at = rr_head(p, owner_ptr, DNS_T_A, 1, ttl);

	u8(p, a);
	u8(p, b);
	u8(p, c);
	u8(p, d);
	rr_end(p, at);
}

#define RESP 0x8180	/* QR RD RA, rcode 0 */

static void
t_a_records(void)
{
	struct pkt p;
	struct dns_answer *a;
	unsigned char ip[4];

	hdr(&p, RESP, 1, 2, 0, 0);
	question(&p, "mx.example.test", DNS_T_A);
	rr_a(&p, 12, 300, 192, 0, 2, 1);
	rr_a(&p, 12, 60, 192, 0, 2, 2);
	a = dnspkt_answer(p.b, p.n, DNS_T_A);
	T_CHECK(a->status == DNS_OK);
	T_CHECK(a->n == 2);
	T_CHECK(a->ttl == 60);
	T_CHECK(a->rrtype == DNS_T_A);
	T_CHECK(dns_rr_a(a, 0, ip) == 0 && ip[3] == 1);
	T_CHECK(dns_rr_a(a, 1, ip) == 0 && ip[3] == 2);
	T_CHECK(a->data[2] == NULL);
	dns_answer_free(a);
}

static void
t_cname_chain(void)
{
	struct pkt p;
	struct dns_answer *a;
	size_t at, target;
	unsigned char ip[4];

	/* www -> alias.example.test (target compressed onto the question's
	 * "example.test") -> A; an unrelated A and a CH-class one are left */
	hdr(&p, RESP, 1, 4, 0, 0);
	question(&p, "www.example.test", DNS_T_A);
	rr_a(&p, 16, 10, 10, 0, 0, 9);		/* example.test: not the name */
	at = rr_head(&p, 12, DNS_T_CNAME, 1, 120);
	target = p.n;
	name(&p, "ALIAS", 16);
	rr_end(&p, at);
	at = rr_head(&p, (int)target, DNS_T_A, 3, 500);	/* class CH */
	u32(&p, 0x01020304);
	rr_end(&p, at);
	rr_a(&p, (int)target, 900, 192, 0, 2, 7);
	a = dnspkt_answer(p.b, p.n, DNS_T_A);
	T_CHECK(a->status == DNS_OK);
	T_CHECK(a->n == 1);
	T_CHECK(dns_rr_a(a, 0, ip) == 0 && ip[3] == 7);
	T_CHECK(a->ttl == 10);	/* smallest in the answer section, as libunbound */
	dns_answer_free(a);

	/* asked for the CNAME itself: the record, its name expanded */
	hdr(&p, RESP, 1, 1, 0, 0);
	question(&p, "www.example.test", DNS_T_CNAME);
	at = rr_head(&p, 12, DNS_T_CNAME, 1, 120);
	name(&p, "alias", 16);
	rr_end(&p, at);
	a = dnspkt_answer(p.b, p.n, DNS_T_CNAME);
	T_CHECK(a->status == DNS_OK && a->n == 1);
	{
		char out[256];

		T_CHECK(dns_rr_name(a, 0, 0, out, sizeof(out)) > 0 &&
		    strcmp(out, "alias.example.test") == 0);
	}
	dns_answer_free(a);

	/* a chain that ends at a name with no record: NODATA */
	hdr(&p, RESP, 1, 1, 0, 0);
	question(&p, "www.example.test", DNS_T_A);
	at = rr_head(&p, 12, DNS_T_CNAME, 1, 120);
	name(&p, "alias", 16);
	rr_end(&p, at);
	a = dnspkt_answer(p.b, p.n, DNS_T_A);
	T_CHECK(a->status == DNS_NODATA && a->n == 0 && a->ttl == 120);
	dns_answer_free(a);
}

static void
t_case_and_owner(void)
{
	struct pkt p;
	struct dns_answer *a;

	/* the owner written out (not a pointer), in other case */
	hdr(&p, RESP, 1, 1, 0, 0);
	question(&p, "mx.example.test", DNS_T_A);
	name(&p, "MX.Example.TEST", -1);
	u16(&p, DNS_T_A);
	u16(&p, 1);
	u32(&p, 30);
	u16(&p, 4);
	u32(&p, 0x7f000002);
	a = dnspkt_answer(p.b, p.n, DNS_T_A);
	T_CHECK(a->status == DNS_OK && a->n == 1 && a->ttl == 30);
	dns_answer_free(a);
}

static void
t_negative(void)
{
	struct pkt p;
	struct dns_answer *a;
	size_t at;

	/* NXDOMAIN, SOA in authority (TTL 45), OPT in additional (TTL field
	 * = flags, left out) */
	hdr(&p, 0x8183, 1, 0, 1, 1);
	question(&p, "nope.example.test", DNS_T_TXT);
	at = rr_head(&p, 17, DNS_T_SOA, 1, 45);
	name(&p, "ns", 17);
	name(&p, "hostmaster", 17);
	for (int i = 0; i < 5; i++)
		u32(&p, 3600);
	rr_end(&p, at);
	u8(&p, 0);		/* OPT: root owner */
	u16(&p, 41);
	u16(&p, 4096);
	u32(&p, 0);
	u16(&p, 0);
	a = dnspkt_answer(p.b, p.n, DNS_T_TXT);
	T_CHECK(a->status == DNS_NXDOMAIN);
	T_CHECK(a->rcode == 3);
	T_CHECK(a->n == 0 && a->data[0] == NULL);
	T_CHECK(a->ttl == 45);
	dns_answer_free(a);

	/* NODATA, nothing at all: TTL 0 (not cached) */
	hdr(&p, RESP, 1, 0, 0, 0);
	question(&p, "example.test", DNS_T_MX);
	a = dnspkt_answer(p.b, p.n, DNS_T_MX);
	T_CHECK(a->status == DNS_NODATA && a->ttl == 0 && a->rcode == 0);
	dns_answer_free(a);

	/* records of another type only: NODATA */
	hdr(&p, RESP, 1, 1, 0, 0);
	question(&p, "example.test", DNS_T_AAAA);
	rr_a(&p, 12, 77, 1, 2, 3, 4);
	a = dnspkt_answer(p.b, p.n, DNS_T_AAAA);
	T_CHECK(a->status == DNS_NODATA && a->ttl == 77);
	dns_answer_free(a);
}

static void
t_rcodes(void)
{
	static const struct { unsigned rcode; const char *why; } c[] = {
		{ 2, "servfail" }, { 5, "refused" }, { 4, "rcode" }, { 1, "rcode" },
	};
	struct pkt p;
	struct dns_answer *a;

	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		hdr(&p, 0x8180 | c[i].rcode, 1, 0, 0, 0);
		question(&p, "example.test", DNS_T_A);
		a = dnspkt_answer(p.b, p.n, DNS_T_A);
		T_CHECK(a->status == DNS_TEMPERROR);
		T_CHECK(a->rcode == (int)c[i].rcode);
		T_CHECKF(a->why != NULL && strcmp(a->why, c[i].why) == 0, "rcode %u", c[i].rcode);
		dns_answer_free(a);
	}
	/* truncated */
	hdr(&p, RESP | 0x0200, 1, 1, 0, 0);
	question(&p, "example.test", DNS_T_A);
	rr_a(&p, 12, 5, 1, 2, 3, 4);
	a = dnspkt_answer(p.b, p.n, DNS_T_A);
	T_CHECK(a->status == DNS_TEMPERROR && strcmp(a->why, "truncated") == 0);
	dns_answer_free(a);
}

static void
t_names_in_rdata(void)
{
	struct pkt p;
	struct dns_answer *a;
	size_t at;
	char out[256], txt[64];

	/* MX: preference, exchange compressed onto the question */
	hdr(&p, RESP, 1, 2, 0, 0);
	question(&p, "example.test", DNS_T_MX);
	at = rr_head(&p, 12, DNS_T_MX, 1, 100);
	u16(&p, 10);
	name(&p, "mx1", 12);
	rr_end(&p, at);
	at = rr_head(&p, 12, DNS_T_MX, 1, 100);
	u16(&p, 20);
	name(&p, "mx2.other.test", -1);
	rr_end(&p, at);
	a = dnspkt_answer(p.b, p.n, DNS_T_MX);
	T_CHECK(a->status == DNS_OK && a->n == 2);
	T_CHECK(a->len[0] == 2 + 18);	/* 3mx17example4test0 */
	T_CHECK(dns_rr_name(a, 0, 2, out, sizeof(out)) > 0 &&
	    strcmp(out, "mx1.example.test") == 0);
	T_CHECK(dns_rr_name(a, 1, 2, out, sizeof(out)) > 0 &&
	    strcmp(out, "mx2.other.test") == 0);
	T_CHECK((unsigned char)a->data[1][1] == 20);
	dns_answer_free(a);

	/* PTR compressed onto the question; TXT copied as it is */
	hdr(&p, RESP, 1, 1, 0, 0);
	question(&p, "2.0.0.127.in-addr.arpa", DNS_T_PTR);
	at = rr_head(&p, 12, DNS_T_PTR, 1, 100);
	name(&p, "host", 22);	/* 22: "in-addr.arpa" in the question */
	rr_end(&p, at);
	a = dnspkt_answer(p.b, p.n, DNS_T_PTR);
	T_CHECK(a->status == DNS_OK && a->n == 1);
	T_CHECK(dns_rr_name(a, 0, 0, out, sizeof(out)) > 0 &&
	    strcmp(out, "host.in-addr.arpa") == 0);
	dns_answer_free(a);

	hdr(&p, RESP, 1, 1, 0, 0);
	question(&p, "example.test", DNS_T_TXT);
	at = rr_head(&p, 12, DNS_T_TXT, 1, 100);
	u8(&p, 6);
	memcpy(p.b + p.n, "v=spf1", 6);
	p.n += 6;
	u8(&p, 5);
	memcpy(p.b + p.n, " -all", 5);
	p.n += 5;
	rr_end(&p, at);
	a = dnspkt_answer(p.b, p.n, DNS_T_TXT);
	T_CHECK(a->status == DNS_OK && a->n == 1 && a->len[0] == 13);
	T_CHECK(dns_rr_txt(a, 0, txt, sizeof(txt)) >= 0 && strcmp(txt, "v=spf1 -all") == 0);
	dns_answer_free(a);

	/* SOA: two names and 20 bytes */
	hdr(&p, RESP, 1, 1, 0, 0);
	question(&p, "example.test", DNS_T_SOA);
	at = rr_head(&p, 12, DNS_T_SOA, 1, 100);
	name(&p, "ns", 12);
	name(&p, "h", 12);
	for (int i = 0; i < 5; i++)
		u32(&p, (uint32_t)i);
	rr_end(&p, at);
	a = dnspkt_answer(p.b, p.n, DNS_T_SOA);
	T_CHECK(a->status == DNS_OK && a->n == 1);
	T_CHECK(a->len[0] == 17 + 16 + 20);
	T_CHECK(dns_rr_name(a, 0, 0, out, sizeof(out)) > 0 &&
	    strcmp(out, "ns.example.test") == 0);
	dns_answer_free(a);
}

/* bad - the packet must be a temporary error "malformed" */
static void
bad(const struct pkt *p, int qtype, const char *what)
{
	struct dns_answer *a = dnspkt_answer(p->b, p->n, qtype);

	T_CHECKF(a->status == DNS_TEMPERROR && a->why != NULL &&
	    strcmp(a->why, "malformed") == 0, "%s: status %d", what, a->status);
	T_CHECK(a->n == 0);
	dns_answer_free(a);
}

static void
t_malformed(void)
{
	struct pkt p, ok;
	size_t at;

	hdr(&ok, RESP, 1, 1, 0, 0);
	question(&ok, "example.test", DNS_T_A);
	rr_a(&ok, 12, 5, 1, 2, 3, 4);

	p = ok;
	p.n = 11;
	bad(&p, DNS_T_A, "short header");
	p = ok;
	p.n -= 1;
	bad(&p, DNS_T_A, "rdata past the end");
	p = ok;
	p.b[2] &= 0x7f;
	bad(&p, DNS_T_A, "not a response");
	p = ok;
	p.b[5] = 2;
	bad(&p, DNS_T_A, "two questions");
	bad(&ok, DNS_T_AAAA, "another question type");
	p = ok;
	p.b[7] = 2;
	bad(&p, DNS_T_A, "a count past the records");

	/* an owner pointing forward, at itself, and a label type 0x40 */
	p = ok;
	p.b[30] = 0xc0;
	p.b[31] = 40;
	bad(&p, DNS_T_A, "forward pointer");
	p = ok;
	p.b[30] = 0xc0;
	p.b[31] = 30;
	bad(&p, DNS_T_A, "pointer to itself");
	p = ok;
	p.b[12] = 0x47;
	bad(&p, DNS_T_A, "label type 0x40");

	/* a loop through two pointers going backward then forward can't
	 * be built (forward is refused); a name over 255 bytes can */
	hdr(&p, RESP, 1, 0, 0, 0);
	for (int i = 0; i < 5; i++) {
		u8(&p, 63);
		memset(p.b + p.n, 'a', 63);
		p.n += 63;
	}
	u8(&p, 0);
	u16(&p, DNS_T_A);
	u16(&p, 1);
	bad(&p, DNS_T_A, "name over 255");

	/* MX whose name runs past its rdata; CNAME with bytes after its name */
	hdr(&p, RESP, 1, 1, 0, 0);
	question(&p, "example.test", DNS_T_MX);
	at = rr_head(&p, 12, DNS_T_MX, 1, 100);
	u16(&p, 10);
	name(&p, "mx1", -1);
	rr_end(&p, at);
	p.b[at + 1] -= 1;	/* rdlength one short */
	bad(&p, DNS_T_MX, "MX name past rdata");

	hdr(&p, RESP, 1, 1, 0, 0);
	question(&p, "example.test", DNS_T_A);
	at = rr_head(&p, 12, DNS_T_CNAME, 1, 100);
	name(&p, "x", 12);
	u8(&p, 0);
	rr_end(&p, at);
	bad(&p, DNS_T_A, "CNAME with a byte after its name");

	/* a malformed record in the additional section spoils the packet */
	p = ok;
	p.b[11] = 1;
	u8(&p, 0);
	u16(&p, DNS_T_NS);
	u16(&p, 1);
	u32(&p, 1);
	u16(&p, 1);
	u8(&p, 5);	/* a label of 5 in 1 byte of rdata */
	bad(&p, DNS_T_A, "bad NS in additional");
}

static void
t_ttl(void)
{
	struct pkt p;
	struct dns_answer *a;

	hdr(&p, RESP, 1, 1, 0, 0);
	question(&p, "example.test", DNS_T_A);
	rr_a(&p, 12, 0x80000000U, 1, 2, 3, 4);
	a = dnspkt_answer(p.b, p.n, DNS_T_A);
	T_CHECK(a->status == DNS_OK && a->ttl == 0);	/* RFC 2181 8 */
	dns_answer_free(a);
}

int
main(void)
{
	struct dns_answer *a = dnspkt_answer(NULL, 0, DNS_T_A);

	T_RUN(t_a_records);
	T_RUN(t_cname_chain);
	T_RUN(t_case_and_owner);
	T_RUN(t_negative);
	T_RUN(t_rcodes);
	T_RUN(t_names_in_rdata);
	T_RUN(t_malformed);
	T_RUN(t_ttl);
	T_CHECK(a->status == DNS_TEMPERROR);
	dns_answer_free(a);
	return T_DONE("test_dnspkt");
}
