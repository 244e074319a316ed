// sources: filters/dmarc_record.c filters/dmarc_psl.c core/idn.c
// libs: -lidn2 -lpsl
/*
 * fuzz_dmarc_record - DMARC's pure parsers (filters/dmarc_record.c,
 * filters/dmarc_psl.c): the _dmarc TXT record, the From field, host-name
 * normalisation and the Public Suffix List lookup
 *
 * The whole input is offered to each parser (none of them allocates;
 * the PSL is Debian's list, loaded once). Properties, each an abort()
 * when violated:
 *   - record: OK means p is none/quarantine/reject, pct within 0..100
 *     and sp/np either unset or a policy; INVALID always has a reason;
 *     parsing is deterministic (a second parse gives the same answer);
 *     RFC 9989 mode keeps every record RFC 7489 mode keeps, with the
 *     same p (unless RFC 7489 6.6.3 made it none), and both agree on
 *     what is a DMARC record at all;
 *   - From: at most DMARC_AUTHOR_MAX domains, no more domains than
 *     mailboxes, each domain a fixed point of dmarc_domain_norm, all
 *     distinct; feeding the same field twice counts twice the mailboxes
 *     and adds no domain;
 *   - dmarc_domain_norm: its output is lower case and normalises to
 *     itself;
 *   - PSL (libpsl): an organizational domain is a label-aligned suffix
 *     of the name's A-label form with at least two labels;
 *   - IDN: a name with U-labels normalises to A-labels that normalise
 *     to themselves (check_norm's fixed point covers it).
 */
#include "dmarc_record.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static struct dmarc_psl *psl;
static bool psl_tried;

static void
check_record(const char *s, size_t n)
{
	struct dmarc_record r, r2, b;
	enum dmarc_rec_status st = dmarc_record_parse(s, n, false, &r);
	enum dmarc_rec_status bst = dmarc_record_parse(s, n, true, &b);

	if (dmarc_record_parse(s, n, false, &r2) != st)
		abort();
	/* RFC 9989 is only more lenient: what RFC 7489 keeps it keeps, with
	 * the same p unless 7489's 6.6.3 forced p=none (a bad p or sp with a
	 * valid rua), and a DMARC record is one in both */
	if ((st == DMARC_REC_NOT_DMARC) != (bst == DMARC_REC_NOT_DMARC))
		abort();
	if (st == DMARC_REC_OK && (bst != DMARC_REC_OK || (b.p != r.p && !r.p_defaulted)))
		abort();
	if (bst == DMARC_REC_OK && (b.p < DMARC_POLICY_NONE || b.p > DMARC_POLICY_REJECT))
		abort();
	if ((st == DMARC_REC_OK || bst == DMARC_REC_OK) && r.nignored > 0 && r.ignored == NULL)
		abort();
	if (st == DMARC_REC_OK) {
		if (r.p < DMARC_POLICY_NONE || r.p > DMARC_POLICY_REJECT)
			abort();
		if (r.pct < 0 || r.pct > 100)
			abort();
		if (r.sp > DMARC_POLICY_REJECT || r.np > DMARC_POLICY_REJECT)
			abort();
		if (r.nrua > DMARC_URI_MAX || r.nruf > DMARC_URI_MAX)
			abort();
	} else if (st == DMARC_REC_INVALID && r.why == NULL) {
		abort();
	}
}

static void
check_author(const char *s, size_t n)
{
	struct dmarc_author a, b;
	char out[DMARC_DOMAIN_SIZE];

	dmarc_author_init(&a);
	dmarc_author_add(&a, s, n);
	if (a.ndomain < 0 || a.ndomain > DMARC_AUTHOR_MAX || a.ndomain > a.nmailbox)
		abort();
	for (int i = 0; i < a.ndomain; i++) {
		size_t l = strlen(a.domain[i]);
		if (dmarc_domain_norm(a.domain[i], l, out, sizeof out) != (int)l ||
		    strcmp(out, a.domain[i]) != 0)
			abort();
		for (int k = 0; k < i; k++)
			if (strcmp(a.domain[k], a.domain[i]) == 0)
				abort();
	}
	b = a;
	dmarc_author_add(&b, s, n);
	if (b.nmailbox != 2 * a.nmailbox || b.ndomain != a.ndomain || b.nfields != 2)
		abort();
}

static void
check_norm(const char *s, size_t n)
{
	char out[DMARC_DOMAIN_SIZE], again[DMARC_DOMAIN_SIZE];
	int l = dmarc_domain_norm(s, n, out, sizeof out);

	if (l < 0)
		return;
	for (int i = 0; i < l; i++)
		if (out[i] >= 'A' && out[i] <= 'Z')
			abort();
	if (dmarc_domain_norm(out, (size_t)l, again, sizeof again) != l || strcmp(out, again) != 0)
		abort();
}

static void
check_psl(const char *s, size_t n)
{
	char name[DMARC_DOMAIN_SIZE], org[DMARC_DOMAIN_SIZE], norm[DMARC_DOMAIN_SIZE];
	size_t nl, ol;
	int r;

	if (!psl_tried) {
		char err[256];
		psl_tried = true;
		psl = dmarc_psl_load("/usr/share/publicsuffix/public_suffix_list.dat", err, sizeof err);
	}
	if (psl == NULL || n == 0 || n >= sizeof name || memchr(s, '\0', n) != NULL)
		return;
	memcpy(name, s, n);
	name[n] = '\0';
	r = dmarc_psl_orgdomain(psl, name, org, sizeof org);
	if (r < 0)
		return;
	/* the answer is a suffix of the name's A-label form */
	if (dmarc_domain_norm(name, n, norm, sizeof norm) < 0)
		abort();
	nl = strlen(norm);
	ol = strlen(org);
	if ((size_t)r != ol || ol > nl || strcmp(norm + nl - ol, org) != 0)
		abort();
	if (ol < nl && norm[nl - ol - 1] != '.')
		abort();
	if (strchr(org, '.') == NULL)
		abort();
}

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	const char *s = (const char *)data;

	check_record(s, size);
	check_author(s, size);
	check_norm(s, size);
	check_psl(s, size);
	return 0;
}
