/*
 * dmarc_record - the pure parsers of DMARC: the _dmarc TXT record, the
 * RFC5322.From field, and the Public Suffix List
 *
 * SYNOPSIS
 *	enum dmarc_rec_status dmarc_record_parse(const char *txt, size_t len,
 *	                                         struct dmarc_record *r);
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
 *	np, psd and t tags:
 *	  DMARC_REC_NOT_DMARC	empty, or the first tag is not v=DMARC1: the
 *				record is not a DMARC record and is discarded
 *				(it does not count toward "several records").
 *	  DMARC_REC_INVALID	a DMARC record with a syntax error or a bad
 *				value of a known tag (p, sp, np, adkim, aspf,
 *				pct 0-100, fo, rf, ri, psd, t), a known tag
 *				given twice, longer than DMARC_RECORD_MAX, or
 *				without a valid p= and without a valid rua
 *				URI. r->why says which.
 *	  DMARC_REC_OK		r is filled; unknown tags are ignored. A
 *				missing or bad p= with a valid rua= URI reads
 *				as p=none (RFC 7489 6.6.3; r->p_defaulted).
 *	Differences from libopendmarc 1.4.2 (conformance/dmarc/
 *	opendmarc-record-parse.tsv): "p=n" is invalid here (the RFC has no
 *	abbreviations). No report is ever sent, so rua/ruf are only counted.
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
 *	dmarc_domain_norm() writes a host name in lower case without a
 *	trailing dot and returns its length, or -1 when it is not a domain
 *	DMARC can use: empty labels, labels over 63 or names over 253 bytes,
 *	bytes other than letters, digits, '-' and '_', a label starting or
 *	ending with '-', a single label. So "example.net(.example.com"
 *	is never a domain (the CVE-2020-12272 class).
 *
 *	dmarc_psl_load() reads the Public Suffix List (Debian:
 *	/usr/share/publicsuffix/public_suffix_list.dat), both the ICANN and
 *	the PRIVATE sections; a rule with non-ASCII labels is also stored in
 *	its Punycode (xn--) form. NULL with err filled when the file cannot
 *	be read or does not look like the list (no ICANN section marker,
 *	fewer than 1000 rules): the caller refuses to start (DMC-06).
 *	dmarc_psl_orgdomain() writes the registrable domain of name (public
 *	suffix plus one label, the PSL's own algorithm with "*" as the
 *	default rule and exception rules first) and returns its length, or
 *	-1 when name is itself a public suffix or not a valid name.
 *
 * THREADS AND MEMORY
 *	No I/O except dmarc_psl_load() reading its file; no globals. A
 *	loaded struct dmarc_psl is read-only and may be shared by threads;
 *	the caller owns it and frees it with dmarc_psl_free(NULL-safe).
 *	Allocation failure in the PSL functions returns NULL (they are
 *	fuzzed and take no panic path).
 */
#ifndef MOAT_DMARC_RECORD_H
#define MOAT_DMARC_RECORD_H

#include <stdbool.h>
#include <stddef.h>

#define DMARC_RECORD_MAX	8192	/* bytes of one _dmarc TXT record */
#define DMARC_DOMAIN_SIZE	256
#define DMARC_AUTHOR_MAX	8
#define DMARC_URI_MAX		100	/* rua/ruf URIs counted, the rest ignored */

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
	bool p_defaulted;		/* p missing/bad, rua valid: p=none */
	unsigned nrua, nruf;		/* URIs seen (at most DMARC_URI_MAX) */
	const char *why;		/* DMARC_REC_INVALID: a static text */
};

struct dmarc_author {
	int nfields;			/* From fields given */
	int nmailbox;			/* mailboxes in them */
	bool bad;			/* a mailbox without a usable domain */
	int ndomain;
	char domain[DMARC_AUTHOR_MAX][DMARC_DOMAIN_SIZE];
};

struct dmarc_psl;

enum dmarc_rec_status dmarc_record_parse(const char *txt, size_t len, struct dmarc_record *r);
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
