/*
 * dmarc - DMARC evaluation: the author domain, policy discovery,
 * identifier alignment, and the policy to apply
 *
 * SYNOPSIS
 *	#include "dmarc.h"
 *
 *	void dmarc_check(const struct dmarc_conf *c, const struct dmarc_input *in,
 *	                 struct dmarc_outcome *out);
 *	const char *dmarc_result_name(enum dmarc_result r);
 *	void dmarc_authres(const struct dmarc_outcome *o, struct authres *a);
 *
 *	enum dmarc_dns dmarc_resolver_lookup(void *ctx, const char *name, int rrtype,
 *	                                     struct dmarc_txt *out);
 *
 * DESCRIPTION
 *	dmarc_check() evaluates one message:
 *
 *	1. The author domain comes from the RFC5322.From field values the
 *	   caller passes (every From field the message has; see
 *	   dmarc_author_add in dmarc_record.h). No From field, a mailbox
 *	   without a usable domain, or no domain at all: result permerror,
 *	   policy none, reason "no usable From domain" (fail-safe: the
 *	   policy file decides what a permerror means). Several From fields,
 *	   or several mailboxes in one: result fail, reason "several
 *	   authors"; every distinct domain (up to DMARC_AUTHOR_MAX) is looked
 *	   up and the strictest of their policies is the policy to apply
 *	   (never only the first or the last: CVE-2019-16378 class).
 *
 *	2. Policy discovery, per c->mode:
 *	   DMARC_MODE_RFC7489  _dmarc.<author>, then _dmarc.<organizational
 *	                       domain> from the Public Suffix List (c->psl).
 *	   DMARC_MODE_BIS      the DMARCbis DNS tree walk: _dmarc.<author>,
 *	                       then (at most 8 queries in all) the name cut to
 *	                       7 labels and one label less each step; the
 *	                       walk stops at a record with psd=n or psd=y.
 *	                       The organizational domain is the psd=n domain,
 *	                       else the one below a psd=y domain, else the
 *	                       record domain with the fewest labels, else the
 *	                       author domain itself.
 *	   At each name TXT records that are not DMARC (first tag not
 *	   v=DMARC1) are discarded; two or more DMARC records at one name
 *	   count as none there (RFC 7489 6.6.3). A DMARC record with a syntax
 *	   error gives result permerror. A DNS temperror on a name the
 *	   answer depends on gives result temperror, policy none (D4: a
 *	   temperror never rejects). No record anywhere: result none.
 *
 *	3. Alignment (adkim/aspf, relaxed by default): strict means equal
 *	   names; relaxed means the same organizational domain (the PSL in
 *	   7489 mode; a tree walk of the identifier in bis mode). SPF counts
 *	   when in->spf_pass and in->spf_domain (the domain moat's own SPF
 *	   check authenticated: MAIL FROM's, or HELO's for a null sender;
 *	   never a header) aligns. DKIM counts for each in->dkim[] entry with
 *	   pass set whose domain aligns. The caller sets pass only for a
 *	   full DKIM pass: a signature whose l= covers less than the body
 *	   never counts (D5; dkim.h reports it as "policy"). A domain that is
 *	   not a valid host name (dmarc_domain_norm) never aligns.
 *	   Result pass when either aligns, else fail.
 *
 *	4. The policy to apply (fail only; pass gives none): p when the
 *	   record is the author domain's own; otherwise np when the record
 *	   has np and the author domain does not exist (NXDOMAIN on its A
 *	   query), else sp when present, else p. Then in 7489 mode pct: when
 *	   in->pct_roll (0..99, drawn by the caller) >= pct the policy drops
 *	   one step (reject to quarantine, quarantine to none); in bis mode
 *	   t=y drops it the same way. out->sampled_out tells.
 *
 *	Bounded work: at most DMARC_MAX_QUERIES lookups per check (answers
 *	are cached within the check); past that an identifier is simply not
 *	aligned (the author domain's discovery comes first).
 *
 *	dmarc_authres() adds one "dmarc" result set to a (authres.h):
 *	dmarc=<result> (p=<published> dis=<applied>) header.from=<domain>
 *	policy.dmarc=<applied>.
 *
 * DNS
 *	Records come through c->lookup(c->lookup_ctx, name, rrtype, out),
 *	which fills out with up to DMARC_TXT_MAX TXT strings (joined
 *	character-strings, each cut at DMARC_RECORD_MAX with toolong set)
 *	and returns a DNS status. NULL means dmarc_resolver_lookup: moat's
 *	resolver (core/dns.h, dns_query_sync with c->timeout_ms, default
 *	5000). Unit tests pass a table instead.
 *
 * THREADS
 *	dmarc_check() blocks on DNS: call it on the work pool (workq.h),
 *	never on an event loop. It keeps no state between calls; conf and
 *	the PSL are read-only and may be shared by all threads.
 *
 * MEMORY
 *	in and its strings are borrowed for the call. out is filled in full
 *	(fixed-size fields, no pointers to free). dmarc_authres() borrows
 *	strings from o: keep o alive until authres_render().
 */
#ifndef MOAT_DMARC_H
#define MOAT_DMARC_H

#include <stdbool.h>
#include <stddef.h>

#include "authres.h"
#include "dmarc_record.h"

#define DMARC_TXT_MAX		8	/* TXT records read at one name */
#define DMARC_MAX_QUERIES	40	/* lookups per dmarc_check */
#define DMARC_WALK_MAX		8	/* DMARCbis: queries per tree walk */

enum dmarc_mode { DMARC_MODE_RFC7489 = 0, DMARC_MODE_BIS };

enum dmarc_result {
	DMARC_RES_NONE = 0,
	DMARC_RES_PASS,
	DMARC_RES_FAIL,
	DMARC_RES_TEMPERROR,
	DMARC_RES_PERMERROR
};

enum dmarc_dns { DMARC_DNS_OK = 0, DMARC_DNS_NODATA, DMARC_DNS_NXDOMAIN, DMARC_DNS_TEMPERROR };

struct dmarc_txt {
	int n;				/* records stored */
	int total;			/* records the answer had */
	bool toolong[DMARC_TXT_MAX];
	size_t len[DMARC_TXT_MAX];
	char rec[DMARC_TXT_MAX][DMARC_RECORD_MAX + 1];
};

typedef enum dmarc_dns (*dmarc_lookup_fn)(void *ctx, const char *name, int rrtype,
	struct dmarc_txt *out);

struct dmarc_conf {
	enum dmarc_mode mode;
	const struct dmarc_psl *psl;	/* required in DMARC_MODE_RFC7489 */
	unsigned timeout_ms;		/* per query; 0: 5000 */
	dmarc_lookup_fn lookup;		/* NULL: dmarc_resolver_lookup */
	void *lookup_ctx;
};

struct dmarc_dkim_in {
	const char *domain;		/* the signature's d= */
	bool pass;			/* a full pass (not partial l=) */
};

struct dmarc_input {
	const char *const *from;	/* From field values, bytes */
	const size_t *from_len;
	int nfrom;
	bool spf_pass;
	const char *spf_domain;		/* NULL: no SPF identity */
	const struct dmarc_dkim_in *dkim;
	int ndkim;
	unsigned pct_roll;		/* 0..99 */
};

struct dmarc_outcome {
	enum dmarc_result result;
	enum dmarc_policy policy;	/* to apply: none, quarantine, reject */
	enum dmarc_policy published;	/* the record's p, sp or np that applied */
	bool spf_aligned, dkim_aligned;
	bool several_authors;
	bool sampled_out;		/* pct or t=y lowered the policy */
	char from_domain[DMARC_DOMAIN_SIZE];	/* "" when none */
	char policy_domain[DMARC_DOMAIN_SIZE];	/* where the record was; "" */
	char org_domain[DMARC_DOMAIN_SIZE];
	char reason[96];
};

void dmarc_check(const struct dmarc_conf *c, const struct dmarc_input *in,
	struct dmarc_outcome *out);
const char *dmarc_result_name(enum dmarc_result r);
void dmarc_authres(const struct dmarc_outcome *o, struct authres *a);

enum dmarc_dns dmarc_resolver_lookup(void *ctx, const char *name, int rrtype,
	struct dmarc_txt *out);

#endif
