/*
 * spf - the SPF check (RFC 7208) of the HELO and MAIL FROM identities:
 * libspf2 evaluates, moat's resolver answers, moat's guard checks
 *
 * SYNOPSIS
 *	void spf_check(const struct spf_request *rq, enum spf_identity id,
 *	               struct spf_outcome *out);
 *	const char *spf_res_name(enum spf_res r);
 *	const char *spf_identity_name(enum spf_identity id);
 *	int spf_res_parse(const char *name);
 *
 *	void spf_set_resolver(const struct spf_resolver *r);	tests only
 *
 * DESCRIPTION
 *	spf_check() runs check_host() for one identity of a session and
 *	fills *out (owned by the caller; nothing in it needs freeing). It
 *	blocks: call it on the work pool (workq.h), never on an event loop.
 *	It is thread-safe: every call builds its own libspf2 server, request
 *	and DNS layer, and shares only the process's resolver (dns.h), which
 *	must have been set up with dns_init().
 *
 *	Identities: SPF_ID_HELO checks rq->helo with sender
 *	"postmaster@HELO"; SPF_ID_MAILFROM checks the domain of rq->sender
 *	(after its last '@'; a sender of "@dom" has local part "postmaster"),
 *	and for the null sender (rq->sender "" or NULL) "postmaster@HELO"
 *	(RFC 7208 2.4). A domain that is not a multi-label domain name
 *	(empty label, label over 63 bytes, over 253 bytes, an address
 *	literal, a byte other than letter, digit, '-' or '_') gives "none"
 *	without a query (RFC 7208 4.3). An IPv4-mapped IPv6 client address
 *	is checked as IPv4. Loopback clients get no free pass (libspf2's
 *	query functions would give one; moat calls its interpreter directly).
 *
 *	rq->timeout_ms bounds the whole check (0: SPF_TIMEOUT_DEFAULT_MS);
 *	every query gets what is left. When the time is up the result is
 *	temperror.
 *
 * HOW THE WORK IS SPLIT (D8 in docs/SECURITY.md)
 *	moat fetches every record itself (TXT only; type SPF is not asked,
 *	RFC 7208 3.1), picks the one "v=spf1" record (none: "none"; two:
 *	permerror), runs it through spf_guard_parse() (a refusal is
 *	permerror, never "none") and hands libspf2 the rewritten record of
 *	spf_guard_rewrite(). libspf2 compiles it, expands the macros, walks
 *	the terms and follows include: and redirect= (whose records come back
 *	through this module's get_spf hook, guarded the same way). The
 *	DNS-querying mechanisms (a, mx, ptr, exists) reach this module's
 *	lookup hook as marked names and are evaluated here, so that these
 *	RFC 7208 rules hold although libspf2 1.2.10 lacks them:
 *	- at most 10 DNS-querying terms (a, mx, ptr, exists, include,
 *	  redirect) per check, across includes; the 11th is permerror;
 *	- at most 2 void lookups (NXDOMAIN or no data); the 3rd is permerror;
 *	- mx: more than 10 MX records is permerror; ptr: names past the
 *	  10th are ignored, and a DNS error only means "no match";
 *	- /0 prefixes on a, mx, ip4 and ip6;
 *	- a target that is not a usable name after macro expansion does not
 *	  match (and is not asked).
 *	A permerror or temperror found in the hook stops the evaluation (the
 *	hook answers every later query with "try again") and decides the
 *	result.
 *
 * EXPLANATIONS (RFC 7208 6.2, 8.4)
 *	Only when rq->want_exp is set (a policy rule's text uses
 *	$spf-explanation) and the result is fail: exp= is kept in the
 *	rewrites; libspf2 expands the domain-spec of the record that gave
 *	the fail (the top record's, or a redirect= target's, which replaces
 *	it; never an include: target's, RFC 7208 5.2 and 6.2) and asks this
 *	module's get_exp hook (a name over 253 bytes loses labels on the
 *	left, RFC 7208 7.3), which fetches the TXT through the same
 *	resolver, deadline and query budget as the check (no term or void
 *	lookup is counted, RFC 7208 4.6.4). Exactly one TXT record is
 *	needed; spf_guard_exp_text() must accept it (printable US-ASCII, at
 *	most SPF_GUARD_EXP_MAX bytes, a valid macro-string); libspf2 then
 *	expands its macros. The result goes into out->explanation, cut at
 *	SPF_EXP_MAX bytes, every byte outside printable ASCII (an expanded
 *	%{l} may carry one) made '?'. Anything else (DNS error, no record,
 *	two records, a refused text, softfail or neutral) gives "" and
 *	never changes the result. Without want_exp no explanation is ever
 *	fetched, and
 *	libspf2's default explanation is the constant "moat", never shown.
 *
 * OUTCOME
 *	res: the result. domain: the domain checked, lower case, escaped
 *	(bytes outside printable ASCII, '"' and '\\' as \xHH); "" when no
 *	domain could be taken. reason: a short printable text for logs and
 *	Authentication-Results comments, escaped the same way; it never
 *	holds record text. dns_terms, void_lookups, queries: what the check
 *	cost.
 *
 * TESTS
 *	spf_set_resolver() replaces dns_query_sync()/dns_answer_free() for
 *	every later check in the process (NULL restores them). It is meant
 *	for unit tests only and must not be called while checks run.
 */
#ifndef MOAT_SPF_H
#define MOAT_SPF_H

#include <stdbool.h>
#include <stddef.h>

#include "dns.h"

#define SPF_TIMEOUT_DEFAULT_MS	20000	/* RFC 7208 4.6.4: at least 20 s */
#define SPF_DOMAIN_MAX		256
#define SPF_REASON_MAX		160
#define SPF_TERMS_MAX		10	/* RFC 7208 4.6.4 */
#define SPF_VOIDS_MAX		2	/* RFC 7208 4.6.4 */
#define SPF_QUERIES_MAX		160	/* belt and braces, per check */
#define SPF_EXP_MAX		200	/* bytes of an expanded explanation kept */

enum spf_res {
	SPF_RES_NONE = 0, SPF_RES_NEUTRAL, SPF_RES_PASS, SPF_RES_FAIL,
	SPF_RES_SOFTFAIL, SPF_RES_TEMPERROR, SPF_RES_PERMERROR
};

enum spf_identity { SPF_ID_HELO = 0, SPF_ID_MAILFROM };

struct spf_request {
	int family;			/* AF_INET or AF_INET6 */
	unsigned char addr[16];		/* network order; 4 bytes for AF_INET */
	const char *helo;		/* HELO/EHLO argument; NULL: none */
	const char *sender;		/* MAIL FROM address, no <>; "": null sender */
	unsigned timeout_ms;		/* the whole check; 0: the default */
	bool want_exp;			/* fetch the explanation on fail */
};

struct spf_outcome {
	enum spf_res res;
	char domain[SPF_DOMAIN_MAX];
	char reason[SPF_REASON_MAX];
	unsigned dns_terms;
	unsigned void_lookups;
	unsigned queries;
	char explanation[SPF_EXP_MAX + 1];	/* "" when none */
};

struct spf_resolver {
	int (*query)(void *ctx, const char *name, int rrtype, unsigned timeout_ms,
	    struct dns_answer **out);
	void (*free)(void *ctx, struct dns_answer *a);
	void *ctx;
};

void spf_check(const struct spf_request *rq, enum spf_identity id, struct spf_outcome *out);
const char *spf_res_name(enum spf_res r);
const char *spf_identity_name(enum spf_identity id);
int spf_res_parse(const char *name);	/* enum spf_res, or -1 */
void spf_set_resolver(const struct spf_resolver *r);

#endif
