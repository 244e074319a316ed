/*
 * test_lists - the named-list matcher (policy/lists.c)
 *
 * Tables: match cases (entries, one query, expected answer) for each
 * kind; add cases (one item, accepted or not, a piece of the message);
 * then sockaddr matching, counts, list files, and a 100k-entry load
 * with a bounded lookup loop.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lists.h"
#include "t.h"

#define NENT 6

struct match_case {
	const char *name;
	enum list_kind kind;
	const char *entries[NENT];	/* NULL-terminated */
	const char *query;		/* LIST_ADDRESS: split at the last '@' */
	bool want;
};

static const struct match_case match_cases[] = {
	/* networks */
	{ "v4 inside /24", LIST_NET, { "192.0.2.0/24" }, "192.0.2.77", true },
	{ "v4 first of /24", LIST_NET, { "192.0.2.0/24" }, "192.0.2.0", true },
	{ "v4 last of /24", LIST_NET, { "192.0.2.0/24" }, "192.0.2.255", true },
	{ "v4 outside /24", LIST_NET, { "192.0.2.0/24" }, "192.0.3.0", false },
	{ "v4 /0 matches all v4", LIST_NET, { "0.0.0.0/0" }, "203.0.113.9", true },
	{ "v4 /0 not v6", LIST_NET, { "0.0.0.0/0" }, "2001:db8::1", false },
	{ "v4 /32 exact", LIST_NET, { "198.51.100.7/32" }, "198.51.100.7", true },
	{ "v4 /32 neighbour", LIST_NET, { "198.51.100.7/32" }, "198.51.100.6", false },
	{ "v4 bare = /32", LIST_NET, { "198.51.100.7" }, "198.51.100.7", true },
	{ "v4 bare neighbour", LIST_NET, { "198.51.100.7" }, "198.51.100.8", false },
	{ "v4 odd prefix /13 in", LIST_NET, { "10.8.0.0/13" }, "10.15.255.255", true },
	{ "v4 odd prefix /13 out", LIST_NET, { "10.8.0.0/13" }, "10.16.0.0", false },
	{ "v6 /32", LIST_NET, { "2001:db8::/32" }, "2001:db8:ffff::1", true },
	{ "v6 /32 out", LIST_NET, { "2001:db8::/32" }, "2001:db9::1", false },
	{ "v6 /0", LIST_NET, { "::/0" }, "fe80::1", true },
	{ "v6 /0 not v4", LIST_NET, { "::/0" }, "192.0.2.1", false },
	{ "v6 /0 not mapped v4", LIST_NET, { "::/0" }, "::ffff:192.0.2.1", false },
	{ "v6 /128", LIST_NET, { "2001:db8::1/128" }, "2001:db8::1", true },
	{ "v6 /128 neighbour", LIST_NET, { "2001:db8::1/128" }, "2001:db8::2", false },
	{ "v6 query upper case", LIST_NET, { "2001:db8::/32" }, "2001:DB8::A", true },
	{ "mapped query as v4", LIST_NET, { "192.0.2.0/24" }, "::ffff:192.0.2.9", true },
	{ "mapped entry as v4", LIST_NET, { "::ffff:192.0.2.0/120" }, "192.0.2.9", true },
	{ "mapped entry out", LIST_NET, { "::ffff:192.0.2.0/120" }, "192.0.3.9", false },
	{ "overlap: inner", LIST_NET, { "10.0.0.0/8", "10.1.0.0/16" }, "10.1.2.3", true },
	{ "overlap: outer only", LIST_NET, { "10.1.0.0/16", "10.0.0.0/8" }, "10.200.2.3", true },
	{ "overlap: neither", LIST_NET, { "10.1.0.0/16", "10.0.0.0/8" }, "11.0.0.1", false },
	{ "several nets", LIST_NET, { "192.0.2.0/24", "2001:db8::/48", "203.0.113.5" },
	  "2001:db8:1::5", false },
	{ "bad query text", LIST_NET, { "0.0.0.0/0" }, "192.0.2.1/32", false },
	{ "empty net list", LIST_NET, { NULL }, "192.0.2.1", false },
	/* domains */
	{ "domain itself", LIST_DOMAIN, { "example.org" }, "example.org", true },
	{ "domain sub", LIST_DOMAIN, { "example.org" }, "mx.example.org", true },
	{ "domain deep sub", LIST_DOMAIN, { "example.org" }, "a.b.c.example.org", true },
	{ "domain suffix trick", LIST_DOMAIN, { "example.org" }, "example.org.evil.test", false },
	{ "domain label trick", LIST_DOMAIN, { "example.org" }, "badexample.org", false },
	{ "domain parent", LIST_DOMAIN, { "example.org" }, "org", false },
	{ "domain case", LIST_DOMAIN, { "Example.ORG" }, "MX.example.Org", true },
	{ "domain trailing dot query", LIST_DOMAIN, { "example.org" }, "example.org.", true },
	{ "domain trailing dot entry", LIST_DOMAIN, { "example.org." }, "www.example.org", true },
	{ "domain two dots query", LIST_DOMAIN, { "example.org" }, "example.org..", false },
	{ "subs-only: not itself", LIST_DOMAIN, { ".example.org" }, "example.org", false },
	{ "subs-only: sub", LIST_DOMAIN, { ".example.org" }, "a.example.org", true },
	{ "exact: itself", LIST_DOMAIN, { "=example.org" }, "EXAMPLE.org.", true },
	{ "exact: not sub", LIST_DOMAIN, { "=example.org" }, "a.example.org", false },
	{ "exact + subs-only = both", LIST_DOMAIN, { "=example.org", ".example.org" },
	  "example.org", true },
	{ "exact + subs-only sub", LIST_DOMAIN, { "=example.org", ".example.org" },
	  "x.example.org", true },
	{ "tld entry", LIST_DOMAIN, { ".test" }, "evil.test", true },
	{ "empty query", LIST_DOMAIN, { "example.org" }, "", false },
	{ "dot query", LIST_DOMAIN, { "example.org" }, ".", false },
	{ "empty domain list", LIST_DOMAIN, { NULL }, "example.org", false },
	/* addresses */
	{ "addr exact", LIST_ADDRESS, { "user@example.org" }, "user@example.org", true },
	{ "addr exact case", LIST_ADDRESS, { "User@Example.org" }, "uSER@EXAMPLE.ORG", true },
	{ "addr exact other user", LIST_ADDRESS, { "user@example.org" }, "other@example.org", false },
	{ "addr exact sub domain", LIST_ADDRESS, { "user@example.org" }, "user@a.example.org", false },
	{ "addr exact trailing dot", LIST_ADDRESS, { "user@example.org" }, "user@example.org.", true },
	{ "addr @domain", LIST_ADDRESS, { "@example.org" }, "anyone@example.org", true },
	{ "addr @domain not sub", LIST_ADDRESS, { "@example.org" }, "anyone@mx.example.org", false },
	{ "addr @domain other", LIST_ADDRESS, { "@example.org" }, "anyone@example.net", false },
	{ "addr user@", LIST_ADDRESS, { "postmaster@" }, "PostMaster@example.net", true },
	{ "addr user@ other user", LIST_ADDRESS, { "postmaster@" }, "abuse@example.net", false },
	{ "addr null sender", LIST_ADDRESS, { "@example.org", "user@" }, "@", false },
	{ "addr plus tag is distinct", LIST_ADDRESS, { "user@example.org" },
	  "user+tag@example.org", false },
	{ "empty address list", LIST_ADDRESS, { NULL }, "user@example.org", false },
	/* words */
	{ "word exact", LIST_WORD, { "alice" }, "alice", true },
	{ "word case", LIST_WORD, { "Alice" }, "ALICE", true },
	{ "word not prefix", LIST_WORD, { "alice" }, "alice2", false },
	{ "word glob", LIST_WORD, { "mx*" }, "mx1.example.org", true },
	{ "word glob empty rest", LIST_WORD, { "mx*" }, "mx", true },
	{ "word glob shorter", LIST_WORD, { "mx*" }, "m", false },
	{ "word glob case", LIST_WORD, { "MX*" }, "mx7", true },
	{ "word two globs", LIST_WORD, { "abc*", "xyz*" }, "xyzzy", true },
	{ "word star all", LIST_WORD, { "*" }, "anything", true },
	{ "word glob vs exact", LIST_WORD, { "localhost" }, "localhost.localdomain", false },
	{ "empty word list", LIST_WORD, { NULL }, "alice", false },
};

static bool
query(const struct list *l, enum list_kind kind, const char *q)
{
	size_t n = strlen(q);

	switch (kind) {
	case LIST_NET:
		return list_match_ip_text(l, q, n);
	case LIST_DOMAIN:
		return list_match_domain(l, q, n);
	case LIST_ADDRESS: {
		const char *at = strrchr(q, '@');

		return list_match_address(l, q, (size_t)(at - q), at + 1, strlen(at + 1));
	}
	case LIST_WORD:
		return list_match_word(l, q, n);
	}
	return false;
}

static void
test_match_table(void)
{
	size_t i, j;
	char err[256];

	for (i = 0; i < sizeof(match_cases) / sizeof(match_cases[0]); i++) {
		const struct match_case *c = &match_cases[i];
		struct list *l = list_new(c->kind);

		T_CHECK(l != NULL);
		for (j = 0; j < NENT && c->entries[j]; j++) {
			int rc = list_add(l, c->entries[j], strlen(c->entries[j]), err, sizeof(err));

			T_CHECKF(rc == 0, "%s: add %s: %s", c->name, c->entries[j], err);
		}
		T_CHECKF(query(l, c->kind, c->query) == c->want, "%s: query %s want %d",
		    c->name, c->query, c->want);
		/* every matcher of another kind says no */
		if (c->kind != LIST_DOMAIN)
			T_CHECK(!list_match_domain(l, "example.org", 11));
		if (c->kind != LIST_WORD)
			T_CHECK(!list_match_word(l, "alice", 5));
		list_free(l);
	}
}

struct add_case {
	const char *name;
	enum list_kind kind;
	const char *item;
	size_t len;		/* 0: strlen(item) */
	bool ok;
	const char *msg;	/* substring of the error, or NULL */
};

static char long_label[80], long_domain[300], long_word[300], long_local[80];

static const struct add_case add_cases[] = {
	{ "net ok v4", LIST_NET, "192.0.2.0/24", 0, true, NULL },
	{ "net ok v6", LIST_NET, "2001:db8::/32", 0, true, NULL },
	{ "net /0", LIST_NET, "0.0.0.0/0", 0, true, NULL },
	{ "net v6 /128", LIST_NET, "::1/128", 0, true, NULL },
	{ "net host bits v4", LIST_NET, "192.0.2.1/24", 0, false,
	  "host bits are set beyond /24 (did you mean 192.0.2.0/24?)" },
	{ "net host bits v6", LIST_NET, "2001:db8::1/32", 0, false, "did you mean 2001:db8::/32?" },
	{ "net host bits /0", LIST_NET, "10.0.0.0/0", 0, false, "0.0.0.0/0" },
	{ "net prefix 33", LIST_NET, "192.0.2.0/33", 0, false, "out of range 0..32 for IPv4" },
	{ "net prefix 129", LIST_NET, "2001:db8::/129", 0, false, "out of range 0..128" },
	{ "net prefix empty", LIST_NET, "192.0.2.0/", 0, false, "prefix length" },
	{ "net prefix sign", LIST_NET, "192.0.2.0/+8", 0, false, "prefix length" },
	{ "net prefix long", LIST_NET, "192.0.2.0/0024", 0, false, "prefix length" },
	{ "net not ip", LIST_NET, "mail.example.org", 0, false,
	  "expected an IPv4 or IPv6 network like 192.0.2.0/24" },
	{ "net octet 256", LIST_NET, "192.0.2.256", 0, false, "not an IP address" },
	{ "net short v4", LIST_NET, "10/8", 0, false, "not an IP address" },
	{ "net scope id", LIST_NET, "fe80::1%eth0", 0, false, "not an IP address" },
	{ "net empty", LIST_NET, "", 0, false, "empty entry" },
	{ "net blank", LIST_NET, " 192.0.2.0/24", 0, false, "not an IP address" },
	{ "net control", LIST_NET, "192.0.2.0/24\n", 0, false, "control byte" },
	{ "net NUL", LIST_NET, "192.0.2.0\0/24", 13, false, "\\x00" },
	{ "domain ok", LIST_DOMAIN, "example.org", 0, true, NULL },
	{ "domain ok underscore", LIST_DOMAIN, "_dmarc.example.org", 0, true, NULL },
	{ "domain ok idn", LIST_DOMAIN, "xn--bcher-kva.example", 0, true, NULL },
	{ "domain empty label", LIST_DOMAIN, "example..org", 0, false, "empty label" },
	{ "domain leading dots", LIST_DOMAIN, "..example.org", 0, false, "empty label" },
	{ "domain only dot", LIST_DOMAIN, ".", 0, false, "empty name" },
	{ "domain only =", LIST_DOMAIN, "=", 0, false, "empty name" },
	{ "domain star", LIST_DOMAIN, "*.example.org", 0, false, "write .example.org" },
	{ "domain ok u-label", LIST_DOMAIN, "b\xc3\xbc" "cher.example", 0, true, NULL },
	{ "domain bad utf8", LIST_DOMAIN, "b\xff" "cher.example", 0, false,
	  "not a valid internationalised domain name" },
	{ "domain bad punycode", LIST_DOMAIN, "xn--zz.example", 0, false,
	  "not a valid internationalised domain name" },
	{ "addr bad idn", LIST_ADDRESS, "user@xn--zz.example", 0, false,
	  "domain: not a valid internationalised" },
	{ "domain space", LIST_DOMAIN, "exa mple.org", 0, false, "invalid character" },
	{ "domain long label", LIST_DOMAIN, long_label, 0, false, "longer than 63" },
	{ "domain too long", LIST_DOMAIN, long_domain, 0, false, "longer than 255" },
	{ "domain message", LIST_DOMAIN, "a..b", 0, false,
	  "bad domain \"a..b\": empty label; expected a domain like example.org" },
	{ "addr ok", LIST_ADDRESS, "user@example.org", 0, true, NULL },
	{ "addr ok domain", LIST_ADDRESS, "@example.org", 0, true, NULL },
	{ "addr ok local", LIST_ADDRESS, "user@", 0, true, NULL },
	{ "addr no at", LIST_ADDRESS, "user", 0, false, "no '@'" },
	{ "addr two at", LIST_ADDRESS, "a@b@example.org", 0, false, "more than one '@'" },
	{ "addr lone at", LIST_ADDRESS, "@", 0, false, "neither user nor domain" },
	{ "addr bad domain", LIST_ADDRESS, "user@exa..mple", 0, false, "domain: empty label" },
	{ "addr quote", LIST_ADDRESS, "\"a b\"@example.org", 0, false, "local part" },
	{ "addr long local", LIST_ADDRESS, long_local, 0, false, "longer than 64" },
	{ "word ok", LIST_WORD, "alice", 0, true, NULL },
	{ "word ok glob", LIST_WORD, "mx*", 0, true, NULL },
	{ "word inner star", LIST_WORD, "m*x", 0, false, "only at the end" },
	{ "word double star", LIST_WORD, "mx**", 0, false, "only at the end" },
	{ "word blank", LIST_WORD, "al ice", 0, false, "blank" },
	{ "word empty", LIST_WORD, "", 0, false, "empty" },
	{ "word too long", LIST_WORD, long_word, 0, false, "longer than 255" },
};

/* RFC 8616: an entry written in U-labels or A-labels matches a query
 * written either way (both are kept in A-labels) */
static void
test_idn(void)
{
	static const char *const forms[2] = { "b\xc3\xbc" "cher.example", "XN--BCHER-KVA.example" };
	char err[256];

	for (int e = 0; e < 2; e++) {
		struct list *d = list_new(LIST_DOMAIN), *a = list_new(LIST_ADDRESS);
		char addr[64];

		snprintf(addr, sizeof(addr), "joe@%s", forms[e]);
		T_CHECKF(list_add(d, forms[e], strlen(forms[e]), err, sizeof(err)) == 0, "%s", err);
		T_CHECKF(list_add(a, addr, strlen(addr), err, sizeof(err)) == 0, "%s", err);
		for (int q = 0; q < 2; q++) {
			char sub[64];

			snprintf(sub, sizeof(sub), "mail.%s", forms[q]);
			T_CHECKF(list_match_domain(d, forms[q], strlen(forms[q])), "%d %d", e, q);
			T_CHECKF(list_match_domain(d, sub, strlen(sub)), "%d %d sub", e, q);
			T_CHECKF(list_match_address(a, "joe", 3, forms[q], strlen(forms[q])),
			    "%d %d addr", e, q);
		}
		/* other names and invalid IDNs match nothing, and do not crash */
		T_CHECK(!list_match_domain(d, "b\xc3\xa4" "cher.example", 13));
		T_CHECK(!list_match_domain(d, "b\xff" "cher.example", 13));
		T_CHECK(!list_match_address(a, "joe", 3, "b\xff" "cher.example", 13));
		list_free(d);
		list_free(a);
	}
}

/* HELO names in a word list: an exact entry in U-labels or A-labels
 * matches a name sent either way (list_match_helo); other facts' matching
 * (list_match_word) stays byte for byte; an entry that looks like an IDN
 * but is none is found for the rule parser's error */
static void
test_idn_helo(void)
{
	static const char *const forms[3] = { "b\xc3\xbc" "cher.example", "XN--BCHER-KVA.example",
	    "B\xc3\x9c" "CHER.example" /* UTS #46 maps the capital */ };
	char err[256];
	const char *w;
	size_t len;

	for (int e = 0; e < 2; e++) {
		struct list *l = list_new(LIST_WORD);

		T_CHECKF(list_add(l, forms[e], strlen(forms[e]), err, sizeof(err)) == 0, "%s", err);
		T_CHECK(list_add(l, "mx*", 3, err, sizeof(err)) == 0);
		T_CHECKF(list_count(l) == 2, "count %zu", list_count(l));	/* its A-label is no entry */
		for (int q = 0; q < 3; q++)
			T_CHECKF(list_match_helo(l, forms[q], strlen(forms[q])), "entry %d name %d", e, q);
		T_CHECK(list_match_helo(l, "xn--bcher-kva.example.", 22));
		/* a word is still a word for the other facts */
		T_CHECKF(!list_match_word(l, forms[1 - e], strlen(forms[1 - e])), "word %d", e);
		T_CHECK(list_match_helo(l, "mx1.example", 11) && list_match_helo(l, "MX.example", 10));
		T_CHECK(!list_match_helo(l, "b\xc3\xa4" "cher.example", 13));
		T_CHECK(!list_match_helo(l, "b\xff" "cher.example", 13));
		T_CHECK(!list_match_helo(l, "xn--zz.example", 14));
		T_CHECK(!list_word_bad_idn(l, &w, &len));
		list_free(l);
	}
	{
		static const char *const bad[] = { "xn--zz.example", "b\xff" "cher.example",
		    "a\xe2\x80\xa8" "b.example" /* U+2028, disallowed */ };

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			struct list *l = list_new(LIST_WORD);

			T_CHECK(list_add(l, "localhost", 9, err, sizeof(err)) == 0);
			T_CHECKF(list_add(l, bad[i], strlen(bad[i]), err, sizeof(err)) == 0, "%s", err);
			T_CHECKF(list_word_bad_idn(l, &w, &len) && len == strlen(bad[i]) &&
			    memcmp(w, bad[i], len) == 0, "bad %zu", i);
			T_CHECK(list_match_word(l, bad[i], strlen(bad[i])));	/* as a word */
			list_free(l);
		}
	}
}

static void
test_add_table(void)
{
	size_t i;
	char err[512];

	memset(long_label, 'a', 64);
	memcpy(long_label + 64, ".org", 5);
	for (i = 0; i < 257; i++)
		long_domain[i] = i % 2 ? '.' : 'a';
	long_domain[i] = '\0';
	memset(long_word, 'w', 256);
	memset(long_local, 'u', 65);
	memcpy(long_local + 65, "@x.org", 7);
	for (i = 0; i < sizeof(add_cases) / sizeof(add_cases[0]); i++) {
		const struct add_case *c = &add_cases[i];
		struct list *l = list_new(c->kind);
		size_t len = c->len ? c->len : strlen(c->item);
		int rc;

		err[0] = '\0';
		rc = list_add(l, c->item, len, err, sizeof(err));
		T_CHECKF((rc == 0) == c->ok, "%s: rc %d: %s", c->name, rc, err);
		if (c->msg)
			T_CHECKF(strstr(err, c->msg) != NULL, "%s: message \"%s\" lacks \"%s\"",
			    c->name, err, c->msg);
		T_CHECKF(list_count(l) == (c->ok ? 1u : 0u), "%s: count %zu", c->name,
		    list_count(l));
		list_free(l);
	}
}

static void
test_sockaddr(void)
{
	struct list *l = list_new(LIST_NET);
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	struct sockaddr sa;
	char err[256];

	T_CHECK(list_add(l, "192.0.2.0/24", 12, err, sizeof(err)) == 0);
	T_CHECK(list_add(l, "2001:db8::/32", 13, err, sizeof(err)) == 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	inet_pton(AF_INET, "192.0.2.200", &sin.sin_addr);
	T_CHECK(list_match_addr(l, (struct sockaddr *)&sin));
	inet_pton(AF_INET, "192.0.1.200", &sin.sin_addr);
	T_CHECK(!list_match_addr(l, (struct sockaddr *)&sin));
	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	inet_pton(AF_INET6, "::ffff:192.0.2.1", &sin6.sin6_addr);
	T_CHECK(list_match_addr(l, (struct sockaddr *)&sin6));
	inet_pton(AF_INET6, "2001:db8:1::1", &sin6.sin6_addr);
	T_CHECK(list_match_addr(l, (struct sockaddr *)&sin6));
	inet_pton(AF_INET6, "2001:db9::1", &sin6.sin6_addr);
	T_CHECK(!list_match_addr(l, (struct sockaddr *)&sin6));
	memset(&sa, 0, sizeof(sa));
	sa.sa_family = AF_UNIX;
	T_CHECK(!list_match_addr(l, &sa));
	T_CHECK(!list_match_addr(l, NULL));
	T_CHECK(!list_match_addr(NULL, (struct sockaddr *)&sin));
	list_free(l);
}

static void
test_count_and_free(void)
{
	struct list *l = list_new(LIST_DOMAIN);
	char err[256];

	T_CHECK(list_count(l) == 0);
	T_CHECK(list_add(l, "example.org", 11, err, sizeof(err)) == 0);
	T_CHECK(list_add(l, "EXAMPLE.org.", 12, err, sizeof(err)) == 0);	/* duplicate */
	T_CHECK(list_add(l, "=example.org", 12, err, sizeof(err)) == 0);	/* covered */
	T_CHECK(list_count(l) == 1);
	T_CHECK(list_add(l, "example.net", 11, err, sizeof(err)) == 0);
	T_CHECK(list_count(l) == 2);
	T_CHECK(list_kind(l) == LIST_DOMAIN);
	T_CHECK(strcmp(list_kind_name(LIST_NET), "network") == 0);
	list_free(l);
	list_free(NULL);
	T_CHECK(list_count(NULL) == 0);
	T_CHECK(list_add(NULL, "x", 1, err, sizeof(err)) == -1);
}

/* write_tmp - a temporary file with the given bytes; path into buf */
static void
write_tmp(char *buf, size_t buflen, const char *data, size_t len)
{
	FILE *fp;
	int fd;

	snprintf(buf, buflen, "/tmp/test_lists.XXXXXX");
	fd = mkstemp(buf);
	T_CHECK(fd >= 0);
	fp = fdopen(fd, "w");
	T_CHECK(fp != NULL);
	T_CHECK(fwrite(data, 1, len, fp) == len);
	fclose(fp);
}

static void
test_file_good(void)
{
	static const char data[] =
	    "# block list\r\n"
	    "\r\n"
	    "192.0.2.0/24\r\n"
	    "   198.51.100.7   # a host\r\n"
	    "\t2001:db8::/32\n"
	    "   \n"
	    "203.0.113.0/25";	/* no newline at the end */
	struct list *l = list_new(LIST_NET);
	char path[64], err[256];
	int rc;

	write_tmp(path, sizeof(path), data, sizeof(data) - 1);
	rc = list_load_file(l, path, err, sizeof(err));
	T_CHECKF(rc == 0, "%s", err);
	T_CHECK(list_count(l) == 4);
	T_CHECK(list_match_ip_text(l, "198.51.100.7", 12));
	T_CHECK(list_match_ip_text(l, "203.0.113.127", 13));
	T_CHECK(!list_match_ip_text(l, "203.0.113.128", 13));
	T_CHECK(list_match_ip_text(l, "2001:db8::5", 11));
	unlink(path);
	list_free(l);
}

static void
test_file_bad(void)
{
	static const char data[] =
	    "example.org\n"
	    "# fine\n"
	    "bad..name\n"
	    "ok.example # comment\n"
	    "also#fine.example\n"	/* not a comment: a bad name */
	    "*.wild.example\n";
	struct list *l = list_new(LIST_DOMAIN);
	char path[64], err[512], want[128];
	int rc;

	write_tmp(path, sizeof(path), data, sizeof(data) - 1);
	rc = list_load_file(l, path, err, sizeof(err));
	T_CHECK(rc == -1);
	snprintf(want, sizeof(want), "%s:3: bad domain \"bad..name\": empty label", path);
	T_CHECKF(strstr(err, want) == err, "%s", err);
	T_CHECKF(strstr(err, "(and 2 more bad lines)") != NULL, "%s", err);
	T_CHECK(list_match_domain(l, "ok.example", 10));
	unlink(path);
	list_free(l);
}

static void
test_file_long_line(void)
{
	char path[64], err[512], want[128];
	char *data = malloc(LIST_LINE_MAX + 64);
	struct list *l = list_new(LIST_WORD);
	size_t n = 0;

	T_CHECK(data != NULL);
	memcpy(data, "alice\n", 6);
	n = 6;
	memset(data + n, 'x', LIST_LINE_MAX + 1);
	n += LIST_LINE_MAX + 1;
	memcpy(data + n, "\nbob\n", 5);
	n += 5;
	write_tmp(path, sizeof(path), data, n);
	T_CHECK(list_load_file(l, path, err, sizeof(err)) == -1);
	snprintf(want, sizeof(want), "%s:2: line longer than %d bytes", path, LIST_LINE_MAX);
	T_CHECKF(strcmp(err, want) == 0, "%s", err);
	T_CHECK(list_match_word(l, "bob", 3));
	unlink(path);
	free(data);
	list_free(l);
}

static void
test_file_missing(void)
{
	struct list *l = list_new(LIST_WORD);
	char err[256];

	T_CHECK(list_load_file(l, "/nonexistent/moat-list", err, sizeof(err)) == -1);
	T_CHECKF(strstr(err, "/nonexistent/moat-list: cannot open") == err, "%s", err);
	list_free(l);
}

static void
test_file_nul(void)
{
	static const char data[] = "alice\nbo\0b\n";
	struct list *l = list_new(LIST_WORD);
	char path[64], err[256], want[128];

	write_tmp(path, sizeof(path), data, sizeof(data) - 1);
	T_CHECK(list_load_file(l, path, err, sizeof(err)) == -1);
	snprintf(want, sizeof(want), "%s:2: bad word \"bo\\x00b\": control byte", path);
	T_CHECKF(strstr(err, want) == err, "%s", err);
	unlink(path);
	list_free(l);
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* 100k networks and 100k domains: load, then 1M lookups, in seconds */
static void
test_large(void)
{
	struct list *n = list_new(LIST_NET), *d = list_new(LIST_DOMAIN);
	char item[64], err[256];
	unsigned i, hits = 0;
	double t0 = now(), t1;
	unsigned char a[4];

	for (i = 0; i < 100000; i++) {
		int k = snprintf(item, sizeof(item), "%u.%u.%u.%u/32", 10 + (i * 7919u) % 200,
		    (i >> 8) & 255, i & 255, (i * 31u) & 255);

		T_CHECK(list_add(n, item, (size_t)k, err, sizeof(err)) == 0);
		k = snprintf(item, sizeof(item), "host%u.example%u.test", i, i % 97);
		T_CHECK(list_add(d, item, (size_t)k, err, sizeof(err)) == 0);
	}
	T_CHECKF(list_count(n) == 100000, "%zu", list_count(n));
	T_CHECK(list_count(d) == 100000);
	for (i = 0; i < 1000000; i++) {
		unsigned j = i % 200000;
		int k = snprintf(item, sizeof(item), "%u.%u.%u.%u", 10 + (j * 7919u) % 200,
		    (j >> 8) & 255, j & 255, (j * 31u) & 255);
		struct sockaddr_in sin;

		(void)k;
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		inet_pton(AF_INET, item, a);
		memcpy(&sin.sin_addr, a, 4);
		hits += list_match_addr(n, (struct sockaddr *)&sin);
		k = snprintf(item, sizeof(item), "mx.host%u.example%u.test", j, j % 97);
		hits += list_match_domain(d, item, (size_t)k);
	}
	t1 = now();
	/* j < 100000 hit in both lists: 2 * 500000 */
	T_CHECKF(hits == 1000000, "hits %u", hits);
	T_CHECKF(t1 - t0 < 10.0, "took %.2f s", t1 - t0);
	list_free(n);
	list_free(d);
}

/* a domain always matches itself and its subdomains */
static void
test_domain_self_property(void)
{
	static const char *names[] = { "a", "a.b", "x-y.example.org", "_srv.example", "A.B.C" };
	struct list *l = list_new(LIST_DOMAIN);
	char err[256], sub[300];
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		int k = snprintf(sub, sizeof(sub), "x.%s", names[i]);

		T_CHECK(list_add(l, names[i], strlen(names[i]), err, sizeof(err)) == 0);
		T_CHECK(list_match_domain(l, names[i], strlen(names[i])));
		T_CHECK(list_match_domain(l, sub, (size_t)k));
	}
	list_free(l);
}

int
main(void)
{
	T_RUN(test_match_table);
	T_RUN(test_add_table);
	T_RUN(test_idn);
	T_RUN(test_idn_helo);
	T_RUN(test_sockaddr);
	T_RUN(test_count_and_free);
	T_RUN(test_file_good);
	T_RUN(test_file_bad);
	T_RUN(test_file_long_line);
	T_RUN(test_file_missing);
	T_RUN(test_file_nul);
	T_RUN(test_large);
	T_RUN(test_domain_self_property);
	return T_DONE("lists");
}
