/*
 * test_spf - the SPF guard (filters/spf_guard.c) and the SPF check
 * (filters/spf.c) over a fake resolver
 *
 * Tables: records the guard accepts or refuses (with a piece of the
 * reason), among them the shapes behind CVE-2023-42118 and its
 * relatives; records and their rewrite for libspf2; markers. Then whole
 * checks through spf_check() with spf_set_resolver() answering from a
 * table of records: results, identities, the RFC 7208 limits libspf2
 * lacks, errors, and several threads at once.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "spf.h"
#include "spf_guard.h"
#include "t.h"

/* ------------------------------------------------------------------ guard */

struct guard_case {
	const char *name;
	const char *rec;
	const char *refusal;	/* NULL: accepted; else a piece of the reason */
};

static char long_spec[600], cve_shape[700], many_macros[300], near_limit[300];

static const struct guard_case guard_cases[] = {
	{ "empty record", "v=spf1", NULL },
	{ "every mechanism", "v=spf1 +all -a ~mx ?ptr a:x.test/24//64 mx:m.test//0 ptr:p.test "
	  "ip4:192.0.2.0/24 ip6:2001:db8::/32 exists:%{i}.x.test include:i.test -all", NULL },
	{ "upper case", "V=SpF1 A:X.TEST MX -ALL", NULL },
	{ "trailing and double spaces", "v=spf1  a   -all  ", NULL },
	{ "unknown modifier", "v=spf1 moo.cow-far_out=man:dog/cat -all", NULL },
	{ "modifier with c/r/t", "v=spf1 foo=%{r}%{c}%{t} -all", NULL },
	{ "trailing dot", "v=spf1 include:o.test. redirect=%{d}.x.test.", NULL },
	{ "macro at the end", "v=spf1 a:%{d}", NULL },
	{ "macro escapes", "v=spf1 a:m%%p%_s%-u.example.com", NULL },
	{ "transformers", "v=spf1 exists:%{l2r+-}.u.%{d2}.%{ir._=}.x.test -all", NULL },
	{ "idn top label", "v=spf1 a:foo.example.xn--zckzah", NULL },
	{ "colon and slash in name", "v=spf1 a:foo:bar/baz.example.com", NULL },
	{ "ip4 /0", "v=spf1 ip4:1.1.1.1/0", NULL },

	{ "not spf", "v=spf10 -all", "not an SPF record" },
	{ "non-ASCII", "v=spf1 \x80" "a -all", "non-ASCII" },
	{ "control char", "v=spf1 a:x.test\rptr -all", "control" },
	{ "a with a domain", "v=spf1 a:x.test", NULL },	/* NUL: test_guard_nul_and_bounds */
	{ "unknown mechanism", "v=spf1 moo -all", "unknown mechanism" },
	{ "redirect with colon", "v=spf1 redirect:x.test", "unknown mechanism" },
	{ "all with argument", "v=spf1 -all:x", "no argument" },
	{ "all dot", "v=spf1 -all.", "no argument" },
	{ "empty modifier name", "v=spf1 =all", "without a name" },
	{ "digit modifier name", "v=spf1 1up=foo", "unknown mechanism" },
	{ "two redirects", "v=spf1 redirect=a.test redirect=b.test", "redirect= twice" },
	{ "two exps", "v=spf1 exp=a.test exp=b.test", "exp= twice" },
	{ "empty exp", "v=spf1 exp= -all", "empty domain-spec" },
	{ "empty a", "v=spf1 a: -all", "empty domain-spec" },
	{ "empty include", "v=spf1 include: -all", "empty domain-spec" },
	{ "include cidr", "v=spf1 include:x.test/24", "top label" },
	{ "ptr cidr", "v=spf1 ptr/0", "bad character" },
	{ "exists cidr", "v=spf1 exists:x.test/24", "top label" },
	{ "no dot", "v=spf1 a:foo-bar -all", "top label" },
	{ "numeric top label", "v=spf1 a:1.2.3.4", "top label" },
	{ "hyphen top label", "v=spf1 a:example.-com", "top label" },
	{ "only top label dot", "v=spf1 a:museum.", "top label" },
	{ "port", "v=spf1 mx:example.com:8080", "top label" },
	{ "a/33", "v=spf1 a/33", "prefix length" },
	{ "a//129", "v=spf1 a//129", "prefix length" },
	{ "a/24/64", "v=spf1 a/24/64", "prefix length" },
	{ "ip4 leading zero prefix", "v=spf1 ip4:1.2.3.4/032", "prefix length" },
	{ "ip4 short", "v=spf1 ip4:1.2.3", "bad ip4" },
	{ "ip4 leading zero", "v=spf1 ip4:1.2.3.04", "bad ip4" },
	{ "ip4 port", "v=spf1 ip4:1.2.3.4:8080", "bad ip4" },
	{ "ip4 double slash", "v=spf1 ip4:1.2.3.4//32", "bad ip4" },
	{ "ip4 bare", "v=spf1 ip4", "without a network" },
	{ "ip6 bad", "v=spf1 ip6::CAFE::BABE", "bad ip6" },
	{ "bad escape", "v=spf1 -all foo=%abc", "'%' not followed" },
	{ "paren macro", "v=spf1 -exists:%(ir).sbl.example.com", "'%' not followed" },
	{ "trailing percent", "v=spf1 exists:foo%", "at the end" },
	{ "unknown macro letter", "v=spf1 a:%{a}.example.com", "unknown macro letter" },
	{ "exp-only letter in exp", "v=spf1 -all exp=%{r}.example.com", "outside an explanation" },
	{ "unterminated macro", "v=spf1 a:%{d.x.test", "bad macro delimiter" },
	{ "zero transformer", "v=spf1 exists:%{d0}.x.test", "1..128" },
	{ "huge transformer", "v=spf1 exists:%{d4294967297}.x.test", "1..128" },
	{ "many delimiters", "v=spf1 exists:%{i........}.x.test", "delimiters" },
	{ "comma delimiter", "v=spf1 exists:%{l,}.x.test", "libspf2 cannot" },
	{ "slash delimiter", "v=spf1 exists:%{l/}.x.test", "libspf2 cannot" },
	{ "upper-case R", "v=spf1 exists:%{d1R}.x.test", "libspf2 cannot" },
	{ "too many macros", NULL /* many_macros */, "too many macros" },
	{ "long domain-spec", NULL /* long_spec */, "too long" },
	{ "CVE-2023-42118 shape", NULL /* cve_shape */, "too long" },
	{ "near the 255 literal limit", NULL /* near_limit */, "too long" },
	{ "literal over 200", "v=spf1 a:%{d}.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa."
	  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa."
	  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa."
	  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.test", "string literal too long" },
	{ "literal of 200", "v=spf1 a:%{d}.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa."
	  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa."
	  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.aa.test", NULL },
	{ "%- counts three", "v=spf1 a:%{d}%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-"
	  "%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-%-.t", "string literal too long" },
};

static void
guard_setup(void)
{
	size_t o;

	o = (size_t)snprintf(long_spec, sizeof(long_spec), "v=spf1 include:");
	memset(long_spec + o, 'b', 300);
	snprintf(long_spec + o + 300, sizeof(long_spec) - o - 300, ".test -all");
	/* a literal, a macro, a literal, a macro, a literal: the string-literal
	 * macro of libspf2's compiler starts with less than 4 bytes left */
	o = (size_t)snprintf(cve_shape, sizeof(cve_shape), "v=spf1 exists:");
	memset(cve_shape + o, 'a', 250);
	o += 250;
	o += (size_t)snprintf(cve_shape + o, sizeof(cve_shape) - o, "%%{d}");
	memset(cve_shape + o, 'b', 250);
	o += 250;
	snprintf(cve_shape + o, sizeof(cve_shape) - o, "%%{d}ccc.x.test -all");
	o = (size_t)snprintf(many_macros, sizeof(many_macros), "v=spf1 exists:");
	for (int i = 0; i < 9; i++)
		o += (size_t)snprintf(many_macros + o, sizeof(many_macros) - o, "%%{l}.");
	snprintf(many_macros + o, sizeof(many_macros) - o, "x.test");
	o = (size_t)snprintf(near_limit, sizeof(near_limit), "v=spf1 a:");
	memset(near_limit + o, 'n', 254);
	snprintf(near_limit + o + 254, sizeof(near_limit) - o - 254, ".t");
}

static void
test_guard_table(void)
{
	guard_setup();
	for (size_t i = 0; i < sizeof(guard_cases) / sizeof(guard_cases[0]); i++) {
		const struct guard_case *c = &guard_cases[i];
		const char *rec = c->rec;
		struct spf_rec r;
		char why[128] = "";
		int rc;

		if (rec == NULL)
			rec = strstr(c->name, "CVE") ? cve_shape : strstr(c->name, "macros") ? many_macros :
			    strstr(c->name, "255") ? near_limit : long_spec;
		rc = spf_guard_parse(rec, strlen(rec), &r, why, sizeof(why));
		if (c->refusal == NULL)
			T_CHECKF(rc == 0, "%s: refused: %s", c->name, why);
		else
			T_CHECKF(rc == -1 && strstr(why, c->refusal) != NULL,
			    "%s: rc %d why \"%s\", want \"%s\"", c->name, rc, why, c->refusal);
	}
}

static void
test_guard_nul_and_bounds(void)
{
	static const char nul[] = "v=spf1 a:foo.example.com\0 -all";
	char big[SPF_GUARD_RECORD_MAX + 8], why[128];
	struct spf_rec r;
	size_t o;

	T_CHECK(spf_guard_parse(nul, sizeof(nul) - 1, &r, why, sizeof(why)) == -1);
	T_CHECK(strstr(why, "control") != NULL);
	o = (size_t)snprintf(big, sizeof(big), "v=spf1");
	while (o + 8 < SPF_GUARD_RECORD_MAX)
		o += (size_t)snprintf(big + o, sizeof(big) - o, " ?all");
	T_CHECK(spf_guard_parse(big, o, &r, why, sizeof(why)) == -1);
	T_CHECKF(strstr(why, "too many terms") != NULL, "%s", why);
	memset(big, ' ', sizeof(big));
	memcpy(big, "v=spf1", 6);
	T_CHECK(spf_guard_parse(big, SPF_GUARD_RECORD_MAX, &r, why, sizeof(why)) == 0);
	T_CHECK(spf_guard_parse(big, SPF_GUARD_RECORD_MAX + 1, &r, why, sizeof(why)) == -1);
	T_CHECK(strstr(why, "record too long") != NULL);
	/* is_spf */
	T_CHECK(spf_guard_is_spf("v=spf1", 6));
	T_CHECK(spf_guard_is_spf("V=SPF1 -all", 11));
	T_CHECK(!spf_guard_is_spf("v=spf10", 7));
	T_CHECK(!spf_guard_is_spf("v=spf1mx", 8));
	T_CHECK(!spf_guard_is_spf("v=spf", 5));
}

struct rewrite_case {
	const char *name, *rec, *want;
};

static const struct rewrite_case rewrite_cases[] = {
	{ "mechanisms become marked exists",
	  "v=spf1 a mx/24 -ptr:example.com ~exists:%{i}.x.test a:h.test//64 ?mx:m.test.",
	  "v=spf1 +exists:%{d}.mtttttttttta32x128 +exists:%{d}.mttttttttttm24x128 "
	  "-exists:example.com.mttttttttttp ~exists:%{i}.x.test.mtttttttttte "
	  "+exists:h.test.mtttttttttta32x64 ?exists:m.test.mttttttttttm32x128" },
	{ "/0 splits the space", "v=spf1 ip4:1.1.1.1/0 -ip6:::1.1.1.1/0 ip4:192.0.2.1 ip6:2001:db8::/32",
	  "v=spf1 +ip4:0.0.0.0/1 +ip4:128.0.0.0/1 -ip6:::/1 -ip6:8000::/1 +ip4:192.0.2.1 "
	  "+ip6:2001:db8::/32" },
	{ "exp and unknown modifiers dropped, redirect last",
	  "v=spf1 redirect=r.test exp=e.test foo=bar include:i.test",
	  "v=spf1 +include:i.test redirect=r.test" },
	{ "redirect ignored with all", "v=spf1 redirect=r.test ~all", "v=spf1 ~all" },
};

static void
test_rewrite_table(void)
{
	for (size_t i = 0; i < sizeof(rewrite_cases) / sizeof(rewrite_cases[0]); i++) {
		const struct rewrite_case *c = &rewrite_cases[i];
		struct spf_rec r;
		char why[128], out[SPF_GUARD_REWRITE_MAX];
		int n;

		T_CHECKF(spf_guard_parse(c->rec, strlen(c->rec), &r, why, sizeof(why)) == 0,
		    "%s: %s", c->name, why);
		n = spf_guard_rewrite(&r, "tttttttttt", out, sizeof(out));
		T_CHECKF(n > 0 && strcmp(out, c->want) == 0, "%s:\n  got  %s\n  want %s", c->name,
		    out, c->want);
		/* what libspf2 gets is itself a record the guard accepts */
		T_CHECKF(spf_guard_parse_rewrite(out, (size_t)n, &r, why, sizeof(why)) == 0, "%s: %s",
		    c->name, why);
		T_CHECK(spf_guard_rewrite(&r, "tttttttttt", out, 10) == -1);
	}
}

static void
test_marker(void)
{
	struct spf_marker m;

	T_CHECK(spf_guard_marker("x.example.com.mtttttttttta24x64", "tttttttttt", &m) == 1);
	T_CHECK(m.kind == 'a' && m.c4 == 24 && m.c6 == 64 && m.domlen == 13);
	T_CHECK(spf_guard_marker("mx.test.mttttttttttm0x0", "tttttttttt", &m) == 1);
	T_CHECK(m.kind == 'm' && m.c4 == 0 && m.c6 == 0);
	T_CHECK(spf_guard_marker("p.test.mttttttttttp", "tttttttttt", &m) == 1 && m.kind == 'p');
	T_CHECK(spf_guard_marker("e.test.mtttttttttte", "tttttttttt", &m) == 1 && m.kind == 'e');
	/* another token, a forged or damaged marker: a plain name */
	T_CHECK(spf_guard_marker("e.test.mttttttttttx", "tttttttttt", &m) == 0);
	T_CHECK(spf_guard_marker("e.test.muuuuuuuuuue", "tttttttttt", &m) == 0);
	T_CHECK(spf_guard_marker("x.test.mtttttttttta33x128", "tttttttttt", &m) == 0);
	T_CHECK(spf_guard_marker("x.test.mtttttttttta32x129", "tttttttttt", &m) == 0);
	T_CHECK(spf_guard_marker("x.test.mtttttttttta32", "tttttttttt", &m) == 0);
	T_CHECK(spf_guard_marker("x.test.mttttttttttpx", "tttttttttt", &m) == 0);
	T_CHECK(spf_guard_marker("mtttttttttte", "tttttttttt", &m) == 0);
	/* names */
	T_CHECK(spf_guard_name_ok("a.b", 3));
	T_CHECK(spf_guard_name_ok("a.b.", 4));
	T_CHECK(!spf_guard_name_ok("a..b", 4));
	T_CHECK(spf_guard_name_ok("a b.c", 5));		/* macros expand to spaces (RFC 7208 7.3) */
	T_CHECK(!spf_guard_name_ok("a\tb.c", 5));
	T_CHECK(!spf_guard_name_ok("a\\b.c", 5));
	T_CHECK(!spf_guard_name_ok(".", 1));
}

/* --------------------------------------------------------- fake resolver */

struct rr {
	const char *name;
	int type;
	const char *value;	/* "SERVFAIL", "TIMEOUT": errors for the type */
};

static const struct rr *zone;
static atomic_int nqueries;

struct fake_answer {
	struct dns_answer a;
	char *data[40];
	int len[40];
	char buf[40][600];
};

static int
fake_query(void *ctx, const char *name, int type, unsigned ms, struct dns_answer **out)
{
	struct fake_answer *f = calloc(1, sizeof(*f));
	bool exists = false;
	size_t nl = strlen(name);
	char lname[300];

	(void)ctx;
	(void)ms;
	atomic_fetch_add(&nqueries, 1);
	snprintf(lname, sizeof(lname), "%.*s", (int)(nl && name[nl - 1] == '.' ? nl - 1 : nl), name);
	f->a.data = f->data;
	f->a.len = f->len;
	f->a.rrtype = type;
	for (const struct rr *r = zone; r->name != NULL; r++) {
		char *b;
		int o = 0;

		if (strcasecmp(r->name, lname) != 0) {
			size_t rl = strlen(r->name), ql = strlen(lname);

			if (rl > ql && strcasecmp(r->name + rl - ql, lname) == 0 && r->name[rl - ql - 1] == '.')
				exists = true;	/* an empty non-terminal */
			continue;
		}
		exists = true;
		if (r->type != type || f->a.n >= 40)
			continue;
		if (strcmp(r->value, "SERVFAIL") == 0 || strcmp(r->value, "TIMEOUT") == 0) {
			f->a.status = DNS_TEMPERROR;
			f->a.why = r->value[0] == 'S' ? "servfail" : "timeout";
			f->a.n = 0;
			*out = &f->a;
			return 0;
		}
		b = f->buf[f->a.n];
		if (type == DNS_T_A)
			o = inet_pton(AF_INET, r->value, b) == 1 ? 4 : 0;
		else if (type == DNS_T_AAAA)
			o = inet_pton(AF_INET6, r->value, b) == 1 ? 16 : 0;
		else if (type == DNS_T_TXT) {
			size_t vl = strlen(r->value), p = 0;

			do {
				size_t sl = vl - p > 255 ? 255 : vl - p;

				b[o++] = (char)sl;
				memcpy(b + o, r->value + p, sl);
				o += (int)sl;
				p += sl;
			} while (p < vl);
		} else if (type == DNS_T_MX) {
			b[0] = 0;
			b[1] = 10;
			o = 2 + t_wire_name(r->value, b + 2);
		} else if (type == DNS_T_PTR)
			o = t_wire_name(r->value, b);
		f->data[f->a.n] = b;
		f->len[f->a.n] = o;
		f->a.n++;
	}
	f->a.status = f->a.n > 0 ? DNS_OK : exists ? DNS_NODATA : DNS_NXDOMAIN;
	*out = &f->a;
	return 0;
}

static void
fake_free(void *ctx, struct dns_answer *a)
{
	(void)ctx;
	free(a);
}

static const struct spf_resolver fake = { fake_query, fake_free, NULL };

/* check - one check from 192.0.2.10 (or ip) against z */
static enum spf_res
check(const struct rr *z, const char *ip, const char *helo, const char *sender,
    enum spf_identity id, struct spf_outcome *o)
{
	struct spf_request rq;
	struct spf_outcome tmp;

	if (o == NULL)
		o = &tmp;
	zone = z;
	memset(&rq, 0, sizeof(rq));
	if (inet_pton(AF_INET, ip, rq.addr) == 1)
		rq.family = AF_INET;
	else if (inet_pton(AF_INET6, ip, rq.addr) == 1)
		rq.family = AF_INET6;
	rq.helo = helo;
	rq.sender = sender;
	rq.timeout_ms = 2000;
	spf_check(&rq, id, o);
	return o->res;
}

#define C4 "192.0.2.10"

static const struct rr z_basic[] = {
	{ "pass.test", DNS_T_TXT, "v=spf1 ip4:192.0.2.0/24 -all" },
	{ "pass.test", DNS_T_TXT, "google-site-verification=abc" },
	{ "fail.test", DNS_T_TXT, "v=spf1 -all" },
	{ "soft.test", DNS_T_TXT, "v=spf1 ~all" },
	{ "neutral.test", DNS_T_TXT, "v=spf1 ip4:198.51.100.1" },
	{ "nospf.test", DNS_T_TXT, "hello" },
	{ "two.test", DNS_T_TXT, "v=spf1 -all" },
	{ "two.test", DNS_T_TXT, "v=spf1 +all" },
	{ "sf.test", DNS_T_TXT, "SERVFAIL" },
	{ "slow.test", DNS_T_TXT, "TIMEOUT" },
	{ "bad.test", DNS_T_TXT, "v=spf1 a:%{d99999}.x.test -all" },
	{ "helo.test", DNS_T_TXT, "v=spf1 a -all" },
	{ "helo.test", DNS_T_A, C4 },
	{ "lo.test", DNS_T_TXT, "v=spf1 -all" },
	{ "zero.test", DNS_T_TXT, "v=spf1 a/0 -all" },
	{ "zero.test", DNS_T_A, "203.0.113.1" },
	{ "zero6.test", DNS_T_TXT, "v=spf1 a//0 -all" },
	{ "zero6.test", DNS_T_A, "203.0.113.1" },
	{ "ip0.test", DNS_T_TXT, "v=spf1 -ip4:9.9.9.9/0 +all" },
	{ "mac.test", DNS_T_TXT, "v=spf1 exists:%{l}.%{i}.%{d} -all" },
	{ "alice.192.0.2.10.mac.test", DNS_T_A, "127.0.0.2" },
	{ "xn--bcher-kva.test", DNS_T_TXT, "v=spf1 a:%{d} -all" },
	{ "xn--bcher-kva.test", DNS_T_A, C4 },
	{ NULL, 0, NULL }
};

static void
test_check_results(void)
{
	struct spf_outcome o;

	T_CHECK(check(z_basic, C4, "h.test", "a@pass.test", SPF_ID_MAILFROM, &o) == SPF_RES_PASS);
	T_CHECK(strcmp(o.domain, "pass.test") == 0);
	T_CHECK(strcmp(o.reason, "mechanism matched") == 0);
	T_CHECK(check(z_basic, "198.51.100.7", "h", "a@PASS.test", SPF_ID_MAILFROM, &o) == SPF_RES_FAIL);
	T_CHECK(strcmp(o.domain, "pass.test") == 0);
	T_CHECK(check(z_basic, C4, "h", "a@fail.test", SPF_ID_MAILFROM, NULL) == SPF_RES_FAIL);
	T_CHECK(check(z_basic, C4, "h", "a@soft.test", SPF_ID_MAILFROM, NULL) == SPF_RES_SOFTFAIL);
	T_CHECK(check(z_basic, C4, "h", "a@neutral.test", SPF_ID_MAILFROM, &o) == SPF_RES_NEUTRAL);
	T_CHECK(strcmp(o.reason, "no mechanism matched") == 0);
	T_CHECK(check(z_basic, C4, "h", "a@nospf.test", SPF_ID_MAILFROM, &o) == SPF_RES_NONE);
	T_CHECK(check(z_basic, C4, "h", "a@nxdomain.test", SPF_ID_MAILFROM, NULL) == SPF_RES_NONE);
	T_CHECK(check(z_basic, C4, "h", "a@two.test", SPF_ID_MAILFROM, &o) == SPF_RES_PERMERROR);
	T_CHECK(strstr(o.reason, "more than one") != NULL);
	T_CHECK(check(z_basic, C4, "h", "a@sf.test", SPF_ID_MAILFROM, &o) == SPF_RES_TEMPERROR);
	T_CHECK(strstr(o.reason, "servfail") != NULL);
	T_CHECK(check(z_basic, C4, "h", "a@slow.test", SPF_ID_MAILFROM, &o) == SPF_RES_TEMPERROR);
	T_CHECK(strstr(o.reason, "timeout") != NULL);
	/* a refused record is an error, never "none" */
	T_CHECK(check(z_basic, C4, "h", "a@bad.test", SPF_ID_MAILFROM, &o) == SPF_RES_PERMERROR);
	T_CHECKF(strstr(o.reason, "refused") != NULL, "%s", o.reason);
	/* macros are expanded by libspf2 */
	T_CHECK(check(z_basic, C4, "h", "alice@mac.test", SPF_ID_MAILFROM, NULL) == SPF_RES_PASS);
	T_CHECK(check(z_basic, C4, "h", "bob@mac.test", SPF_ID_MAILFROM, NULL) == SPF_RES_FAIL);
	T_CHECK(strcmp(spf_res_name(SPF_RES_SOFTFAIL), "softfail") == 0);
	T_CHECK(spf_res_parse("permerror") == SPF_RES_PERMERROR && spf_res_parse("x") == -1);
}

static void
test_check_identities(void)
{
	struct spf_outcome o;
	int q;

	/* HELO identity and the null sender: postmaster@HELO */
	T_CHECK(check(z_basic, C4, "helo.test", "a@fail.test", SPF_ID_HELO, &o) == SPF_RES_PASS);
	T_CHECK(strcmp(o.domain, "helo.test") == 0);
	T_CHECK(check(z_basic, C4, "helo.test", "", SPF_ID_MAILFROM, &o) == SPF_RES_PASS);
	T_CHECK(strcmp(o.domain, "helo.test") == 0);
	T_CHECK(check(z_basic, C4, "helo.test", "@fail.test", SPF_ID_MAILFROM, &o) == SPF_RES_FAIL);
	/* no multi-label domain: none, without asking anybody */
	q = atomic_load(&nqueries);
	T_CHECK(check(z_basic, C4, "nodots", "", SPF_ID_MAILFROM, &o) == SPF_RES_NONE);
	T_CHECK(check(z_basic, C4, "[192.0.2.10]", "", SPF_ID_HELO, &o) == SPF_RES_NONE);
	T_CHECK(check(z_basic, C4, "h", "a@x..test", SPF_ID_MAILFROM, &o) == SPF_RES_NONE);
	T_CHECK(check(z_basic, C4, "h", "a@[192.0.2.10]", SPF_ID_MAILFROM, &o) == SPF_RES_NONE);
	T_CHECK(check(z_basic, C4, NULL, NULL, SPF_ID_MAILFROM, &o) == SPF_RES_NONE);
	T_CHECK(atomic_load(&nqueries) == q);
	/* IPv4-mapped clients are IPv4; loopback gets no free pass */
	T_CHECK(check(z_basic, "::ffff:192.0.2.10", "h", "a@pass.test", SPF_ID_MAILFROM, NULL) ==
	    SPF_RES_PASS);
	T_CHECK(check(z_basic, "127.0.0.1", "h", "a@lo.test", SPF_ID_MAILFROM, NULL) == SPF_RES_FAIL);
	T_CHECK(check(z_basic, "::1", "h", "a@lo.test", SPF_ID_MAILFROM, NULL) == SPF_RES_FAIL);
	/* RFC 8616: U-labels are checked in A-labels, %{d} included; an
	 * invalid IDN is a permerror and nobody is asked */
	T_CHECK(check(z_basic, C4, "h", "j\xc3\xb6" "e@B\xc3\xbc" "cher.test", SPF_ID_MAILFROM, &o) ==
	    SPF_RES_PASS);
	T_CHECKF(strcmp(o.domain, "xn--bcher-kva.test") == 0, "%s", o.domain);
	T_CHECK(check(z_basic, C4, "b\xc3\xbc" "cher.test", "", SPF_ID_HELO, &o) == SPF_RES_PASS);
	T_CHECK(strcmp(o.domain, "xn--bcher-kva.test") == 0);
	q = atomic_load(&nqueries);
	T_CHECK(check(z_basic, C4, "h", "a@xn--zz.test", SPF_ID_MAILFROM, &o) == SPF_RES_PERMERROR);
	T_CHECKF(strstr(o.reason, "not a valid IDN") != NULL, "%s", o.reason);
	T_CHECK(check(z_basic, C4, "h", "a@b\xff.test", SPF_ID_MAILFROM, &o) == SPF_RES_PERMERROR);
	T_CHECK(strstr(o.domain, "\\xff") != NULL);
	T_CHECK(atomic_load(&nqueries) == q);
}

static char exp_long[SPF_GUARD_EXP_MAX + 8];

static const struct rr z_exp[] = {
	{ "e1.test", DNS_T_TXT, "v=spf1 -all exp=why.%{d}" },
	{ "why.e1.test", DNS_T_TXT, "%{i} is not one of %{d}'s designated mail servers." },
	{ "e2.test", DNS_T_TXT, "v=spf1 -all exp=why.e2.test" },
	{ "why.e2.test", DNS_T_TXT, "bad\r\n250 2.0.0 Ok" },
	{ "e3.test", DNS_T_TXT, "v=spf1 -all exp=why.e3.test" },
	{ "why.e3.test", DNS_T_TXT, exp_long },
	{ "e4.test", DNS_T_TXT, "v=spf1 -all exp=why.e4.test" },
	{ "why.e4.test", DNS_T_TXT, "caf\xc3\xa9 says no" },
	{ "e5.test", DNS_T_TXT, "v=spf1 -all exp=why.e5.test" },
	{ "why.e5.test", DNS_T_TXT, "one" },
	{ "why.e5.test", DNS_T_TXT, "two" },
	{ "e6.test", DNS_T_TXT, "v=spf1 ~all exp=why.e1.test" },
	{ "e7.test", DNS_T_TXT, "v=spf1 -all exp=why.e7.test" },
	{ "why.e7.test", DNS_T_TXT, "%{l} may not send from %{d}" },
	{ "e8.test", DNS_T_TXT, "v=spf1 -all exp=why.e8.test" },
	{ "why.e8.test", DNS_T_TXT, "SERVFAIL" },
	{ "e9.test", DNS_T_TXT, "v=spf1 -all exp=why.e9.test" },
	{ "why.e9.test", DNS_T_TXT, "%{z} unknown macro" },
	{ "e10.test", DNS_T_TXT, "v=spf1 include:e1.test -all" },
	{ "e11.test", DNS_T_TXT, "v=spf1 redirect=e1.test" },
	{ "e12.test", DNS_T_TXT, "v=spf1 ?all exp=why.e1.test" },
	{ "e13.test", DNS_T_TXT, "v=spf1 -all exp=why.e13.test" },
	{ "why.e13.test", DNS_T_TXT, "%{i} is not one of %{d}'s designated mail servers." },
	{ "e14.test", DNS_T_TXT, "v=spf1 include:e13.test -all" },
	{ NULL, 0, NULL }
};

/* check_exp - a MAIL FROM check with want_exp as given */
static enum spf_res
check_exp(const char *sender, bool want, struct spf_outcome *o)
{
	struct spf_request rq;

	zone = z_exp;
	memset(&rq, 0, sizeof(rq));
	inet_pton(AF_INET, C4, rq.addr);
	rq.family = AF_INET;
	rq.helo = "h.test";
	rq.sender = sender;
	rq.timeout_ms = 2000;
	rq.want_exp = want;
	spf_check(&rq, SPF_ID_MAILFROM, o);
	return o->res;
}

/* RFC 7208 6.2 and 8.4: exp= fetched on fail only, when wanted; a
 * hostile or broken explanation gives none and never changes the result */
static void
test_check_explanation(void)
{
	struct spf_outcome o;
	int q;

	memset(exp_long, 'x', SPF_GUARD_EXP_MAX + 1);
	T_CHECK(check_exp("a@e1.test", true, &o) == SPF_RES_FAIL);
	T_CHECKF(strcmp(o.explanation, C4 " is not one of e1.test's designated mail servers.") == 0,
	    "[%s]", o.explanation);
	/* not wanted: not fetched (one query: the record) */
	q = atomic_load(&nqueries);
	T_CHECK(check_exp("a@e1.test", false, &o) == SPF_RES_FAIL && o.explanation[0] == '\0');
	T_CHECK(atomic_load(&nqueries) == q + 1);
	/* CR LF, over-long, 8-bit, two records, DNS error, a bad macro */
	static const char *const none[] = { "a@e2.test", "a@e3.test", "a@e4.test", "a@e5.test",
	    "a@e8.test", "a@e9.test" };
	for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
		T_CHECKF(check_exp(none[i], true, &o) == SPF_RES_FAIL, "%s", none[i]);
		T_CHECKF(o.explanation[0] == '\0', "%s: [%s]", none[i], o.explanation);
	}
	/* softfail: nothing fetched */
	q = atomic_load(&nqueries);
	T_CHECK(check_exp("a@e6.test", true, &o) == SPF_RES_SOFTFAIL && o.explanation[0] == '\0');
	T_CHECK(atomic_load(&nqueries) == q + 1);
	/* an 8-bit local part expands to '?', never to raw bytes */
	T_CHECK(check_exp("j\xc3\xb6" "e@e7.test", true, &o) == SPF_RES_FAIL);
	T_CHECKF(strcmp(o.explanation, "j??e may not send from e7.test") == 0, "[%s]",
	    o.explanation);
	for (const char *p = o.explanation; *p; p++)
		T_CHECK(*p >= 0x20 && *p < 0x7f);
	/* an included record's exp= is never fetched (its fail is only "no
	 * match"); a redirect= target's is, with %{d} its domain */
	q = atomic_load(&nqueries);
	T_CHECK(check_exp("a@e14.test", true, &o) == SPF_RES_FAIL && o.explanation[0] == '\0');
	T_CHECKF(atomic_load(&nqueries) == q + 2, "%d queries", atomic_load(&nqueries) - q);
	T_CHECK(check_exp("a@e10.test", true, &o) == SPF_RES_FAIL && o.explanation[0] == '\0');
	T_CHECK(check_exp("a@e11.test", true, &o) == SPF_RES_FAIL);
	T_CHECKF(strcmp(o.explanation, C4 " is not one of e1.test's designated mail servers.") == 0,
	    "[%s]", o.explanation);
	/* neutral: none, and not fetched */
	T_CHECK(check_exp("a@e12.test", true, &o) == SPF_RES_NEUTRAL && o.explanation[0] == '\0');
}

static void
test_check_zero_prefix(void)
{
	T_CHECK(check(z_basic, C4, "h", "a@zero.test", SPF_ID_MAILFROM, NULL) == SPF_RES_PASS);
	T_CHECK(check(z_basic, "2001:db8::1", "h", "a@zero.test", SPF_ID_MAILFROM, NULL) == SPF_RES_FAIL);
	T_CHECK(check(z_basic, C4, "h", "a@zero6.test", SPF_ID_MAILFROM, NULL) == SPF_RES_FAIL);
	T_CHECK(check(z_basic, C4, "h", "a@ip0.test", SPF_ID_MAILFROM, NULL) == SPF_RES_FAIL);
	T_CHECK(check(z_basic, "2001:db8::1", "h", "a@ip0.test", SPF_ID_MAILFROM, NULL) == SPF_RES_PASS);
}

static const struct rr z_limits[] = {
	{ "ten.test", DNS_T_TXT, "v=spf1 a a a a a include:inc.test -all" },
	{ "eleven.test", DNS_T_TXT, "v=spf1 a a a a a a include:inc.test -all" },
	{ "inc.test", DNS_T_TXT, "v=spf1 a a a a ip4:192.0.2.10" },
	{ "ten.test", DNS_T_A, "203.0.113.1" },
	{ "eleven.test", DNS_T_A, "203.0.113.1" },
	{ "inc.test", DNS_T_A, "203.0.113.1" },
	{ "void2.test", DNS_T_TXT, "v=spf1 a:n1.void2.test exists:n2.void2.test +all" },
	{ "void3.test", DNS_T_TXT, "v=spf1 a:n1.void3.test mx:n2.void3.test exists:n3.void3.test +all" },
	{ "mx10.test", DNS_T_TXT, "v=spf1 mx -all" },
	{ "mx11.test", DNS_T_TXT, "v=spf1 mx -all" },
	{ "mx10.test", DNS_T_MX, "m1.test" }, { "mx10.test", DNS_T_MX, "m2.test" },
	{ "mx10.test", DNS_T_MX, "m3.test" }, { "mx10.test", DNS_T_MX, "m4.test" },
	{ "mx10.test", DNS_T_MX, "m5.test" }, { "mx10.test", DNS_T_MX, "m6.test" },
	{ "mx10.test", DNS_T_MX, "m7.test" }, { "mx10.test", DNS_T_MX, "m8.test" },
	{ "mx10.test", DNS_T_MX, "m9.test" }, { "mx10.test", DNS_T_MX, "m10.test" },
	{ "mx11.test", DNS_T_MX, "m1.test" }, { "mx11.test", DNS_T_MX, "m2.test" },
	{ "mx11.test", DNS_T_MX, "m3.test" }, { "mx11.test", DNS_T_MX, "m4.test" },
	{ "mx11.test", DNS_T_MX, "m5.test" }, { "mx11.test", DNS_T_MX, "m6.test" },
	{ "mx11.test", DNS_T_MX, "m7.test" }, { "mx11.test", DNS_T_MX, "m8.test" },
	{ "mx11.test", DNS_T_MX, "m9.test" }, { "mx11.test", DNS_T_MX, "m10.test" },
	{ "mx11.test", DNS_T_MX, "m10.test" },
	{ "m10.test", DNS_T_A, C4 },
	{ "ptr.test", DNS_T_TXT, "v=spf1 ptr -all" },
	{ "10.2.0.192.in-addr.arpa", DNS_T_PTR, "x.other.test" },
	{ "10.2.0.192.in-addr.arpa", DNS_T_PTR, "bad.ptr.test" },
	{ "10.2.0.192.in-addr.arpa", DNS_T_PTR, "mail.ptr.test" },
	{ "bad.ptr.test", DNS_T_A, "SERVFAIL" },
	{ "mail.ptr.test", DNS_T_A, C4 },
	{ "incnone.test", DNS_T_TXT, "v=spf1 include:nospf.test +all" },
	{ "nospf.test", DNS_T_A, "203.0.113.1" },
	{ "inctemp.test", DNS_T_TXT, "v=spf1 include:sf.test +all" },
	{ "sf.test", DNS_T_TXT, "SERVFAIL" },
	{ "incbad.test", DNS_T_TXT, "v=spf1 include:bad.test +all" },
	{ "bad.test", DNS_T_TXT, "v=spf1 exists:%{i}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.x.test" },
	{ "redir.test", DNS_T_TXT, "v=spf1 redirect=pass.test" },
	{ "pass.test", DNS_T_TXT, "v=spf1 ip4:192.0.2.10 -all" },
	{ "atemp.test", DNS_T_TXT, "v=spf1 a:x.atemp.test +all" },
	{ "x.atemp.test", DNS_T_A, "TIMEOUT" },
	{ NULL, 0, NULL }
};

static void
test_check_limits(void)
{
	struct spf_outcome o;

	T_CHECK(check(z_limits, C4, "h", "a@ten.test", SPF_ID_MAILFROM, &o) == SPF_RES_PASS);
	T_CHECKF(o.dns_terms == 10, "%u", o.dns_terms);
	T_CHECK(check(z_limits, C4, "h", "a@eleven.test", SPF_ID_MAILFROM, &o) == SPF_RES_PERMERROR);
	T_CHECK(o.dns_terms == 11 && strstr(o.reason, "DNS-querying terms") != NULL);
	T_CHECK(check(z_limits, C4, "h", "a@void2.test", SPF_ID_MAILFROM, &o) == SPF_RES_PASS);
	T_CHECK(o.void_lookups == 2);
	T_CHECK(check(z_limits, C4, "h", "a@void3.test", SPF_ID_MAILFROM, &o) == SPF_RES_PERMERROR);
	T_CHECKF(o.void_lookups == 3 && strstr(o.reason, "void lookups") != NULL, "%u %s", o.void_lookups,
	    o.reason);
	T_CHECK(check(z_limits, C4, "h", "a@mx10.test", SPF_ID_MAILFROM, &o) == SPF_RES_PASS);
	T_CHECK(check(z_limits, C4, "h", "a@mx11.test", SPF_ID_MAILFROM, &o) == SPF_RES_PERMERROR);
	T_CHECK(strstr(o.reason, "MX") != NULL);
	/* ptr: a DNS error on one name is no match for that name only */
	T_CHECK(check(z_limits, C4, "h", "a@ptr.test", SPF_ID_MAILFROM, &o) == SPF_RES_PASS);
	T_CHECK(check(z_limits, C4, "h", "a@incnone.test", SPF_ID_MAILFROM, &o) == SPF_RES_PERMERROR);
	T_CHECK(strstr(o.reason, "no SPF record") != NULL);
	T_CHECK(check(z_limits, C4, "h", "a@inctemp.test", SPF_ID_MAILFROM, &o) == SPF_RES_TEMPERROR);
	T_CHECK(check(z_limits, C4, "h", "a@incbad.test", SPF_ID_MAILFROM, &o) == SPF_RES_PERMERROR);
	T_CHECKF(strstr(o.reason, "bad.test refused") != NULL, "%s", o.reason);
	T_CHECK(check(z_limits, C4, "h", "a@redir.test", SPF_ID_MAILFROM, &o) == SPF_RES_PASS);
	T_CHECK(check(z_limits, "192.0.2.11", "h", "a@redir.test", SPF_ID_MAILFROM, &o) == SPF_RES_FAIL);
	T_CHECK(check(z_limits, C4, "h", "a@atemp.test", SPF_ID_MAILFROM, &o) == SPF_RES_TEMPERROR);
}

/* several pool threads at once: each gets its own, right, answer */
struct thr {
	const char *ip, *sender;
	enum spf_res want;
	int wrong;
};

static void *
thr_run(void *arg)
{
	struct thr *t = arg;

	for (int i = 0; i < 40; i++) {
		struct spf_request rq;
		struct spf_outcome o;

		memset(&rq, 0, sizeof(rq));
		rq.family = AF_INET;
		inet_pton(AF_INET, t->ip, rq.addr);
		rq.helo = "h.test";
		rq.sender = t->sender;
		rq.timeout_ms = 2000;
		spf_check(&rq, SPF_ID_MAILFROM, &o);
		if (o.res != t->want)
			t->wrong++;
	}
	return NULL;
}

static void
test_threads(void)
{
	struct thr t[4] = {
		{ C4, "a@ten.test", SPF_RES_PASS, 0 },
		{ C4, "a@eleven.test", SPF_RES_PERMERROR, 0 },
		{ "192.0.2.11", "a@redir.test", SPF_RES_FAIL, 0 },
		{ C4, "a@void3.test", SPF_RES_PERMERROR, 0 },
	};
	pthread_t th[4];

	zone = z_limits;
	for (int i = 0; i < 4; i++)
		pthread_create(&th[i], NULL, thr_run, &t[i]);
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		T_CHECKF(t[i].wrong == 0, "thread %d: %d wrong", i, t[i].wrong);
	}
}

int
main(void)
{
	T_RUN(test_guard_table);
	T_RUN(test_guard_nul_and_bounds);
	T_RUN(test_rewrite_table);
	T_RUN(test_marker);
	spf_set_resolver(&fake);
	T_RUN(test_check_results);
	T_RUN(test_check_identities);
	T_RUN(test_check_zero_prefix);
	T_RUN(test_check_explanation);
	T_RUN(test_check_limits);
	T_RUN(test_threads);
	spf_set_resolver(NULL);
	return T_DONE("test_spf");
}
