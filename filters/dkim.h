/*
 * dkim - DKIM verification (RFC 6376, RFC 8463) with libopendkim, the
 * message hashed while DATA streams in, keys through moat's resolver
 *
 * SYNOPSIS
 *	#include "dkim.h"
 *
 *	struct dkimv *dkimv_new(const struct dkimv_conf *c, char *err, size_t errlen);
 *	void dkimv_free(struct dkimv *v);
 *
 *	struct dkimv_msg *dkimv_msg_new(struct dkimv *v);
 *	int dkimv_msg_feed(struct dkimv_msg *m, const char *buf, size_t len);
 *	void dkimv_msg_finish(struct dkimv_msg *m, struct dkimv_outcome *out);
 *	void dkimv_msg_free(struct dkimv_msg *m);
 *
 *	const char *dkimv_result_name(enum dkimv_result r);
 *	const char *dkimv_alg_name(enum dkimv_alg a);
 *	void dkimv_authres(const struct dkimv_outcome *o, struct authres *a);
 *
 *	enum dkimv_key dkimv_resolver_key(void *ctx, const char *name,
 *	                                  char *out, size_t size);
 *
 * DESCRIPTION
 *	A struct dkimv holds one libopendkim library handle set up for
 *	verifying: minimum RSA key size (c->min_key_bits, never below 1024:
 *	RFC 8301), delayed signature processing (so no key is fetched before
 *	the end of the message), handles for syntactically bad signatures
 *	too (each gets a result), a prescreen that keeps the first
 *	c->max_signatures signatures and marks rsa-sha1 ones as "policy"
 *	unless c->allow_rsa_sha1, and a key lookup hook (libopendkim's own
 *	resolver is never used). Make one at start-up (or per policy load)
 *	and share it by all threads; dkimv_new returns NULL with err filled
 *	when libopendkim refuses.
 *
 *	A struct dkimv_msg verifies one message. dkimv_msg_feed() takes the
 *	message as it arrives: header and body bytes exactly as the upstream
 *	will receive them (CRLF line ends, dot-unstuffed, without the final
 *	".CRLF"), cut anywhere: the result does not depend on the chunking.
 *	Header fields are collected and handed to libopendkim whole; body
 *	bytes go to the hashes at once (no second pass, nothing kept).
 *	The header is bounded before libopendkim sees it: c->max_field_bytes
 *	per field (default 102400, Postfix's header_size_limit),
 *	c->max_header_bytes in all (default 1 MiB) and c->max_fields
 *	(default 1000). Past a bound the message fails DKIM as a whole
 *	(outcome.status DKIMV_TOO_BIG, every later feed is ignored): nothing
 *	is truncated, so no signature can be checked over a header moat did
 *	not read in full. feed returns 0, or -1 once the message has failed
 *	that way. It does no DNS and never blocks: call it on the event loop.
 *
 *	dkimv_msg_finish() ends the body, fetches each signature's key
 *	(c->key_lookup, by default dkimv_resolver_key: a TXT query through
 *	core/dns.h dns_query_sync with c->timeout_ms, default 5000) and
 *	verifies. It blocks on DNS: call it on the work pool, never on an
 *	event loop. out gets one entry per signature (in header order, at
 *	most DKIMV_MAX_SIGS) and counts of what was left out.
 *
 * RESULTS (RFC 8601 2.7.1 words)
 *	pass		the signature verified over the whole body
 *	fail		the signature or body hash does not match, l= exceeds
 *			the body, it expired (x=) or is dated in the future,
 *			or d=/i= is invalid (e.g. "example.net(.example.com":
 *			then domain is "" and never attributed)
 *	neutral		other syntax errors in the signature
 *	policy		valid but refused: rsa-sha1 (unless allowed), an RSA
 *			key below min_key_bits, or a body covered only in part
 *			by l= (partial set; D5: it never counts for DMARC
 *			unless c->accept_partial_body)
 *	permerror	no key, revoked key (p= empty), a key record that
 *			does not parse, several key records, a key too large
 *	temperror	the key lookup failed for now (DNS)
 *	A key published as bare PKCS#1 RSAPublicKey (not SubjectPublicKeyInfo,
 *	as some signers do) is converted before libopendkim reads it.
 *
 * THREADS AND MEMORY
 *	dkimv_new/dkimv_free: start-up only; free after every dkimv_msg of
 *	it is freed. A dkimv_msg belongs to one session: feed on its loop,
 *	finish on one pool thread, then free anywhere; never two threads at
 *	once. The outcome is plain data (fixed-size strings), owned by the
 *	caller. dkimv_authres() borrows strings from o until authres_render.
 */
#ifndef MOAT_DKIM_H
#define MOAT_DKIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "authres.h"

#define DKIMV_MAX_SIGS		8	/* default and largest max_signatures */
#define DKIMV_KEY_MAX		1024	/* bytes of a key record (8192-bit RSA does not fit) */

enum dkimv_result {
	DKIMV_NONE = 0,
	DKIMV_PASS,
	DKIMV_FAIL,
	DKIMV_NEUTRAL,
	DKIMV_POLICY,
	DKIMV_TEMPERROR,
	DKIMV_PERMERROR
};

enum dkimv_alg { DKIMV_ALG_UNKNOWN = 0, DKIMV_ALG_RSA_SHA1, DKIMV_ALG_RSA_SHA256,
	DKIMV_ALG_ED25519_SHA256 };

enum dkimv_status {
	DKIMV_OK = 0,		/* sigs[] holds the results (none when nsigs 0) */
	DKIMV_TOO_BIG,		/* header over a bound: not verified */
	DKIMV_ERROR		/* libopendkim failed (out of memory, ...) */
};

/* key lookup hook: out gets the TXT record (character-strings joined) */
enum dkimv_key { DKIMV_KEY_FOUND = 0, DKIMV_KEY_NONE, DKIMV_KEY_TEMPERROR, DKIMV_KEY_MULTIPLE,
	DKIMV_KEY_TOOBIG };
typedef enum dkimv_key (*dkimv_key_fn)(void *ctx, const char *name, char *out, size_t size);

struct dkimv_conf {
	unsigned min_key_bits;		/* 0: 1024; lower values count as 1024 */
	unsigned max_signatures;	/* 0 or > DKIMV_MAX_SIGS: DKIMV_MAX_SIGS */
	size_t max_field_bytes;		/* 0: 102400 */
	size_t max_header_bytes;	/* 0: 1 MiB */
	unsigned max_fields;		/* 0: 1000 */
	bool allow_rsa_sha1;
	bool accept_partial_body;	/* l= shorter than the body may pass */
	uint64_t fixed_time;		/* 0: the clock; tests pin it */
	unsigned timeout_ms;		/* per key query; 0: 5000 */
	dkimv_key_fn key_lookup;	/* NULL: dkimv_resolver_key */
	void *key_ctx;
};

struct dkimv_sig {
	enum dkimv_result result;
	enum dkimv_alg alg;
	bool partial;			/* l= covers less than the body */
	unsigned key_bits;		/* 0 when no key was read */
	char domain[256];		/* d=, lower case; "" when invalid */
	char selector[64];		/* s=; "" when missing or not a label list */
	char b_prefix[16];		/* first 12 characters of b= */
	const char *reason;		/* static text; NULL on pass */
};

struct dkimv_outcome {
	enum dkimv_status status;
	int nsigs;			/* entries in sigs[] */
	int nignored;			/* signatures past max_signatures */
	struct dkimv_sig sigs[DKIMV_MAX_SIGS];
};

struct dkimv;
struct dkimv_msg;

struct dkimv *dkimv_new(const struct dkimv_conf *c, char *err, size_t errlen);
void dkimv_free(struct dkimv *v);

struct dkimv_msg *dkimv_msg_new(struct dkimv *v);
int dkimv_msg_feed(struct dkimv_msg *m, const char *buf, size_t len);
void dkimv_msg_finish(struct dkimv_msg *m, struct dkimv_outcome *out);
void dkimv_msg_free(struct dkimv_msg *m);
/* The key records (SELECTOR._domainkey.DOMAIN) the signatures will want,
 * once the header is in: at most max, returns how many (0 before the
 * body, or when there is no usable signature). Any thread; no lookups. */
int dkimv_msg_keynames(struct dkimv_msg *m, char (*out)[320], int max);
/* Is the verifier still in the message's header section (its blank line
 * not fed yet)? Any thread. */
bool dkimv_msg_in_header(const struct dkimv_msg *m);

const char *dkimv_result_name(enum dkimv_result r);
const char *dkimv_alg_name(enum dkimv_alg a);
void dkimv_authres(const struct dkimv_outcome *o, struct authres *a);

enum dkimv_key dkimv_resolver_key(void *ctx, const char *name, char *out, size_t size);

#endif
