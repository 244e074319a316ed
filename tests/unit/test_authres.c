/*
 * test_authres - rendering moat's Authentication-Results field and
 * recognising forged ones (filters/authres.c)
 *
 * The rendered field is read back with a strict parser written here (not
 * authres.c's): one authserv-id, result sets separated by ';', each
 * "method=result", then "reason=" and "ptype.prop=" values as token,
 * local@domain or quoted-string. Hostile values (HDR-04) must come back
 * as exactly what was meant, with only the bytes a header cannot carry
 * replaced by '?', and no line may reach 998 octets.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "authres.h"
#include "t.h"

/* a strict reader of what authres_render writes */
struct parsed {
	char id[300];
	int nsets;
	char method[8][32];
	char result[8][32];
	int nprops[8];
	char pname[8][4][32];
	char pval[8][4][1200];
};

static const char *
skip_fws(const char *p)
{
	while (*p == ' ' || *p == '\t' || (p[0] == '\r' && p[1] == '\n' && (p[2] == '\t' || p[2] == ' ')))
		p += (*p == '\r') ? 2 : 1;
	return p;
}

static bool
is_tok(char c)
{
	return c > 0x20 && c < 0x7f && strchr("()<>@,;:\\\"/[]?=", c) == NULL;
}

/* read_value - token, local@domain or quoted-string into out */
static const char *
read_value(const char *p, char *out, size_t size)
{
	size_t o = 0;

	if (*p == '"') {
		for (p++; *p && *p != '"'; p++) {
			if (*p == '\\')
				p++;
			if (*p == '\0' || *p == '\r' || *p == '\n' || o + 1 >= size)
				return NULL;
			out[o++] = *p;
		}
		if (*p != '"')
			return NULL;
		out[o] = '\0';
		return p + 1;
	}
	while (*p && (is_tok(*p) || *p == '@' || *p == '.')) {
		if (o + 1 >= size)
			return NULL;
		out[o++] = *p++;
	}
	out[o] = '\0';
	return o ? p : NULL;
}

/* parse_back - false when the text is not a well-formed field value */
static bool
parse_back(const char *v, struct parsed *r)
{
	const char *p = v;

	memset(r, 0, sizeof *r);
	/* no line of 998 or more, no bare CR/LF, no NUL inside */
	for (const char *l = v, *e; *l; l = e + 2) {
		e = strstr(l, "\r\n");
		if (e == NULL)
			e = l + strlen(l);
		if (e - l >= 998)
			return false;
		for (const char *c = l; c < e; c++)
			if (*c == '\r' || *c == '\n')
				return false;
		if (*e == '\0')
			break;
		if (e[2] != '\t')
			return false;	/* a line end must be a fold */
	}
	if ((p = read_value(p, r->id, sizeof r->id)) == NULL)
		return false;
	while (*p) {
		char tmp[32];
		int s = r->nsets;

		p = skip_fws(p);
		if (*p != ';')
			return false;
		p = skip_fws(p + 1);
		if (strncmp(p, "none", 4) == 0 && p[4] == '\0')
			return true;
		if (s >= 8)
			return false;
		{
			size_t o = 0;
			while (*p && *p != '=' && o + 1 < sizeof r->method[s])
				r->method[s][o++] = *p++;
		}
		if (*p++ != '=')
			return false;
		if ((p = read_value(p, r->result[s], sizeof r->result[s])) == NULL)
			return false;
		r->nsets++;
		p = skip_fws(p);
		if (*p == '(') {
			while (*p && *p != ')')
				p++;
			if (*p++ != ')')
				return false;
		}
		for (;;) {
			int k = r->nprops[s];
			size_t o = 0;

			p = skip_fws(p);
			if (*p == ';' || *p == '\0')
				break;
			if (k >= 4)
				return false;
			while (*p && *p != '=' && o + 1 < sizeof tmp)
				tmp[o++] = *p++;
			tmp[o] = '\0';
			if (*p++ != '=')
				return false;
			snprintf(r->pname[s][k], sizeof r->pname[s][k], "%s", tmp);
			if ((p = read_value(p, r->pval[s][k], sizeof r->pval[s][k])) == NULL)
				return false;
			r->nprops[s]++;
		}
	}
	return true;
}

static void
test_render_basic(void)
{
	struct authres a;
	char out[2048];
	size_t n;

	authres_init(&a);
	int i = authres_add(&a, "spf", "pass", NULL);
	T_CHECK(authres_prop(&a, i, "smtp.mailfrom", "alice@example.com", 17) == 0);
	i = authres_add(&a, "dkim", "pass", NULL);
	authres_prop(&a, i, "header.d", "example.com", 11);
	authres_prop(&a, i, "header.s", "sel", 3);
	authres_prop(&a, i, "header.b", "ab/cd+ef", 8);
	n = authres_render(&a, "mx.moat.test", "\r\n", out, sizeof out);
	T_CHECKF(strcmp(out, "mx.moat.test;\r\n\tspf=pass\r\n\t smtp.mailfrom=alice@example.com;\r\n"
	    "\tdkim=pass\r\n\t header.d=example.com\r\n\t header.s=sel\r\n\t header.b=\"ab/cd+ef\"") == 0,
	    "%s", out);
	T_CHECK(n == strlen(out));
	/* too small: nothing, not a cut field */
	T_CHECK(authres_render(&a, "mx.moat.test", "\r\n", out, 40) == 0 && out[0] == '\0');
	/* no result at all */
	authres_init(&a);
	authres_render(&a, "mx.moat.test", "\n", out, sizeof out);
	T_CHECK(strcmp(out, "mx.moat.test; none") == 0);
}

static void
test_render_refusals(void)
{
	struct authres a;
	char big[AUTHRES_VALUE_MAX + 2];

	memset(big, 'a', sizeof big);
	authres_init(&a);
	T_CHECK(authres_add(&a, "spf", "pass; dkim=pass", NULL) == -1);
	T_CHECK(authres_add(&a, "sp f", "pass", NULL) == -1);
	int i = authres_add(&a, "spf", "pass", NULL);
	T_CHECK(i == 0);
	T_CHECK(authres_prop(&a, i, "smtp.mailfrom", big, sizeof big) == -1);
	T_CHECK(authres_prop(&a, i, "nodot", "x", 1) == -1);
	T_CHECK(authres_prop(&a, 5, "smtp.helo", "x", 1) == -1);
	for (int k = 0; k < AUTHRES_MAX_PROPS; k++)
		T_CHECK(authres_prop(&a, i, "smtp.helo", "x", 1) == 0);
	T_CHECK(authres_prop(&a, i, "smtp.helo", "x", 1) == -1);
	for (int k = 1; k < AUTHRES_MAX; k++)
		T_CHECK(authres_add(&a, "dkim", "none", NULL) == k);
	T_CHECK(authres_add(&a, "dkim", "none", NULL) == -1);
}

struct hostile {
	const char *name;
	const char *prop;
	const char *value;
	size_t len;
	const char *meant;	/* as read back */
};

static void
test_render_hostile(void)
{
	static char longhelo[301];
	static const struct hostile cases[] = {
		{ "helo with spaces", "smtp.helo", "my host name", 12, "my host name" },
		{ "helo with parens", "smtp.helo", "a(b)c", 5, "a(b)c" },
		{ "helo with ;", "smtp.helo", "x; dkim=pass", 12, "x; dkim=pass" },
		{ "helo with quotes", "smtp.helo", "a\"b\\c", 5, "a\"b\\c" },
		{ "helo utf-8", "smtp.helo", "h\xc3\xa9llo", 6, "h??llo" },
		{ "helo crlf", "smtp.helo", "a\r\nX-Evil: 1", 12, "a??X-Evil: 1" },
		{ "helo nul", "smtp.helo", "a\0b", 3, "a?b" },
		{ "mailfrom ; local", "smtp.mailfrom", "a;b@example.com", 15, "a;b@example.com" },
		{ "mailfrom quote local", "smtp.mailfrom", "\"a b\"@example.com", 17,
		  "\"a b\"@example.com" },
		{ "mailfrom backslash", "smtp.mailfrom", "a\\b@example.com", 15, "a\\b@example.com" },
		{ "mailfrom dkim=pass", "smtp.mailfrom", "dkim=pass@example.com", 21,
		  "dkim=pass@example.com" },
		{ "mailfrom plain", "smtp.mailfrom", "a.b+c@example.com", 17, "a.b+c@example.com" },
		{ "mailfrom comment domain", "smtp.mailfrom", "a@example.net(.example.com", 26,
		  "a@example.net(.example.com" },
		{ "empty", "smtp.mailfrom", "", 0, "" },
		{ "300 chars", "smtp.helo", longhelo, 300, longhelo },
	};

	memset(longhelo, 'h', 300);
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		struct authres a;
		struct parsed p;
		char out[4096];

		authres_init(&a);
		int i = authres_add(&a, "spf", "pass", NULL);
		T_CHECK(authres_prop(&a, i, cases[c].prop, cases[c].value, cases[c].len) == 0);
		i = authres_add(&a, "dmarc", "fail", "no aligned \"identifier\"\r\n");
		T_CHECK(authres_render(&a, "mx.moat.test", "\r\n", out, sizeof out) > 0);
		T_CHECKF(parse_back(out, &p), "%s: not well-formed: %s", cases[c].name, out);
		T_CHECKF(p.nsets == 2, "%s: %d sets", cases[c].name, p.nsets);
		T_CHECK(strcmp(p.id, "mx.moat.test") == 0);
		T_CHECKF(strcmp(p.pval[0][0], cases[c].meant) == 0, "%s: got [%s]", cases[c].name,
		    p.pval[0][0]);
		T_CHECK(strcmp(p.pname[1][0], "reason") == 0 &&
		    strcmp(p.pval[1][0], "no aligned \"identifier\"??") == 0);
	}
}

struct ours_case {
	const char *name;
	const char *field;	/* a whole field: name ":" value */
	bool ours;
};

static void
test_is_ours(void)
{
	static const struct ours_case cases[] = {
		{ "plain", "Authentication-Results: mx.moat.test; dkim=pass", true },
		{ "lower-case name", "authentication-results: mx.moat.test; spf=pass", true },
		{ "space before colon", "Authentication-Results : mx.moat.test; spf=pass", true },
		{ "folded", "Authentication-Results:\r\n\tmx.moat.test;\r\n\tdkim=pass", true },
		{ "upper-case id", "Authentication-Results: MX.MOAT.TEST; dkim=pass", true },
		{ "comment before id", "Authentication-Results: (forged) mx.moat.test; dkim=pass", true },
		{ "nested comment", "Authentication-Results: (a (b) c) mx.moat.test; dkim=pass", true },
		{ "version", "Authentication-Results: mx.moat.test 1; dkim=pass", true },
		{ "trailing spaces", "Authentication-Results: mx.moat.test   ", true },
		{ "quoted id", "Authentication-Results: \"mx.moat.test\"; dkim=pass", true },
		{ "quoted escaped", "Authentication-Results: \"mx.moat\\.test\"; dkim=pass", true },
		{ "no result", "Authentication-Results: mx.moat.test; none", true },
		{ "other id", "Authentication-Results: mx.other.test; dkim=pass", false },
		{ "longer id", "Authentication-Results: mx.moat.test.evil; dkim=pass", false },
		{ "shorter id", "Authentication-Results: moat.test; dkim=pass", false },
		{ "prefix of ours", "Authentication-Results: mx.moat.tes; dkim=pass", false },
		{ "id in a comment only", "Authentication-Results: (mx.moat.test) x.test; dkim=pass",
		  false },
		{ "unterminated comment", "Authentication-Results: (mx.moat.test; dkim=pass", false },
		{ "empty", "Authentication-Results:", false },
		{ "other field", "X-Authentication-Results: mx.moat.test; dkim=pass", false },
		{ "ARC field", "ARC-Authentication-Results: i=1; mx.moat.test; dkim=pass", false },
		{ "no colon", "Authentication-Results mx.moat.test", false },
	};

	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
		T_CHECKF(authres_field_is_ours(cases[c].field, strlen(cases[c].field), "mx.moat.test") ==
		    cases[c].ours, "%s", cases[c].name);
	T_CHECK(!authres_is_ours("mx.moat.test", 12, ""));
	T_CHECK(authres_is_ours(" mx.moat.test;", 14, "mx.moat.test"));
	/* what we render is recognised as ours */
	{
		struct authres a;
		char out[512];
		authres_init(&a);
		authres_add(&a, "dkim", "none", NULL);
		authres_render(&a, "mx.moat.test", "\r\n", out, sizeof out);
		T_CHECK(authres_is_ours(out, strlen(out), "mx.moat.test"));
	}
}

int
main(void)
{
	T_RUN(test_render_basic);
	T_RUN(test_render_refusals);
	T_RUN(test_render_hostile);
	T_RUN(test_is_ours);
	return T_DONE("test_authres");
}
