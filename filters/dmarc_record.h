/*
 * dmarc_record - the pure parsers of DMARC: the _dmarc TXT record, the
 * RFC5322.From field, and the Public Suffix List
 *
 * SYNOPSIS
 *	enum dmarc_rec_status dmarc_record_parse(const char *txt, size_t len,
 *	                                         bool bis, struct dmarc_record *r);
 *
 *	void dmarc_author_init(struct dmarc_author *a);
 *	void dmarc_author_add(struct dmarc_author *a, const char *value, size_t len);
 *
 *	int dmarc_domain_norm(const char *in, size_t len, char *out, size_t size);
 *
 *	struct dmarc_psl *dmarc_psl_load(const char *path, char *err, size_t errlen);
 *	struct dmarc_psl *dmarc_psl_parse(const char *text, size_t len,
 *	                                  char *err, size_t errlen);
 *	int dmarc_psl_orgdomain(const struct dmarc_psl *psl, const char *name,
 *	                        char *out, size_t size);
 *	void dmarc_psl_free(struct dmarc_psl *psl);
 *
 * DESCRIPTION
 *	dmarc_record_parse() reads one TXT record (the character-strings
 *	already joined) as an RFC 7489 section 6.3 tag list, with DMARCbis's
 *	(RFC 9989) np, psd and t tags; bis selects RFC 9989's rules:
 *	  DMARC_REC_NOT_DMARC	empty, or the first tag is not v=DMARC1: the
 *				record is not a DMARC record and is discarded
 *				(it does not count toward "several records").
 *	  DMARC_REC_INVALID	a DMARC record that is void: longer than
 *				DMARC_RECORD_MAX, a known tag given twice
 *				(RFC 6376 3.2's tag-list, which RFC 7489 6.4
 *				takes), v= again later, or (RFC 7489 mode
 *				only) a missing or bad p= or a bad sp=
 *				without a valid rua URI (RFC 7489 6.6.3).
 *				r->why says which.
 *	  DMARC_REC_OK		r is filled. Unknown tags are ignored. A bad
 *				value of any other tag (adkim, aspf, pct 0-100,
 *				fo, rf, ri, np, psd, t), a bare word or an
 *				empty tag name is ignored and the tag keeps its
 *				default (RFC 7489 6.3 "SHOULD be discarded in
 *				favor of default values"; RFC 9989 4.7);
 *				r->nignored counts them and r->ignored names
 *				the first. RFC 7489 mode: a missing or bad p=
 *				(or a bad sp=) with a valid rua= URI reads as
 *				p=none (6.6.3; r->p_defaulted). RFC 9989 mode:
 *				a missing or bad p= reads as p=none
 *				(r->p_defaulted), a bad sp= is ignored.
 *	Differences from libopendmarc 1.4.2 (conformance/dmarc/
 *	opendmarc-record-parse.tsv, each row judged in tests/unit/
 *	test_dmarc.c): "p=n" is a bad p= value here (the RFC has no
 *	abbreviations); a bad adkim, aspf, rf, ri or pct keeps the record
 *	where libopendmarc voids it. No report is ever sent, so rua/ruf are
 *	only counted.
 *
 *	dmarc_author_add() is called once per From header field with its
 *	value (bytes after the colon, folding included). It reads the field
 *	as an RFC 5322 address-list, tolerant of what real mail carries:
 *	comments (nested), quoted strings (a quoted display name never
 *	yields an address), group syntax ("name: a@b;"), nested or empty
 *	angle brackets, source routes. Every mailbox is counted; each
 *	distinct domain that is a valid host name (see dmarc_domain_norm) is
 *	kept, up to DMARC_AUTHOR_MAX. A mailbox without such a domain (no
 *	'@', a domain literal, 8-bit, a display name only) sets bad.
 *	A caller treats nfields != 1 or nmailbox != 1 or bad as a failure
 *	(RFC 5322 3.6: exactly one From; DMARC needs one author domain).
 *
 *	dmarc_domain_norm() writes a host name in A-label form (RFC 8616:
 *	a name with U-labels or xn-- labels goes through idn_alabel(),
 *	libidn2's UTS #46 non-transitional mapping), in lower case, without
 *	a trailing dot, and returns its length; DMARC_DOMAIN_BAD_IDN when
 *	the name is not a valid IDN (bad UTF-8, a disallowed code point,
 *	bad Punycode); -1 when it is not a domain DMARC can use: empty
 *	labels, labels over 63 or names over 253 bytes, bytes other than
 *	letters, digits, '-' and '_' (after the mapping), a label starting
 *	or ending with '-', a single label. So "example.net(.example.com"
 *	is never a domain (the CVE-2020-12272 class).
 *
 *	dmarc_psl_load() loads the Public Suffix List with libpsl: the
 *	list's text (Debian: /usr/share/publicsuffix/public_suffix_list.dat)
 *	or the compiled DAFSA libpsl loads fastest (public_suffix_list.dafsa),
 *	both the ICANN and the PRIVATE sections. NULL with err filled when
 *	the file cannot be read or does not look like the list (fewer than
 *	1000 rules, or "co.uk" and "com" not public suffixes): the caller
 *	refuses to start (DMC-06). dmarc_psl_parse() does the same from
 *	bytes in memory.
 *	dmarc_psl_orgdomain() normalises name with dmarc_domain_norm (so a
 *	U-label name works, and the answer is in A-labels), writes its
 *	registrable domain (public suffix plus one label, libpsl's
 *	psl_registrable_domain: "*" as the default rule, exception rules
 *	first) and returns its length, or -1 when name is itself a public
 *	suffix or not a valid name.
 *
 * THREADS AND MEMORY
 *	No I/O except dmarc_psl_load() reading its file; no globals. A
 *	loaded struct dmarc_psl is read-only and may be shared by threads
 *	(libpsl's lookups do not change the context); the caller owns it
 *	and frees it with dmarc_psl_free (NULL-safe). Allocation failure in
 *	the PSL functions returns NULL (they are fuzzed and take no panic
 *	path).
 */
#ifndef MOAT_DMARC_RECORD_H
#define MOAT_DMARC_RECORD_H

#include <stdbool.h>
#include <stddef.h>

#define DMARC_RECORD_MAX	8192	/* bytes of one _dmarc TXT record */
#define DMARC_DOMAIN_SIZE	256
#define DMARC_AUTHOR_MAX	8
#define DMARC_URI_MAX		100	/* rua/ruf URIs counted, the rest ignored */
#define DMARC_DOMAIN_BAD_IDN	(-2)	/* dmarc_domain_norm: not a valid IDN */

enum dmarc_policy {
	DMARC_POLICY_UNSET = 0,		/* tag absent */
	DMARC_POLICY_NONE,
	DMARC_POLICY_QUARANTINE,
	DMARC_POLICY_REJECT
};

enum dmarc_align { DMARC_ALIGN_RELAXED = 0, DMARC_ALIGN_STRICT };

enum dmarc_psd { DMARC_PSD_UNSET = 0, DMARC_PSD_YES, DMARC_PSD_NO, DMARC_PSD_UNKNOWN };

enum dmarc_rec_status { DMARC_REC_OK = 0, DMARC_REC_NOT_DMARC, DMARC_REC_INVALID };

struct dmarc_record {
	enum dmarc_policy p, sp, np;
	enum dmarc_align adkim, aspf;
	int pct;			/* 0..100, default 100 */
	bool testing;			/* t=y */
	enum dmarc_psd psd;
	bool p_defaulted;		/* p missing/bad, read as p=none */
	unsigned nignored;		/* tag values ignored for their default */
	const char *ignored;		/* the first of them: a static text */
	unsigned nrua, nruf;		/* URIs seen (at most DMARC_URI_MAX) */
	const char *why;		/* DMARC_REC_INVALID: a static text */
};

struct dmarc_author {
	int nfields;			/* From fields given */
	int nmailbox;			/* mailboxes in them */
	bool bad;			/* a mailbox without a usable domain */
	bool bad_idn;			/* ... because it is not a valid IDN */
	int ndomain;
	char domain[DMARC_AUTHOR_MAX][DMARC_DOMAIN_SIZE];
};

struct dmarc_psl;

enum dmarc_rec_status dmarc_record_parse(const char *txt, size_t len, bool bis,
	struct dmarc_record *r);
const char *dmarc_policy_name(enum dmarc_policy p);

void dmarc_author_init(struct dmarc_author *a);
void dmarc_author_add(struct dmarc_author *a, const char *value, size_t len);

int dmarc_domain_norm(const char *in, size_t len, char *out, size_t size);

struct dmarc_psl *dmarc_psl_load(const char *path, char *err, size_t errlen);
struct dmarc_psl *dmarc_psl_parse(const char *text, size_t len, char *err, size_t errlen);
int dmarc_psl_orgdomain(const struct dmarc_psl *psl, const char *name, char *out, size_t size);
size_t dmarc_psl_count(const struct dmarc_psl *psl);
void dmarc_psl_free(struct dmarc_psl *psl);

#endif
