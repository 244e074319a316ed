/*
 * test_dmarc - DMARC's pure parsers (filters/dmarc_record.c,
 * filters/dmarc_psl.c) and the evaluation (filters/dmarc.c) over a table
 * of DNS answers instead of a resolver
 *
 * Tables: records (status and fields), From fields (mailboxes, domains),
 * host-name normalisation, the Public Suffix List's own test vectors
 * (../shared/conformance/dmarc/test_psl.txt, or $MOAT_CONFORMANCE) and
 * list loading failures; then dmarc_check cases with a fake lookup that
 * also counts queries (bounds, tree walk).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dmarc.h"
#include "dns.h"
#include "t.h"

#define PSL_PATH "/usr/share/publicsuffix/public_suffix_list.dat"
#define PSL_DAFSA "/usr/share/publicsuffix/public_suffix_list.dafsa"

static const char *
conf_dir(void)
{
	const char *d = getenv("MOAT_CONFORMANCE");
	return d ? d : "../shared/conformance";
}

struct rec_case {
	const char *rec;
	enum dmarc_rec_status want, want_bis;	/* RFC 7489 mode, RFC 9989 mode */
	enum dmarc_policy p, sp;		/* when OK (the same in both modes) */
	int pct;
	unsigned nignored;			/* tag values left at their default */
};

#define OK	DMARC_REC_OK
#define INV	DMARC_REC_INVALID
#define NOTD	DMARC_REC_NOT_DMARC
#define P_NONE	DMARC_POLICY_NONE
#define P_QUAR	DMARC_POLICY_QUARANTINE
#define P_REJ	DMARC_POLICY_REJECT

static void
test_record_parse(void)
{
	static const struct rec_case cases[] = {
		{ "v=DMARC1; p=none", OK, OK, P_NONE, 0, 100, 0 },
		{ "v=DMARC1;p=reject;sp=quarantine;pct=20", OK, OK, P_REJ, P_QUAR, 20, 0 },
		{ "  v = DMARC1 ;  p = Reject ; ", OK, OK, P_REJ, 0, 100, 0 },
		{ "v=DMARC1; p=none; foo=bar; x=", OK, OK, P_NONE, 0, 100, 0 },
		{ "v=DMARC1; p=none; pct=0", OK, OK, P_NONE, 0, 0, 0 },
		{ "v=DMARC1; p=none; pct=100", OK, OK, P_NONE, 0, 100, 0 },
		/* RFC 7489 6.3: a bad value keeps the record, the tag its default */
		{ "v=DMARC1; p=reject; pct=101", OK, OK, P_REJ, 0, 100, 1 },
		{ "v=DMARC1; p=reject; pct=-1", OK, OK, P_REJ, 0, 100, 1 },
		{ "v=DMARC1; p=reject; pct=abc", OK, OK, P_REJ, 0, 100, 1 },
		{ "v=DMARC1; p=reject; pct=0050", OK, OK, P_REJ, 0, 100, 1 },
		{ "v=DMARC1; p=reject; adkim=x", OK, OK, P_REJ, 0, 100, 1 },
		{ "v=DMARC1; p=reject; aspf=bob", OK, OK, P_REJ, 0, 100, 1 },
		{ "v=DMARC1; p=reject; fo=2", OK, OK, P_REJ, 0, 100, 1 },
		{ "v=DMARC1; p=reject; rf=bob", OK, OK, P_REJ, 0, 100, 1 },
		{ "v=DMARC1; p=reject; ri=bob", OK, OK, P_REJ, 0, 100, 1 },
		{ "v=DMARC1; p=reject; psd=maybe; t=perhaps; np=bogus", OK, OK, P_REJ, 0, 100, 3 },
		{ "v=DMARC1; p=reject; junk", OK, OK, P_REJ, 0, 100, 1 },
		{ "v=DMARC1; p=reject; =x; adkim=s", OK, OK, P_REJ, 0, 100, 1 },
		{ "v=DMARC1; p=none; fo=1:d:s", OK, OK, P_NONE, 0, 100, 0 },
		{ "v=DMARC1; p=none; np=quarantine; psd=y; t=y", OK, OK, P_NONE, 0, 100, 0 },
		/* p: RFC 7489 6.6.3 voids the record without a valid rua URI;
		 * RFC 9989 reads a missing or bad p as none */
		{ "v=DMARC1; p=bogus", INV, OK, P_NONE, 0, 100, 1 },
		{ "v=DMARC1; p=n", INV, OK, P_NONE, 0, 100, 1 },
		{ "v=DMARC1; p=bogus; rua=mailto:a@b.test", OK, OK, P_NONE, 0, 100, 1 },
		{ "v=DMARC1; rua=mailto:a@b.test", OK, OK, P_NONE, 0, 100, 0 },
		{ "v=DMARC1; pct=100", INV, OK, P_NONE, 0, 100, 0 },
		{ "v=DMARC1", INV, OK, P_NONE, 0, 100, 0 },
		{ "v=DMARC1; adkim=s; aspf=s", INV, OK, P_NONE, 0, 100, 0 },
		/* sp: 6.6.3 names it with p; RFC 9989 ignores a bad one */
		{ "v=DMARC1; p=reject; sp=bob", INV, OK, P_REJ, 0, 100, 1 },
		/* void in both: a tag twice (RFC 6376 3.2), v= again */
		{ "v=DMARC1; p=none; p=reject", INV, INV, 0, 0, 100, 0 },
		{ "v=DMARC1; p=none; v=DMARC1", INV, INV, 0, 0, 100, 0 },
		{ "p=none; v=DMARC1", NOTD, NOTD, 0, 0, 100, 0 },
		{ "v=DMARC2; p=none", NOTD, NOTD, 0, 0, 100, 0 },
		{ "v=spf1 -all", NOTD, NOTD, 0, 0, 100, 0 },
		{ "", NOTD, NOTD, 0, 0, 100, 0 },
		{ ";;;", NOTD, NOTD, 0, 0, 100, 0 },
	};
	struct dmarc_record r;

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const struct rec_case *c = &cases[i];

		for (int bis = 0; bis < 2; bis++) {
			enum dmarc_rec_status want = bis ? c->want_bis : c->want;
			enum dmarc_rec_status st = dmarc_record_parse(c->rec, strlen(c->rec), bis, &r);

			T_CHECKF(st == want, "[%s] %s: status %d", c->rec, bis ? "bis" : "7489", st);
			if (st == DMARC_REC_OK && want == st)
				T_CHECKF(r.p == c->p && r.sp == c->sp && r.pct == c->pct &&
				    r.nignored == c->nignored && (r.nignored == 0) == (r.ignored == NULL),
				    "[%s] %s: p %d sp %d pct %d ignored %u", c->rec,
				    bis ? "bis" : "7489", r.p, r.sp, r.pct, r.nignored);
			if (st == DMARC_REC_INVALID)
				T_CHECKF(r.why != NULL, "[%s] has no reason", c->rec);
		}
	}
	/* a bad adkim/aspf value is relaxed, the default */
	T_CHECK(dmarc_record_parse("v=DMARC1; p=reject; adkim=bob; aspf=s", 37, false, &r) ==
	    DMARC_REC_OK && r.adkim == DMARC_ALIGN_RELAXED && r.aspf == DMARC_ALIGN_STRICT);
	T_CHECK(dmarc_record_parse("v=DMARC1; p=none; psd=y; t=y; adkim=s", 37, false, &r) ==
	    DMARC_REC_OK && r.psd == DMARC_PSD_YES && r.testing && r.adkim == DMARC_ALIGN_STRICT);
	/* embedded NUL is a byte like any other, never the end: a bad p= */
	T_CHECK(dmarc_record_parse("v=DMARC1; p=\0reject", 19, false, &r) == DMARC_REC_INVALID);
	T_CHECK(dmarc_record_parse("v=DMARC1; p=\0reject", 19, true, &r) == DMARC_REC_OK &&
	    r.p == DMARC_POLICY_NONE && r.p_defaulted);
}

/*
 * opendmarc-record-parse.tsv: every row of libopendmarc's own table,
 * judged against the RFC text, not against libopendmarc. "agrees" says
 * whether moat's RFC 7489 answer is libopendmarc's; where not, why.
 */
struct tsv_verdict {
	const char *row;
	enum dmarc_rec_status st, st_bis;
	enum dmarc_policy p;		/* when OK */
	bool agrees;
	const char *rfc;
};

static const struct tsv_verdict tsv_verdicts[] = {
	{ "1", OK, OK, P_NONE, true, "6.3: rf=afrf, mailto URIs: all valid" },
	{ "2", OK, OK, P_NONE, true, "6.3: p=none" },
	{ "3", OK, OK, P_REJ, true, "6.3: p=reject" },
	{ "4", OK, OK, P_QUAR, true, "6.3: p=quarantine" },
	{ "5", INV, OK, P_NONE, false, "6.3 ABNF dmarc-request has no \"n\": a bad p, no rua, "
	  "so 6.6.3 applies no DMARC; libopendmarc takes it as none; RFC 9989: p=none" },
	{ "6", NOTD, NOTD, 0, true, "6.6.3: an empty TXT record is not a DMARC record" },
	{ "7", NOTD, NOTD, 0, true, "6.6.3: v= is not DMARC1, the record is discarded" },
	{ "8", INV, OK, P_NONE, true, "6.6.3: p not valid and no rua: no DMARC processing; "
	  "RFC 9989: p=none" },
	{ "9", INV, OK, P_NONE, true, "6.6.3 names an sp that is not valid like a bad p "
	  "(no rua: no DMARC); RFC 9989 ignores the bad sp" },
	{ "10", OK, OK, P_NONE, false, "6.3: a bad adkim is discarded for its default (r); "
	  "libopendmarc voids the record" },
	{ "11", OK, OK, P_NONE, false, "6.3: a bad aspf is discarded for its default (r)" },
	{ "12", OK, OK, P_NONE, false, "6.3: a bad rf is discarded for its default (afrf); "
	  "RFC 9989 has no rf" },
	{ "13", OK, OK, P_NONE, false, "6.3: a bad ri is discarded for its default (86400); "
	  "RFC 9989 has no ri" },
	{ "14", OK, OK, P_NONE, false, "6.3: pct=500 is not 0-100, the default 100 applies; "
	  "RFC 9989 has no pct" },
	{ "15", INV, OK, P_NONE, true, "6.6.3: no p and no rua: no DMARC; RFC 9989: a record "
	  "without p is p=none (libopendmarc agrees only for RFC 7489)" },
	{ "16", OK, OK, P_NONE, true, "6.3: rua holds a syntactically valid URI (ftp:)" },
	{ "17", OK, OK, P_NONE, true, "6.3: ruf=mailto://abuse.com is a URI" },
	{ "18", OK, OK, P_NONE, true, "6.3: unknown tags (foo, buzz) are ignored" },
	{ "19", OK, OK, P_NONE, false, "6.3: a bad rf is discarded for its default (afrf)" },
};

static enum dmarc_rec_status
opendmarc_status(const char *s)
{
	if (strcmp(s, "DMARC_PARSE_OKAY") == 0)
		return DMARC_REC_OK;
	if (strcmp(s, "DMARC_PARSE_ERROR_EMPTY") == 0 || strcmp(s, "DMARC_PARSE_ERROR_BAD_VERSION") == 0)
		return DMARC_REC_NOT_DMARC;
	return DMARC_REC_INVALID;
}

static void
test_record_tsv(void)
{
	char path[512], line[2048];
	FILE *f;
	int rows = 0, differ = 0;
	struct dmarc_record r;

	snprintf(path, sizeof path, "%s/dmarc/opendmarc-record-parse.tsv", conf_dir());
	f = fopen(path, "r");
	T_CHECKF(f != NULL, "%s missing", path);
	while (f != NULL && fgets(line, sizeof line, f)) {
		char *tab1 = strchr(line, '\t'), *tab2, *end;
		const struct tsv_verdict *v = NULL;

		if (tab1 == NULL || (tab2 = strchr(tab1 + 1, '\t')) == NULL)
			continue;
		*tab1 = *tab2 = '\0';
		if ((end = strpbrk(tab2 + 1, "\r\n")) != NULL)
			*end = '\0';
		if (strcmp(line, "case") == 0)
			continue;
		for (size_t i = 0; i < sizeof tsv_verdicts / sizeof tsv_verdicts[0]; i++)
			if (strcmp(tsv_verdicts[i].row, line) == 0)
				v = &tsv_verdicts[i];
		T_CHECKF(v != NULL, "row %s has no verdict", line);
		if (v == NULL)
			continue;
		rows++;
		for (int bis = 0; bis < 2; bis++) {
			enum dmarc_rec_status want = bis ? v->st_bis : v->st;
			enum dmarc_rec_status st = dmarc_record_parse(tab1 + 1, strlen(tab1 + 1), bis, &r);

			T_CHECKF(st == want && (st != DMARC_REC_OK || r.p == v->p),
			    "row %s %s [%s]: status %d p %d (%s)", line, bis ? "bis" : "7489",
			    tab1 + 1, st, r.p, v->rfc);
		}
		/* the table says whether libopendmarc's answer is the RFC's */
		T_CHECKF((opendmarc_status(tab2 + 1) == v->st) == v->agrees,
		    "row %s: agreement with libopendmarc (%s) mislabelled", line, tab2 + 1);
		differ += !v->agrees;
	}
	T_CHECKF(rows == 19 && differ == 7, "%d rows, %d differ", rows, differ);
	if (f)
		fclose(f);
}

struct from_case {
	const char *value;
	int nmailbox;
	bool bad;
	const char *d0, *d1;
};

static void
test_author(void)
{
	static const struct from_case cases[] = {
		{ "Joe <joe@Example.COM>", 1, false, "example.com", NULL },
		{ "joe@example.com.", 1, false, "example.com", NULL },
		{ "\"a@evil.test\" <joe@example.com>", 1, false, "example.com", NULL },
		{ "(a@evil.test) joe@example.com", 1, false, "example.com", NULL },
		{ "joe@example.com (a@evil.test)", 1, false, "example.com", NULL },
		{ "a@victim.test, b@attacker.test", 2, false, "victim.test", "attacker.test" },
		{ "a@x.test, a@x.test", 2, false, "x.test", NULL },
		{ "team: a@x.test, b@y.test;", 2, false, "x.test", "y.test" },
		{ "undisclosed-recipients:;", 0, false, NULL, NULL },
		{ "<@route.test:joe@example.com>", 1, false, "example.com", NULL },
		{ "=?utf-8?q?J=C3=B6e?= <joe@example.com>", 1, false, "example.com", NULL },
		{ "joe@example.net(.example.com", 1, false, "example.net", NULL },
		{ "joe@[192.0.2.1]", 1, true, NULL, NULL },
		{ "Joe", 1, true, NULL, NULL },
		{ "joe@localhost", 1, true, NULL, NULL },
		{ "joe@ex ample.com", 1, true, NULL, NULL },
		{ "joe@-bad.example", 1, true, NULL, NULL },
		{ "joe@b\xc3\xa4" "d.example", 1, false, "xn--bd-via.example", NULL },
		{ "J\xc3\xb6" "e <j\xc3\xb6" "e@B\xc3\x84" "D.example>", 1, false, "xn--bd-via.example", NULL },
		{ "joe@xn--bd-via.example", 1, false, "xn--bd-via.example", NULL },
		{ "joe@b\xff" "d.example", 1, true, NULL, NULL },
		{ "joe@xn--zz.example", 1, true, NULL, NULL },
		{ "<>", 1, true, NULL, NULL },
		{ "", 0, false, NULL, NULL },
		{ "\"unterminated <joe@example.com>", 1, true, NULL, NULL },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const struct from_case *c = &cases[i];
		struct dmarc_author a;

		dmarc_author_init(&a);
		dmarc_author_add(&a, c->value, strlen(c->value));
		T_CHECKF(a.nmailbox == c->nmailbox && a.bad == c->bad, "[%s] mailboxes %d bad %d",
		    c->value, a.nmailbox, a.bad);
		T_CHECKF(a.ndomain == (c->d0 != NULL) + (c->d1 != NULL), "[%s] %d domains", c->value,
		    a.ndomain);
		if (c->d0)
			T_CHECKF(strcmp(a.domain[0], c->d0) == 0, "[%s] %s", c->value, a.domain[0]);
		if (c->d1)
			T_CHECKF(strcmp(a.domain[1], c->d1) == 0, "[%s] %s", c->value, a.domain[1]);
	}
	/* several fields are counted, whatever they hold */
	{
		struct dmarc_author a;
		dmarc_author_init(&a);
		dmarc_author_add(&a, "a@x.test", 8);
		dmarc_author_add(&a, "a@x.test", 8);
		T_CHECK(a.nfields == 2 && a.nmailbox == 2 && a.ndomain == 1);
	}
	/* the table libopendmarc tests with */
	{
		char path[512], line[1024];
		FILE *f;
		int rows = 0;

		snprintf(path, sizeof path, "%s/dmarc/opendmarc-from-domain.tsv", conf_dir());
		f = fopen(path, "r");
		T_CHECKF(f != NULL, "%s missing", path);
		while (f != NULL && fgets(line, sizeof line, f)) {
			char *case_no = strtok(line, "\t"), *value = strtok(NULL, "\t"),
			    *want = strtok(NULL, "\t\r\n");
			struct dmarc_author a;
			if (case_no == NULL || want == NULL || strcmp(case_no, "case") == 0)
				continue;
			rows++;
			dmarc_author_init(&a);
			dmarc_author_add(&a, value, strlen(value));
			T_CHECKF(a.ndomain >= 1 && strcmp(a.domain[0], want) == 0, "case %s", case_no);
			/* cases 7 and 8 hold two mailboxes: DMARC fails them */
			T_CHECKF((a.nmailbox > 1) == (strcmp(case_no, "7") == 0 ||
			    strcmp(case_no, "8") == 0), "case %s mailboxes %d", case_no, a.nmailbox);
		}
		T_CHECK(rows == 13);
		if (f)
			fclose(f);
	}
}

static void
test_domain_norm(void)
{
	static const struct { const char *in; const char *out; } cases[] = {
		{ "Example.COM", "example.com" }, { "example.com.", "example.com" },
		{ "a-b.c_d.example", "a-b.c_d.example" }, { "com", NULL }, { "", NULL },
		{ ".example.com", NULL }, { "example..com", NULL }, { "example.com..", NULL },
		{ "-a.example", NULL }, { "a-.example", NULL }, { "a b.example", NULL },
		{ "example.net(.example.com", NULL },
		/* RFC 8616: U-labels to A-labels (UTS #46 non-transitional) */
		{ "ex\xc3\xa4" "mple.com", "xn--exmple-cua.com" },
		{ "Fa\xc3\x9f.DE", "xn--fa-hia.de" },
		{ "\xe9\xa3\x9f\xe7\x8b\xae.\xe5\x85\xac\xe5\x8f\xb8.cn", "xn--85x722f.xn--55qx5d.cn" },
		{ "XN--85X722F.com.cn", "xn--85x722f.com.cn" },
		{ "_dmarc.b\xc3\xa4" "d.example", "_dmarc.xn--bd-via.example" },
		/* invalid IDNs: bad UTF-8, bad Punycode, a disallowed code point */
		{ "b\xff" "d.example", NULL }, { "b\xc3" ".example", NULL },
		{ "xn--zz.example", NULL }, { "xn--a.example", NULL },
		{ "\xe2\x80\x8d.example", NULL }, { "\xf0\x9f\x92\xa9.example", NULL },
	};
	char out[DMARC_DOMAIN_SIZE];

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int n = dmarc_domain_norm(cases[i].in, strlen(cases[i].in), out, sizeof out);
		if (cases[i].out == NULL)
			T_CHECKF(n < 0, "[%s] accepted as %s", cases[i].in, n < 0 ? "" : out);
		else
			T_CHECKF(n >= 0 && strcmp(out, cases[i].out) == 0, "[%s]", cases[i].in);
	}
	{
		char l64[80], l63[80];
		memset(l64, 'a', 64);
		strcpy(l64 + 64, ".example");
		memset(l63, 'a', 63);
		strcpy(l63 + 63, ".example");
		T_CHECK(dmarc_domain_norm(l64, strlen(l64), out, sizeof out) < 0);
		T_CHECK(dmarc_domain_norm(l63, strlen(l63), out, sizeof out) > 0);
	}
}

static struct dmarc_psl *the_psl;

/* psl_vectors - the list's own test vectors through dmarc_psl_orgdomain
 * (libpsl behind moat's normalisation); a Unicode name's answer is in
 * A-labels, so the expected value is compared in that form (the file
 * checks the same names' xn-- spellings too); returns the checks run */
static int
psl_vectors(const struct dmarc_psl *psl, const char *which)
{
	char path[512], line[512];
	FILE *f;
	int checks = 0;

	snprintf(path, sizeof path, "%s/dmarc/test_psl.txt", conf_dir());
	f = fopen(path, "r");
	T_CHECKF(f != NULL, "%s missing", path);
	while (f != NULL && fgets(line, sizeof line, f)) {
		char in[256] = "", want[256] = "", wantA[256], out[256], *a, *e;
		bool in_null = false, want_null = false;
		int n;

		if (strncmp(line, "checkPublicSuffix(", 18) != 0)
			continue;
		a = line + 18;
		if (strncmp(a, "null", 4) == 0) {
			in_null = true;
			a += 4;
		} else if ((e = strchr(a + 1, '\'')) != NULL) {
			snprintf(in, sizeof in, "%.*s", (int)(e - a - 1), a + 1);
			a = e + 1;
		}
		a += 2;
		if (strncmp(a, "null", 4) == 0)
			want_null = true;
		else if ((e = strchr(a + 1, '\'')) != NULL)
			snprintf(want, sizeof want, "%.*s", (int)(e - a - 1), a + 1);
		checks++;
		n = in_null ? -1 : dmarc_psl_orgdomain(psl, in, out, sizeof out);
		if (want_null) {
			T_CHECKF(n < 0, "%s: %s: got %s, want null", which, in, out);
			continue;
		}
		T_CHECKF(dmarc_domain_norm(want, strlen(want), wantA, sizeof wantA) > 0, "%s", want);
		T_CHECKF(n >= 0 && strcmp(out, wantA) == 0, "%s: %s: got %s, want %s", which, in,
		    n < 0 ? "null" : out, wantA);
	}
	if (f)
		fclose(f);
	return checks;
}

static void
test_psl_vectors(void)
{
	char err[256], out[256];
	struct dmarc_psl *dafsa;

	the_psl = dmarc_psl_load(PSL_PATH, err, sizeof err);
	T_CHECKF(the_psl != NULL, "%s", err);
	if (the_psl != NULL) {
		T_CHECKF(psl_vectors(the_psl, "dat") == 78, "checks");
		T_CHECK(dmarc_psl_count(the_psl) >= 1000);
	}
	/* the compiled list Debian ships, moat's default psl-file */
	dafsa = dmarc_psl_load(PSL_DAFSA, err, sizeof err);
	T_CHECKF(dafsa != NULL, "%s", err);
	if (dafsa != NULL) {
		T_CHECKF(psl_vectors(dafsa, "dafsa") == 78, "checks");
		/* the Unicode spelling and the xn-- one give the same answer */
		T_CHECK(dmarc_psl_orgdomain(dafsa, "www.\xe9\xa3\x9f\xe7\x8b\xae.\xe4\xb8\xad\xe5\x9b\xbd",
		    out, sizeof out) > 0 && strcmp(out, "xn--85x722f.xn--fiqs8s") == 0);
		/* an invalid IDN has no organizational domain */
		T_CHECK(dmarc_psl_orgdomain(dafsa, "www.xn--zz.example", out, sizeof out) < 0);
		T_CHECK(dmarc_psl_orgdomain(dafsa, "www.b\xff.example", out, sizeof out) < 0);
		dmarc_psl_free(dafsa);
	}
}

static void
test_psl_refused(void)
{
	char err[256], path[] = "/tmp/moat-psl-XXXXXX";
	int fd;

	T_CHECK(dmarc_psl_load("/nonexistent/psl.dat", err, sizeof err) == NULL && err[0]);
	fd = mkstemp(path);
	T_CHECK(fd >= 0);
	if (fd >= 0) {
		/* a corrupt list: the marker, few rules */
		const char *text = "// ===BEGIN ICANN DOMAINS===\ncom\nnet\n";
		T_CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
		close(fd);
		T_CHECK(dmarc_psl_load(path, err, sizeof err) == NULL);
		unlink(path);
	}
	T_CHECK(dmarc_psl_parse("", 0, err, sizeof err) == NULL);
}

/* ------------------------------------------------------------------ */
/* dmarc_check over a table */

struct zone {
	const char *name;
	int rrtype;
	enum dmarc_dns st;
	const char *txt[3];
};

struct fake {
	const struct zone *z;
	int queries;
};

static enum dmarc_dns
fake_lookup(void *ctx, const char *name, int rrtype, struct dmarc_txt *out)
{
	struct fake *f = ctx;

	f->queries++;
	for (int i = 0; f->z[i].name != NULL; i++) {
		if (strcmp(f->z[i].name, name) != 0 || f->z[i].rrtype != rrtype)
			continue;
		for (int k = 0; k < 3 && f->z[i].txt[k] != NULL; k++) {
			snprintf(out->rec[k], sizeof out->rec[k], "%s", f->z[i].txt[k]);
			out->len[k] = strlen(f->z[i].txt[k]);
			out->n = out->total = k + 1;
		}
		return f->z[i].st;
	}
	return DMARC_DNS_NXDOMAIN;
}

static void
run(enum dmarc_mode mode, const struct zone *z, const char *from, bool spf_pass,
	const char *spf_dom, const char *dkim_dom, struct dmarc_outcome *out, int *queries)
{
	struct fake f = { z, 0 };
	struct dmarc_conf c = { mode, the_psl, 0, fake_lookup, &f };
	struct dmarc_dkim_in dk = { dkim_dom, true };
	size_t len = strlen(from);
	struct dmarc_input in = { &from, &len, 1, spf_pass, spf_dom, &dk, dkim_dom ? 1 : 0, 0 };

	dmarc_check(&c, &in, out);
	if (queries)
		*queries = f.queries;
}

static void
test_check(void)
{
	static const struct zone z[] = {
		{ "_dmarc.example.com", DNS_T_TXT, DMARC_DNS_OK, { "v=DMARC1; p=reject; sp=quarantine" } },
		{ "_dmarc.temp.test", DNS_T_TXT, DMARC_DNS_TEMPERROR, { NULL } },
		{ "_dmarc.two.test", DNS_T_TXT, DMARC_DNS_OK, { "v=DMARC1; p=reject", "v=DMARC1; p=none" } },
		{ "_dmarc.psd.test", DNS_T_TXT, DMARC_DNS_OK, { "v=DMARC1; p=reject; psd=y" } },
		{ NULL, 0, 0, { NULL } },
	};
	struct dmarc_outcome o;
	int q;

	if (the_psl == NULL)
		return;
	run(DMARC_MODE_RFC7489, z, "a@example.com", true, "mail.example.com", NULL, &o, &q);
	T_CHECK(o.result == DMARC_RES_PASS && o.spf_aligned && o.policy == DMARC_POLICY_NONE);
	T_CHECK(q == 1);
	run(DMARC_MODE_RFC7489, z, "a@example.com", true, "evil.test", "evil.test", &o, NULL);
	T_CHECK(o.result == DMARC_RES_FAIL && o.policy == DMARC_POLICY_REJECT);
	run(DMARC_MODE_RFC7489, z, "a@x.y.example.com", false, NULL, "example.com", &o, NULL);
	T_CHECK(o.result == DMARC_RES_PASS && o.dkim_aligned);
	run(DMARC_MODE_RFC7489, z, "a@x.y.example.com", false, NULL, NULL, &o, NULL);
	T_CHECK(o.result == DMARC_RES_FAIL && o.policy == DMARC_POLICY_QUARANTINE &&
	    strcmp(o.policy_domain, "example.com") == 0);
	run(DMARC_MODE_RFC7489, z, "a@temp.test", true, "temp.test", NULL, &o, NULL);
	T_CHECK(o.result == DMARC_RES_TEMPERROR && o.policy == DMARC_POLICY_NONE);
	run(DMARC_MODE_RFC7489, z, "a@two.test", false, NULL, NULL, &o, NULL);
	T_CHECK(o.result == DMARC_RES_NONE && o.policy == DMARC_POLICY_NONE);
	run(DMARC_MODE_RFC7489, z, "a@nothing.test", true, "nothing.test", NULL, &o, NULL);
	T_CHECK(o.result == DMARC_RES_NONE);
	run(DMARC_MODE_RFC7489, z, "nobody", true, "example.com", NULL, &o, &q);
	T_CHECK(o.result == DMARC_RES_PERMERROR && q == 0);
	/* bis: a deep name walks at most DMARC_WALK_MAX names, and jumps */
	run(DMARC_MODE_BIS, z, "a@l1.l2.l3.l4.l5.l6.l7.l8.l9.example.com", false, NULL, NULL, &o, &q);
	T_CHECK(o.result == DMARC_RES_FAIL && o.policy == DMARC_POLICY_QUARANTINE);
	T_CHECKF(q <= DMARC_WALK_MAX, "%d queries", q);
	run(DMARC_MODE_BIS, z, "a@a.b.psd.test", false, NULL, "c.psd.test", &o, NULL);
	T_CHECK(o.result == DMARC_RES_FAIL && strcmp(o.org_domain, "b.psd.test") == 0);
	run(DMARC_MODE_BIS, z, "a@a.b.psd.test", false, NULL, "x.b.psd.test", &o, NULL);
	T_CHECK(o.result == DMARC_RES_PASS);
	/* 7489 needs the list */
	{
		struct fake f = { z, 0 };
		struct dmarc_conf c = { DMARC_MODE_RFC7489, NULL, 0, fake_lookup, &f };
		const char *from = "a@example.com";
		size_t len = 13;
		struct dmarc_input in = { &from, &len, 1, false, NULL, NULL, 0, 0 };
		dmarc_check(&c, &in, &o);
		T_CHECK(o.result == DMARC_RES_TEMPERROR && f.queries == 0);
	}
}

static void
test_check_several_authors(void)
{
	static const struct zone z[] = {
		{ "_dmarc.victim.test", DNS_T_TXT, DMARC_DNS_OK, { "v=DMARC1; p=reject" } },
		{ "_dmarc.attacker.test", DNS_T_TXT, DMARC_DNS_OK, { "v=DMARC1; p=none" } },
		{ NULL, 0, 0, { NULL } },
	};
	const char *orders[2][2] = { { "x@attacker.test", "x@victim.test" },
		{ "x@victim.test", "x@attacker.test" } };
	struct dmarc_outcome o;

	if (the_psl == NULL)
		return;
	for (int k = 0; k < 2; k++) {
		struct fake f = { z, 0 };
		struct dmarc_conf c = { DMARC_MODE_RFC7489, the_psl, 0, fake_lookup, &f };
		struct dmarc_dkim_in dk = { "attacker.test", true };
		size_t lens[2] = { strlen(orders[k][0]), strlen(orders[k][1]) };
		struct dmarc_input in = { orders[k], lens, 2, true, "attacker.test", &dk, 1, 0 };

		dmarc_check(&c, &in, &o);
		T_CHECKF(o.result == DMARC_RES_FAIL && o.several_authors &&
		    o.policy == DMARC_POLICY_REJECT, "order %d: %d %d", k, o.result, o.policy);
	}
}

static void
test_authres_line(void)
{
	struct dmarc_outcome o;
	struct authres a;
	char out[512];

	memset(&o, 0, sizeof o);
	o.result = DMARC_RES_FAIL;
	o.policy = DMARC_POLICY_QUARANTINE;
	o.published = DMARC_POLICY_REJECT;
	strcpy(o.from_domain, "example.com");
	authres_init(&a);
	dmarc_authres(&o, &a);
	authres_render(&a, "mx.test", "\n", out, sizeof out);
	T_CHECKF(strcmp(out, "mx.test;\n\tdmarc=fail (p=reject dis=quarantine)\n\t header.from=example.com"
	    "\n\t policy.dmarc=quarantine") == 0, "%s", out);
}

int
main(void)
{
	T_RUN(test_record_parse);
	T_RUN(test_record_tsv);
	T_RUN(test_author);
	T_RUN(test_domain_norm);
	T_RUN(test_psl_vectors);
	T_RUN(test_psl_refused);
	T_RUN(test_check);
	T_RUN(test_check_several_authors);
	T_RUN(test_authres_line);
	dmarc_psl_free(the_psl);
	return T_DONE("test_dmarc");
}
