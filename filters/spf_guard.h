/*
 * spf_guard - moat's check of SPF records before libspf2 sees them
 *
 * SYNOPSIS
 *	bool spf_guard_is_spf(const char *txt, size_t len);
 *	int spf_guard_parse(const char *rec, size_t len, struct spf_rec *out,
 *	                    char *why, size_t whysize);
 *	int spf_guard_parse_rewrite(const char *rec, size_t len,
 *	                    struct spf_rec *out, char *why, size_t whysize);
 *	int spf_guard_rewrite(const struct spf_rec *r, const char *token,
 *	                      char *out, size_t size);
 *	int spf_guard_marker(const char *name, const char *token,
 *	                     struct spf_marker *m);
 *	bool spf_guard_name_ok(const char *name, size_t len);
 *	int spf_guard_exp_text(const char *s, size_t n, char *why, size_t whysize);
 *
 * DESCRIPTION
 *	Pure functions: bytes in, results out; no DNS, no libspf2, no clock.
 *	spf.c uses them on every record it fetches (the first one and every
 *	one met through include: and redirect=); tests/fuzz/fuzz_spf_guard.c
 *	drives them directly.
 *
 *	spf_guard_is_spf() tells whether a TXT string (its character-strings
 *	concatenated) is an SPF record: "v=spf1" in any case, then a space or
 *	the end (RFC 7208 4.5). Other TXT records are none of our business.
 *
 *	spf_guard_parse() checks a whole record against the ABNF of RFC 7208
 *	section 12 and against moat's bounds (below), and fills *out with the
 *	directives, the redirect= target and whether an "all" was seen. The
 *	pointers in *out point into rec (borrowed: valid while rec is). It
 *	returns 0, or -1 with a short constant reason in why: the caller
 *	turns a refusal into permerror, never into "none". rec need not be
 *	NUL-terminated and may hold any byte.
 *
 *	spf_guard_parse_rewrite() is the same check with room for what the
 *	rewrite adds (SPF_GUARD_MARK_ROOM bytes per domain-spec, twice the
 *	terms, SPF_GUARD_REWRITE_MAX bytes in all): every rewrite of an
 *	accepted record passes it (a property the fuzz target checks).
 *
 *	spf_guard_rewrite() writes the record libspf2 compiles instead of the
 *	published one (a NUL-terminated string in out; -1 when out is too
 *	small). moat implements every DNS-querying mechanism itself, so that
 *	the RFC 7208 rules libspf2 1.2.10 lacks hold: each "a", "mx", "ptr"
 *	and "exists" becomes "exists:DOMAIN.MARKER", where DOMAIN is the
 *	mechanism's domain-spec (or %{d}) for libspf2 to expand and MARKER is
 *	one label made of "m", the per-check random token, a kind letter
 *	(a, m, p, e) and, for a and mx, the two prefix lengths
 *	("32x128"). spf.c's DNS layer sees the expanded name, recognises the
 *	marker and answers the exists query with the result of the real
 *	mechanism. An ip4/ip6 with a /0 prefix (which libspf2 reads as "no
 *	prefix") becomes the two halves of the address space (/1 each).
 *	exp= is dropped (spf.c puts it back when a rule wants
 *	$spf-explanation; out->exp points at its domain-spec), unknown modifiers
 *	are dropped, and redirect= is dropped when the record has "all"
 *	(RFC 7208 6.1) or else moved to the end, where RFC 7208 evaluates it.
 *	It returns the length written.
 *
 *	spf_guard_marker() takes an expanded name and, when its last label is
 *	a marker carrying token, fills *m (the domain part without the
 *	marker, kind and prefix lengths) and returns 1; 0 otherwise.
 *
 *	spf_guard_name_ok() tells whether an expanded target is a usable DNS
 *	name: 1 to 253 bytes (one trailing dot allowed), labels of 1 to 63
 *	bytes, printable ASCII without '\\'.
 *
 *	spf_guard_exp_text() checks an explanation TXT string (RFC 7208 6.2,
 *	a macro-string where c, r and t are allowed) before libspf2 compiles
 *	it: 1 to SPF_GUARD_EXP_MAX bytes, printable US-ASCII only (no CR,
 *	LF, NUL or 8-bit byte), literals and macros within the bounds below.
 *	0, or -1 with the reason in why (the caller then gives no
 *	explanation, as RFC 7208 6.2 says for a syntax error).
 *
 * BOUNDS (beyond RFC 7208; libspf2 CVE-2023-42118 and its relatives)
 *	libspf2 compiles each term into a 511-byte buffer (SPF_MAX_MECH_LEN,
 *	SPF_MAX_MOD_LEN) in chunks: 4 bytes per string literal or macro plus
 *	the literal's bytes, plus 4 for a CIDR. The unfixed CVE-2023-42118
 *	underflows when a string literal starts with fewer than 4 bytes left.
 *	With at most SPF_GUARD_SPEC_MAX bytes of domain-spec and at most
 *	SPF_GUARD_MACROS_MAX macros a term compiles to at most about 253 +
 *	(2 * 8 + 1) * 4 + 4 + 4 = 329 bytes, and to at most 329 + 24 + 8 =
 *	361 after the rewrite adds %{d} and the marker: far from the 511 edge. Records over
 *	SPF_GUARD_RECORD_MAX bytes or with more than SPF_GUARD_TERMS_MAX terms
 *	are refused whole. A macro's digit transformer must be 1 to 128, and
 *	it may carry at most SPF_GUARD_DELIMS_MAX delimiters. libspf2 also
 *	refuses any string literal (the text between two macros, with "%-"
 *	counting 3) over 255 bytes (SPF_MAX_STR_LEN); published literals are
 *	held to SPF_GUARD_LITERAL_MAX so that the marker the rewrite appends
 *	keeps them below that edge too.
 *
 * REFUSED ALTHOUGH RFC 7208 ALLOWS IT
 *	The delimiters ',' and '/' in a macro, and the reverse transformer
 *	written "R": libspf2 1.2.10's compiler rejects them (the record would
 *	be permerror all the same; the guard says why). Found by
 *	tests/fuzz/fuzz_spf_guard.c.
 */
#ifndef MOAT_SPF_GUARD_H
#define MOAT_SPF_GUARD_H

#include <stdbool.h>
#include <stddef.h>

#define SPF_GUARD_RECORD_MAX	1024	/* bytes of one record */
#define SPF_GUARD_TERMS_MAX	64	/* terms of one record */
#define SPF_GUARD_SPEC_MAX	253	/* a domain-spec or modifier value */
#define SPF_GUARD_MACROS_MAX	8	/* %{...} in one domain-spec */
#define SPF_GUARD_LITERAL_MAX	200	/* string literal between two macros */
#define SPF_GUARD_DIGITS_MAX	128	/* largest digit transformer */
#define SPF_GUARD_DELIMS_MAX	7	/* delimiters in one macro */
#define SPF_GUARD_TOKEN_LEN	10	/* marker token: lower-case letters */
#define SPF_GUARD_REWRITE_MAX	4096	/* room for a rewritten record */
#define SPF_GUARD_MARK_ROOM	24	/* ".%{d}" plus a marker label */
#define SPF_GUARD_EXP_MAX	400	/* bytes of an explanation TXT string */

enum spf_mech {
	SPF_M_ALL = 0, SPF_M_INCLUDE, SPF_M_A, SPF_M_MX, SPF_M_PTR,
	SPF_M_IP4, SPF_M_IP6, SPF_M_EXISTS
};

struct spf_term {
	char qual;		/* '+', '-', '~' or '?' */
	enum spf_mech mech;
	const char *spec;	/* domain-spec or network, into the record */
	size_t speclen;		/* 0: none given */
	int c4, c6;		/* prefix lengths; -1: not given */
};

struct spf_rec {
	int nterms;
	struct spf_term t[2 * SPF_GUARD_TERMS_MAX];	/* a rewrite may split ip4/ip6 /0 */
	const char *redirect;	/* redirect= domain-spec; NULL: none */
	size_t redirlen;
	bool has_all;
	bool has_exp;
	const char *exp;	/* exp= domain-spec, into the record; NULL: none */
	size_t explen;
};

struct spf_marker {
	size_t domlen;		/* bytes of the name before the marker */
	char kind;		/* 'a', 'm', 'p', 'e' */
	int c4, c6;		/* a and m only */
};

bool spf_guard_is_spf(const char *txt, size_t len);
int spf_guard_parse(const char *rec, size_t len, struct spf_rec *out, char *why, size_t whysize);
int spf_guard_parse_rewrite(const char *rec, size_t len, struct spf_rec *out, char *why,
	size_t whysize);
int spf_guard_rewrite(const struct spf_rec *r, const char *token, char *out, size_t size);
int spf_guard_marker(const char *name, const char *token, struct spf_marker *m);
bool spf_guard_name_ok(const char *name, size_t len);
int spf_guard_exp_text(const char *s, size_t n, char *why, size_t whysize);

#endif
